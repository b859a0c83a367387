"""``/function/{name}[/{path}]``: the hot path, as a raw ASGI handler.

Request in → pool → replica → response out, with no disk I/O, no task per request and no
registry lookup for a warm function: the activation record and metrics are buffered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

from faasbox.deployment import Deployment
from faasbox.errors import (
    FaasboxError,
    FunctionNotFound,
    FunctionNotReady,
    NotStarted,
    PayloadTooLarge,
)
from faasbox.gateway.errors import error_json
from faasbox.platform import Platform
from faasbox.pool.pool import FunctionPool, Invocation
from faasbox.pool.replica import Response
from faasbox.registry.api import FunctionStore

log = logging.getLogger("faasbox.gateway")

Scope = dict[str, Any]
PREFIX = "/function/"
_JSON = [(b"content-type", b"application/json")]


async def missing(store: FunctionStore, name: str) -> NoReturn:
    """Why ``name`` has no pool: it does not exist (404), or has no ready version (503)."""
    rec = await store.get_function(name)
    if rec is None:
        raise FunctionNotFound(name)
    status = rec.latest.status
    hint = "see `faasbox describe " + name + "`" if status == "failed" else "retry shortly"
    raise FunctionNotReady(f"function {name!r} has no ready version (build {status}; {hint})")


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
    """Serves ``/function/...``: as an ASGI app (``__call__``), and through ``fast`` for the
    HTTP protocol's fast lane (``gateway/fastlane.py``), which calls a warm replica with no
    task and no ASGI messages."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.pools = platform.deployer.pools
        self.activations = platform.activations
        self.metrics = platform.metrics
        self.max_request = platform.settings.max_request_bytes
        # Call ids name their activation's row (registry.api.CallIds).
        self._new_call_id = platform.store.call_ids.new

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        name = scope["path"][len(PREFIX) :].partition("/")[0]
        pool = self.pools.get(name)
        limit = self.max_request
        if pool is not None:
            limit = min(pool.deployment.max_request, limit)
        try:
            body = await read_body(receive, scope, limit)
        except FaasboxError as exc:
            status, headers, rbody = self._finish(name, pool is not None, *self._begin(), exc)
        else:
            status, headers, rbody = await self.serve(
                scope["path"], scope["method"], scope["query_string"], scope["headers"], body
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": rbody})

    def _begin(self) -> tuple[str, int, float]:
        return self._new_call_id(), time.time_ns(), time.perf_counter()

    @staticmethod
    def _head(
        d: Deployment,
        call_id: str,
        start_ns: int,
        method: str,
        rest: str,
        query: bytes,
        raw_headers: list[tuple[bytes, bytes]],
    ) -> dict[str, Any]:
        return {
            "t": "run",
            "cid": call_id,
            "m": method,
            "p": "/" + rest,
            "q": query.decode("latin-1"),
            "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in raw_headers],
            "dl": start_ns / 1e9 + d.timeout,
        }

    async def serve(
        self,
        path: str,
        method: str,
        query: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One call, any state of its function (cold, queued, missing): status, headers,
        body."""
        name, _, rest = path[len(PREFIX) :].partition("/")
        call_id, start_ns, t0 = self._begin()
        pool = self.pools.get(name)
        outcome: Invocation | FaasboxError
        try:
            if pool is None:
                await missing(self.platform.store, name)
            deployment = pool.deployment
            limit = min(deployment.max_request, self.max_request)
            if len(body) > limit:
                raise PayloadTooLarge(
                    f"request body of {len(body)} bytes exceeds the limit of {limit} bytes"
                )
            head = self._head(deployment, call_id, start_ns, method, rest, query, raw_headers)
            outcome = await pool.invoke(head, body)
        except FaasboxError as exc:
            outcome = exc
        return self._finish(name, pool is not None, call_id, start_ns, t0, outcome)

    def fast(
        self,
        path: str,
        method: str,
        query: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        respond: Callable[[int, list[tuple[bytes, bytes]], bytes], None],
    ) -> bool:
        """Start a call on a free warm replica and answer through ``respond`` when it ends;
        False (nothing started) when the call needs ``serve``: no free replica, an unknown
        function, a body over the limit."""
        name, _, rest = path[len(PREFIX) :].partition("/")
        pool = self.pools.get(name)
        if pool is None:
            return False
        d = pool.deployment
        if len(body) > d.max_request or len(body) > self.max_request:
            return False
        replica = pool.take_free() or pool.take_queued()
        if replica is None:
            return False
        call_id, start_ns, t0 = self._begin()
        head = self._head(d, call_id, start_ns, method, rest, query, raw_headers)
        replica.last_used = time.monotonic()

        def done(response: Response | None, exc: FaasboxError | None) -> None:
            if isinstance(exc, NotStarted):
                # Queued behind a call that killed its replica: run it elsewhere.
                task = asyncio.ensure_future(
                    self._retry(name, pool, head, body, call_id, start_ns, t0)
                )
                task.add_done_callback(lambda t: respond(*t.result()))
                return
            outcome: Invocation | FaasboxError
            if exc is not None:
                exc.replica, exc.version = replica.id, replica.version
                outcome = exc
            else:
                assert response is not None  # Replica.send_call gives one or the other
                outcome = Invocation(response, False, 0.0, replica.id, replica.version)
            respond(*self._finish(name, True, call_id, start_ns, t0, outcome))

        try:
            replica.send_call(head, body, d.timeout, done)
        except FaasboxError as exc:
            exc.replica, exc.version = replica.id, replica.version
            respond(*self._finish(name, True, call_id, start_ns, t0, exc))
        return True

    async def _retry(
        self,
        name: str,
        pool: FunctionPool,
        head: dict[str, Any],
        body: bytes,
        call_id: str,
        start_ns: int,
        t0: float,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        outcome: Invocation | FaasboxError
        try:
            outcome = await pool.invoke(head, body)
        except FaasboxError as exc:
            outcome = exc
        return self._finish(name, True, call_id, start_ns, t0, outcome)

    def _finish(
        self,
        name: str,
        known: bool,
        call_id: str,
        start_ns: int,
        t0: float,
        outcome: Invocation | FaasboxError,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The response's status, headers and body; the call's metrics and activation."""
        cold_ms: float | None = None
        start_path = error = ""
        if isinstance(outcome, FaasboxError):
            status, rbody, out = (
                outcome.status,
                error_json(outcome.status, outcome.code, outcome.message),
                list(_JSON),
            )
            error = f"{outcome.code}: {outcome.message}"
            replica, version, cold_ms = outcome.replica, outcome.version, outcome.cold_ms
        else:
            # Checked, lower-cased and without hop headers (Replica); a list of its own.
            status, out, rbody = outcome.response
            version, replica = outcome.version, outcome.replica
            if outcome.cold:
                cold_ms = outcome.init_ms
                start_path = outcome.start_path
        duration = time.perf_counter() - t0
        out.append((b"content-length", str(len(rbody)).encode()))
        out.append((b"x-call-id", call_id.encode()))
        out.append((b"x-start-time", str(start_ns).encode()))
        out.append((b"x-duration-seconds", f"{duration:.6f}".encode()))
        out.append((b"x-faasbox-cold-start", b"true" if cold_ms is not None else b"false"))
        if known:
            self.metrics.observe(name, status, duration, cold_ms, start_path)
            self.activations.add(
                (
                    call_id,
                    name,
                    version or 0,
                    start_ns,
                    duration,
                    status,
                    cold_ms is not None,
                    cold_ms or 0.0,
                    replica or "",
                    error,
                    start_path,
                )
            )
        return status, out, rbody
