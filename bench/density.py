#!/usr/bin/env python3
"""Density benchmark: how many idle warm replicas of distinct functions one machine holds,
and what each costs in memory (PSS, from /proc/<pid>/smaps_rollup).

    bench/run density                                   # sets up .venv, then runs this
    .venv/bin/python bench/density.py [--backend namespaces] [--steps 50,100,200,400,700,1000]

One `faasbox up --port 0` with a data directory of its own; examples/hello is deployed
under a new name per replica, with `com.openfaas.scale.min: "1"`, so each function keeps
one warm replica. At each step (N replicas) it calls every function once, then reads the
PSS of every process of every sandbox (grouped by the sandbox's cgroup), of the platform
itself, and the host's MemAvailable. It stops at the last step, or earlier when a deploy or
a call fails, MemAvailable falls below --min-available, or --budget runs out. Baselines,
measured in the same run before the platform starts: idle Python interpreters (bare, with
the runtime's imports) and children forked from a "zygote" that made those imports.

Rewrites the section between <!-- density:start --> and <!-- density:end --> of
docs/benchmarks.md, and docs/density.png; raw results go to bench/.results/.
Target (issue 4): >= 1,000 replicas at <= 8 MiB PSS each. Exit status 0 when every step
ran without errors (pass or fail is reported), else 1.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import coldstart  # the cold-start benchmark beside this file: server, calls, machine info
import httpx
import warm
from density_mem import (
    baselines,
    idle_cpu,
    leftovers,
    meminfo,
    runtime_breakdown,
    sandbox_root,
    snapshot,
)
from density_report import (
    Run,
    Step,
    log,
    plot,
    print_report,
    render_section,
    save_raw,
    summary_line,
    update_doc,
)

NAME = "dense-{:04d}"
SPEC = {
    "runtime": "python3",
    "handler": "handler.handle",
    "labels": {
        "com.openfaas.scale.min": "1",
        "com.openfaas.scale.max": "1",
        "com.openfaas.scale.zero-duration": "1h",
    },
    "limits": {"memory": "128Mi"},
}
GIB = 1024 * 1024  # KiB per GiB


def deploy(
    url: str, names: list[str], parallel: int, ok: Callable[[], bool]
) -> tuple[list[str], list[str]]:
    """Deploy `names`, `parallel` requests at a time, each waiting for its build, while
    ok() holds and nothing failed; returns (the names deployed, errors)."""
    code = base64.b64encode(warm.zip_dir(warm.EXAMPLES / "hello")).decode()
    deployed: list[str] = []
    errors: list[str] = []

    def one(client: httpx.Client, name: str) -> None:
        if errors or not ok():
            return
        spec = {"service": name, "code": {"zip": code}} | SPEC
        try:
            r = client.post("/system/functions", params={"wait": "true"}, json=spec)
        except httpx.HTTPError as exc:
            errors.append(f"deploying {name}: {exc!r}")
            return
        if r.status_code >= 400:
            errors.append(f"deploying {name}: {r.status_code} {r.text[:300]}")
        else:
            deployed.append(name)

    clients = [httpx.Client(base_url=url, timeout=300) for _ in range(parallel)]
    try:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, [clients[i % parallel] for i in range(len(names))], names))
    finally:
        for c in clients:
            c.close()
    return deployed, errors


def wait_ready(client: httpx.Client, names: list[str], timeout: float) -> tuple[int, list[str]]:
    """Until each function has a warm replica; returns (replicas the API reports, errors)."""
    deadline, wanted = time.monotonic() + timeout, set(names)
    while True:
        fs = {f["name"]: f for f in client.get("/system/functions").json()}
        late = sorted(n for n in wanted if fs.get(n, {}).get("availableReplicas", 0) < 1)
        total = sum(f.get("availableReplicas", 0) for f in fs.values())
        if not late or time.monotonic() > deadline:
            return total, [f"{n}: no warm replica after {timeout:.0f}s" for n in late]
        time.sleep(0.5)


def call_all(client: httpx.Client, names: list[str]) -> tuple[list[float], int, list[str]]:
    """Call every function once: latencies (ms), how many were cold, errors."""
    ms, cold, errors = [], 0, []
    for name in names:
        try:
            r, t = coldstart.call(client, name)
            ms.append(t)
            cold += r.headers.get("x-faasbox-cold-start") == "true"
        except (coldstart.SampleError, httpx.HTTPError) as exc:
            errors.append(str(exc))
    return ms, cold, errors


def run_steps(run: Run, server: coldstart.Server, data_dir: Path) -> None:
    a, t_start = run.args, time.monotonic()
    names, floor = [NAME.format(i) for i in range(max(a.steps))], a.min_available * GIB

    def why_stop() -> str:
        if meminfo() <= floor:
            return f"MemAvailable fell below {a.min_available:g} GiB"
        if time.monotonic() - t_start >= a.budget:
            return f"the time budget ({a.budget:.0f} s) was spent"
        return ""

    def not_stopping() -> bool:
        return not why_stop()

    live: list[str] = []
    for wanted in a.steps:
        run.stop = why_stop()
        if run.stop:
            break
        log(f"deploying functions {len(live) + 1}..{wanted}")
        t0 = time.monotonic()
        new, errors = deploy(server.url, names[len(live) : wanted], a.parallel, not_stopping)
        live += new
        api_n, late = wait_ready(server.client, live, 120 + 0.5 * len(new))
        deploy_ms = (time.monotonic() - t0) / max(len(new), 1) * 1000
        # Every function must answer (each replica's first call after its start, for the new
        # ones); then, with the machine idle again, a second round for the warm latency.
        check_ms, cold, call_errors = call_all(server.client, live)
        snap = snapshot(server.proc.pid, data_dir)
        cpu = idle_cpu([[server.proc.pid], [p for s in snap.sandboxes for p in s.pids]], 3.0)
        ms, cold2, call_errors2 = call_all(server.client, live)
        errors += late[:5] + call_errors[:5] + call_errors2[:5]
        step = Step(
            n=len(check_ms),
            wanted=wanted,
            snap=snap,
            api_replicas=api_n,
            deploy_ms=deploy_ms,
            check_ms=check_ms,
            call_ms=ms,
            cold_calls=cold + cold2,
            errors=errors,
            platform_cpu=cpu[0],
            sandbox_cpu=cpu[1],
            loadavg=os.getloadavg()[0],
        )
        if step.cold_calls:
            run.notes.append(
                f"At N={step.n}, {step.cold_calls} call(s) were cold starts: "
                "functions that should have had a warm replica had none."
            )
        run.steps.append(step)
        log(f"N={step.n}: {summary_line(step)}; {deploy_ms:.0f} ms per deploy")
        if errors:
            run.stop = f"errors at the step to {wanted}; the first: {errors[0]}"
            break
        if len(live) < wanted:
            run.stop = why_stop() or "deploys stopped early"
            break
    else:
        run.stop = f"the last step ({a.steps[-1]} replicas) was reached"
    log(f"stopped: {run.stop}")
    if run.steps and (reps := run.steps[-1].snap.replicas()):
        run.parts = runtime_breakdown(reps)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--backend", default="namespaces", help="sandbox backend (namespaces)")
    p.add_argument("--steps", default="50,100,200,400,700,1000", help="replicas at each step")
    p.add_argument("--parallel", type=int, default=4, help="deploy requests in flight (4)")
    p.add_argument(
        "--min-available",
        type=float,
        default=2.0,
        help="stop when the host's MemAvailable falls below this, GiB (2)",
    )
    p.add_argument("--budget", type=float, default=1500, help="stop deploying after (1500 s)")
    p.add_argument("--copies", type=int, default=20, help="idle interpreters per baseline (20)")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args(argv)
    try:
        args.steps = sorted({int(x) for x in args.steps.split(",") if x.strip()})
    except ValueError:
        p.error("--steps takes numbers separated by commas")
    if not args.steps or args.steps[0] < 1 or args.parallel < 1 or args.copies < 1:
        p.error("--steps, --parallel and --copies must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, coldstart._on_signal)
    info: dict[str, Any] = warm.machine_info()
    info.pop("wrk", None)
    coldstart.tool_versions(info)
    run = Run(info, args)
    procs = warm.Processes()
    workdir = Path(tempfile.mkdtemp(prefix="faasbox-density-"))
    t0, stamp, root, interrupted = time.monotonic(), coldstart.src_stamp(), "", False
    server: coldstart.Server | None = None
    try:
        log(f"baselines: {args.copies} idle interpreters each")
        run.base, run.import_costs = baselines(args.copies)
        server = coldstart.start_server(procs, args.backend, workdir, args.startup_timeout)
        root = str(sandbox_root(server.proc.pid) or "")
        data_dir = workdir / f"data-{args.backend}"
        time.sleep(2)  # let the prewarm pool fill, so that N=0 holds what the platform keeps
        run.zero = snapshot(server.proc.pid, data_dir)
        run_steps(run, server, data_dir)
        server.client.close()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        interrupted = True
    except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
        log(f"failed: {exc!r}")
        run.stop = f"the run failed: {exc!r}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the clean-up is bounded
            signal.signal(sig, signal.SIG_IGN)
        if server is not None:
            t_stop = time.monotonic()
            procs.stop(server.proc, grace=120)  # it stops every replica first
            run.info["stop"] = f"{time.monotonic() - t_stop:.1f} s"
        procs.stop_all()
        last = run.steps[-1].snap if run.steps else run.zero
        if left := leftovers(last, root):
            log(f"{len(left)} sandbox process(es) outlived the platform; killed: {left[:10]}")
            run.notes.append(f"{len(left)} sandbox processes outlived `faasbox up`'s exit.")
        shutil.rmtree(workdir, ignore_errors=True)
    run.info["took"] = f"{time.monotonic() - t0:.0f} s"
    if coldstart.src_stamp() != stamp:
        run.notes.append("Files under `src/` changed during the run: the numbers may mix versions.")
    if not run.steps:
        log("no step was measured")
        return 130 if interrupted else 1
    if interrupted:  # what was measured, but the docs only get complete runs
        print_report(run)
        save_raw(run)
        return 130
    print_report(run)
    save_raw(run)
    if not args.no_write:
        update_doc(render_section(run, plot(run)))
    return 0 if not any(s.errors for s in run.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
