"""The report of bench/density.py: its results (Run, Step), tables, the section of
docs/benchmarks.md between <!-- density:start --> and <!-- density:end -->, the plot
docs/density.png, and the raw results in bench/.results/."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import coldstart
import warm
from density_mem import Snapshot

ROOT, RESULTS = warm.ROOT, warm.RESULTS
PLOT = ROOT / "docs" / "density.png"
START_MARK, END_MARK = "<!-- density:start -->", "<!-- density:end -->"
TARGET_N, TARGET_KIB = 1000, 8 * 1024
MIB = 1024.0  # KiB per MiB
SHARES = ("Pss_Anon", "Pss_File", "Pss_Shmem")


def log(msg: str) -> None:
    print(f"[density] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the run


@dataclass
class Step:
    n: int  # replicas that answered
    wanted: int
    snap: Snapshot
    api_replicas: int
    deploy_ms: float  # wall time per new function: its deploy, to every replica warm
    check_ms: list[float]  # the first round of calls: each function once, right after deploys
    call_ms: list[float]  # the second round, after 3 s idle
    cold_calls: int  # calls that had to start a replica: a warm one was lost
    errors: list[str]
    platform_cpu: float  # % of a core while idle
    sandbox_cpu: float
    loadavg: float


@dataclass
class Run:
    info: dict[str, Any]
    args: argparse.Namespace
    steps: list[Step] = field(default_factory=list)
    base: dict[str, dict[str, float]] = field(default_factory=dict)
    import_costs: dict[str, float] = field(default_factory=dict)
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)
    zero: Snapshot | None = None  # the platform up, nothing deployed
    stop: str = ""
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- report


def mib(kib: float | None, digits: int = 1) -> str:
    return "-" if kib is None else f"{kib / MIB:,.{digits}f} MiB"


def gib(kib: float) -> str:
    return f"{kib / MIB / MIB:.2f} GiB"


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def per_replica(step: Step, key: str = "Pss") -> list[float]:
    return [float(s.mem.get(key, 0)) for s in step.snap.replicas()]


def total(step: Step) -> int:
    """PSS of all that faasbox runs (platform, sandboxes, helpers), KiB."""
    snap = step.snap
    return (
        snap.platform["Pss"] + sum(s.mem["Pss"] for s in snap.sandboxes) + snap.other.get("Pss", 0)
    )


def drop(run: Run, step: Step) -> float | None:
    """MemAvailable lost per replica since the platform started alone, KiB."""
    return (run.zero.available - step.snap.available) / step.n if run.zero and step.n else None


def summary_line(step: Step) -> str:
    pss = per_replica(step)
    return (
        f"PSS per replica {mib(mean(pss), 2)} (max {mib(max(pss, default=None), 2)}), "
        f"platform {mib(step.snap.platform['Pss'])}, total {gib(total(step))}, "
        f"MemAvailable {gib(step.snap.available)}"
    )


STEP_HEADER = [
    "replicas",
    "PSS per replica: mean",
    "p50",
    "max",
    "anon / file / shmem",
    "USS",
    "cgroup charge (kernel)",
    "stem cells",
    "platform PSS",
    "total PSS",
    "MemAvailable (drop per replica)",
    "first call p50",
    "call p50",
    "call p99",
    "idle CPU: platform, sandboxes",
    "per deploy",
    "load",
]


def step_row(run: Run, step: Step) -> list[str]:
    pss, snap = per_replica(step), step.snap
    charge = mean([float(s.charge) for s in snap.replicas()])
    kmem = mean([float(s.kmem) for s in snap.replicas()])
    calls = step.call_ms
    return [
        f"{step.n:,}" + ("" if step.n == step.wanted else f" of {step.wanted:,}"),
        mib(mean(pss), 2),
        mib(coldstart.median(pss), 2),
        mib(max(pss, default=None), 2),
        " / ".join(f"{(mean(per_replica(step, k)) or 0) / MIB:.2f}" for k in SHARES),
        mib(mean(per_replica(step, "USS")), 2),
        f"{mib(charge)} ({mib(kmem)})" if charge else "-",
        str(len(snap.sandboxes) - len(snap.replicas())),
        mib(snap.platform["Pss"]),
        gib(total(step)),
        f"{gib(snap.available)} ({mib(drop(run, step))})",
        coldstart.fmt(coldstart.median(step.check_ms)),
        coldstart.fmt(coldstart.median(calls)),
        coldstart.fmt(coldstart.percentile(calls, 99) if calls else None),
        f"{step.platform_cpu:.1f}%, {step.sandbox_cpu:.1f}%",
        coldstart.fmt(step.deploy_ms),
        f"{step.loadavg:.1f}",
    ]


def largest(run: Run) -> Step | None:
    return max(run.steps, key=lambda s: s.n, default=None)


def verdict(run: Run) -> str:
    top = largest(run)
    if top is None:
        return "nothing was measured"
    per = mean(per_replica(top)) or 0.0
    ok = top.n >= TARGET_N and per <= TARGET_KIB
    return (
        f"largest N reached **{top.n:,}** replicas, at **{mib(per, 2)}** PSS per replica "
        f"(mean; max {mib(max(per_replica(top), default=None), 2)}). Target ≥ {TARGET_N:,} "
        f"at ≤ {mib(TARGET_KIB, 0)} each: **{'PASS' if ok else 'FAIL'}**. Stopped because "
        f"{run.stop}."
    )


def tables(run: Run) -> list[tuple[str, list[str], list[list[str]]]]:
    out = [
        (
            "Per step (PSS from `smaps_rollup`, summed over each sandbox's processes):",
            STEP_HEADER,
            [step_row(run, s) for s in run.steps],
        )
    ]
    if (top := largest(run)) and top.snap.replicas():
        reps = top.snap.replicas()
        procs: dict[str, list[int]] = {}
        for s in reps:
            for name, (kib, count) in s.by_comm.items():
                acc = procs.setdefault(name, [0, 0])
                acc[0], acc[1] = acc[0] + kib, acc[1] + count
        rows = [
            [f"`{name}`", mib(kib / len(reps), 2), f"{count / len(reps):.1f}"]
            for name, (kib, count) in sorted(procs.items(), key=lambda kv: -kv[1][0])
        ]
        title = f"One replica at N={top.n:,}, by process (mean over the replicas):"
        out.append((title, ["process", "PSS per replica", "processes per replica"], rows))
    if run.parts:
        rows = [
            [part, mib(pss, 2), mib(anon, 2)]
            for part, (pss, anon) in run.parts.items()
            if pss >= 10
        ]
        title = (
            "Inside the runtime's Python process (the largest process of 5 replicas "
            "spread over all, mean, from `/proc/<pid>/smaps`):"
        )
        out.append((title, ["part", "PSS", "of which anonymous"], rows))
    if run.base:
        keys = ("Pss", "Pss_Anon", "Pss_File", "USS", "Rss")
        rows = [[name, *(mib(m[k], 2) for k in keys)] for name, m in run.base.items()]
        title = (
            f"Baselines, measured before the platform started, with the interpreter replicas "
            f"run and its flags (`-I -S -B`), {run.args.copies} idle copies each, mean per copy. "
            "USS (unique set size) is the memory only that process maps: the limit of its PSS "
            "as more processes share the rest:"
        )
        out.append((title, ["process", "PSS", "anon", "file", "USS", "RSS"], rows))
    return out


def analysis(run: Run) -> list[str]:
    top, out = largest(run), list[str]()
    if top is None or not top.snap.replicas():
        return out
    per, anon = mean(per_replica(top)) or 0.0, mean(per_replica(top, "Pss_Anon")) or 0.0
    line = (
        f"- At N={top.n:,} a replica costs {mib(per, 2)} PSS, {anon / per:.0%} of it "
        "anonymous memory (private to the replica: its heap and the data it wrote); shared "
        "files (the interpreter, libpython, libc) are split over every process mapping "
        "them, so their part shrinks as N grows"
    )
    if run.parts:
        heap = sum(p for k, (p, _) in run.parts.items() if k.startswith("Python heap"))
        line += f". The Python heap alone is {mib(heap, 2)}"
    out.append(line + ".")
    b = list(run.base.values())
    if len(b) == 3:
        costs = ", ".join(f"`{k}` {mib(v, 2)}" for k, v in list(run.import_costs.items())[:4])
        out.append(
            f"- The floor: an idle `python3 -I -S` holds {mib(b[0]['Pss_Anon'], 2)} of anonymous "
            f"memory; with the runtime bootstrap's top-level imports {mib(b[1]['Pss_Anon'], 2)} "
            f"(each alone, with what it pulls in: {costs}). A replica is a separate "
            "interpreter that makes these imports, so it cannot go below that with this runtime. "
            f"Children forked from one interpreter that made them (`gc.freeze()`, then each runs "
            f"an event loop once) cost {mib(b[2]['Pss'], 2)} PSS each with {run.args.copies} of "
            f"them, and only {mib(b[2]['USS'], 2)} of their own (USS), toward which their PSS "
            "falls as more share the zygote's pages copy-on-write."
        )
    if run.zero and len(run.steps) > 0 and top.n:
        growth = (top.snap.platform["Pss"] - run.zero.platform["Pss"]) / top.n
        charge = mean([float(s.charge) for s in top.snap.replicas()]) or 0.0
        kmem = mean([float(s.kmem) for s in top.snap.replicas()]) or 0.0
        lost = drop(run, top) or 0.0
        out.append(
            f"- The platform itself: {mib(run.zero.platform['Pss'])} PSS with nothing deployed, "
            f"{mib(top.snap.platform['Pss'])} at N={top.n:,} ({growth:.0f} KiB more per "
            f"function and replica). Host MemAvailable fell by {mib(lost, 2)} per replica, "
            f"{mib(lost - charge, 2)} more than a replica's cgroup charge ({mib(charge, 2)}, "
            f"{mib(kmem, 2)} of it kernel memory): kernel memory charged elsewhere (namespaces, "
            "mounts), the platform's growth and, on this shared machine, whatever else ran."
        )
    first, calls = run.steps[0], top.call_ms
    out.append(
        f"- Idle replicas cost {'next to no' if top.sandbox_cpu < 1 else 'some'} CPU: over 3 s "
        f"with nothing to do at N={top.n:,}, the "
        f"sandboxes used {top.sandbox_cpu:.1f}% of a core and the platform "
        f"{top.platform_cpu:.1f}%. Warm calls, one at a time over every function: p50 "
        f"{coldstart.fmt(coldstart.median(calls))}, p99 "
        f"{coldstart.fmt(coldstart.percentile(calls, 99) if calls else None)} at N={top.n:,}, "
        f"against {coldstart.fmt(coldstart.median(first.call_ms))} and "
        f"{coldstart.fmt(coldstart.percentile(first.call_ms, 99) if first.call_ms else None)} "
        f"at N={first.n:,}. The first call a new replica serves is slower (p50 "
        f"{coldstart.fmt(coldstart.median(first.check_ms))} at N={first.n:,}), though it also "
        "runs right after the deploys, with the prewarm pool refilling."
    )
    out.append(
        f"- Deploying is the slow part of reaching high N: {coldstart.fmt(first.deploy_ms)} of "
        f"wall time per function at the first step, {coldstart.fmt(top.deploy_ms)} at the last "
        f"({run.args.parallel} deploys in flight, from the first request to every new replica "
        "warm). Each deploy imports the handler once in a sandbox of its own (the build check), "
        "then starts the warm replica `scale.min` asks for: two interpreters per function."
    )
    return out


def ideas(run: Run) -> list[str]:
    top = next(iter(run.import_costs), "")
    zygote = run.base.get("forked from a zygote that made those imports", {})
    return [
        "- Fork replicas from a zygote (SOCK, OpenLambda; DESIGN.md's plan): one interpreter per "
        "runtime makes the bootstrap's imports, calls `gc.freeze()`, then forks each replica "
        "(which then enters its namespaces and cgroup), so the heap made by the imports is "
        "shared copy-on-write"
        + (f"; the baseline above leaves {mib(zygote['USS'], 2)} per replica" if zygote else "")
        + ". Forking into new namespaces needs care (unshare after fork, a per-replica root).",
        f"- Import less in the runtime: `{top}` costs the most alone; a runtime that serves its "
        "socket with `selectors` and a thread (or imports `asyncio` only for `async def` "
        "handlers) would stay near the bare interpreter.",
        "- Fewer processes per replica: bwrap stays as the sandbox's parent and as its PID "
        "namespace's init; small in PSS, but each sandbox's namespaces, mounts, cgroups and page "
        "tables are kernel memory that PSS does not show (see the cgroup charge and the "
        "MemAvailable drop).",
        "- Reuse the build check's replica as the first warm one: a deploy with `scale.min` "
        "would start one interpreter instead of two, halving the time to reach high N.",
    ]


def render_section(run: Run, plot_ok: bool) -> str:
    a, info = run.args, run.info
    out = [
        START_MARK,
        "## Density",
        "",
        f"How many idle warm replicas of distinct functions one machine holds, and what each "
        f"costs. Target (issue 4): ≥ {TARGET_N:,} replicas at ≤ {mib(TARGET_KIB, 0)} PSS each.",
        "",
        f"Method: one `faasbox up --backend {a.backend} --port 0` with its own data directory. "
        f"[`examples/hello`](../examples/hello/handler.py) is deployed under a new name per "
        "replica (the same bundle, so the code is stored once), with `com.openfaas.scale.min: "
        f'"1"` so that each function keeps one warm replica that is never reaped, in steps '
        f"to {', '.join(map(str, a.steps))} replicas ({a.parallel} deploy requests in flight, "
        "each `?wait=true`). At each step every function is called once (its answer checked; "
        "the call must be warm; for the new functions, their replica's first call: *first "
        "call p50*), then the PSS of every process of every sandbox is read from "
        "`/proc/<pid>/smaps_rollup` and summed per sandbox, the sandboxes found by their memory "
        "cgroups (`<platform's group>/faasbox/<pid>/<sandbox>`); prewarmed sandboxes that hold no "
        "function yet (stem cells) are counted apart. *Cgroup charge* is what the kernel charges "
        "each replica's memory cgroup, kernel memory included. Idle CPU (% of one core) is "
        "measured over the next 3 s, then every function is called once more for the warm "
        "latency (*call p50, p99*: one call at a time, keep-alive). The run stops early when a deploy or a call fails, MemAvailable falls "
        f"below {a.min_available:g} GiB, or after {a.budget:.0f} s.",
        "",
        "Reproduce (sets up `.venv`; not part of `bench/run` without a name, as it takes "
        "several minutes):",
        "",
        "```bash",
        f"bench/run density --backend {a.backend} --steps {','.join(map(str, a.steps))}",
        "# or, with an existing venv: .venv/bin/python bench/density.py",
        "```",
        "",
        f"Measured {info['date']} on: {info['nproc']} CPUs (`nproc`), {info['cpu']}, "
        f"{info['memory']} RAM; {info['kernel']}; {info['python']}; {info['bwrap']}; faasbox "
        f"commit {info['commit'] or 'unknown'}. 1-minute load average before the run: "
        f"{info['loadavg']} (the machine is shared; the *load* column, at each step, is mostly "
        "this run's own deploys). The run took "
        f"{info.get('took', '?')}; stopping `faasbox up` at the end (SIGTERM: it stops every "
        f"replica, then exits) took {info.get('stop', '?')}.",
        "",
        "Result: " + verdict(run),
        "",
    ]
    for title, header, rows in tables(run):
        out += [title, "", *warm.md_table(header, rows, 1), ""]
    if lines := analysis(run):
        out += ["What dominates:", "", *lines, ""]
    out += [
        f"Ways to ≤ {mib(TARGET_KIB, 0)} per replica (not measured here, except the zygote "
        "baseline):",
        "",
        *ideas(run),
        "",
    ]
    if run.notes:
        out += ["Notes:", "", *(f"- {n}" for n in run.notes), ""]
    if plot_ok:
        out.append(f"![PSS per replica and in total against the number of replicas](./{PLOT.name})")
    return "\n".join([*out, END_MARK]) + "\n"


def update_doc(section: str) -> None:
    warm.write_section(section, START_MARK, END_MARK, after_mark=coldstart.END_MARK)


def plot(run: Run) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return False
    steps = [s for s in run.steps if s.n]
    if not steps:
        return False
    ns = [s.n for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.2))
    series: list[tuple[str, str, Callable[[list[float]], float | None], str, str]] = [
        ("PSS, mean", "Pss", mean, "-", "#2b7bb9"),
        ("anonymous, mean", "Pss_Anon", mean, "--", "#7fb3e0"),
        ("PSS, max", "Pss", max, ":", "#1b4f7a"),
    ]
    for label, key, f, style, color in series:
        left.plot(
            ns,
            [(f(per_replica(s, key)) or 0) / MIB for s in steps],
            style,
            marker="o",
            color=color,
            label=label,
        )
    left.axhline(TARGET_KIB / MIB, color="#c0392b", ls="--", label="target: 8 MiB")
    # Baselines: the zygote's children by what is theirs alone (their PSS at N copies tends
    # to it); the idle interpreters share next to nothing, so their PSS is that already.
    styles = (("Pss", "#888888"), ("Pss", "#b07aa1"), ("USS", "#3a9a4a"))
    for (name, m), (key, color) in zip(run.base.items(), styles, strict=False):
        label = f"baseline: {name} ({'PSS' if key == 'Pss' else 'USS'})"
        left.axhline(m[key] / MIB, color=color, ls="-.", lw=1.2, label=label)
    left.set_ylim(0, None)
    left.set(xlabel="warm replicas (N)", ylabel="MiB per replica", title="memory per replica")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    right.plot(
        ns,
        [total(s) / MIB / MIB for s in steps],
        marker="o",
        color="#2b7bb9",
        label="PSS: platform + every sandbox",
    )
    if run.zero:
        right.plot(
            ns,
            [(run.zero.available - s.snap.available) / MIB / MIB for s in steps],
            marker="s",
            color="#e08a1e",
            label="host MemAvailable drop",
        )
    right.plot(
        ns,
        [s.snap.platform["Pss"] / MIB / MIB for s in steps],
        marker="^",
        color="#444444",
        label="platform process PSS",
    )
    right.plot(
        [0, max(ns)],
        [0, max(ns) * TARGET_KIB / MIB / MIB],
        color="#c0392b",
        ls="--",
        label="target: N x 8 MiB",
    )
    right.set(xlabel="warm replicas (N)", ylabel="GiB", title="memory in total")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0, None)
    fig.suptitle(
        f"faasbox density, {run.args.backend} backend, Python hello "
        f"({run.info['date']}, {run.info['nproc']} CPUs)",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)
    log(f"wrote {PLOT}")
    return True


def print_report(run: Run) -> None:
    for title, header, rows in tables(run):
        print("\n" + title)
        for line in warm.console_table(header, rows, 1):
            print("  " + line)
    print("\n" + verdict(run).replace("**", ""))
    for line in analysis(run):
        print(line)
    for note in run.notes:
        print("note: " + note)


def save_raw(run: Run) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"density-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    data = {k: v for k, v in asdict(run).items() if k != "args"} | {"args": vars(run.args)}
    path.write_text(json.dumps(data, indent=1, default=str))
    log(f"raw results in {path}")
