"""Per-sandbox cgroups for memory, CPU and process-count limits, on cgroup v1 or v2.

Each platform process keeps its sandboxes' groups under ``<its own group>/faasbox/<pid>``,
so that they nest under whatever limits the platform itself runs with, and so that the
groups a crashed platform left behind can be told apart (by its pid) and removed at the
next start without touching a live neighbour's.

- **v1** (separate hierarchies per controller, as on this machine and CI in hybrid mode):
  ``memory.limit_in_bytes``, ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, ``cpu.shares``,
  ``pids.max``; OOM kills are counted in ``memory.oom_control``.
- **v2** (one unified hierarchy): ``memory.max`` (and ``memory.swap.max`` 0), ``cpu.max``,
  ``cpu.weight``, ``pids.max``; OOM kills are counted in ``memory.events``. Controllers
  must be enabled in each ancestor's ``cgroup.subtree_control``, and a group with enabled
  controllers may hold no processes: if the platform's own group refuses (EBUSY), the platform moves
  itself into a leaf ``faasbox-platform`` beside its sandboxes first, as container
  runtimes do under a delegated systemd unit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path
from typing import Protocol

from faasbox.errors import BadRequest
from faasbox.sandbox.api import Limits

ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
DEFAULT_WEIGHT = 100  # cgroup v2's cpu.weight default; v1's cpu.shares is 1024 for it
V1_CONTROLLERS = ("memory", "pids", "cpu")


class Cgroups(Protocol):
    version: int

    def create(self, sandbox_id: str, limits: Limits) -> list[bytes]:
        """Make the sandbox's group(s) with its limits; returns the ``cgroup.procs`` paths a
        child joins (by writing ``0``) between fork and exec."""
        ...

    def update(self, sandbox_id: str, limits: Limits) -> None:
        """Replace a live group's limits (a stem cell's, when it gets its function). A
        memory limit below what the group already uses fails (v1: EBUSY)."""
        ...

    def oom_kills(self, sandbox_id: str) -> int: ...

    def procs(self, sandbox_id: str) -> list[int]:
        """The host pids of the group's processes (none once it is gone)."""
        ...

    def remove(self, sandbox_id: str) -> None: ...


def detect(root: Path = ROOT, proc_self_cgroup: Path = Path("/proc/self/cgroup")) -> Cgroups:
    """v2 when the unified hierarchy is mounted at ``root``, else the v1 controllers."""
    if (root / "cgroup.controllers").exists():
        return CgroupV2(root, proc_self_cgroup)
    return CgroupV1(root, proc_self_cgroup)


