"""The contract every ``TaskQueue`` keeps (see faasbox/queue/api.py), run against each
implementation: today the embedded SQLite queue; a JetStream queue joins ``QUEUES``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from faasbox.queue.api import (
    DEAD,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Attempt,
    Request,
    Response,
    Task,
    TaskQueue,
)
from faasbox.queue.sqlite import SqliteQueue
from faasbox.registry.api import CallIds

pytestmark = pytest.mark.anyio

# name -> opens the queue kept under a directory (the same directory: the same queue).
QUEUES: dict[str, Callable[[Path], TaskQueue]] = {
    "sqlite": lambda d: SqliteQueue(d / "queue.db", idempotency_window=60.0),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(QUEUES))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], TaskQueue]:
    return lambda: QUEUES[request.param](tmp_path)


@pytest.fixture
async def queue(opener: Callable[[], TaskQueue]) -> AsyncIterator[TaskQueue]:
    q = opener()
    yield q
    await q.close()


IDS = CallIds(1)


def _task(
    function: str = "f", *, key: str = "", retries: int = 2, age: float = 3600.0, **kw: object
) -> Task:
    now = time.time()
    return Task(
        call_id=IDS.new(),
        function=function,
        request=Request("POST", "/p", "a=1", [("X-H", "v")], b"body"),
        enqueued_at=now,
        max_retries=retries,
        max_age=age,
        idempotency_key=key,
        **kw,  # type: ignore[arg-type]
    )


def _outcome(attempt: int, status: int = 500) -> Attempt:
    return Attempt(attempt, time.time(), 0.01, status, "boom" if status >= 500 else "", "r-1")


async def test_put_then_claim_hands_out_the_task_once_with_its_request(queue: TaskQueue) -> None:
    task = _task()
    assert await queue.put(task) == (task.call_id, True)
    assert queue.size() == 1
    st = await queue.status(task.call_id)
    assert st is not None and st.state == QUEUED and st.attempt == 0
    [got] = await queue.claim(time.time(), {"f": 5})
    assert got.call_id == task.call_id and got.attempt == 1
    assert got.request == task.request and got.max_retries == 2
    assert await queue.claim(time.time(), {"f": 5}) == []  # running: not handed out again
    st = await queue.status(task.call_id)
    assert st is not None and st.state == RUNNING


async def test_claim_takes_due_tasks_oldest_first_within_each_functions_room(
    queue: TaskQueue,
) -> None:
    a = [_task("a") for _ in range(5)]
    b = [_task("b") for _ in range(2)]
    later = _task("a", next_at=time.time() + 3600)
    for t in [*a, *b, later]:
        await queue.put(t)
    got = await queue.claim(time.time(), {"a": 3, "b": 10, "c": 4})
    assert [t.call_id for t in got if t.function == "a"] == [t.call_id for t in a[:3]]
    assert {t.call_id for t in got if t.function == "b"} == {t.call_id for t in b}
    assert await queue.claim(time.time(), {"b": 1}) == []
    assert await queue.claim(time.time(), {"a": 0}) == []
    rest = await queue.claim(time.time(), {"a": 10})
    assert [t.call_id for t in rest] == [t.call_id for t in a[3:]]  # not the one due later
    assert await queue.next_due() == pytest.approx(later.next_at)


async def test_retry_queues_again_for_later_keeping_every_attempt(queue: TaskQueue) -> None:
    task = _task()
    await queue.put(task)
    [t] = await queue.claim(time.time(), {"f": 1})
    await queue.retry(t.call_id, _outcome(1), time.time() + 0.2)
    assert await queue.claim(time.time(), {"f": 1}) == []  # not due yet
    st = await queue.status(t.call_id)
    assert st is not None and st.shown_state == "retrying" and st.next_at is not None
    await asyncio.sleep(0.25)
    [t2] = await queue.claim(time.time(), {"f": 1})
    assert t2.attempt == 2 and t2.retries_left == 1
    await queue.finish(t2.call_id, SUCCEEDED, _outcome(2, 200), None)
    st = await queue.status(t.call_id)
    assert st is not None and st.state == SUCCEEDED and st.finished_at is not None
    assert [(a.attempt, a.status) for a in st.attempts] == [(1, 500), (2, 200)]
    assert queue.size() == 0


async def test_dead_letters_are_listed_and_redriven_with_a_fresh_budget(queue: TaskQueue) -> None:
    tasks = [_task("f", retries=0), _task("g", retries=0)]
    for t in tasks:
        await queue.put(t)
    for t in await queue.claim(time.time(), {"f": 1, "g": 1}):
        await queue.finish(t.call_id, DEAD, _outcome(1), None)
    assert queue.size() == 0
    assert {d.call_id for d in await queue.dead(None, 10)} == {t.call_id for t in tasks}
    [only_f] = await queue.dead("f", 10)
    assert only_f.call_id == tasks[0].call_id and only_f.attempts[0].error == "boom"
    assert await queue.redrive(tasks[0].call_id, None) == [tasks[0].call_id]
    assert await queue.redrive(tasks[0].call_id, None) == []  # not dead any more
    [again] = await queue.claim(time.time(), {"f": 1})
    assert again.attempt == 2 and again.retries_left == 0 and again.request.body == b"body"
    assert await queue.redrive(None, None) == [tasks[1].call_id]  # all that are dead
    assert queue.size() == 2


async def test_failed_is_final_and_a_callback_response_waits_until_delivered(
    queue: TaskQueue,
) -> None:
    task = _task(callback_url="http://127.0.0.1:9/cb")
    await queue.put(task)
    [t] = await queue.claim(time.time(), {"f": 1})
    resp = Response(400, [("Content-Type", "text/plain")], b"bad input")
    await queue.finish(t.call_id, FAILED, _outcome(1, 400), resp)
    assert await queue.pending_callbacks() == [(t.call_id, "f", task.callback_url, resp)]
    st = await queue.status(t.call_id)
    assert st is not None and st.state == FAILED and st.callback_state == "pending"
    await queue.callback_done(t.call_id, delivered=True)
    assert await queue.pending_callbacks() == []
    st = await queue.status(t.call_id)
    assert st is not None and st.callback_state == "delivered"


async def test_an_idempotency_key_names_its_first_call_per_function(queue: TaskQueue) -> None:
    first = _task(key="k1")
    assert await queue.put(first) == (first.call_id, True)
    again = _task(key="k1")
    assert await queue.put(again) == (first.call_id, False)
    other_function = _task("g", key="k1")
    assert await queue.put(other_function) == (other_function.call_id, True)
    assert queue.size() == 2 and await queue.status(again.call_id) is None


async def test_accepted_tasks_survive_a_reopen_and_running_ones_run_again(
    opener: Callable[[], TaskQueue],
) -> None:
    q = opener()
    tasks = [_task() for _ in range(3)]
    for t in tasks:
        await q.put(t)
    [running] = await q.claim(time.time(), {"f": 1})
    await q.close()  # as a crash leaves it: one running, two queued
    q = opener()
    try:
        assert q.size() == 3
        assert await q.recover() == 1
        got = await q.claim(time.time(), {"f": 10})
        assert {t.call_id for t in got} == {t.call_id for t in tasks}
        again = next(t for t in got if t.call_id == running.call_id)
        assert again.attempt == 2  # the function can tell it is a redelivery
        st = await q.status(running.call_id)
        assert st is not None and "interrupted" in st.attempts[0].error
    finally:
        await q.close()


async def test_tasks_past_their_maximum_age_are_dead_lettered(queue: TaskQueue) -> None:
    old = _task(age=0.1)
    young = _task(age=3600)
    await queue.put(old)
    await queue.put(young)
    await asyncio.sleep(0.15)
    [expired] = await queue.expire(time.time())
    assert expired.call_id == old.call_id and expired.state == DEAD
    assert queue.size() == 1
    depth = await queue.depth()
    assert depth["f"].tasks == 1 and depth["f"].oldest_enqueued_at == pytest.approx(
        young.enqueued_at
    )


async def test_a_removed_functions_queued_tasks_are_dead_lettered(queue: TaskQueue) -> None:
    gone = [_task("gone") for _ in range(3)]
    kept = _task("kept")
    for t in [*gone, kept]:
        await queue.put(t)
    [running] = await queue.claim(time.time(), {"gone": 1})
    dead = await queue.expire(time.time(), "gone")
    assert sorted(d.call_id for d in dead) == sorted(t.call_id for t in gone[1:])
    assert all(d.state == DEAD and "removed" in d.attempts[-1].error for d in dead)
    st = await queue.status(running.call_id)
    assert st is not None and st.state == RUNNING  # it ends on its own
    assert queue.size() == 2 and (await queue.depth())["kept"].tasks == 1


async def test_many_concurrent_puts_are_all_stored(queue: TaskQueue) -> None:
    tasks = [_task(f"f{i % 3}") for i in range(300)]
    results = await asyncio.gather(*(queue.put(t) for t in tasks))
    assert all(stored for _, stored in results) and queue.size() == 300
    got = await queue.claim(time.time(), {"f0": 1000, "f1": 1000, "f2": 1000})
    assert sorted(t.call_id for t in got) == sorted(t.call_id for t in tasks)


async def test_finish_and_retry_claim_the_functions_next_tasks_in_the_same_step(
    queue: TaskQueue,
) -> None:
    """``claim_next``: what ``claim`` would hand out for the same function, oldest due
    first, never the task just queued again for later, never another function's."""
    mine = [_task("f") for _ in range(4)]
    other = _task("g")
    for t in [*mine, other]:
        await queue.put(t)
    [first] = await queue.claim(time.time(), {"f": 1})
    assert first.call_id == mine[0].call_id
    [second] = await queue.finish(first.call_id, SUCCEEDED, _outcome(1, 200), None, claim_next=1)
    assert second.call_id == mine[1].call_id and second.attempt == 1
    st = await queue.status(second.call_id)
    assert st is not None and st.state == RUNNING
    got = await queue.retry(second.call_id, _outcome(1), time.time() + 3600, claim_next=5)
    assert [t.call_id for t in got] == [t.call_id for t in mine[2:]]  # not itself: not due
    assert await queue.finish(got[0].call_id, FAILED, _outcome(1, 400), None) == []
    assert await queue.finish(got[1].call_id, SUCCEEDED, None, None, claim_next=3) == []
    assert await queue.finish(IDS.new(), SUCCEEDED, None, None, claim_next=3) == []
    [g] = await queue.claim(time.time(), {"g": 1})
    assert g.call_id == other.call_id  # still there for its own claim
    assert queue.size() == 2  # the retried one and g
