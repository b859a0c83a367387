"""/healthz, /system/info, /metrics, /system/logs, /system/activations."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from faasbox.errors import BadRequest, NotFound
from faasbox.models import check_name
from faasbox.platform import Platform
from faasbox.units import parse_duration


def _int(request: Request, key: str, default: int, hi: int) -> int:
    raw = request.query_params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {key!r} must be a whole number") from None
    if not 0 <= value <= hi:
        raise BadRequest(f"query parameter {key!r} must be between 0 and {hi}")
    return value


def _bool(request: Request, key: str) -> bool:
    raw = request.query_params.get(key, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise BadRequest(f"query parameter {key!r} must be true or false")


def parse_since(raw: str | None) -> float | None:
    """``since`` is a duration back from now (``5m``) or an RFC 3339 time."""
    if not raw:
        return None
    try:
        return time.time() - parse_duration(raw)
    except BadRequest:
        pass
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(f"since={raw!r}: use a duration like 5m or an RFC 3339 time") from None


def routes(p: Platform) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("OK")

    async def info(_: Request) -> Response:
        return JSONResponse(p.info())

    async def metrics(_: Request) -> Response:
        await p.dispatcher.refresh()
        return Response(generate_latest(p.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def logs(request: Request) -> Response:
        name = request.query_params.get("name") or None
        if name is not None:
            check_name(name)
            await p.deployer.get(name)
        tail = (
            _int(request, "tail", 0, 1_000_000)
            if request.query_params.get("tail") not in (None, "")
            else None
        )
        since = parse_since(request.query_params.get("since"))
        follow = _bool(request, "follow")
        # Subscribe before reading stored lines so nothing falls between the two.
        live = p.logs.follow(name) if follow else None
        stored = await p.logs.read(name, since, tail)

        async def stream() -> AsyncIterator[bytes]:
            if stored:
                yield ("\n".join(stored) + "\n").encode()
            if live is not None:
                try:
                    async for line in live:
                        yield (line.to_json() + "\n").encode()
                finally:
                    await live.aclose()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def activations(request: Request) -> Response:
        name = request.query_params.get("name") or None
        if name is not None:
            check_name(name)
            await p.deployer.get(name)
        limit = _int(request, "limit", 50, 10_000)
        await p.activations.flush()
        records = await p.store.list_activations(name, limit)
        return JSONResponse([r.to_api() for r in records])

    async def activation(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        await p.activations.flush()
        rec = await p.store.get_activation(call_id)
        task = await p.queue.status(call_id)
        if rec is None and task is None:
            raise NotFound(f"activation {call_id!r} not found")
        body: dict[str, object] = {} if rec is None else rec.to_api()
        if task is not None:  # an asynchronous call: its state, and its last run's record
            body.setdefault("callId", call_id)
            body.setdefault("function", task.function)
            # API.md's five states here; ``async.state`` also tells "retrying" from "queued".
            body["state"] = task.state
            body["async"] = task.to_api()
        return JSONResponse(body)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/system/info", info, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/system/logs", logs, methods=["GET"]),
        Route("/system/activations", activations, methods=["GET"]),
        Route("/system/activations/{call_id}", activation, methods=["GET"]),
    ]
