"""The pool's slot accounting with a fake starter (a unit: the real thing is tested
through HTTP in tests/integration)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from faasbox.deployment import Deployment
from faasbox.errors import ReplicaFailed, TooManyRequests
from faasbox.pool.pool import FunctionPool


class FakeReplica:
    def __init__(self, n: int, d: Deployment, on_free: Any, on_death: Any) -> None:
        self.id = f"r{n}"
        self.version = d.version
        self.concurrency = d.concurrency
        self.capacity = d.concurrency + d.prefetch
        self.alive = True
        self.retiring = False
        self.inflight = 0
        self.init_ms = 1.0
        self.start_path = "created"
        self.last_used = 0.0
        self.on_free = on_free
        self.on_death = on_death
        self.gates: list[asyncio.Future[Any]] = []
        self.destroyed = False

    def call(self, head: dict, body: bytes, timeout: float) -> asyncio.Future[Any]:
        self.inflight += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.gates.append(fut)
        return fut

    def finish(self) -> None:
        fut = self.gates.pop(0)
        fut.set_result((200, [], b"ok"))
        self.inflight -= 1
        self.on_free(self)

    async def destroy(self, reason: str = "") -> None:
        self.destroyed = True
        self.alive = False
        self.on_death(self)


class FakeStarter:
    def __init__(self) -> None:
        self.started: list[FakeReplica] = []
        self.fail = False

    async def start(self, d: Deployment, on_free: Any, on_death: Any) -> FakeReplica:
        await asyncio.sleep(0)
        if self.fail:
            raise ReplicaFailed("cannot start")
        r = FakeReplica(len(self.started), d, on_free, on_death)
        self.started.append(r)
        return r


def _dep(**kw: Any) -> Deployment:
    base: dict[str, Any] = {
        "name": "f",
        "version": 1,
        "runtime": "python3",
        "handler": "h.h",
        "code_dir": Path("/nonexistent"),
    }
    return Deployment(**{**base, **kw})


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.anyio
async def test_reuses_warm_replica_and_scales_to_max_then_queues_then_429() -> None:
    starter = FakeStarter()
    pool = FunctionPool(_dep(max_replicas=2, max_queue=1, prefetch=0), starter)  # type: ignore[arg-type]
    calls = [asyncio.ensure_future(pool.invoke({}, b"")) for _ in range(3)]
    await _settle()
    assert len(starter.started) == 2, "two replicas start; the third caller waits"
    with pytest.raises(TooManyRequests):
        await pool.invoke({}, b"")
    r0 = starter.started[0]
    r0.finish()  # frees a slot: handed straight to the waiter
    await _settle()
    assert len(r0.gates) == 1 and r0.inflight == 1
    r0.finish()
    starter.started[1].finish()
    results = await asyncio.gather(*calls)
    assert [x.cold for x in results].count(True) == 2
    # Warm now: no new replica
    call = asyncio.ensure_future(pool.invoke({}, b""))
    await _settle()
    assert len(starter.started) == 2
    starter.started[1].finish()  # LIFO: the most recently freed replica serves
    assert (await call).cold is False


@pytest.mark.anyio
async def test_failed_start_fails_the_caller_and_waiters() -> None:
    starter = FakeStarter()
    starter.fail = True
    pool = FunctionPool(_dep(max_replicas=1), starter)  # type: ignore[arg-type]
    first = asyncio.ensure_future(pool.invoke({}, b""))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(pool.invoke({}, b""))
    with pytest.raises(ReplicaFailed):
        await first
    with pytest.raises(ReplicaFailed):
        await second


@pytest.mark.anyio
async def test_replace_retires_old_version_after_inflight() -> None:
    starter = FakeStarter()
    pool = FunctionPool(_dep(), starter)  # type: ignore[arg-type]
    call = asyncio.ensure_future(pool.invoke({}, b""))
    await _settle()
    old = starter.started[0]
    pool.replace(_dep(version=2))
    await _settle()
    assert not old.destroyed, "in flight: keeps running"
    old.finish()
    await call
    await _settle()
    assert old.destroyed
    new_call = asyncio.ensure_future(pool.invoke({}, b""))
    await _settle()
    assert starter.started[-1].version == 2
    starter.started[-1].finish()
    assert (await new_call).version == 2


@pytest.mark.anyio
async def test_prefetch_queues_in_the_least_loaded_replica_only_at_max() -> None:
    starter = FakeStarter()
    pool = FunctionPool(_dep(max_replicas=2, max_queue=0, prefetch=1), starter)  # type: ignore[arg-type]
    calls = [asyncio.ensure_future(pool.invoke({}, b"")) for _ in range(2)]
    await _settle()
    calls += [asyncio.ensure_future(pool.invoke({}, b"")) for _ in range(2)]
    await _settle()
    assert len(starter.started) == 2
    assert sorted(r.inflight for r in starter.started) == [2, 2]
    with pytest.raises(TooManyRequests):
        await pool.invoke({}, b"")
    r0 = starter.started[0]
    r0.finish()  # the queued call moves up; no slot becomes free
    await _settle()
    assert r0.inflight == 1 and list(pool._free) == []
    r0.finish()
    await _settle()
    assert list(pool._free) == [r0]
    for r in starter.started:
        while r.gates:
            r.finish()
    await asyncio.gather(*calls)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
