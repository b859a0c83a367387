"""The pool of one function: warm replicas, free slots, a bounded wait queue, cold starts,
keep-alive and scale to zero. This is the hot path.

Free slots live in a deque: a replica with concurrency N appears N times while idle. The
deque is used LIFO so that traffic concentrates on the most recently used replicas and the
others go idle and are reaped. Stale entries (dead or retiring replicas) are skipped lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Protocol

from faasbox.background import Background
from faasbox.deployment import Deployment
from faasbox.errors import (
    FaasboxError,
    InvocationTimeout,
    NotStarted,
    ReplicaFailed,
    TooManyRequests,
)
from faasbox.pool.replica import Replica, Response

log = logging.getLogger("faasbox.pool")


class Starter(Protocol):
    async def start(self, d: Deployment, on_slot_free: Any, on_death: Any) -> Replica: ...


class Invocation:
    """The outcome of one call through the pool."""

    __slots__ = ("cold", "init_ms", "replica", "response", "start_path", "version")

    def __init__(
        self,
        response: Response,
        cold: bool,
        init_ms: float,
        replica: str,
        version: int,
        start_path: str = "",
    ) -> None:
        self.response = response
        self.cold = cold
        self.init_ms = init_ms
        self.replica = replica
        self.version = version
        # For a cold call, how its replica's sandbox came to be (Replica.start_path).
        self.start_path = start_path


class FunctionPool:
    def __init__(self, deployment: Deployment, starter: Starter) -> None:
        self.deployment = deployment
        self.starter = starter
        self.replicas: set[Replica] = set()
        self.starting = 0
        self._free: deque[Replica] = deque()
        self._waiters: deque[asyncio.Future[Replica]] = deque()
        self._reap_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._background = Background()

    # -- hot path ------------------------------------------------------------------
    async def invoke(self, head: dict[str, Any], body: bytes) -> Invocation:
        for attempt in range(3):
            replica = self.take_free()
            cold = False
            if replica is None:
                replica, cold = await self._acquire_slow()
            replica.last_used = time.monotonic()
            try:
                response = await replica.call(head, body, self.deployment.timeout)
            except NotStarted:
                if attempt == 2:
                    raise
                continue  # queued behind a call that killed its replica: run it elsewhere
            except FaasboxError as exc:
                exc.replica, exc.version = replica.id, replica.version
                exc.cold_ms = replica.init_ms if cold else None
                raise
            if cold:
                return Invocation(
                    response, True, replica.init_ms, replica.id, replica.version, replica.start_path
                )
            return Invocation(response, False, 0.0, replica.id, replica.version)
        raise AssertionError("unreachable")

    def take_free(self) -> Replica | None:
        """A free slot of a warm replica of the current version, now, or None."""
        free = self._free
        version = self.deployment.version
        while free:
            r = free.pop()
            if r.alive and not r.retiring and r.version == version:
                return r
        return None

    def _on_slot_free(self, r: Replica) -> None:
        if r.retiring:
            if r.inflight == 0:
                self._spawn(r.destroy("retired"))
            return
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                r.last_used = time.monotonic()
                fut.set_result(r)
                return
        if r.inflight >= r.concurrency:
            return  # a queued call of this replica takes the slot that just freed
        self._free.append(r)
        if r.inflight == 0 and self._reap_handle is None:
            self._schedule_reap(self.deployment.idle_timeout)

    # -- capacity ------------------------------------------------------------------
    async def _acquire_slow(self) -> tuple[Replica, bool]:
        d = self.deployment
        if self._closed:
            raise ReplicaFailed(f"function {d.name!r} is being removed")
        if len(self.replicas) + self.starting < d.max_replicas:
            return await self._cold_start(d), True
        queued = self._least_loaded()
        if queued is not None:
            return queued, False
        if len(self._waiters) >= d.max_queue:
            raise TooManyRequests(
                f"function {d.name!r} is at capacity ({d.max_replicas} "
                f"replica{'s' if d.max_replicas != 1 else ''}, each "
                f"running {d.concurrency} and holding {d.prefetch} queued; {d.max_queue} "
                "waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Replica] = loop.create_future()
        self._waiters.append(fut)
        handle = loop.call_later(d.timeout, self._waiter_timeout, fut, d.timeout)
        try:
            return await fut, False
        finally:
            handle.cancel()

    def take_queued(self) -> Replica | None:
        """At max replicas with every slot busy: a replica with room to queue one more call
        in its channel, now, or None (what ``invoke`` would otherwise wait or start for)."""
        d = self.deployment
        if self._closed or len(self.replicas) + self.starting < d.max_replicas:
            return None
        return self._least_loaded()

    def _least_loaded(self) -> Replica | None:
        """At max replicas, every slot busy: the replica with the fewest calls, if it has
        room to queue one more in its channel (see ``Replica.capacity``)."""
        best: Replica | None = None
        version = self.deployment.version
        for r in self.replicas:
            if (
                r.alive
                and not r.retiring
                and r.version == version
                and r.inflight < r.capacity
                and (best is None or r.inflight < best.inflight)
            ):
                best = r
        return best

    @staticmethod
    def _waiter_timeout(fut: asyncio.Future[Replica], timeout: float) -> None:
        if not fut.done():
            fut.set_exception(InvocationTimeout(f"no replica became free within {timeout:g}s"))

    async def _cold_start(self, d: Deployment) -> Replica:
        self.starting += 1
        try:
            r = await self.starter.start(d, self._on_slot_free, self._on_death)
        except FaasboxError as exc:
            if not self.replicas and self.starting == 1:
                self._fail_waiters(exc)
            raise
        finally:
            self.starting -= 1
        if self._closed:
            self._spawn(r.destroy("function removed"))
            raise ReplicaFailed(f"function {d.name!r} was removed")
        self.replicas.add(r)
        if r.version != self.deployment.version:
            r.retiring = True
        log.info(
            "replica started function=%s version=%s replica=%s init_ms=%.1f path=%s",
            d.name,
            d.version,
            r.id,
            r.init_ms,
            r.start_path,
        )
        # The starter takes one slot; the others serve whoever waits.
        for _ in range(r.concurrency - 1):
            self._on_slot_free(r)
        return r

    def _fail_waiters(self, exc: FaasboxError) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def _on_death(self, r: Replica) -> None:
        self.replicas.discard(r)
        if self._closed:
            return
        d = self.deployment
        # Callers still waiting for a slot would otherwise wait for a replica that is gone.
        if self._waiters and len(self.replicas) + self.starting < d.max_replicas:
            self._spawn(self._start_for_waiters(d))

    async def _start_for_waiters(self, d: Deployment) -> None:
        with contextlib.suppress(FaasboxError):
            r = await self._cold_start(d)
            self._on_slot_free(r)

    # -- keep-alive --------------------------------------------------------------------
    def _schedule_reap(self, delay: float) -> None:
        self._reap_handle = asyncio.get_running_loop().call_later(max(delay, 0.05), self._reap)

    def _reap(self) -> None:
        self._reap_handle = None
        d = self.deployment
        now = time.monotonic()
        idle = sorted(
            (r for r in self.replicas if r.alive and r.inflight == 0 and not r.retiring),
            key=lambda r: r.last_used,
        )
        alive = sum(1 for r in self.replicas if r.alive)
        next_due: float | None = None
        for r in idle:
            if alive <= d.min_replicas:
                break
            due = r.last_used + d.idle_timeout
            if due <= now:
                alive -= 1
                log.info("replica idle, stopping function=%s replica=%s", d.name, r.id)
                self._spawn(r.destroy("idle"))
            elif next_due is None:
                next_due = due
        if next_due is not None:
            self._schedule_reap(next_due - now)

    # -- management ------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        """Calls running or queued in replicas."""
        return sum(r.inflight for r in self.replicas)

    @property
    def waiting(self) -> int:
        """Callers waiting in the pool for a replica."""
        return sum(1 for w in self._waiters if not w.done())

    @property
    def available(self) -> int:
        return sum(1 for r in self.replicas if r.alive and not r.retiring)

    def replace(self, deployment: Deployment) -> None:
        """Roll to a new version: new calls go to it; old replicas drain, then stop."""
        self.deployment = deployment
        for r in list(self.replicas):
            if r.version != deployment.version:
                r.retiring = True
                if r.inflight == 0:
                    self._spawn(r.destroy("replaced by a new version"))
        self._spawn(self.ensure_min())

    async def ensure_min(self) -> None:
        await self.scale_to(self.deployment.min_replicas, only_up=True)

    async def scale_to(self, n: int, *, only_up: bool = False) -> None:
        """Start replicas up to ``n`` (capped at max), or with ``n == 0`` drain them all."""
        d = self.deployment
        if n == 0 and not only_up:
            for r in list(self.replicas):
                r.retiring = True
                if r.inflight == 0:
                    self._spawn(r.destroy("scaled to zero"))
            return
        want = min(n, d.max_replicas) - (self.available + self.starting)
        results = await asyncio.gather(
            *(self._cold_start(d) for _ in range(max(want, 0))), return_exceptions=True
        )
        for res in results:
            if isinstance(res, Replica):
                self._on_slot_free(res)
            elif isinstance(res, BaseException):
                log.warning("scale-up failed function=%s: %s", d.name, res)

    async def close(self) -> None:
        self._closed = True
        if self._reap_handle is not None:
            self._reap_handle.cancel()
        self._fail_waiters(ReplicaFailed(f"function {self.deployment.name!r} was removed"))
        await asyncio.gather(
            *(r.destroy("function removed") for r in list(self.replicas)),
            return_exceptions=True,
        )
        self._background.cancel_all()

    def _spawn(self, coro: Any) -> None:
        self._background.spawn(coro)
