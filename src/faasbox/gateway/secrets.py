"""/system/secrets: list (names only), create, update, delete. OpenFaaS's shape: bodies
``{"name", "value"}`` or ``{"name", "rawValue"}`` (base64). No answer and no error message
ever carries a value."""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from faasbox.errors import BadRequest, Conflict, PayloadTooLarge
from faasbox.platform import Platform
from faasbox.secrets import MAX_VALUE, check_secret_name

# A base64 value of MAX_VALUE bytes, plus room for the name and the JSON around it.
MAX_BODY = MAX_VALUE * 4 // 3 + 64 * 1024
FIELDS = ("name", "value", "rawValue", "namespace")
SHAPE = '{"name": "...", "value": "..."} or {"name": "...", "rawValue": "<base64>"}'


async def _read_json(request: Request, shape: str) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise PayloadTooLarge(f"body exceeds {MAX_BODY // 1024} KiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise PayloadTooLarge(f"body exceeds {MAX_BODY // 1024} KiB")
    try:
        data = json.loads(body)
    except ValueError:
        # json's own message is left out: it may quote part of the body.
        raise BadRequest(f"body must be JSON: {shape}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"body must be a JSON object: {shape}")
    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BadRequest(f"unknown field {str(key)[:64]!r}{hint}")
    return data


def _name(data: dict[str, Any], shape: str) -> str:
    name = data.get("name")
    if not isinstance(name, str):
        raise BadRequest(f'"name" must be a string: {shape}')
    return check_secret_name(name)


def _value(data: dict[str, Any]) -> bytes:
    value, raw = data.get("value"), data.get("rawValue")
    if value is not None and raw is not None:
        raise BadRequest('give either "value" or "rawValue", not both')
    if raw is not None:
        if not isinstance(raw, str):
            raise BadRequest('"rawValue" must be a base64 string')
        try:
            decoded = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest('"rawValue" is not valid base64') from None
    elif value is not None:
        if not isinstance(value, str):
            raise BadRequest('"value" must be a string (binary values go in "rawValue", base64)')
        decoded = value.encode()
    else:
        raise BadRequest(f"a secret needs a value: {SHAPE}")
    if not decoded:
        raise BadRequest("the secret's value is empty")
    if len(decoded) > MAX_VALUE:
        raise PayloadTooLarge(
            f"the secret's value is {len(decoded)} bytes; at most {MAX_VALUE // 1024} KiB"
        )
    return decoded


def routes(p: Platform) -> list[Route]:
    store = p.secrets

    async def list_secrets(_: Request) -> Response:
        names = await asyncio.to_thread(store.names)
        return JSONResponse([{"name": n, "namespace": "faasbox"} for n in names])

    async def create(request: Request) -> Response:
        data = await _read_json(request, SHAPE)
        name = _name(data, SHAPE)
        await asyncio.to_thread(store.create, name, _value(data))
        return JSONResponse({"name": name}, status_code=201)

    async def update(request: Request) -> Response:
        data = await _read_json(request, SHAPE)
        name = _name(data, SHAPE)
        await asyncio.to_thread(store.update, name, _value(data))
        return JSONResponse({"name": name})

    async def delete(request: Request) -> Response:
        data = await _read_json(request, '{"name": "..."}')
        name = _name(data, '{"name": "..."}')
        # Refused while a function needs it: its next replica could not start.
        users = await p.deployer.secret_users(name)
        exists: bool = await asyncio.to_thread(store.exists, name)
        if users and exists:
            if len(users) == 1:
                who = f"function {users[0]!r}"
                fix = "the function's secrets and deploy it again, or remove the function"
            else:
                who = "functions " + ", ".join(repr(u) for u in users)
                fix = "their secrets and deploy them again, or remove them"
            raise Conflict(f"secret {name!r} is used by {who}; remove {name!r} from {fix}, first")
        await asyncio.to_thread(store.delete, name)
        return JSONResponse({"message": f"secret {name!r} removed"})

    return [
        Route("/system/secrets", list_secrets, methods=["GET"]),
        Route("/system/secrets", create, methods=["POST"]),
        Route("/system/secrets", update, methods=["PUT"]),
        Route("/system/secrets", delete, methods=["DELETE"]),
    ]
