"""A stem cell's limits replaced when it gets its function (``Cgroups.update``): only what
changes is written. v1 for real runs in tests/integration/test_prewarm.py; here both file
protocols are checked against directories laid out like the hierarchies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faasbox.sandbox import cgroups
from faasbox.sandbox.api import Limits

MiB = 1024 * 1024


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = cgroups._write

    def write(path: Path, value: object) -> None:
        seen.append(path.name)
        real(path, value)

    monkeypatch.setattr(cgroups, "_write", write)
    return seen


def test_v1_update_writes_only_what_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cgroup"
    for c in ("memory", "pids", "cpu"):
        (root / c).mkdir(parents=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:memory:/\n8:pids:/\n1:cpu:/\n0::/\n")
    cg = cgroups.CgroupV1(root, proc)
    cg.create("stem", Limits(memory_bytes=256 * MiB, cpu_weight=10))
    cpu = root / "cpu" / "faasbox" / str(os.getpid()) / "stem"
    assert (cpu / "cpu.shares").read_text() == "102", "a tenth of the default 1024"
    writes = _writes(monkeypatch)
    cg.update("stem", Limits(memory_bytes=64 * MiB))
    assert writes == ["memory.limit_in_bytes", "cpu.shares"]
    assert (cpu / "cpu.shares").read_text() == "1024"
    group = root / "memory" / "faasbox" / str(os.getpid()) / "stem"
    assert (group / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    writes.clear()
    cg.update("stem", Limits(memory_bytes=64 * MiB, cpu=0.25))
    assert writes == ["cpu.cfs_period_us", "cpu.cfs_quota_us"]
    assert (cpu / "cpu.cfs_quota_us").read_text() == "25000"
    cg.update("stem", Limits(memory_bytes=64 * MiB))
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1", "no quota: unlimited again"


def test_v2_update_writes_only_what_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cgroup"
    own = root / "faasbox.service"
    own.mkdir(parents=True)
    for d in (root, own):
        (d / "cgroup.controllers").write_text("cpu memory pids\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/faasbox.service\n")
    cg = cgroups.CgroupV2(root, proc)
    cg.create("stem", Limits(memory_bytes=256 * MiB, cpu_weight=10))
    group = own / "faasbox" / str(os.getpid()) / "stem"
    assert (group / "cpu.weight").read_text() == "10"
    writes = _writes(monkeypatch)
    cg.update("stem", Limits(memory_bytes=128 * MiB, cpu=1.5, pids=32))
    assert sorted(writes) == ["cpu.max", "cpu.weight", "memory.max", "pids.max"]
    assert (group / "cpu.weight").read_text() == "100"
    assert (group / "memory.max").read_text() == str(128 * MiB)
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert (group / "pids.max").read_text() == "32"
    writes.clear()
    cg.update("stem", Limits(memory_bytes=128 * MiB, cpu=1.5, pids=32))
    assert writes == []
