"""Runs queued invocations through the functions' pools: retries with backoff, dead
letters, callbacks, and the metrics of it all.

Fairness to synchronous callers: a function's async calls in flight never take its last
slot (at most ``max_replicas * concurrency - 1``, and at least one), and none starts while
synchronous callers wait in its pool for a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faasbox.background import Background
from faasbox.errors import FaasboxError, FunctionNotFound, ReplicaFailed
from faasbox.gateway.errors import error_json
from faasbox.queue.api import DEAD, FAILED, SUCCEEDED, Attempt, Depth, Response, Task, TaskQueue

if TYPE_CHECKING:
    from faasbox.observability.activations import ActivationLog
    from faasbox.observability.metrics import Metrics
    from faasbox.pool.pool import FunctionPool, Invocation

log = logging.getLogger("faasbox.queue")

# Deliveries of a callback (retries of its own, apart from the invocation's), the first
# retry after about the retry base, doubling.
CALLBACK_ATTEMPTS = 4
CALLBACK_TIMEOUT = 10.0
MAX_BACKOFF = 300.0
# How often queued tasks are checked for their maximum age (those that could not run: a
# call that runs is checked when it is claimed).
EXPIRE_EVERY = 5.0
# While every due task waits for room, look again this often (room frees without a wake-up
# when synchronous callers stop waiting).
BLOCKED_RECHECK = 0.25


class Expired(FaasboxError):
    status = 504
    code = "expired"


def retryable(status: int) -> bool:
    """Worth another try: the function or the platform failed (5xx), or was at capacity."""
    return status >= 500 or status == 429


def backoff(retry: int, base: float) -> float:
    """Seconds before retry number ``retry`` (1, 2, ...): exponential with equal jitter."""
    ceiling = min(MAX_BACKOFF, base * 2.0 ** (retry - 1))
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)


def task_head(pool: FunctionPool, task: Task) -> dict[str, Any]:
    """The run frame's head for a queued call: as a synchronous call's, plus its attempt
    (``context.attempt`` and the ``X-Faasbox-Attempt`` header in the function)."""
    r = task.request
    return {
        "t": "run",
        "cid": task.call_id,
        "m": r.method,
        "p": r.path,
        "q": r.query,
        "h": [[k, v] for k, v in r.headers] + [["X-Faasbox-Attempt", str(task.attempt)]],
        "dl": time.time() + pool.deployment.timeout,
        "at": task.attempt,
    }


class AsyncStats(Collector):
    """``/metrics`` for the queue: depth and oldest age per function (a snapshot taken by
    ``Dispatcher.refresh`` before each scrape), retries, dead letters, outcomes."""

    def __init__(self) -> None:
        self.depth: dict[str, Depth] = {}
        self.accepted: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.finished: Counter[tuple[str, str]] = Counter()
        self.callbacks: Counter[str] = Counter()

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        depth = GaugeMetricFamily(
            "faasbox_async_queue_depth",
            "Asynchronous invocations accepted and not finished (queued or running)",
            labels=["function_name"],
        )
        age = GaugeMetricFamily(
            "faasbox_async_oldest_age_seconds",
            "Age of the oldest unfinished asynchronous invocation",
            labels=["function_name"],
        )
        for name, d in sorted(self.depth.items()):
            depth.add_metric([name], d.tasks)
            age.add_metric([name], max(0.0, now - d.oldest_enqueued_at))
        accepted = CounterMetricFamily(
            "faasbox_async_accepted", "Asynchronous invocations accepted", labels=["function_name"]
        )
        retries = CounterMetricFamily(
            "faasbox_async_retries", "Asynchronous invocations retried", labels=["function_name"]
        )
        dead = CounterMetricFamily(
            "faasbox_async_dead_letters",
            "Asynchronous invocations dead-lettered (retries or age exhausted)",
            labels=["function_name"],
        )
        finished = CounterMetricFamily(
            "faasbox_async_finished",
            "Asynchronous invocations finished, by final state",
            labels=["function_name", "state"],
        )
        callbacks = CounterMetricFamily(
            "faasbox_async_callbacks", "Callback deliveries, by result", labels=["result"]
        )
        for family, counter in ((accepted, self.accepted), (retries, self.retries)):
            for name, n in sorted(counter.items()):
                family.add_metric([name], n)
        for name, n in sorted(self.dead.items()):
            dead.add_metric([name], n)
        for (name, state), n in sorted(self.finished.items()):
            finished.add_metric([name, state], n)
        for result, n in sorted(self.callbacks.items()):
            callbacks.add_metric([result], n)
        yield from (depth, age, accepted, retries, dead, finished, callbacks)


class Dispatcher:
    def __init__(
        self,
        queue: TaskQueue,
        pools: dict[str, FunctionPool],
        activations: ActivationLog,
        metrics: Metrics,
        *,
        retry_base: float = 1.0,
        max_inflight: int = 256,
        exists: Callable[[str], Awaitable[bool]] | None = None,
        drain: float = 10.0,
    ) -> None:
        self.queue = queue
        self.pools = pools
        self.activations = activations
        self.metrics = metrics
        self.retry_base = retry_base
        self.max_inflight = max_inflight
        # On close, how long the calls running then may take to finish.
        self.drain = drain
        # Whether a function without a pool still exists (being built): its queued calls
        # wait; those of a removed one are dead-lettered (``_orphans``).
        self._exists = exists
        self.stats = AsyncStats()
        metrics.registry.register(self.stats)
        self._inflight: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._background = Background()
        # The runs in flight (``_execute``), which ``close`` lets finish.
        self._runs: set[asyncio.Future[Any]] = set()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self._callbacks = asyncio.Semaphore(16)
        self._http: httpx.AsyncClient | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        recovered = await self.queue.recover()
        if recovered:
            log.warning(
                "requeued %d asynchronous invocation(s) that were running when the platform "
                "stopped (they run again: delivery is at least once)",
                recovered,
            )
        self._http = httpx.AsyncClient(timeout=CALLBACK_TIMEOUT, follow_redirects=False)
        for call_id, function, url, response in await self.queue.pending_callbacks():
            self._background.spawn(self._callback(call_id, url, function, response, 0.0))
        self._loop_task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop claiming calls, give the ones running up to ``drain`` seconds to finish
        (and record how they ended), then stop the rest: those run again after the next
        start, with ``context.attempt`` one higher."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._runs and self.drain > 0:
            log.warning(
                "waiting up to %gs for %d running asynchronous invocation(s) to finish",
                self.drain,
                len(self._runs),
            )
            _, left = await asyncio.wait(set(self._runs), timeout=self.drain)
            if left:
                log.warning(
                    "stopping %d asynchronous invocation(s) still running: they run again "
                    "after the restart",
                    len(left),
                )
        self._background.cancel_all()
        if self._http is not None:
            await self._http.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        """Take the queue's depth for the next scrape."""
        self.stats.depth = await self.queue.depth()

    # -- the loop --------------------------------------------------------------------------
    def _room(self) -> dict[str, int]:
        free = self.max_inflight - sum(self._inflight.values())
        room: dict[str, int] = {}
        if free <= 0:
            return room
        for name, pool in self.pools.items():
            if pool.waiting:
                continue  # synchronous callers wait for this function: they go first
            d = pool.deployment
            limit = max(1, d.max_replicas * d.concurrency - 1)
            n = min(free, limit - self._inflight[name])
            if n > 0:
                room[name] = n
        return room

    async def _run(self) -> None:
        next_expire = 0.0
        while True:
            try:
                now = time.time()
                if now >= next_expire:
                    next_expire = now + EXPIRE_EVERY
                    for st in await self.queue.expire(now):
                        await self._expired(st.call_id, st.function, st.callback_url)
                    await self._orphans(now)
                self._wake.clear()
                room = self._room()
                tasks = await self.queue.claim(now, room) if room else []
                for task in tasks:
                    self._inflight[task.function] += 1
                    run = self._background.spawn(self._execute(task))
                    self._runs.add(run)
                    run.add_done_callback(self._runs.discard)
                if tasks:
                    continue  # there may be more, and room for them
                due = await self.queue.next_due()
                if due is None:
                    timeout = EXPIRE_EVERY
                elif due <= time.time():
                    timeout = BLOCKED_RECHECK  # due, but no room: a finishing call wakes us
                else:
                    timeout = min(due - time.time(), EXPIRE_EVERY)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # the queue failed (disk full?): say so, keep going
                log.exception("the asynchronous dispatcher failed; retrying in 1s")
                await asyncio.sleep(1.0)

    async def _orphans(self, now: float) -> None:
        """Dead-letter the queued calls of functions that were removed (they would wait
        for their maximum age): redriven after a redeploy, they run again."""
        if self._exists is None:
            return
        for name in await self.queue.depth():
            if name not in self.pools and not await self._exists(name):
                for st in await self.queue.expire(now, name):
                    await self._expired(st.call_id, st.function, st.callback_url, removed=True)

    async def _expired(
        self, call_id: str, function: str, callback_url: str, *, removed: bool = False
    ) -> None:
        """A call that cannot run any more: it waited past its maximum age (never with
        room), or its function was removed. A dead letter, and its callback says so."""
        self.stats.dead[function] += 1
        self.stats.finished[(function, DEAD)] += 1
        why = "its function was removed" if removed else "expired"
        log.warning(
            "asynchronous invocation dead-lettered call_id=%s function=%s: %s",
            call_id,
            function,
            why,
        )
        if callback_url:
            exc: FaasboxError = (
                FunctionNotFound(function)
                if removed
                else Expired("not run: older than its maximum age")
            )
            response = Response(
                exc.status,
                [("Content-Type", "application/json")],
                error_json(exc.status, exc.code, exc.message),
            )
            await self.queue.finish(call_id, DEAD, None, response)
            self._background.spawn(self._callback(call_id, callback_url, function, response, 0.0))

    # -- one run -----------------------------------------------------------------------------
    async def _execute(self, task: Task) -> None:
        """Run ``task``, then, in the same slot, the calls of its function claimed when it
        was recorded, as long as there are any."""
        current = task
        try:
            while claimed := await self._attempt(current):
                [current] = claimed  # one at most: see _next_room
        except Exception:
            log.exception("asynchronous invocation call_id=%s failed to record", current.call_id)
        finally:
            left = self._inflight[task.function] - 1
            if left > 0:
                self._inflight[task.function] = left
            else:
                self._inflight.pop(task.function, None)
            self._wake.set()

    def _next_room(self, function: str) -> int:
        """How many more calls of ``function`` the slot ending a call may take on: one,
        unless the dispatcher is stopping or synchronous callers wait for the function."""
        if self._closing:
            return 0
        pool = self.pools.get(function)
        return 0 if pool is None or pool.waiting else 1

    async def _attempt(self, task: Task) -> list[Task]:
        """Run ``task`` once and record how it ended; returns the calls of its function
        claimed in the same write (see ``_next_room``)."""
        name = task.function
        start, t0 = time.time(), time.perf_counter()
        pool = self.pools.get(name)
        outcome: Invocation | FaasboxError
        try:
            if task.expired(start):  # it waited past its maximum age for room to run
                raise Expired(f"not run: older than its maximum age ({task.max_age:g}s)")
            if pool is None:
                raise FunctionNotFound(name)
            outcome = await pool.invoke(task_head(pool, task), task.request.body)
        except FaasboxError as exc:
            outcome = exc
        except Exception as exc:  # a bug: record it as the platform's failure, and log it
            log.exception("unexpected error running call_id=%s", task.call_id)
            outcome = ReplicaFailed(f"internal error: {exc}")
        duration = time.perf_counter() - t0
        response, replica, error = self._record(task, outcome, start, duration)
        attempt = Attempt(task.attempt, start, duration, response.status, error, replica)
        status = response.status
        if isinstance(outcome, Expired):
            state = DEAD
        elif not retryable(status):
            state = SUCCEEDED if status < 400 else FAILED
        elif task.retries_left > 0:
            delay = backoff(task.attempt - task.budget_from, self.retry_base)
            if not task.expired(time.time() + delay):
                self.stats.retries[name] += 1
                claimed = await self.queue.retry(
                    task.call_id, attempt, time.time() + delay, claim_next=self._next_room(name)
                )
                log.info(
                    "asynchronous invocation will retry call_id=%s function=%s attempt=%d "
                    "status=%d in=%.2fs",
                    task.call_id,
                    name,
                    task.attempt,
                    status,
                    delay,
                )
                self._wake.set()
                return claimed
            state = DEAD
        else:
            state = DEAD
        if state == DEAD:
            self.stats.dead[name] += 1
            log.warning(
                "asynchronous invocation dead-lettered call_id=%s function=%s attempts=%d: %s",
                task.call_id,
                name,
                task.attempt,
                error or f"status {status}",
            )
        self.stats.finished[(name, state)] += 1
        keep = response if task.callback_url else None
        claimed = await self.queue.finish(
            task.call_id, state, attempt, keep, claim_next=self._next_room(name)
        )
        if task.callback_url:
            self._background.spawn(
                self._callback(task.call_id, task.callback_url, name, response, duration)
            )
        return claimed

    def _record(
        self, task: Task, outcome: Invocation | FaasboxError, start: float, duration: float
    ) -> tuple[Response, str, str]:
        """The attempt's response (the function's, or the platform's error), its replica
        and error; its activation record and metrics."""
        cold_ms: float | None = None
        start_path = ""
        if isinstance(outcome, FaasboxError):
            status = outcome.status
            error = f"{outcome.code}: {outcome.message}"
            response = Response(
                status,
                [("Content-Type", "application/json")],
                error_json(status, outcome.code, outcome.message),
            )
            replica, version, cold_ms = outcome.replica or "", outcome.version, outcome.cold_ms
        else:
            status, headers, body = outcome.response
            response = Response(
                status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers], body
            )
            error = ""
            replica, version = outcome.replica, outcome.version
            if outcome.cold:
                cold_ms, start_path = outcome.init_ms, outcome.start_path
        known = task.function in self.pools
        if known:
            self.metrics.observe(task.function, status, duration, cold_ms, start_path)
        self.activations.add(
            (
                task.call_id,
                task.function,
                version or 0,
                int(start * 1e9),
                duration,
                status,
                cold_ms is not None,
                cold_ms or 0.0,
                replica,
                error,
                start_path,
            )
        )
        return response, replica, error

    # -- callbacks -----------------------------------------------------------------------
    async def _callback(
        self, call_id: str, url: str, function: str, response: Response, duration: float
    ) -> None:
        """POST the function's response to ``url``, as API.md says, retrying on failure;
        it never holds up the queue (each runs on its own, at most 16 at once)."""
        assert self._http is not None
        headers = {
            "X-Call-Id": call_id,
            "X-Function-Name": function,
            "X-Function-Status": str(response.status),
            "X-Duration-Seconds": f"{duration:.6f}",
        }
        for k, v in response.headers:
            if k.lower() == "content-type":
                headers["Content-Type"] = v
        delivered = False
        problem = ""
        for attempt in range(CALLBACK_ATTEMPTS):
            if attempt:
                await asyncio.sleep(backoff(attempt, self.retry_base))
            async with self._callbacks:
                try:
                    r = await self._http.post(url, content=response.body, headers=headers)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    continue
            if r.status_code < 300:
                delivered = True
                break
            problem = f"status {r.status_code}"
            if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                break  # the receiver refuses it: asking again will not help
        self.stats.callbacks["delivered" if delivered else "failed"] += 1
        if not delivered:
            log.warning("callback failed call_id=%s url=%s: %s", call_id, url, problem)
        await self.queue.callback_done(call_id, delivered)
