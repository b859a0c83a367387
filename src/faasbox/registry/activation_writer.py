"""Activation records are written to SQLite by a process of their own.

Storing a record costs a few microseconds of CPU; at thousands of calls a second, done in
the gateway's process (even in a worker thread), it takes CPU and the GIL from the event
loop that serves every call. So the gateway only serializes each batch (orjson, C speed)
and hands it to this writer through a pipe in frames; the writer inserts each frame (one
statement) and answers one byte per frame once it is committed, which is what ``flush``
waits for.

Run as ``python -m faasbox.registry.activation_writer DB MAX_ROWS``. Frames on stdin:
``<I`` length, then an orjson list of at most ``FRAME_ROWS`` activation rows
(``registry.api.ActivationRow``), each committed, answered with one byte and followed by
a ``sched_yield``; the writer exits at end of input. It runs at nice 10 (SCHED_IDLE while
it keeps up), so that the replicas and the gateway, woken by a call, take the CPU from it
at once. If it cannot be started or dies,
the store writes in a worker thread instead (``SqliteStore``) and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("faasbox.activations")

_LEN = struct.Struct("<I")
ACTIVATION_COLUMNS = (
    "seq, call_id, function, version, start_ns, duration_s, status, cold, init_ms, replica, "
    "error, start_path"
)
# Activation rows per INSERT statement (12 values each; SQLite allows 32,766 parameters),
# and per frame the writer stores in one burst (~0.2 ms) before it yields the CPU.
_CHUNK = 50
FRAME_ROWS = 50


@functools.cache
def _insert_rows(n: int) -> str:
    row = "(" + ", ".join("?" * 12) + ")"
    return f"INSERT OR REPLACE INTO activations({ACTIVATION_COLUMNS}) VALUES " + ", ".join(
        [row] * n
    )


class Inserter:
    """Inserts batches of rows and keeps the table to its newest ``max_rows``."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._since_trim = 0

    def insert(self, db: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
        # Multi-row INSERTs: ~4 µs a row, against ~7 with executemany and ~10 with one
        # json_each statement. Rows whose call id names no row are skipped.
        from faasbox.registry.api import CallIds

        seq = CallIds.seq
        values = [(n, *row) for row in rows if (n := seq(row[0])) is not None]
        with db:
            db.execute("BEGIN")
            for i in range(0, len(values), _CHUNK):
                chunk = values[i : i + _CHUNK]
                db.execute(_insert_rows(len(chunk)), [v for row in chunk for v in row])
            self._since_trim += len(values)
            # Keep the table bounded: now and then drop the oldest beyond the cap.
            if self._since_trim >= self.max_rows // 10:
                self._since_trim = 0
                db.execute(
                    "DELETE FROM activations WHERE seq <= (SELECT max(seq) FROM activations) - ?",
                    (self.max_rows,),
                )


def connect(path: Path | str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class ActivationWriter:
    """The gateway's end: starts the writer process on first use, sends it batches."""

    def __init__(self, db_path: Path, max_rows: int) -> None:
        self.db_path = db_path
        self.max_rows = max_rows
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Send ``rows`` and wait until they are committed; raises ``OSError`` if the
        writer cannot take them (it is then started again for the next batch)."""
        import orjson

        # Frames of FRAME_ROWS: the writer stores each in a short burst and then gives the CPU
        # back, so a call that needs it waits for at most one frame's work.
        frames = b"".join(
            _LEN.pack(len(payload)) + payload
            for payload in (
                orjson.dumps(rows[i : i + FRAME_ROWS]) for i in range(0, len(rows), FRAME_ROWS)
            )
        )
        count = (len(rows) + FRAME_ROWS - 1) // FRAME_ROWS
        async with self._lock:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                proc = self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "faasbox.registry.activation_writer",
                    str(self.db_path),
                    str(self.max_rows),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    # Its own session: a Ctrl-C in the terminal is the platform's to handle;
                    # the writer ends when the platform closes its input.
                    start_new_session=True,
                )
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(frames)
                await proc.stdin.drain()
                await proc.stdout.readexactly(count)
            except (OSError, asyncio.IncompleteReadError) as exc:
                self._proc = None
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                raise OSError(f"the activation writer failed: {exc}") from None

    async def close(self) -> None:
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _background(idle: bool) -> None:
    """SCHED_IDLE while the writer keeps up: any process woken by a call (the gateway, a
    replica) takes the CPU from it at once, so storing records adds next to nothing to a
    call's latency. Back to a normal (nice 10) share while frames have waited longer than
    ``CATCH_UP``, so that it never falls behind for good on a machine whose CPUs are all
    busy."""
    try:
        if idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):  # not Linux: a niced process does nearly as well
        pass


CATCH_UP = 0.5


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return data
        data += chunk
    return data


def main() -> None:
    import select
    import time

    import orjson

    path, max_rows = sys.argv[1], int(sys.argv[2])
    with contextlib.suppress(OSError):
        os.nice(10)
    idle = True
    _background(idle)
    db = connect(path)
    inserter = Inserter(max_rows)
    fd, stdout = sys.stdin.fileno(), sys.stdout.buffer
    busy_since: float | None = None
    while True:
        # Unbuffered reads: ``select`` then tells whether frames wait.
        if select.select([fd], [], [], 0)[0]:
            now = time.monotonic()
            if busy_since is None:
                busy_since = now
            elif idle and now - busy_since > CATCH_UP:
                idle = False
                _background(idle)
        else:  # caught up: it will wait for the next frame
            busy_since = None
            if not idle:
                idle = True
                _background(idle)
        head = _read_exact(fd, 4)
        if len(head) < 4:
            break
        (n,) = _LEN.unpack(head)
        payload = _read_exact(fd, n)
        if len(payload) < n:
            break
        try:
            inserter.insert(db, orjson.loads(payload))
        except (sqlite3.Error, ValueError) as exc:  # say so; the frame is lost, not the writer
            print(f"faasbox activation writer: a batch was not stored: {exc}", file=sys.stderr)
        stdout.write(b"k")
        stdout.flush()
        os.sched_yield()  # whatever a call woke on this CPU runs now
    db.close()


if __name__ == "__main__":
    main()
