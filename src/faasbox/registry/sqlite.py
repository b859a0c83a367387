"""SQLite (WAL) registry. One connection, used from worker threads under a lock, so the
event loop never waits on disk."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from faasbox.errors import Conflict, FunctionNotFound
from faasbox.registry.activation_writer import (
    ACTIVATION_COLUMNS,
    ActivationWriter,
    Inserter,
    connect,
)
from faasbox.registry.api import (
    ActivationRecord,
    ActivationRow,
    CallIds,
    FunctionRecord,
    VersionRecord,
)

T = TypeVar("T")
log = logging.getLogger("faasbox.registry")

ACTIVATIONS = """
CREATE TABLE IF NOT EXISTS activations (
    -- The row's number is in its call id (registry.api.CallIds): rows are appended in
    -- order and found from their call id with no index on it.
    seq INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    status INTEGER NOT NULL,
    cold INTEGER NOT NULL,
    init_ms REAL NOT NULL,
    replica TEXT NOT NULL,
    error TEXT NOT NULL,
    start_path TEXT NOT NULL DEFAULT ''
)
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    current_version INTEGER,
    latest_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    spec TEXT NOT NULL,
    bundle_sha TEXT NOT NULL,
    status TEXT NOT NULL,
    build_log TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (function, version)
);
{ACTIVATIONS.strip()};

