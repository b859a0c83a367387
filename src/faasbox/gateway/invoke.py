"""``/function/{name}[/{path}]``: the hot path, as a raw ASGI handler.

Request in → pool → replica → response out, with no disk I/O, no task per request and no
registry lookup for a warm function: the activation record and metrics are buffered.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, NoReturn

from faasbox.errors import FaasboxError, FunctionNotFound, FunctionNotReady, PayloadTooLarge
from faasbox.gateway.errors import error_json
from faasbox.platform import Platform

Scope = dict[str, Any]
PREFIX = "/function/"
# Headers we compute ourselves, or that describe the hop rather than the message.
_DROP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)
_JSON = [(b"content-type", b"application/json")]
_MIX = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


async def read_body(receive: Any, scope: Scope, limit: int) -> bytes:
    framed = False
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                declared = int(v)
            except ValueError:
                declared = 0
            if declared > limit:
                raise PayloadTooLarge(
                    f"request body of {declared} bytes exceeds the limit of {limit} bytes"
                )
            if declared == 0:
                return b""
            framed = True
        elif k == b"transfer-encoding":
            framed = True
    if not framed:
        return b""  # HTTP/1.1: no length and no chunking means no body
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class InvokeHandler:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.pools = platform.deployer.pools
        self.activations = platform.activations
        self.metrics = platform.metrics
        self.max_request = platform.settings.max_request_bytes
        # Call ids: a scrambled counter plus a random suffix per start; no syscall per call.
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path: str = scope["path"]
        name, _, rest = path[len(PREFIX) :].partition("/")
        # The counter through an odd multiplier (a bijection on 64 bits): unique per start,
        # and different in its first characters from call to call, where people look.
        call_id = f"{next(self._ids) * _MIX & _MASK64:016x}{self._id_prefix}"
        start_ns = time.time_ns()
        t0 = time.perf_counter()
        pool = self.pools.get(name)
        version = 0
        replica = ""
        cold_ms: float | None = None
        start_path = ""
        error = ""
        try:
            if pool is None:
                await self._missing(name)
            deployment = pool.deployment
            body = await read_body(receive, scope, min(deployment.max_request, self.max_request))
            headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
            head = {
                "t": "run",
                "cid": call_id,
                "m": scope["method"],
                "p": "/" + rest,
                "q": scope["query_string"].decode("latin-1"),
                "h": headers,
                "dl": start_ns / 1e9 + deployment.timeout,
            }
            result = await pool.invoke(head, body)
            status, rheaders, rbody = result.response
            version = result.version
            replica = result.replica
            if result.cold:
                cold_ms = result.init_ms
                start_path = result.start_path
            out = [
                (k.lower().encode("latin-1"), v.encode("latin-1", "replace"))
                for k, v in rheaders
                if k.lower() not in _DROP
            ]
        except FaasboxError as exc:
            status, rbody, out = (
                exc.status,
                error_json(exc.status, exc.code, exc.message),
                list(_JSON),
            )
            error = f"{exc.code}: {exc.message}"
            replica, version, cold_ms = exc.replica, exc.version or version, exc.cold_ms
        duration = time.perf_counter() - t0
        out.append((b"content-length", str(len(rbody)).encode()))
        out.append((b"x-call-id", call_id.encode()))
        out.append((b"x-start-time", str(start_ns).encode()))
        out.append((b"x-duration-seconds", f"{duration:.6f}".encode()))
        out.append((b"x-faasbox-cold-start", b"true" if cold_ms is not None else b"false"))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": rbody})
        if pool is not None:
            self.metrics.observe(name, status, duration, cold_ms, start_path)
            self.activations.add(
                (
                    call_id,
                    name,
                    version,
                    start_ns,
                    duration,
                    status,
                    cold_ms is not None,
                    cold_ms or 0.0,
                    replica,
                    error,
                    start_path,
                )
            )

    async def _missing(self, name: str) -> NoReturn:
        rec = await self.platform.store.get_function(name)
        if rec is None:
            raise FunctionNotFound(name)
        status = rec.latest.status
        hint = "see `faasbox describe " + name + "`" if status == "failed" else "retry shortly"
        raise FunctionNotReady(f"function {name!r} has no ready version (build {status}; {hint})")
