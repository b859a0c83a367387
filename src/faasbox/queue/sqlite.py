"""The embedded queue: SQLite in WAL mode, in its own file beside the registry.

Durability: every change is committed with ``synchronous=FULL`` (the WAL is fsynced at each
commit) before the caller hears of it, so an accepted task survives a crash of the process
*and* a power loss. Commits are grouped: one thread owns the connection, and whatever the
event loop asked for while the previous commit ran goes into the next transaction (each
operation in a savepoint of its own, so one failing operation fails alone). Under load one
fsync serves many accepts.

Call ids come from ``registry.api.CallIds``: a task's row number is the one its call id
names, so rows are appended in order and found with no index on the call id.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from faasbox.queue.api import (
    DEAD,
    FINAL,
    QUEUED,
    RUNNING,
    Attempt,
    Depth,
    Request,
    Response,
    Task,
    TaskStatus,
)
from faasbox.registry.api import CallIds

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,          -- the number the call id names (CallIds)
    call_id TEXT NOT NULL,
    function TEXT NOT NULL,
    state TEXT NOT NULL,              -- queued | running | succeeded | failed | dead
    request BLOB NOT NULL,            -- method, path, query, headers (JSON)
    body BLOB NOT NULL,
    callback_url TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    max_retries INTEGER NOT NULL,
    max_age REAL NOT NULL,
    attempt INTEGER NOT NULL,         -- runs so far
    next_at REAL NOT NULL,
    budget_from INTEGER NOT NULL,     -- runs before the current retry budget (a redrive)
    age_from REAL NOT NULL,           -- when the current maximum age started
    attempts TEXT NOT NULL,           -- JSON list of every run's outcome
    finished_at REAL,
    callback_state TEXT NOT NULL,     -- '' | pending | delivered | failed
    response BLOB                     -- for a pending callback only
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks(function, next_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS tasks_next ON tasks(next_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks(function) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS tasks_dead ON tasks(function) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS tasks_callbacks ON tasks(seq) WHERE callback_state = 'pending';
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,             -- function NUL key
    call_id TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

_COLUMNS = (
    "seq, call_id, function, state, request, body, callback_url, idempotency_key, "
    "enqueued_at, max_retries, max_age, attempt, next_at, budget_from, age_from, attempts, "
    "finished_at, callback_state"
)
# Finished tasks kept for their status (dead ones stay until redriven).
KEEP_FINISHED = 100_000
_LEN = struct.Struct("<I")


def _pack_response(r: Response) -> bytes:
    head = orjson.dumps({"s": r.status, "h": r.headers})
    return _LEN.pack(len(head)) + head + r.body


def _unpack_response(blob: bytes) -> Response:
    (n,) = _LEN.unpack_from(blob)
    head = orjson.loads(blob[4 : 4 + n])
    return Response(head["s"], [tuple(h) for h in head["h"]], bytes(blob[4 + n :]))


def _attempt(a: Attempt) -> dict[str, Any]:
    return {
        "a": a.attempt,
        "t": a.start,
        "d": a.duration_s,
        "s": a.status,
        "e": a.error,
        "r": a.replica,
    }


def _attempts(text: str) -> list[Attempt]:
    return [Attempt(a["a"], a["t"], a["d"], a["s"], a["e"], a["r"]) for a in orjson.loads(text)]


class _Writer:
    """One connection and one thread; operations run in grouped transactions."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._cond = threading.Condition()
        self._ops: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="faasbox-queue", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._closing:
                raise RuntimeError("the queue is closed")
            self._ops.append((op, fut))
            self._cond.notify()
        return fut

    def _run(self) -> None:
        db = self.db
        while True:
            with self._cond:
                while not self._ops and not self._closing:
                    self._cond.wait()
                ops, self._ops = self._ops, []
            if not ops:
                return  # closing, and nothing left
            results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            try:
                db.execute("BEGIN IMMEDIATE")
                for op, fut in ops:
                    db.execute("SAVEPOINT op")
                    try:
                        value = op(db)
                    except Exception as exc:
                        db.execute("ROLLBACK TO op")
                        db.execute("RELEASE op")
                        results.append((fut, None, exc))
                    else:
                        db.execute("RELEASE op")
                        results.append((fut, value, None))
                db.execute("COMMIT")
            except Exception as exc:  # the commit itself failed: nothing of it is stored
                if db.in_transaction:
                    db.execute("ROLLBACK")
                results = [(fut, None, exc) for _, fut in ops]
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(_settle, results)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self.db.close()


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


