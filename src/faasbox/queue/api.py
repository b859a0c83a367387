"""The queue seam: asynchronous invocations, stored durably until they have run.

The embedded default is ``sqlite.SqliteQueue``. A cluster's queue (a NATS JetStream
stream, say) implements the same ``TaskQueue`` and passes the same contract suite
(``tests/queue/test_contract.py``).

Behaviour every queue has:

- ``put`` returns only once the task is durable: after it, a crash of the process loses
  nothing (what a power loss may lose is the implementation's to document). With an
  idempotency key seen within the window, it stores nothing and returns the first task's
  call id.
- A task is ``queued`` until ``claim`` hands it out (due tasks only, oldest due first, at
  most ``room[function]`` per function); it is then ``running`` with its attempt counted.
  ``finish`` ends it (``succeeded``, ``failed`` or ``dead``), ``retry`` queues it again
  for a later time. Every attempt's outcome is kept with the task. Both can claim the
  function's next due tasks in the same step (``claim_next``), so that a worker that
  ends one call starts the next with one durable write instead of two.
- ``recover`` (at start) queues again every task a crashed process left ``running``:
  delivery is at least once, and a task runs again only if it was running at the crash.
- ``redrive`` queues dead tasks again with a fresh retry budget, their history kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# A task's states. "retrying" is a queued task that has run before.
QUEUED, RUNNING, SUCCEEDED, FAILED, DEAD = "queued", "running", "succeeded", "failed", "dead"
FINAL = frozenset({SUCCEEDED, FAILED, DEAD})


@dataclass(frozen=True)
class Attempt:
    """How one run of a task ended."""

    attempt: int
    start: float  # unix seconds
    duration_s: float
    status: int  # the HTTP status of the outcome (the function's, or the platform's error)
    error: str = ""
    replica: str = ""

    def to_api(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "start": self.start,
            "durationSeconds": round(self.duration_s, 6),
            "statusCode": self.status,
            "error": self.error or None,
            "replica": self.replica or None,
        }


@dataclass(frozen=True)
class Request:
    """The HTTP request a task replays: what the function sees, as on ``/function/``."""

    method: str
    path: str  # after the function's name, starting with "/"
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Task:
    call_id: str
    function: str
    request: Request
    enqueued_at: float
    max_retries: int
    max_age: float  # seconds after enqueued_at; older tasks are not run again
    callback_url: str = ""
    idempotency_key: str = ""
    # Set by the queue: runs so far (the one starting counts), and when it may run next.
    attempt: int = 0
    next_at: float = 0.0
    # Where the current retry budget and maximum age start (moved by a redrive).
    budget_from: int = 0
    age_from: float = 0.0

    @property
    def retries_left(self) -> int:
        """Retries still allowed after the run now starting."""
        return self.max_retries - (self.attempt - self.budget_from - 1)

    def expired(self, now: float) -> bool:
        return now - (self.age_from or self.enqueued_at) > self.max_age


@dataclass(frozen=True)
class TaskStatus:
    call_id: str
    function: str
    state: str
    attempt: int
    max_retries: int
    enqueued_at: float
    next_at: float | None
    finished_at: float | None
    callback_url: str
    callback_state: str  # "" (none), "pending", "delivered", "failed"
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def shown_state(self) -> str:
        return "retrying" if self.state == QUEUED and self.attempt > 0 else self.state

    def to_api(self) -> dict[str, Any]:
        return {
            "callId": self.call_id,
            "function": self.function,
            "state": self.shown_state,
            "attempt": self.attempt,
            "maxRetries": self.max_retries,
            "enqueuedAt": self.enqueued_at,
            "nextAttemptAt": self.next_at if self.state == QUEUED else None,
            "finishedAt": self.finished_at,
            "callbackUrl": self.callback_url or None,
            "callback": self.callback_state or None,
            "attempts": [a.to_api() for a in self.attempts],
        }


@dataclass(frozen=True)
class Depth:
    """Unfinished tasks (queued or running) of one function, and the oldest one's age."""

    tasks: int
    oldest_enqueued_at: float


class TaskQueue(Protocol):
    async def put(self, task: Task) -> tuple[str, bool]:
        """Store ``task`` durably; (its call id, True) — or, for an idempotency key seen
        within the window, (the first task's call id, False) and nothing stored."""
        ...

    async def claim(self, now: float, room: dict[str, int]) -> list[Task]:
        """Due tasks (``next_at <= now``), oldest due first, at most ``room[f]`` of each
        function ``f``, now ``running`` with ``attempt`` counted."""
        ...

    async def retry(
        self, call_id: str, outcome: Attempt, next_at: float, *, claim_next: int = 0
    ) -> list[Task]:
        """Queue a running task again, due at ``next_at``; and, in the same step, claim up
        to ``claim_next`` due tasks of its function as ``claim`` would."""
        ...

    async def finish(
        self,
        call_id: str,
        state: str,
        outcome: Attempt | None,
        response: Response | None,
        *,
        claim_next: int = 0,
    ) -> list[Task]:
        """End a task (``state`` in ``FINAL``). With a callback URL, ``response`` is kept
        until ``callback_done``. In the same step, claim up to ``claim_next`` due tasks
        of its function as ``claim`` would (none for a task that is not found)."""
        ...

    async def callback_done(self, call_id: str, delivered: bool) -> None: ...

    async def pending_callbacks(self) -> list[tuple[str, str, str, Response]]:
        """(call id, function, URL, response) of every finished task whose callback is
        pending."""
        ...

    async def status(self, call_id: str) -> TaskStatus | None: ...

    async def dead(self, function: str | None, limit: int) -> list[TaskStatus]: ...

    async def redrive(self, call_id: str | None, function: str | None) -> list[str]:
        """Queue dead tasks again (one, or all, or all of one function) with a fresh retry
        budget and maximum age; returns their call ids."""
        ...

    async def recover(self) -> int:
        """Queue again what a crashed process left running; returns how many."""
        ...

    def size(self) -> int:
        """Unfinished tasks (queued or running), all functions: cheap, for every accept."""
        ...

    async def depth(self) -> dict[str, Depth]:
        """Unfinished tasks per function, for metrics."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest queued task is due (None: nothing queued)."""
        ...

    async def expire(self, now: float, function: str | None = None) -> list[TaskStatus]:
        """Dead-letter queued tasks older than their maximum age, or with ``function``
        every queued task of that function (it was removed); returns them."""
        ...

    async def close(self) -> None: ...
