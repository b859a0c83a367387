"""One replica: a sandbox running the runtime, and the host end of its protocol.

Responses are matched to requests by id in ``data_received``: no task per request and no
reader loop, only the event loop's own socket callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from faasbox.background import Background
from faasbox.errors import (
    FaasboxError,
    HandlerError,
    InvocationTimeout,
    NotStarted,
    OutOfMemory,
    ReplicaFailed,
    ResponseTooLarge,
)
from faasbox.runtime.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    encode,
)
from faasbox.sandbox.api import ExitStatus
from faasbox.sandbox.safety import SafeSandbox
from faasbox.units import format_bytes

log = logging.getLogger("faasbox.replica")

# (status, headers as [[name, value], ...], body)
Response = tuple[int, list[list[str]], bytes]


class _Call:
    __slots__ = ("call_id", "fut", "rid", "timeout", "timer")

    def __init__(
        self, rid: int, call_id: str, fut: asyncio.Future[Response], timeout: float
    ) -> None:
        self.rid = rid
        self.call_id = call_id
        self.fut = fut
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None


def check_hello(frame: dict[str, Any]) -> None:
    """A new runtime's first frame must be a hello in our protocol version."""
    if frame.get("t") != "hello" or frame.get("v") != PROTOCOL_VERSION:
        raise ReplicaFailed(f"runtime spoke an unknown protocol: {frame!r:.200}")