class SqliteQueue:
    """``queue.api.TaskQueue`` on SQLite (see the module's docstring)."""

    def __init__(self, path: Path, *, idempotency_window: float = 24 * 3600.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._w = _Writer(path)
        self.idempotency_window = idempotency_window
        db = self._w.db
        self.last_seq: int = db.execute("SELECT coalesce(max(seq), 0) FROM tasks").fetchone()[0]
        self._unfinished: collections.Counter[str] = collections.Counter(
            dict(
                db.execute(
                    "SELECT function, count(*) FROM tasks WHERE state IN ('queued', 'running') "
                    "GROUP BY function"
                ).fetchall()
            )
        )
        self._puts = 0

    # -- accept ------------------------------------------------------------------------------
    async def put(self, task: Task) -> tuple[str, bool]:
        seq = CallIds.seq(task.call_id)
        if seq is None:
            raise ValueError(f"call id {task.call_id!r} is not one of CallIds")
        r = task.request
        request = orjson.dumps({"m": r.method, "p": r.path, "q": r.query, "h": r.headers})
        window = self.idempotency_window
        self._puts += 1
        purge = self._puts % 1000 == 0

        def op(db: sqlite3.Connection) -> tuple[str, bool]:
            now = time.time()
            if task.idempotency_key:
                key = f"{task.function}\0{task.idempotency_key}"
                row = db.execute(
                    "SELECT call_id FROM idempotency WHERE key = ? AND expires_at > ?", (key, now)
                ).fetchone()
                if row is not None:
                    return row[0], False
                db.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?)",
                    (key, task.call_id, now + window),
                )
            if purge:
                db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            db.execute(
                f"INSERT INTO tasks({_COLUMNS}) VALUES "
                "(?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?, '[]', NULL, '')",
                (
                    seq,
                    task.call_id,
                    task.function,
                    request,
                    r.body,
                    task.callback_url,
                    task.idempotency_key,
                    task.enqueued_at,
                    task.max_retries,
                    task.max_age,
                    task.next_at or task.enqueued_at,
                    task.enqueued_at,
                ),
            )
            return task.call_id, True

        call_id, stored = await self._w.submit(op)
        if stored:
            self._unfinished[task.function] += 1
        return call_id, stored

    # -- dispatch ----------------------------------------------------------------------------
    async def claim(self, now: float, room: dict[str, int]) -> list[Task]:
        wanted = {f: n for f, n in room.items() if n > 0 and self._unfinished.get(f)}
        if not wanted:
            return []

        def op(db: sqlite3.Connection) -> list[Task]:
            tasks: list[Task] = []
            for function, n in wanted.items():
                tasks += _claim(db, function, now, n)
            return tasks

        return await self._w.submit(op)

    async def retry(
        self, call_id: str, outcome: Attempt, next_at: float, *, claim_next: int = 0
    ) -> list[Task]:
        seq = CallIds.seq(call_id)
        attempt = orjson.dumps(_attempt(outcome)).decode()

        def op(db: sqlite3.Connection) -> list[Task]:
            row = db.execute(
                "SELECT function FROM tasks WHERE seq = ? AND call_id = ?", (seq, call_id)
            ).fetchone()
            if row is None:
                return []
            db.execute(
                "UPDATE tasks SET state = 'queued', next_at = ?, "
                "attempts = json_insert(attempts, '$[#]', json(?)) WHERE seq = ?",
                (next_at, attempt, seq),
            )
            return _claim(db, row[0], time.time(), claim_next) if claim_next > 0 else []

        return await self._w.submit(op)

    async def finish(
        self,
        call_id: str,
        state: str,
        outcome: Attempt | None,
        response: Response | None,
        *,
        claim_next: int = 0,
    ) -> list[Task]:
        if state not in FINAL:
            raise ValueError(f"{state!r} is not a final state")
        seq = CallIds.seq(call_id)
        attempt = orjson.dumps(_attempt(outcome)).decode() if outcome is not None else None
        blob = _pack_response(response) if response is not None else None
        keep_body = state == DEAD  # a dead task may be redriven

        def op(db: sqlite3.Connection) -> tuple[str | None, list[Task]]:
            row = db.execute(
                "SELECT function, state, callback_url FROM tasks WHERE seq = ? AND call_id = ?",
                (seq, call_id),
            ).fetchone()
            if row is None:
                return None, []
            callback = "pending" if row[2] and blob is not None else ""
            db.execute(
                "UPDATE tasks SET state = ?, finished_at = ?, callback_state = ?, response = ?, "
                "body = CASE WHEN ? THEN body ELSE x'' END, "
                "attempts = CASE WHEN ? IS NULL THEN attempts "
                "ELSE json_insert(attempts, '$[#]', json(?)) END WHERE seq = ?",
                (
                    state,
                    time.time(),
                    callback,
                    blob if callback else None,
                    keep_body,
                    attempt,
                    attempt,
                    seq,
                ),
            )
            if seq is not None and seq % 1000 == 0:  # now and then: forget the oldest
                db.execute(
                    "DELETE FROM tasks WHERE state IN ('succeeded', 'failed') AND seq <= "
                    "(SELECT max(seq) FROM tasks) - ? AND callback_state != 'pending'",
                    (KEEP_FINISHED,),
                )
            claimed = _claim(db, row[0], time.time(), claim_next) if claim_next > 0 else []
            return (str(row[0]) if row[1] in (QUEUED, RUNNING) else None), claimed

        function, claimed = await self._w.submit(op)
        if function is not None:
            self._forget(function)
        return claimed

    def _forget(self, function: str, n: int = 1) -> None:
        left = self._unfinished[function] - n
        if left > 0:
            self._unfinished[function] = left
        else:
            self._unfinished.pop(function, None)

    async def callback_done(self, call_id: str, delivered: bool) -> None:
        seq = CallIds.seq(call_id)

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tasks SET callback_state = ?, response = NULL WHERE seq = ? AND call_id = ?",
                ("delivered" if delivered else "failed", seq, call_id),
            )

        await self._w.submit(op)

    async def pending_callbacks(self) -> list[tuple[str, str, str, Response]]:
        def op(db: sqlite3.Connection) -> list[tuple[str, str, str, Response]]:
            rows = db.execute(
                "SELECT call_id, function, callback_url, response FROM tasks "
                "WHERE callback_state = 'pending' ORDER BY seq"
            ).fetchall()
            return [(r[0], r[1], r[2], _unpack_response(r[3])) for r in rows if r[3] is not None]

        return await self._w.submit(op)

    # -- status ------------------------------------------------------------------------------
    async def status(self, call_id: str) -> TaskStatus | None:
        seq = CallIds.seq(call_id)
        if seq is None:
            return None

        def op(db: sqlite3.Connection) -> TaskStatus | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE seq = ? AND call_id = ?", (seq, call_id)
            ).fetchone()
            return _status(row) if row is not None else None

        return await self._w.submit(op)

    async def dead(self, function: str | None, limit: int) -> list[TaskStatus]:
        def op(db: sqlite3.Connection) -> list[TaskStatus]:
            if function:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM tasks WHERE state = 'dead' AND function = ? "
                    "ORDER BY seq DESC LIMIT ?",
                    (function, limit),
                ).fetchall()
            else:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM tasks WHERE state = 'dead' ORDER BY seq DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            return [_status(r) for r in rows]

        return await self._w.submit(op)

    async def redrive(self, call_id: str | None, function: str | None) -> list[str]:
        seq = CallIds.seq(call_id) if call_id is not None else None

        def op(db: sqlite3.Connection) -> list[tuple[str, str]]:
            now = time.time()
            where, args = "state = 'dead'", []
            if call_id is not None:
                where += " AND seq = ? AND call_id = ?"
                args += [seq, call_id]
            if function:
                where += " AND function = ?"
                args.append(function)
            rows = db.execute(f"SELECT call_id, function FROM tasks WHERE {where}", args).fetchall()
            db.execute(
                "UPDATE tasks SET state = 'queued', next_at = ?, age_from = ?, "
                f"budget_from = attempt, finished_at = NULL WHERE {where}",
                [now, now, *args],
            )
            return [(r[0], r[1]) for r in rows]

        rows = await self._w.submit(op)
        for _, f in rows:
            self._unfinished[f] += 1
        return [c for c, _ in rows]

    async def recover(self) -> int:
        outcome = orjson.dumps(
            _attempt(Attempt(0, time.time(), 0.0, 503, "interrupted: the platform stopped"))
        ).decode()

        def op(db: sqlite3.Connection) -> int:
            # The attempt number of the interrupted run: what it was when it started.
            return db.execute(
                "UPDATE tasks SET state = 'queued', next_at = ?, attempts = json_insert("
                "attempts, '$[#]', json_set(json(?), '$.a', attempt)) WHERE state = 'running'",
                (time.time(), outcome),
            ).rowcount

        return await self._w.submit(op)

    def size(self) -> int:
        return sum(self._unfinished.values())

    async def depth(self) -> dict[str, Depth]:
        def op(db: sqlite3.Connection) -> dict[str, Depth]:
            rows = db.execute(
                "SELECT function, count(*), min(enqueued_at) FROM tasks "
                "WHERE state IN ('queued', 'running') GROUP BY function"
            ).fetchall()
            return {r[0]: Depth(r[1], r[2]) for r in rows}

        return await self._w.submit(op)

    async def next_due(self) -> float | None:
        if not self._unfinished:
            return None

        def op(db: sqlite3.Connection) -> float | None:
            (value,) = db.execute(
                "SELECT min(next_at) FROM tasks WHERE state = 'queued'"
            ).fetchone()
            return float(value) if value is not None else None

        return await self._w.submit(op)

    async def expire(self, now: float, function: str | None = None) -> list[TaskStatus]:
        args: list[float | str]
        if function is None:
            error, status = "expired: older than its maximum age", 504
            where, args = "age_from + max_age < ?", [now]
        else:
            error, status = f"function {function!r} was removed", 404
            where, args = "function = ?", [function]
        outcome = orjson.dumps(_attempt(Attempt(0, now, 0.0, status, error))).decode()

        def op(db: sqlite3.Connection) -> list[TaskStatus]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE state = 'queued' AND {where}", args
            ).fetchall()
            dead = []
            for row in rows:
                db.execute(
                    "UPDATE tasks SET state = 'dead', finished_at = ?, attempts = json_insert("
                    "attempts, '$[#]', json_set(json(?), '$.a', attempt)) WHERE seq = ?",
                    (now, outcome, row[0]),
                )
                dead.append(
                    db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE seq = ?", (row[0],)).fetchone()
                )
            return [_status(r) for r in dead]

        expired = await self._w.submit(op)
        for st in expired:
            self._forget(st.function)
        return expired

    async def close(self) -> None:
        await asyncio.to_thread(self._w.close)


