"""Memory of the processes a faasbox platform runs, for bench/density.py: PSS from
/proc/<pid>/smaps_rollup, sandboxes found by their memory cgroups (v1 or v2, as
src/faasbox/sandbox/cgroups.py makes them), a breakdown of one process by mapping, and
baselines (idle interpreters, children of a zygote)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import coldstart  # the cold-start benchmark beside this file: the interpreter replicas run

CGROUP = Path("/sys/fs/cgroup")
# From smaps_rollup, KiB; USS (unique set size) is Private_Clean + Private_Dirty: what the
# process alone maps, the floor its PSS tends to as more processes share the rest.
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "USS")
PRIVATE = ("Private_Clean", "Private_Dirty")

# --------------------------------------------------------------------------- /proc


def rollup(pid: int) -> dict[str, int] | None:
    """The FIELDS of a process's smaps_rollup in KiB; None once it is gone."""
    out = dict.fromkeys(FIELDS, 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
                elif key in PRIVATE:
                    out["USS"] += int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return out


def meminfo(key: str = "MemAvailable") -> int:
    """A /proc/meminfo value in KiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def proc_stat(pid: int) -> tuple[int, int, float] | None:
    """(ppid, start time in ticks, CPU seconds) of a process; None once it has exited
    (a zombie holds no memory: it only waits for its parent)."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[1]), int(rest[19]), (int(rest[11]) + int(rest[12])) / coldstart.CLK_TCK


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := proc_stat(int(d.name))):
            children.setdefault(st[0], []).append(int(d.name))
    return children


def descendants(root: int, children: dict[int, list[int]] | None = None) -> set[int]:
    children = children_map() if children is None else children
    out, todo = set(), list(children.get(root, []))
    while todo:
        out.add(pid := todo.pop())
        todo += children.get(pid, [])
    return out


def comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


