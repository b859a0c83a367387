"""Prewarmed sandboxes ("stem cells", as OpenWhisk calls them): sandboxes created, and
their runtime started, before anyone knows which function they will run. A cold start
takes one and only injects its function (``ReplicaFactory``), skipping the sandbox's
creation and the interpreter's start.

A stem cell serves one function, once: once taken it belongs to that replica and dies
with it; it is never put back. The pool keeps ``target`` cells ready, where ``target`` is
the number of cold starts that asked for one in the last ``window`` seconds, kept between
``size`` and ``max_size``. It refills in the background, one cell at a time, and trims
the surplus once demand falls; ``take`` only pops, so the request path never waits for a
sandbox to be made.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from faasbox.background import Background
from faasbox.sandbox.api import ExitStatus, OutputSink
from faasbox.sandbox.safety import SafeSandbox

log = logging.getLogger("faasbox.prewarm")

# What a stem cell may print before it is claimed, kept to explain its failure.
EARLY_OUTPUT = 4096
# A refill forks the platform and starts an interpreter: it waits until no cell was taken
# for this long, so that it does not compete with the cold starts that took them (a burst
# of them, too), but no longer than REFILL_MAX_DELAY after the first take.
REFILL_DELAY = 0.05
REFILL_MAX_DELAY = 0.5


class ForwardingSink:
    """A stem cell's output sink: keeps the first bytes until the cell is claimed, then
    forwards everything to its replica's log stream (``target``)."""

    __slots__ = ("early", "target")

    def __init__(self) -> None:
        self.target: OutputSink | None = None
        self.early = bytearray()

    def __call__(self, stream: str, data: bytes) -> None:
        target = self.target
        if target is not None:
            target(stream, data)
        elif len(self.early) < EARLY_OUTPUT:
            self.early += data[: EARLY_OUTPUT - len(self.early)]


class StemCell:
    __slots__ = ("sandbox", "sink")

    def __init__(self, sandbox: SafeSandbox, sink: ForwardingSink) -> None:
        self.sandbox = sandbox
        self.sink = sink


class PrewarmPool:
    def __init__(
        self,
        create: Callable[[], Awaitable[StemCell]],
        *,
        size: int,
        max_size: int,
        window: float = 10.0,
        retry: float = 1.0,
    ) -> None:
        self._create = create
        self.size = size
        self.max_size = max(size, max_size)
        self.window = window
        self.retry = retry
        self.starting = 0
        self._ready: deque[StemCell] = deque()
        # When each recent cold start asked for a cell, oldest first.
        self._demand: deque[float] = deque()
        self._wake = asyncio.Event()
        self._wake_handle: asyncio.TimerHandle | None = None
        self._first_take = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[None] | None = None
        self._closed = False
        self._background = Background()

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def target(self) -> int:
        return min(max(len(self._demand), self.size), self.max_size)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._refill())

    def take(self) -> StemCell | None:
        """A ready stem cell, now, or None; either way the demand counts towards the
        pool's size."""
        now = time.monotonic()
        self._demand.append(now)
        self._expire(now)
        cell = None
        while self._ready:
            candidate = self._ready.popleft()  # the oldest: none sits for long
            if not candidate.sandbox.destroyed and not candidate.sandbox.exited.done():
                cell = candidate
                break
        loop = asyncio.get_running_loop()
        at = loop.time()
        if self._wake_handle is None:
            self._first_take = at
        else:
            self._wake_handle.cancel()
        due = min(at + REFILL_DELAY, self._first_take + REFILL_MAX_DELAY)
        self._wake_handle = loop.call_at(due, self._wake_up)
        return cell

    def _wake_up(self) -> None:
        self._wake_handle = None
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        for handle in (self._timer, self._wake_handle):
            if handle is not None:
                handle.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        cells, self._ready = list(self._ready), deque()
        await asyncio.gather(*(c.sandbox.destroy() for c in cells), return_exceptions=True)

    # -- sizing ------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        demand = self._demand
        while demand and demand[0] <= now - self.window:
            demand.popleft()
        if demand and self._timer is None and not self._closed:
            due = demand[0] + self.window - now
            self._timer = asyncio.get_running_loop().call_later(max(due, 0.01), self._retarget)

    def _retarget(self) -> None:
        self._timer = None
        self._expire(time.monotonic())
        self._trim()

    def _trim(self) -> None:
        while len(self._ready) > self.target:
            self._background.spawn(self._ready.popleft().sandbox.destroy())

    # -- refill --------------------------------------------------------------------------
    async def _refill(self) -> None:
        failures = 0
        while not self._closed:
            if len(self._ready) >= self.target:
                # No await between the check and the wait: a take() cannot slip between.
                self._wake.clear()
                await self._wake.wait()
                continue
            self.starting = 1
            try:
                cell = await self._create()
            except Exception as exc:
                failures += 1
                delay = min(self.retry * 2 ** (failures - 1), 30.0)
                log.warning("prewarm: a sandbox failed to start (retry in %gs): %s", delay, exc)
                await asyncio.sleep(delay)  # back off; demand still wakes nothing sooner
                continue
            finally:
                self.starting = 0
            failures = 0
            if self._closed:
                await cell.sandbox.destroy()
                return
            self._ready.append(cell)
            cell.sandbox.exited.add_done_callback(functools.partial(self._on_exit, cell))
            self._trim()  # demand may have fallen while it started

    def _on_exit(self, cell: StemCell, _: asyncio.Future[ExitStatus]) -> None:
        """A ready cell died (killed, crashed): forget it and make another."""
        with contextlib.suppress(ValueError):
            self._ready.remove(cell)
            log.warning(
                "prewarm: a ready sandbox ended sandbox=%s output=%r",
                cell.sandbox.id,
                bytes(cell.sink.early[:200]),
            )
            self._background.spawn(cell.sandbox.destroy())
            self._wake.set()