def _own_paths(proc_self_cgroup: Path) -> dict[str, str]:
    """Controller name (``""`` for the v2 line) -> this process's group path."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in proc_self_cgroup.read_text().splitlines():
            _, names, path = line.split(":", 2)
            for name in names.split(",") if names else [""]:
                out[name] = path.lstrip("/")
    return out


def _write(path: Path, value: object) -> None:
    path.write_text(str(value))


def _shares(weight: int) -> int:
    """v1's cpu.shares for a v2-style weight (100 -> 1024; the kernel's minimum is 2)."""
    return max(2, weight * 1024 // DEFAULT_WEIGHT)


def _rmdir_soon(path: Path) -> None:
    # The kernel frees a group only once its last process is gone: retry briefly.
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _remove_stale(root: Path) -> None:
    """Remove the groups of platform processes that no longer run (killed, crashed)."""
    with contextlib.suppress(OSError):
        for group in root.iterdir():
            if not group.is_dir() or not group.name.isdigit():
                continue
            if Path(f"/proc/{group.name}").exists():
                continue
            for child in group.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                group.rmdir()


def _pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except (OSError, ValueError):
        return []


def kill(groups: Cgroups, sandbox_id: str) -> int:
    """SIGKILL every process in the group now; returns how many there were (a process
    forked meanwhile may need another round)."""
    pids = groups.procs(sandbox_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _counter(path: Path, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


class CgroupV1:
    version = 1

    def __init__(self, root: Path = ROOT, proc_self_cgroup: Path = Path("/proc/self/cgroup")):
        own = _own_paths(proc_self_cgroup)
        self.parents = {
            c: root / c / own.get(c, "") / "faasbox" / str(os.getpid()) for c in V1_CONTROLLERS
        }
        for controller, parent in self.parents.items():
            _remove_stale(parent.parent)
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BadRequest(
                    f"sandboxes need the cgroup v1 {controller} controller writable at "
                    f"{parent.parent}: {exc.strerror}; run faasbox as root, "
                    "or use --backend process"
                ) from None

        # What each group's limits are now: ``update`` writes only what changes.
        self._limits: dict[str, Limits] = {}

    def _groups(self, sandbox_id: str) -> dict[str, Path]:
        return {c: parent / sandbox_id for c, parent in self.parents.items()}

    def create(self, sandbox_id: str, limits: Limits) -> list[bytes]:
        settings: dict[str, dict[str, int]] = {
            "memory": {"memory.limit_in_bytes": limits.memory_bytes},
            "pids": {"pids.max": limits.pids},
            "cpu": (
                {
                    "cpu.cfs_period_us": CFS_PERIOD_US,
                    "cpu.cfs_quota_us": max(1000, int(limits.cpu * CFS_PERIOD_US)),
                }
                if limits.cpu
                else {}
            ),
        }
        if limits.cpu_weight != DEFAULT_WEIGHT:
            settings["cpu"]["cpu.shares"] = _shares(limits.cpu_weight)
        groups = self._groups(sandbox_id)
        for controller, path in groups.items():
            path.mkdir(parents=True, exist_ok=True)
            for name, value in settings[controller].items():
                _write(path / name, value)
        self._limits[sandbox_id] = limits
        return [os.fsencode(p / "cgroup.procs") for p in groups.values()]

    def update(self, sandbox_id: str, limits: Limits) -> None:
        now = self._limits.get(sandbox_id)
        groups = self._groups(sandbox_id)
        if now is None or limits.memory_bytes != now.memory_bytes:
            _write(groups["memory"] / "memory.limit_in_bytes", limits.memory_bytes)
        if now is None or limits.pids != now.pids:
            _write(groups["pids"] / "pids.max", limits.pids)
        if now is None or limits.cpu != now.cpu:
            if limits.cpu:
                _write(groups["cpu"] / "cpu.cfs_period_us", CFS_PERIOD_US)
                _write(
                    groups["cpu"] / "cpu.cfs_quota_us", max(1000, int(limits.cpu * CFS_PERIOD_US))
                )
            else:
                _write(groups["cpu"] / "cpu.cfs_quota_us", -1)
        if limits.cpu_weight != (now.cpu_weight if now else DEFAULT_WEIGHT):
            _write(groups["cpu"] / "cpu.shares", _shares(limits.cpu_weight))
        self._limits[sandbox_id] = limits

    def oom_kills(self, sandbox_id: str) -> int:
        return _counter(self._groups(sandbox_id)["memory"] / "memory.oom_control", "oom_kill")

    def procs(self, sandbox_id: str) -> list[int]:
        # The pids controller's group: every process of the sandbox joins each controller.
        return _pids(self._groups(sandbox_id)["pids"] / "cgroup.procs")

    def remove(self, sandbox_id: str) -> None:
        self._limits.pop(sandbox_id, None)
        for path in self._groups(sandbox_id).values():
            _rmdir_soon(path)


class CgroupV2:
    version = 2
    CONTROLLERS = ("memory", "pids", "cpu")

    def __init__(self, root: Path = ROOT, proc_self_cgroup: Path = Path("/proc/self/cgroup")):
        own = root / _own_paths(proc_self_cgroup).get("", "")
        available = set((own / "cgroup.controllers").read_text().split())
        missing = [c for c in ("memory", "pids") if c not in available]
        if missing:
            raise BadRequest(
                f"sandboxes need the cgroup v2 {' and '.join(missing)} controller(s) "
                f"delegated to {own}; run faasbox as root (or under a systemd unit with "
                "Delegate=yes), or use --backend process"
            )
        self.controllers = [c for c in self.CONTROLLERS if c in available]
        self.parent = own / "faasbox" / str(os.getpid())
        self._limits: dict[str, Limits] = {}
        try:
            self._enable(own, leaf=own / "faasbox-platform")
            (own / "faasbox").mkdir(exist_ok=True)
            _remove_stale(own / "faasbox")
            self._enable(own / "faasbox")
            self.parent.mkdir(exist_ok=True)
            self._enable(self.parent)
        except OSError as exc:
            raise BadRequest(
                f"sandboxes need a writable cgroup v2 group at {own}: {exc.strerror}; run "
                "faasbox as root (or under a systemd unit with Delegate=yes), or use "
                "--backend process"
            ) from None

    def _enable(self, group: Path, leaf: Path | None = None) -> None:
        control = " ".join(f"+{c}" for c in self.controllers)
        try:
            _write(group / "cgroup.subtree_control", control)
        except OSError as exc:
            # A group holding processes cannot hand controllers to children: move this
            # process into a leaf of its own, then try again.
            if exc.errno != errno.EBUSY or leaf is None:
                raise
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", os.getpid())
            _write(group / "cgroup.subtree_control", control)

    def create(self, sandbox_id: str, limits: Limits) -> list[bytes]:
        group = self.parent / sandbox_id
        group.mkdir(exist_ok=True)
        _write(group / "memory.max", limits.memory_bytes)
        if (group / "memory.swap.max").exists():  # absent without swap accounting
            _write(group / "memory.swap.max", 0)
        _write(group / "pids.max", limits.pids)
        if limits.cpu and "cpu" in self.controllers:
            quota = max(1000, int(limits.cpu * CFS_PERIOD_US))
            _write(group / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        if limits.cpu_weight != DEFAULT_WEIGHT and "cpu" in self.controllers:
            _write(group / "cpu.weight", limits.cpu_weight)
        self._limits[sandbox_id] = limits
        return [os.fsencode(group / "cgroup.procs")]

    def update(self, sandbox_id: str, limits: Limits) -> None:
        now = self._limits.get(sandbox_id)
        group = self.parent / sandbox_id
        if now is None or limits.memory_bytes != now.memory_bytes:
            _write(group / "memory.max", limits.memory_bytes)
        if now is None or limits.pids != now.pids:
            _write(group / "pids.max", limits.pids)
        if "cpu" in self.controllers and (now is None or limits.cpu != now.cpu):
            quota = str(max(1000, int(limits.cpu * CFS_PERIOD_US))) if limits.cpu else "max"
            _write(group / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        weight_now = now.cpu_weight if now else DEFAULT_WEIGHT
        if "cpu" in self.controllers and limits.cpu_weight != weight_now:
            _write(group / "cpu.weight", limits.cpu_weight)
        self._limits[sandbox_id] = limits

    def oom_kills(self, sandbox_id: str) -> int:
        return _counter(self.parent / sandbox_id / "memory.events", "oom_kill")

    def procs(self, sandbox_id: str) -> list[int]:
        return _pids(self.parent / sandbox_id / "cgroup.procs")

    def remove(self, sandbox_id: str) -> None:
        self._limits.pop(sandbox_id, None)
        _rmdir_soon(self.parent / sandbox_id)
