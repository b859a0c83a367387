"""``POST /async-function/{name}[/{path...}]``: accept a call into the durable queue (202
once it is stored), and ``/system/async/...``: the queue's depth and its dead letters."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from faasbox.errors import (
    BadRequest,
    FaasboxError,
    NotFound,
    TooManyRequests,
)
from faasbox.gateway.errors import error_json
from faasbox.gateway.invoke import missing, read_body
from faasbox.models import check_name
from faasbox.queue.api import Request, Task

if TYPE_CHECKING:
    from faasbox.platform import Platform

PREFIX = "/async-function/"
_JSON = [(b"content-type", b"application/json")]


class AsyncInvokeHandler:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.pools = platform.deployer.pools
        self.queue = platform.queue
        self.settings = platform.settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            status, headers = await self._accept(scope, receive)
            body = b""
        except FaasboxError as exc:
            status, headers = exc.status, list(_JSON)
            body = error_json(exc.status, exc.code, exc.message)
            if exc.status == 405:
                headers.append((b"allow", b"POST"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _accept(self, scope: dict[str, Any], receive: Any) -> tuple[int, list[Any]]:
        name, _, rest = scope["path"][len(PREFIX) :].partition("/")
        if scope["method"] != "POST":
            raise MethodNotAllowed(
                f"{scope['method']} {PREFIX}{name}: asynchronous calls are POSTed"
            )
        pool = self.pools.get(name)
        if pool is None:
            await missing(self.platform.store, name)
        limit = self.settings.async_max_body_bytes
        body = await read_body(receive, scope, limit)
        if self.queue.size() >= self.settings.queue_max:
            raise TooManyRequests(
                f"the asynchronous queue holds {self.settings.queue_max} unfinished calls "
                "(faasbox up --queue-max); retry later"
            )
        callback = key = ""
        headers: list[tuple[str, str]] = []
        for k, v in scope["headers"]:
            if k == b"x-callback-url":
                callback = v.decode("latin-1").strip()
            elif k == b"x-idempotency-key":
                key = v.decode("latin-1").strip()
            headers.append((k.decode("latin-1"), v.decode("latin-1")))
        if callback and not callback.startswith(("http://", "https://")):
            raise BadRequest(f"X-Callback-Url {callback!r} must be an http:// or https:// URL")
        if len(key) > 256:
            raise BadRequest("X-Idempotency-Key is longer than 256 characters")
        d = pool.deployment
        now = time.time()
        task = Task(
            call_id=self.platform.store.call_ids.new(),
            function=name,
            request=Request(
                "POST", "/" + rest, scope["query_string"].decode("latin-1"), headers, body
            ),
            enqueued_at=now,
            max_retries=d.async_retries,
            max_age=d.async_max_age,
            callback_url=callback,
            idempotency_key=key,
        )
        call_id, stored = await self.queue.put(task)
        out = [(b"x-call-id", call_id.encode()), (b"x-start-time", str(time.time_ns()).encode())]
        if stored:
            self.platform.dispatcher.stats.accepted[name] += 1
            self.platform.dispatcher.wake()
        else:
            out.append((b"x-faasbox-idempotent-replay", b"true"))
        return 202, out


class MethodNotAllowed(FaasboxError):
    status = 405
    code = "method_not_allowed"


def routes(p: Platform) -> list[Route]:
    async def summary(_: HttpRequest) -> Response:
        await p.dispatcher.refresh()
        depth = p.dispatcher.stats.depth
        now = time.time()
        return JSONResponse(
            {
                "unfinished": sum(d.tasks for d in depth.values()),
                "max": p.settings.queue_max,
                "functions": {
                    name: {
                        "unfinished": d.tasks,
                        "oldestAgeSeconds": round(now - d.oldest_enqueued_at, 3),
                    }
                    for name, d in sorted(depth.items())
                },
            }
        )

    async def dead(request: HttpRequest) -> Response:
        name = request.query_params.get("name") or None
        if name is not None:
            check_name(name)
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            raise BadRequest("limit must be a whole number") from None
        if not 1 <= limit <= 10_000:
            raise BadRequest("limit must be between 1 and 10000")
        return JSONResponse([t.to_api() for t in await p.queue.dead(name, limit)])

    async def redrive(request: HttpRequest) -> Response:
        raw = await request.body()
        try:
            body = (await request.json()) if raw.strip() else {}
        except ValueError:
            raise BadRequest(
                'the body must be JSON: {} (all), {"callId": ...} or {"name": ...}'
            ) from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        call_id = body.get("callId")
        name = body.get("name")
        if call_id is not None and not isinstance(call_id, str):
            raise BadRequest("callId must be a string")
        if name is not None:
            if not isinstance(name, str):
                raise BadRequest("name must be a string")
            check_name(name)
        ids = await p.queue.redrive(call_id, name)
        if call_id is not None and not ids:
            raise NotFound(f"no dead asynchronous call {call_id!r}")
        if ids:
            p.dispatcher.wake()
        return JSONResponse({"redriven": ids})

    return [
        Route("/system/async", summary, methods=["GET"]),
        Route("/system/async/dead", dead, methods=["GET"]),
        Route("/system/async/dead/redrive", redrive, methods=["POST"]),
    ]
