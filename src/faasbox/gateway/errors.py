"""The one place where errors become HTTP responses."""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from faasbox.errors import FaasboxError

log = logging.getLogger("faasbox.gateway")

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_json(status: int, code: str, message: str, detail: str | None = None) -> bytes:
    err: dict[str, str] = {"code": code, "message": message}
    if detail:
        err["detail"] = detail
    return json.dumps({"error": err}).encode()


def to_response(exc: BaseException) -> Response:
    if isinstance(exc, FaasboxError):
        status, body = exc.status, error_json(exc.status, exc.code, exc.message, exc.detail)
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        body = error_json(status, _HTTP_CODES.get(status, "http_error"), str(exc.detail))
    else:
        log.exception("unexpected error", exc_info=exc)
        status, body = 500, error_json(500, "internal", "internal error; see the platform log")
    return Response(body, status_code=status, media_type="application/json")


async def handle(_request: Request, exc: Exception) -> Response:
    return to_response(exc)