-- No index on function (nor on call_id): each index costs every insert on the hot write
-- path, and a backwards scan of the newest rows finds a function's recent records quickly.
DROP INDEX IF EXISTS activations_by_function;
"""


def _unindex_call_ids(db: sqlite3.Connection) -> None:
    """A data directory from before call ids named their row has a unique index on
    ``call_id``: its table is rebuilt without it, rows kept, and ``user_version`` keeps the
    last of their numbers (their call ids say nothing of it: they are found by a scan)."""
    if not any(row[2] for row in db.execute("PRAGMA index_list(activations)")):
        return
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ALTER TABLE activations RENAME TO activations_before_call_ids")
        db.execute(ACTIVATIONS)
        db.execute(
            f"INSERT INTO activations({ACTIVATION_COLUMNS}) "
            f"SELECT {ACTIVATION_COLUMNS} FROM activations_before_call_ids"
        )
        db.execute("DROP TABLE activations_before_call_ids")
        (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM activations").fetchone()
        db.execute(f"PRAGMA user_version = {int(last)}")


class SqliteStore:
    def __init__(
        self, path: Path, *, max_activations: int = 100_000, writer_process: bool = True
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(path)
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(activations)")}
        if "start_path" not in columns:  # a data directory from before start paths
            self._db.execute(
                "ALTER TABLE activations ADD COLUMN start_path TEXT NOT NULL DEFAULT ''"
            )
        _unindex_call_ids(self._db)
        # Rows up to this one predate call ids that name their row (found by a scan).
        self._legacy_seq: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        (self.last_seq,) = self._db.execute(
            "SELECT coalesce(max(seq), 0) FROM activations"
        ).fetchone()
        self.call_ids = CallIds(self.last_seq + 1)
        self._lock = threading.Lock()
        self._inserter = Inserter(max_activations)
        self._writer: ActivationWriter | None = (
            ActivationWriter(path, max_activations) if writer_process else None
        )
        self._writer_failures = 0

    async def aclose(self) -> None:
        """Stop the activation writer (after what it was given is stored), then close."""
        if self._writer is not None:
            await self._writer.close()
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        return await asyncio.to_thread(locked)

    # -- functions and versions ----------------------------------------------------------
    async def create_function(self, name: str, spec: dict[str, Any], bundle_sha: str) -> int:
        def tx(db: sqlite3.Connection) -> int:
            now = time.time()
            with db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute(
                        "INSERT INTO functions(name, created_at, latest_version) VALUES (?, ?, 1)",
                        (name, now),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(
                        f"function {name!r} already exists; deploy a new version with PUT"
                    ) from None
                db.execute(
                    "INSERT INTO versions VALUES (?, 1, ?, ?, 'building', '', ?)",
                    (name, json.dumps(spec), bundle_sha, now),
                )
            return 1

        return await self._run(tx)

    async def add_version(self, name: str, spec: dict[str, Any], bundle_sha: str) -> int:
        def tx(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute(
                    "SELECT latest_version FROM functions WHERE name = ?", (name,)
                ).fetchone()
                if row is None:
                    raise FunctionNotFound(name)
                version = int(row[0]) + 1
                db.execute(
                    "UPDATE functions SET latest_version = ? WHERE name = ?", (version, name)
                )
                db.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, 'building', '', ?)",
                    (name, version, json.dumps(spec), bundle_sha, time.time()),
                )
            return version

        return await self._run(tx)

    async def finish_version(self, name: str, version: int, *, status: str, build_log: str) -> None:
        def tx(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "UPDATE versions SET status = ?, build_log = ? WHERE function = ? AND version = ?",
                    (status, build_log, name, version),
                )
                if status == "ready":
                    db.execute(
                        "UPDATE functions SET current_version = ? WHERE name = ? "
                        "AND (current_version IS NULL OR current_version < ?)",
                        (version, name, version),
                    )

        await self._run(tx)

    @staticmethod
    def _version(row: tuple[Any, ...]) -> VersionRecord:
        return VersionRecord(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6])

    def _get(self, db: sqlite3.Connection, name: str) -> FunctionRecord | None:
        row = db.execute(
            "SELECT name, created_at, current_version, latest_version FROM functions WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            return None
        v = db.execute(
            "SELECT * FROM versions WHERE function = ? AND version = ?", (name, row[3])
        ).fetchone()
        return FunctionRecord(row[0], row[1], row[2], self._version(v))

    async def get_function(self, name: str) -> FunctionRecord | None:
        return await self._run(lambda db: self._get(db, name))

    async def get_version(self, name: str, version: int) -> VersionRecord | None:
        def q(db: sqlite3.Connection) -> VersionRecord | None:
            row = db.execute(
                "SELECT * FROM versions WHERE function = ? AND version = ?", (name, version)
            ).fetchone()
            return self._version(row) if row else None

        return await self._run(q)

    async def list_functions(self) -> list[FunctionRecord]:
        def q(db: sqlite3.Connection) -> list[FunctionRecord]:
            names = [r[0] for r in db.execute("SELECT name FROM functions ORDER BY name")]
            return [rec for n in names if (rec := self._get(db, n)) is not None]

        return await self._run(q)

    async def delete_function(self, name: str) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM versions WHERE function = ?", (name,))
                db.execute("DELETE FROM activations WHERE function = ?", (name,))
                return db.execute("DELETE FROM functions WHERE name = ?", (name,)).rowcount > 0

        return await self._run(tx)

    # -- activations -----------------------------------------------------------------------
    async def add_activations(self, rows: list[ActivationRow]) -> None:
        # In the writer process (``activation_writer``), off the event loop's CPU and GIL;
        # in a worker thread if that process cannot run.
        if self._writer is not None:
            try:
                await self._writer.write(rows)
                return
            except OSError as exc:
                self._writer_failures += 1
                if self._writer_failures >= 3:
                    self._writer = None
                log.warning(
                    "activation writer failed (%s); %s",
                    exc,
                    "writing in a thread from now on"
                    if self._writer is None
                    else "this batch is written in a thread",
                )
        await self._run(lambda db: self._inserter.insert(db, rows))

    @staticmethod
    def _activation(row: tuple[Any, ...]) -> ActivationRecord:
        return ActivationRecord(
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            bool(row[7]),
            row[8],
            row[9],
            row[10],
            row[11],
        )

    async def list_activations(self, name: str | None, limit: int) -> list[ActivationRecord]:
        def q(db: sqlite3.Connection) -> list[ActivationRecord]:
            if name:
                cur = db.execute(
                    "SELECT * FROM activations WHERE function = ? ORDER BY seq DESC LIMIT ?",
                    (name, limit),
                )
            else:
                cur = db.execute("SELECT * FROM activations ORDER BY seq DESC LIMIT ?", (limit,))
            return [self._activation(r) for r in cur]

        return await self._run(q)

    async def get_activation(self, call_id: str) -> ActivationRecord | None:
        seq = CallIds.seq(call_id)

        def q(db: sqlite3.Connection) -> ActivationRecord | None:
            row = None
            if seq is not None:
                row = db.execute(
                    "SELECT * FROM activations WHERE seq = ? AND call_id = ?", (seq, call_id)
                ).fetchone()
            if row is None and self._legacy_seq:
                row = db.execute(
                    "SELECT * FROM activations WHERE seq <= ? AND call_id = ?",
                    (self._legacy_seq, call_id),
                ).fetchone()
            return self._activation(row) if row else None

        return await self._run(q)