def _claim(db: sqlite3.Connection, function: str, now: float, n: int) -> list[Task]:
    """Up to ``n`` due queued tasks of ``function``, oldest due first, now running."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE state = 'queued' AND function = ? "
        "AND next_at <= ? ORDER BY next_at LIMIT ?",
        (function, now, n),
    ).fetchall()
    for row in rows:
        db.execute(
            "UPDATE tasks SET state = 'running', attempt = attempt + 1 WHERE seq = ?", (row[0],)
        )
    return [_task(row, attempt=row[11] + 1) for row in rows]


def _task(row: tuple[Any, ...], *, attempt: int) -> Task:
    req = orjson.loads(row[4])
    return Task(
        call_id=row[1],
        function=row[2],
        request=Request(req["m"], req["p"], req["q"], [tuple(h) for h in req["h"]], row[5]),
        enqueued_at=row[8],
        max_retries=row[9],
        max_age=row[10],
        callback_url=row[6],
        idempotency_key=row[7],
        attempt=attempt,
        next_at=row[12],
        budget_from=row[13],
        age_from=row[14],
    )


def _status(row: tuple[Any, ...]) -> TaskStatus:
    return TaskStatus(
        call_id=row[1],
        function=row[2],
        state=row[3],
        attempt=row[11],
        max_retries=row[9],
        enqueued_at=row[8],
        next_at=row[12] if row[3] == QUEUED else None,
        finished_at=row[16],
        callback_url=row[6],
        callback_state=row[17],
        attempts=_attempts(row[15]),
    )