class Replica(asyncio.Protocol):
    """States: starting → ready → (retiring) → dead. ``inflight`` counts taken slots."""

    def __init__(
        self,
        *,
        replica_id: str,
        function: str,
        version: int,
        concurrency: int,
        prefetch: int = 0,
        memory_bytes: int,
        max_response: int,
        on_slot_free: Callable[[Replica], None],
        on_death: Callable[[Replica], None],
    ) -> None:
        self.id = replica_id
        self.function = function
        self.version = version
        self.concurrency = concurrency
        # Calls the host may queue in the replica's channel beyond ``concurrency``: the
        # runtime starts them as soon as a running one ends, with no wake-up round trip
        # through the host in between.
        self.capacity = concurrency + prefetch
        self.memory_bytes = memory_bytes
        self.inflight = 0
        self.alive = False
        self.retiring = False
        self.last_used = time.monotonic()
        self.init_ms = 0.0
        # How long its runtime took to import the function (what a fork would not repeat).
        self.import_ms = 0.0
        # How its sandbox came to be: "created" from scratch, "prewarmed" (a stem cell), or
        # "forked" from its function's zygote.
        self.start_path = "created"
        self.sandbox: SafeSandbox | None = None
        self._on_slot_free = on_slot_free
        self._on_death = on_death
        # Calls sent and not answered, oldest first (the runtime starts them in this order).
        self._pending: dict[int, _Call] = {}
        # How many of them have their timeout running: the ones that can have started.
        self._armed = 0
        self._ids = itertools.count(1)
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(self._on_frame, max_body=max_response + 65536)
        self._startup: asyncio.Future[dict[str, Any]] | None = None
        self._death_reason: str | None = None
        self._kill_reason: str | None = None
        self._background = Background()
        # A zygote's reports of how its forks ended (pool/zygote.py).
        self.on_report: Callable[[dict[str, Any]], None] | None = None
        # Kept rather than looked up per call (asyncio's lookup costs a getpid() syscall).
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    # -- lifecycle ---------------------------------------------------------------
    async def start(
        self,
        sandbox: SafeSandbox,
        init: dict[str, Any],
        timeout: float,
        *,
        greeted: bool = False,
    ) -> None:
        """Attach to a freshly created sandbox, run the init handshake, become ready.
        ``greeted``: its runtime's hello was read already (a prewarmed sandbox)."""
        loop = self._loop = asyncio.get_running_loop()
        self.sandbox = sandbox
        self._startup = loop.create_future()
        sandbox.exited.add_done_callback(self._on_exit)
        await loop.create_unix_connection(lambda: self, sock=sandbox.channel)
        t0 = time.perf_counter()
        try:
            if not greeted:
                check_hello(await asyncio.wait_for(asyncio.shield(self._startup), timeout))
                self._startup = loop.create_future()
            self._write(encode(init))
            ready = await asyncio.wait_for(asyncio.shield(self._startup), timeout)
        except TimeoutError:
            await self.destroy("start timed out")
            raise ReplicaFailed(f"replica did not start within {timeout:g}s") from None
        except FaasboxError:
            await self.destroy("start failed")
            raise
        if ready.get("t") == "init_error":
            await self.destroy("init failed")
            raise ReplicaFailed(
                f"handler failed to load: {ready.get('type')}: {ready.get('message')}"
            )
        self.init_ms = (time.perf_counter() - t0) * 1000
        try:  # the runtime's own account of its init (the import), as the runtime reports it
            self.import_ms = max(0.0, float(ready.get("init_ms", 0.0)))
        except (TypeError, ValueError):
            self.import_ms = 0.0
        self.alive = True
        self._startup = None

    async def attach(self, sandbox: SafeSandbox) -> None:
        """Attach to a sandbox whose runtime is ready already (a fork of a zygote)."""
        loop = self._loop = asyncio.get_running_loop()
        self.sandbox = sandbox
        sandbox.exited.add_done_callback(self._on_exit)
        await loop.create_unix_connection(lambda: self, sock=sandbox.channel)
        self.alive = True

    async def destroy(self, reason: str = "destroyed") -> None:
        self._die(reason, ReplicaFailed(f"replica {reason}"))
        if self.sandbox is not None:
            await self.sandbox.destroy()

    def _die(self, reason: str, exc: FaasboxError) -> None:
        was_alive = self.alive or self._death_reason is None
        if self._death_reason is None:
            self._death_reason = reason
        self.alive = False
        if self._startup is not None and not self._startup.done():
            self._startup.set_exception(exc)
            # Nobody may be waiting yet; avoid "exception was never retrieved".
            self._startup.exception()
        pending, self._pending = self._pending, {}
        # A call whose timeout is running may have started; the others were queued behind
        # it and never began, so they may run on another replica.
        self._armed = 0
        for c in pending.values():
            started = c.timer is not None
            if c.timer is not None:
                c.timer.cancel()
            if not c.fut.done():
                c.fut.set_exception(
                    exc if started else NotStarted(f"replica {reason} before the call began")
                )
        self.inflight = 0
        if self._transport is not None:
            self._transport.close()
        if was_alive:
            self._on_death(self)

    def _on_exit(self, fut: asyncio.Future[ExitStatus]) -> None:
        if self._death_reason is not None:
            return
        status = fut.result()
        log.warning(
            "replica exited function=%s replica=%s %s", self.function, self.id, status.describe()
        )
        if status.oom_killed:
            exc: FaasboxError = OutOfMemory(
                f"out of memory (limit {format_bytes(self.memory_bytes)}): replica was killed"
            )
        else:
            exc = ReplicaFailed(f"replica crashed ({status.describe()})")
        self._die(status.describe(), exc)
        if self.sandbox is not None:
            self._background.spawn(self.sandbox.destroy())

    # -- invocations -------------------------------------------------------------
    def call(self, head: dict[str, Any], body: bytes, timeout: float) -> asyncio.Future[Response]:
        """Send one invocation; the future resolves with the response or an InvocationError."""
        rid = next(self._ids)
        head["id"] = rid
        loop = self._loop
        self._write(encode(head, body))
        fut: asyncio.Future[Response] = loop.create_future()
        c = self._pending[rid] = _Call(rid, head.get("cid", ""), fut, timeout)
        if self._armed < self.concurrency:
            # It starts now. A call queued behind others gets its timeout when it starts,
            # so time spent queued never counts against the function's timeout.
            c.timer = loop.call_later(timeout, self._on_timeout, rid, timeout)
            self._armed += 1
        self.inflight += 1
        return fut

    def _arm_next(self) -> None:
        for c in self._pending.values():
            if c.timer is None:
                c.timer = self._loop.call_later(c.timeout, self._on_timeout, c.rid, c.timeout)
                self._armed += 1
                return

    def current_call_id(self) -> str:
        """The running call when only one can run (the oldest sent); for attributing
        output the runtime did not tag."""
        if self.concurrency == 1 and self._pending:
            return next(iter(self._pending.values())).call_id
        return ""

    def _on_timeout(self, rid: int, timeout: float) -> None:
        entry = self._pending.pop(rid, None)
        if entry is None:
            return
        fut = entry.fut
        if not fut.done():
            fut.set_exception(InvocationTimeout(f"function timed out after {timeout:g}s"))
        # The runtime is stuck in the handler: it cannot be trusted with another call.
        self._background.spawn(self.destroy("timed out"))

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ReplicaFailed(f"replica {self.id} is not connected")
        self._transport.write(data)

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._decoder.feed(data)
        except ProtocolError as exc:
            err: FaasboxError = (
                ResponseTooLarge(f"response too large: {exc}")
                if isinstance(exc, FrameTooLarge)
                else ReplicaFailed(f"runtime protocol violation: {exc}")
            )
            self._die("protocol violation", err)
            if self.sandbox is not None:
                self._background.spawn(self.sandbox.destroy())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._death_reason is None:
            # Usually the process is exiting: wait briefly for its status, so callers
            # learn why (exit code, signal, out of memory) rather than "channel closed".
            self._background.spawn(self._channel_closed())

    async def _channel_closed(self) -> None:
        if self.sandbox is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.sandbox.exited), 1.0)
        if self._death_reason is None:  # the exit callback did not explain it
            self._die("channel closed", ReplicaFailed("replica closed its channel unexpectedly"))
            if self.sandbox is not None:
                await self.sandbox.destroy()

    def _on_frame(self, head: dict[str, Any], body: bytes) -> None:
        t = head.get("t")
        if t == "res" or t == "err":
            rid = head.get("id")
            entry = self._pending.pop(rid, None)  # type: ignore[arg-type]
            if entry is None:
                return  # timed out already
            fut = entry.fut
            if entry.timer is not None:
                entry.timer.cancel()
                self._armed -= 1
                if len(self._pending) > self._armed:
                    self._arm_next()
            self.inflight -= 1
            self.last_used = time.monotonic()
            if not fut.done():
                if t == "res":
                    fut.set_result((int(head.get("s", 200)), head.get("h") or [], body))
                else:
                    fut.set_exception(self._error(head))
            if self._kill_reason is not None:
                self._die(self._kill_reason, ReplicaFailed(f"replica {self._kill_reason}"))
                if self.sandbox is not None:
                    self._background.spawn(self.sandbox.destroy())
            elif self.alive:
                self._on_slot_free(self)
        elif t == "exit":
            if self.on_report is not None:
                self.on_report(head)
        elif self._startup is not None and not self._startup.done():
            self._startup.set_result(head)

    def _error(self, head: dict[str, Any]) -> FaasboxError:
        kind, message = str(head.get("type", "Error")), str(head.get("message", ""))
        if kind == "MemoryError":
            # Its heap may be in any state now: replace it.
            self._kill_reason = "ran out of memory"
            return OutOfMemory(f"out of memory (limit {format_bytes(self.memory_bytes)})")
        if kind == "ResponseTooLarge":
            return ResponseTooLarge(message)
        return HandlerError(f"{kind}: {message}" if message else kind)
