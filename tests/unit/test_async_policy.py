"""The retry policy of asynchronous calls: what is retried, how long it waits, when a
call's budget or age is spent (the dispatcher's decisions; the behaviour end to end is in
tests/integration/test_async.py)."""

from __future__ import annotations

import pytest

from faasbox.queue.api import Request, Task
from faasbox.queue.dispatcher import MAX_BACKOFF, backoff, retryable


@pytest.mark.parametrize(
    ("status", "again"),
    [
        (200, False),
        (202, False),
        (302, False),
        (400, False),
        (404, False),
        (422, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
    ],
)
def test_what_is_retried(status: int, again: bool) -> None:
    assert retryable(status) is again


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for retry in range(1, 8):
        ceiling = 0.5 * 2 ** (retry - 1)
        waits = [backoff(retry, 0.5) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 150  # jittered: retries of many calls do not align
    assert all(MAX_BACKOFF / 2 <= backoff(40, 1.0) <= MAX_BACKOFF for _ in range(50))


def _task(**kw: object) -> Task:
    base: dict[str, object] = {
        "call_id": "c",
        "function": "f",
        "request": Request("POST", "/", "", [], b""),
        "enqueued_at": 1000.0,
        "max_retries": 2,
        "max_age": 60.0,
    }
    return Task(**{**base, **kw})  # type: ignore[arg-type]


def test_retry_budget_counts_runs_since_the_last_redrive() -> None:
    assert [_task(attempt=a).retries_left for a in (1, 2, 3)] == [2, 1, 0]
    redriven = _task(attempt=4, budget_from=3)  # dead after 3 runs, then redriven
    assert redriven.retries_left == 2


def test_maximum_age_counts_from_the_last_redrive() -> None:
    assert not _task().expired(1059.0) and _task().expired(1061.0)
    assert not _task(age_from=2000.0).expired(2059.0)