def sandbox_root(platform_pid: int) -> Path | None:
    """Where the platform keeps its sandboxes' memory cgroups (src/faasbox/sandbox/cgroups.py):
    <its own group>/faasbox/<its pid>, v1 or v2."""
    try:
        lines = Path(f"/proc/{platform_pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if "memory" in names.split(","):
            return CGROUP / "memory" / path.lstrip("/") / "faasbox" / str(platform_pid)
    for line in lines:
        _, names, path = line.split(":", 2)
        if not names and (CGROUP / "cgroup.controllers").exists():
            own = CGROUP / path.lstrip("/")
            own = own.parent if own.name == "faasbox-platform" else own
            return own / "faasbox" / str(platform_pid)
    return None


def group_pids(group: Path) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    return []


def group_charge(group: Path) -> tuple[int, int]:
    """(memory charged to the group, of which kernel memory), KiB; v1 or v2."""

    def num(name: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int((group / name).read_text().split()[0])
        return 0

    if (group / "memory.usage_in_bytes").exists():
        return num("memory.usage_in_bytes") // 1024, num("memory.kmem.usage_in_bytes") // 1024
    stat = dict.fromkeys(["kernel"], 0)
    with contextlib.suppress(OSError, ValueError):
        for line in (group / "memory.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            stat[k] = int(v)
    return num("memory.current") // 1024, stat["kernel"] // 1024


def shows_code(pid: int, code_root: str) -> bool:
    """Whether a sandboxed process sees a function's code: a mount below the code store. A
    stem cell (prewarmed sandbox, no function yet) has only the empty store itself."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            if line.split(" ")[4].startswith(code_root + "/"):
                return True
    return False


# --------------------------------------------------------------------------- snapshots


@dataclass
class Sandbox:
    id: str
    kind: str  # "replica" | "stem cell"
    pids: list[int]
    mem: dict[str, int]  # FIELDS summed over its processes, KiB
    by_comm: dict[str, tuple[int, int]]  # process name -> (PSS, KiB; how many)
    charge: int = 0  # cgroup: memory charged, KiB
    kmem: int = 0


@dataclass
class Snapshot:
    sandboxes: list[Sandbox]
    platform: dict[str, int]
    other: dict[str, int]  # descendants in no sandbox (helpers)
    available: int  # MemAvailable, KiB
    took_s: float
    starts: dict[int, int]  # every sandbox process: pid -> its start time (ticks)

    def replicas(self) -> list[Sandbox]:
        return [s for s in self.sandboxes if s.kind == "replica"]


def add(total: dict[str, int], part: dict[str, int] | None) -> None:
    for k, v in (part or {}).items():
        total[k] = total.get(k, 0) + v


def snapshot(platform_pid: int, data_dir: Path) -> Snapshot:
    t0 = time.perf_counter()
    root, code_root = sandbox_root(platform_pid), str(data_dir / "code")
    groups: list[tuple[str, Path | None, list[int]]] = []
    if root is not None and root.is_dir():
        groups = [(g.name, g, group_pids(g)) for g in sorted(root.iterdir()) if g.is_dir()]
    children = children_map()
    desc = descendants(platform_pid, children)
    if not groups:  # no cgroups (process backend): a sandbox is a child and its subtree
        kids = sorted(children.get(platform_pid, []))
        groups = [(f"pid-{c}", None, [c, *descendants(c, children)]) for c in kids]
    grouped = {pid for _, _, pids in groups for pid in pids}
    sandboxes = []
    for name, group, pids in groups:
        if not pids:
            continue
        mem: dict[str, int] = {}
        by_comm: dict[str, tuple[int, int]] = {}
        for pid in pids:
            if (r := rollup(pid)) is not None:
                add(mem, r)
                pss, count = by_comm.get(c := comm(pid), (0, 0))
                by_comm[c] = (pss + r["Pss"], count + 1)
        if not mem:  # its processes ended since cgroup.procs was read (a sandbox stopping)
            continue
        stem = name.startswith("prewarm-") and not any(shows_code(p, code_root) for p in pids)
        s = Sandbox(name, "stem cell" if stem else "replica", pids, mem, by_comm)
        if group is not None:
            s.charge, s.kmem = group_charge(group)
        sandboxes.append(s)
    other: dict[str, int] = {}
    for pid in desc - grouped:
        add(other, rollup(pid))
    platform = rollup(platform_pid) or dict.fromkeys(FIELDS, 0)
    starts = {p: st[1] for p in grouped if (st := proc_stat(p))}
    took = time.perf_counter() - t0
    return Snapshot(sandboxes, platform, other, meminfo(), took, starts)


def idle_cpu(sets: list[list[int]], seconds: float) -> list[float]:
    """CPU each set of processes used in `seconds` of doing nothing, % of one core
    (processes that exit meanwhile are left out)."""

    def cpu(pids: list[int]) -> dict[int, float]:
        return {p: st[2] for p in pids if (st := proc_stat(p))}

    before = [cpu(pids) for pids in sets]
    time.sleep(seconds)
    after = [cpu(pids) for pids in sets]
    return [
        sum(a[p] - b[p] for p in a.keys() & b.keys()) / seconds * 100
        for a, b in zip(after, before, strict=True)
    ]


# --------------------------------------------------------------------------- what a runtime holds

PARTS = {  # smaps mapping -> part of a Python runtime's memory
    "[heap]": "Python heap: brk (malloc, small objects)",
    "": "Python heap: anonymous mmaps (obmalloc arenas, big objects)",
    "[stack]": "main thread stack",
}


def part_of(path: str) -> str:
    if path in PARTS:
        return PARTS[path]
    if "libpython" in path:
        return "libpython (its data is copied on write)"
    if path.startswith("/") and ".so" in path:
        return "other shared libraries (libc, ld.so, lib-dynload)"
    if path.startswith("/") and "python" in Path(path).name:
        return "the interpreter binary"
    return "other ([vdso], [vvar], files)"


def breakdown(pid: int) -> dict[str, tuple[int, int]]:
    """{part: (PSS, of which anonymous)} of one process, KiB, from /proc/<pid>/smaps."""
    out: dict[str, list[int]] = {}
    part, rss, pss = "", 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):  # a new mapping
                part = part_of(head[5] if len(head) > 5 else "")
            elif head[0] == "Rss:":
                rss = int(head[1])
            elif head[0] == "Pss:":
                pss = int(head[1])
            elif head[0] == "Anonymous:":  # private: counts whole in PSS
                slot = out.setdefault(part, [0, 0])
                slot[0] += pss
                slot[1] += min(pss, int(head[1])) if rss else 0
    return {k: (v[0], v[1]) for k, v in sorted(out.items(), key=lambda kv: -kv[1][0])}


def runtime_breakdown(replicas: list[Sandbox], k: int = 5) -> dict[str, tuple[float, float]]:
    """Mean breakdown of the largest process (the runtime) of k replicas spread over all."""
    picked = replicas[:: max(1, len(replicas) // k)][:k]
    parts: dict[str, list[float]] = {}
    for s in picked:
        biggest = max(s.pids, key=lambda p: (rollup(p) or {"Pss": 0})["Pss"])
        with contextlib.suppress(OSError):
            for name, (pss, anon) in breakdown(biggest).items():
                acc = parts.setdefault(name, [0.0, 0.0])
                acc[0], acc[1] = acc[0] + pss / len(picked), acc[1] + anon / len(picked)
    return {k: (v[0], v[1]) for k, v in parts.items()}


# --------------------------------------------------------------------------- baselines

READY = "print('ready', flush=True)\nimport sys\nsys.stdin.buffer.read()\n"
ZYGOTE = """
import asyncio, gc, os, sys
gc.freeze()  # keep the collector from writing to every object it inherited
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        asyncio.run(asyncio.sleep(0))  # a child that has run an event loop once
        break
print('ready', flush=True)
sys.stdin.buffer.read()
"""


def measure_copies(code: str, copies: int, zygote: bool = False) -> dict[str, float]:
    """Mean FIELDS (KiB) over `copies` idle interpreters running `code` (as replicas run:
    -I -S -B); zygote: one process that forks the copies and is not counted."""
    argv = [coldstart.interpreter(), "-I", "-S", "-B", "-c", code]
    n = copies + 1 if zygote else copies
    procs = [
        subprocess.Popen(
            [*argv, str(copies)] if zygote else argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        for _ in range(1 if zygote else copies)
    ]
    try:
        lines = [p.stdout.readline() for p in procs for _ in range(n if zygote else 1)]  # type: ignore[union-attr]
        if lines.count(b"ready\n") != n:
            raise RuntimeError(f"baseline interpreters did not start: {lines[:3]!r}")
        pids = [p for p in descendants(procs[0].pid)] if zygote else [p.pid for p in procs]
        mems = [m for pid in pids if (m := rollup(pid))]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return {k: sum(m[k] for m in mems) / len(mems) for k in FIELDS}


def baselines(copies: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """PSS of idle interpreters, and the anonymous memory each of the runtime's top-level
    imports adds to a bare interpreter (alone, with what it pulls in), KiB."""
    stmts = [s for s in coldstart.runtime_imports()[0] if "__future__" not in s]
    imports = "\n".join(stmts)
    out = {
        "python3 -I -S, idle": measure_copies(READY, copies),
        "python3 + the runtime's imports, idle": measure_copies(imports + "\n" + READY, copies),
        "forked from a zygote that made those imports": measure_copies(
            imports + ZYGOTE, copies, zygote=True
        ),
    }
    bare = measure_copies(READY, 1)["Pss_Anon"]
    costs = {s: measure_copies(s + "\n" + READY, 1)["Pss_Anon"] - bare for s in stmts}
    return out, dict(sorted(costs.items(), key=lambda kv: -kv[1]))


def leftovers(snap: Snapshot | None, root: str, grace: float = 5.0) -> list[str]:
    """Sandbox processes alive `grace` seconds after the platform stopped: those of `snap`
    (same pid and start time) and any left in the sandboxes' cgroups under `root`. Killed,
    and returned as "pid (name)"."""
    starts = snap.starts if snap else {}

    def alive() -> list[int]:
        found = [p for p, t in starts.items() if (st := proc_stat(p)) and st[1] == t]
        if root and Path(root).is_dir():
            found += [p for g in Path(root).iterdir() if g.is_dir() for p in group_pids(g)]
        return sorted(set(found))

    deadline = time.monotonic() + grace
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    named = [f"{pid} ({comm(pid)})" for pid in left]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return named
