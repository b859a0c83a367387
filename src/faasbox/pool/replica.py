"""One replica: a sandbox running the runtime, and the host end of its protocol.

Responses are matched to requests by id in ``data_received``: no task per request and no
reader loop, only the event loop's own socket callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from faasbox.background import Background
from faasbox.errors import (
    FaasboxError,
    HandlerError,
    InvalidResponse,
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

# (status, headers, body): headers checked, names lower-case, without hop headers.
Response = tuple[int, list[tuple[bytes, bytes]], bytes]

# Headers the gateway computes itself, or that describe the hop rather than the message.
HOP_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)
# A header name is a token (RFC 9110; lower-cased here); a value holds no control
# character but tab. Anything else could end the header block or split the response.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def checked_response(status: object, headers: object, body: bytes) -> Response:
    """A runtime's answer as it may go to a client, or ``InvalidResponse``: the frame
    comes from the function's sandbox and is not trusted."""
    if type(status) is not int or not 100 <= status <= 599:
        raise InvalidResponse(f"the function answered with an invalid status: {status!r:.40}")
    out: list[tuple[bytes, bytes]] = []
    try:
        for name, value in headers:  # type: ignore[attr-defined]
            name = name.lower()
            if name in HOP_HEADERS:
                continue
            if not _NAME.fullmatch(name) or _BAD_VALUE.search(value):
                raise InvalidResponse(
                    f"the function answered with an invalid header: {name!r:.60}: {value!r:.60}"
                )
            out.append((name.encode("ascii"), value.encode("latin-1", "replace")))
    except (TypeError, ValueError, AttributeError):
        raise InvalidResponse("the function answered with malformed headers") from None
    return status, out, body


# Told how a call ended: its response, or the error (then the response is None).
OnDone = Callable[[Response | None, FaasboxError | None], None]


class _Call:
    __slots__ = ("call_id", "deadline", "on_done", "rid", "timeout")

    def __init__(self, rid: int, call_id: str, on_done: OnDone, timeout: float) -> None:
        self.rid = rid
        self.call_id = call_id
        self.on_done = on_done
        self.timeout = timeout
        # When its timeout runs out (loop time), once it can have started; 0.0 before.
        self.deadline = 0.0


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
        # One timer for all of them, due at the earliest deadline or before (a call that
        # ends cancels nothing: the timer, when it fires, looks again).
        self._timer: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)
        # Call frames waiting for the end of this turn of the loop (``_send``).
        self._out: list[bytes] = []
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.inflight = 0
        not_started: FaasboxError | None = None
        for c in pending.values():
            if c.deadline:
                self._tell(c, None, exc)
            else:
                if not_started is None:
                    not_started = NotStarted(f"replica {reason} before the call began")
                self._tell(c, None, not_started)
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
        """Send one invocation; the future resolves with the response or a FaasboxError."""
        fut: asyncio.Future[Response] = self._loop.create_future()

        def done(response: Response | None, exc: FaasboxError | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            elif response is not None:
                fut.set_result(response)

        self.send_call(head, body, timeout, done)
        return fut

    def send_call(self, head: dict[str, Any], body: bytes, timeout: float, on_done: OnDone) -> None:
        """Send one invocation; ``on_done`` is called once, from the event loop's callbacks
        (never from within this method), with the response or a FaasboxError: the hot
        path's form of ``call``, with no future and no extra turn of the loop."""
        rid = next(self._ids)
        head["id"] = rid
        self._send(encode(head, body))
        c = self._pending[rid] = _Call(rid, head.get("cid", ""), on_done, timeout)
        if self._armed < self.concurrency:
            # It starts now. A call queued behind others gets its timeout when it starts,
            # so time spent queued never counts against the function's timeout.
            self._arm(c)
        self.inflight += 1

    def _arm(self, c: _Call) -> None:
        c.deadline = deadline = self._loop.time() + c.timeout
        self._armed += 1
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check_deadlines)

    def _arm_next(self) -> None:
        for c in self._pending.values():
            if not c.deadline:
                self._arm(c)
                return

    def _check_deadlines(self) -> None:
        self._timer = None
        now = self._loop.time()
        earliest = 0.0
        for c in self._pending.values():
            if not c.deadline:
                break  # the calls that can have started come first
            if c.deadline <= now:
                self._on_timeout(c)
                return
            if not earliest or c.deadline < earliest:
                earliest = c.deadline
        if earliest:
            self._timer = self._loop.call_at(earliest, self._check_deadlines)

    @staticmethod
    def _tell(c: _Call, response: Response | None, exc: FaasboxError | None) -> None:
        try:
            c.on_done(response, exc)
        except Exception:  # a bug in a caller's callback must not break the channel
            log.exception("a call's completion callback failed")

    def current_call_id(self) -> str:
        """The running call when only one can run (the oldest sent); for attributing
        output the runtime did not tag."""
        if self.concurrency == 1 and self._pending:
            return next(iter(self._pending.values())).call_id
        return ""

    def _on_timeout(self, c: _Call) -> None:
        del self._pending[c.rid]
        self._armed -= 1
        self.inflight -= 1
        self._tell(c, None, InvocationTimeout(f"function timed out after {c.timeout:g}s"))
        # The runtime is stuck in the handler: it cannot be trusted with another call.
        self._background.spawn(self.destroy("timed out"))

    def _connected(self) -> asyncio.Transport:
        if self._transport is None or self._transport.is_closing():
            raise ReplicaFailed(f"replica {self.id} is not connected")
        return self._transport

    def _write(self, data: bytes) -> None:
        self._connected().write(data)

    def _send(self, frame: bytes) -> None:
        """Queue a call's frame; the frames queued during one turn of the event loop go to
        the runtime in one write (one wake-up of the replica instead of one per call)."""
        self._connected()
        out = self._out
        out.append(frame)
        if len(out) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

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
            if entry.deadline:
                self._armed -= 1
                if len(self._pending) > self._armed:
                    self._arm_next()
            self.inflight -= 1
            self.last_used = time.monotonic()
            response: Response | None = None
            exc: FaasboxError | None = None
            if t == "res":
                try:
                    response = checked_response(head.get("s", 200), head.get("h") or (), body)
                except InvalidResponse as bad:
                    exc = bad
            else:
                exc = self._error(head)
            # The slot goes back (or the replica away) before the caller hears: a call the
            # caller starts from its callback sees the pool as it now is.
            if self._kill_reason is not None:
                self._die(self._kill_reason, ReplicaFailed(f"replica {self._kill_reason}"))
                if self.sandbox is not None:
                    self._background.spawn(self.sandbox.destroy())
            elif self.alive:
                self._on_slot_free(self)
            self._tell(entry, response, exc)
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
