"""Activation records in the SQLite registry: call ids that name their row, and data
directories from before them."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

from faasbox.registry.api import ActivationRow, CallIds
from faasbox.registry.sqlite import SqliteStore


def _row(call_id: str, function: str = "hello") -> ActivationRow:
    return (call_id, function, 1, 1, 0.001, 200, False, 0.0, "r-1", "", "")


def test_call_ids_name_their_sequence_number() -> None:
    ids = CallIds(41)
    made = [ids.new() for _ in range(1000)]
    assert [CallIds.seq(c) for c in made] == list(range(41, 1041))
    assert len({c[:4] for c in made}) > 900  # they differ where people look
    assert all(len(c) == 32 and c.endswith(ids.suffix) for c in made)
    for bad in ("", "nope", "zz" * 16, made[0][:-1], made[0] + "0"):
        assert CallIds.seq(bad) is None


def test_records_are_found_by_call_id_and_ids_continue_after_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "db")
        first = [store.call_ids.new() for _ in range(3)]
        await store.add_activations([_row(c) for c in first])
        await store.aclose()
        store = SqliteStore(tmp_path / "db")
        later = store.call_ids.new()
        assert CallIds.seq(later) == 4  # counted on from the last row, never reused
        await store.add_activations([_row(later, "other")])
        for c in first:
            rec = await store.get_activation(c)
            assert rec is not None and rec.call_id == c and rec.function == "hello"
        rec = await store.get_activation(later)
        assert rec is not None and rec.function == "other"
        # The right number with another start's suffix is not that call.
        assert await store.get_activation(later[:16] + "0" * 16) is None
        assert await store.get_activation("not-a-call-id") is None
        assert [r.call_id for r in await store.list_activations(None, 10)] == [later, *first[::-1]]
        await store.aclose()

    asyncio.run(main())


def test_a_data_directory_from_before_is_migrated_keeping_its_records(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "db")
    db.execute(
        "CREATE TABLE activations (seq INTEGER PRIMARY KEY, call_id TEXT NOT NULL UNIQUE, "
        "function TEXT NOT NULL, version INTEGER NOT NULL, start_ns INTEGER NOT NULL, "
        "duration_s REAL NOT NULL, status INTEGER NOT NULL, cold INTEGER NOT NULL, "
        "init_ms REAL NOT NULL, replica TEXT NOT NULL, error TEXT NOT NULL, "
        "start_path TEXT NOT NULL DEFAULT '')"
    )
    old = [f"{i:016x}deadbeefdeadbeef" for i in (7, 3, 9)]  # ids that name no row
    for c in old:
        db.execute(
            "INSERT INTO activations(call_id, function, version, start_ns, duration_s, status, "
            "cold, init_ms, replica, error) VALUES (?, 'old', 1, 1, 0.5, 200, 0, 0, 'r', '')",
            (c,),
        )
    db.commit()
    db.close()

    async def main() -> None:
        store = SqliteStore(tmp_path / "db")
        for c in old:
            rec = await store.get_activation(c)
            assert rec is not None and rec.call_id == c and rec.function == "old"
        new = store.call_ids.new()
        assert CallIds.seq(new) == 4
        await store.add_activations([_row(new)])
        assert (await store.get_activation(new)) is not None
        assert len(await store.list_activations(None, 10)) == 4
        await store.aclose()

    asyncio.run(main())
    indexes = sqlite3.connect(tmp_path / "db").execute("PRAGMA index_list(activations)")
    assert not [i for i in indexes if i[2]]  # no unique index left to insert into


def test_records_are_written_by_a_writer_process_that_comes_back_if_killed(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "db")
        first = store.call_ids.new()
        await store.add_activations([_row(first)])
        writer = store._writer
        assert writer is not None and writer._proc is not None
        pid = writer._proc.pid
        assert pid != os.getpid() and (await store.get_activation(first)) is not None
        # Background work: it yields the CPU to anything a call wakes up.
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        os.kill(pid, signal.SIGKILL)
        await writer._proc.wait()
        again = store.call_ids.new()
        await store.add_activations([_row(again)])  # a new writer, or the thread fallback
        assert (await store.get_activation(again)) is not None
        await store.aclose()
        assert writer._proc is None

    asyncio.run(main())


def test_without_the_writer_process_records_are_written_in_a_thread(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "db", writer_process=False, max_activations=50)
        ids = [store.call_ids.new() for _ in range(200)]
        for i in range(0, 200, 10):
            await store.add_activations([_row(c) for c in ids[i : i + 10]])
        kept = await store.list_activations(None, 1000)
        # Bounded: the oldest beyond the cap go (now and then, so up to 10% more stay).
        assert 50 <= len(kept) <= 60 and kept[0].call_id == ids[-1]
        await store.aclose()

    asyncio.run(main())
