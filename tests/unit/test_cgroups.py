"""cgroup v1/v2 bookkeeping. The v1 path runs for real in the namespaces tests (this
machine and CI run the v1 controllers); v2 cannot be mounted with controllers here, so its
file protocol is checked against a directory laid out like a unified hierarchy."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from faasbox.errors import BadRequest
from faasbox.sandbox import cgroups
from faasbox.sandbox.api import Limits

MiB = 1024 * 1024


def _v2_tree(tmp_path: Path, controllers: str = "cpuset cpu io memory pids") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    own = root / "system.slice" / "faasbox.service"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.controllers").write_text(controllers + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/system.slice/faasbox.service\n")
    return root, proc


def test_detect_picks_v2_when_the_unified_hierarchy_is_mounted(tmp_path: Path) -> None:
    root, proc = _v2_tree(tmp_path)
    assert cgroups.detect(root, proc).version == 2


def test_detect_picks_v1_in_hybrid_mode(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    for c in ("memory", "pids", "cpu"):
        (root / c).mkdir(parents=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:memory:/x\n8:pids:/\n1:cpu:/\n0::/\n")
    cg = cgroups.detect(root, proc)
    assert cg.version == 1
    procs = cg.create("box", Limits(memory_bytes=64 * MiB, cpu=0.5, pids=32))
    mem = root / "memory" / "x" / "faasbox" / str(os.getpid()) / "box"
    assert (mem / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    assert (
        root / "cpu" / "faasbox" / str(os.getpid()) / "box" / "cpu.cfs_quota_us"
    ).read_text() == "50000"
    assert os.fsencode(mem / "cgroup.procs") in procs


def test_v2_limits_and_oom_counter(tmp_path: Path) -> None:
    root, proc = _v2_tree(tmp_path)
    cg = cgroups.CgroupV2(root, proc)
    own = root / "system.slice" / "faasbox.service"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (own / "faasbox" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    procs = cg.create("box", Limits(memory_bytes=128 * MiB, cpu=1.5, pids=64))
    group = own / "faasbox" / str(os.getpid()) / "box"
    assert procs == [os.fsencode(group / "cgroup.procs")]
    assert (group / "memory.max").read_text() == str(128 * MiB)
    assert (group / "pids.max").read_text() == "64"
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert cg.oom_kills("box") == 0
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.oom_kills("box") == 1
    for f in group.iterdir():
        f.unlink()
    cg.remove("box")
    assert not group.exists()


def test_v2_moves_the_platform_into_a_leaf_when_its_group_holds_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, proc = _v2_tree(tmp_path)
    own = root / "system.slice" / "faasbox.service"
    real_write = cgroups._write
    refused: list[Path] = []

    def write(path: Path, value: object) -> None:
        # The kernel's "no internal processes" rule: refuse until the platform has moved.
        if path == own / "cgroup.subtree_control" and not (own / "faasbox-platform").exists():
            refused.append(path)
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", write)
    cgroups.CgroupV2(root, proc)
    assert refused
    assert (own / "faasbox-platform" / "cgroup.procs").read_text() == str(os.getpid())


def test_v2_without_delegated_memory_controller_says_what_to_do(tmp_path: Path) -> None:
    root, proc = _v2_tree(tmp_path, controllers="cpu io")
    with pytest.raises(BadRequest, match=r"memory and pids controller.*Delegate=yes"):
        cgroups.CgroupV2(root, proc)


def test_stale_groups_of_dead_platforms_are_removed(tmp_path: Path) -> None:
    root, proc = _v2_tree(tmp_path)
    own = root / "system.slice" / "faasbox.service"
    dead = own / "faasbox" / "999999999" / "old-box"
    dead.mkdir(parents=True)
    cgroups.CgroupV2(root, proc)
    assert not dead.parent.exists()
    assert (own / "faasbox" / str(os.getpid())).is_dir()
