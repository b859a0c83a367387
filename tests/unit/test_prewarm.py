"""The stem-cell pool's sizing and refill with fake sandboxes (a unit: real stem cells
are tested through HTTP in tests/integration/test_prewarm.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from faasbox.pool import prewarm
from faasbox.pool.prewarm import ForwardingSink, PrewarmPool, StemCell
from faasbox.sandbox.api import ExitStatus

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def quick_refill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prewarm, "REFILL_DELAY", 0.0)


class FakeSandbox:
    ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = f"stem-{next(self.ids)}"
        self.destroyed = False
        self.exited: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()

    async def destroy(self) -> None:
        self.destroyed = True
        if not self.exited.done():
            self.exited.set_result(ExitStatus(None, signal=9))


class Maker:
    def __init__(self) -> None:
        self.made: list[FakeSandbox] = []
        self.failures = 0

    async def __call__(self) -> StemCell:
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("no sandbox today")
        sandbox = FakeSandbox()
        self.made.append(sandbox)
        return StemCell(sandbox, ForwardingSink())  # type: ignore[arg-type]


async def until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.005)


async def test_fills_to_its_size_then_each_take_is_refilled() -> None:
    make = Maker()
    pool = PrewarmPool(make, size=2, max_size=2)
    assert pool.take() is None, "nothing before it started"
    pool.start()
    await until(lambda: pool.ready == 2)
    first = pool.take()
    assert first is not None and pool.ready == 1
    await until(lambda: pool.ready == 2)
    assert len(make.made) == 3, "one new cell for the one taken"
    second = pool.take()
    assert second is not None and second.sandbox is not first.sandbox
    await pool.close()
    assert all(s.destroyed for s in make.made if s not in (first.sandbox, second.sandbox))
    assert not first.sandbox.destroyed, "a taken cell belongs to its replica"


async def test_grows_with_recent_cold_starts_up_to_max_then_shrinks() -> None:
    make = Maker()
    pool = PrewarmPool(make, size=1, max_size=3, window=0.3)
    pool.start()
    await until(lambda: pool.ready == 1)
    for _ in range(5):
        pool.take()
    assert pool.target == 3, "five cold starts in the window, capped at max"
    await until(lambda: pool.ready == 3)
    # The window passes without cold starts: back to the minimum.
    await until(lambda: pool.target == 1 and pool.ready == 1)
    assert sum(s.destroyed for s in make.made) == 2
    await pool.close()


async def test_a_ready_cell_that_dies_is_replaced() -> None:
    make = Maker()
    pool = PrewarmPool(make, size=1, max_size=1)
    pool.start()
    await until(lambda: pool.ready == 1)
    victim = make.made[0]
    victim.exited.set_result(ExitStatus(None, signal=9))  # killed from outside
    await until(lambda: pool.ready == 1 and len(make.made) == 2)
    assert victim.destroyed
    cell = pool.take()
    assert cell is not None and cell.sandbox is make.made[1]
    await pool.close()


async def test_failures_back_off_and_retry() -> None:
    make = Maker()
    make.failures = 2
    pool = PrewarmPool(make, size=1, max_size=1, retry=0.01)
    pool.start()
    await until(lambda: pool.ready == 1)
    assert make.failures == 0
    await pool.close()


async def test_zero_size_makes_nothing_until_asked() -> None:
    make = Maker()
    pool = PrewarmPool(make, size=0, max_size=2, window=0.2)
    pool.start()
    await asyncio.sleep(0.05)
    assert make.made == []
    assert pool.take() is None
    await until(lambda: pool.ready == 1)  # demand raised the target
    await pool.close()


def test_forwarding_sink_keeps_early_output_then_forwards() -> None:
    sink = ForwardingSink()
    sink("stderr", b"x" * 5000)
    assert len(sink.early) == prewarm.EARLY_OUTPUT
    got: list[tuple[str, bytes]] = []
    sink.target = lambda stream, data: got.append((stream, data))
    sink("stdout", b"hello\n")
    assert got == [("stdout", b"hello\n")]
