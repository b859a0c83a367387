#!/usr/bin/env python3
"""Zygote benchmark: what adding a replica to a warm function costs when it is forked from
the function's zygote, against taking a prewarmed sandbox and importing the function
there, for a Python hello and for a function that imports numpy (the import cache).

    bench/run zygote [--samples 30] [--no-write]

Two `faasbox up --backend namespaces --prewarm 2` in the same run: one with zygotes (the
default), one with `--zygotes off`. Each sample: the function is scaled to zero, then to
exactly two warm replicas; two slow calls (?sleep=0.3) take them; then one call is timed,
which must start a third replica (X-Faasbox-Cold-Start: true) — forked from the zygote, or a
prewarmed sandbox with the import (a created one when the pool is empty). Its activation
gives `startPath` and `initMs`. Results go to docs/benchmarks.md (between the zygote
markers).
"""

from __future__ import annotations

import argparse
import base64
import io
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import warm
from prewarm_probe import wait

START_MARK = "<!-- zygote:start -->"
END_MARK = "<!-- zygote:end -->"

HELLO = """
import time

def handle(event, context):
    time.sleep(float(event.query.get("sleep", 0)))
    return "hello"
"""
NUMPY = """
import time
import numpy

def handle(event, context):
    time.sleep(float(event.query.get("sleep", 0)))
    return str(numpy.arange(4).sum())
"""
FUNCTIONS = {"hello": (HELLO, ""), "numpy": (NUMPY, "numpy\n")}


def log(msg: str) -> None:
    print(f"[zygote] {msg}", file=sys.stderr, flush=True)


def start(procs: warm.Processes, data: Path, extra: list[str]) -> tuple[str, Any]:
    cmd, env = warm.faasbox_cmd()
    logfile = data.parent / f"{data.name}.log"
    argv = [*cmd, "up", "--backend", "namespaces", "--port", "0", "--data-dir", str(data), *extra]
    with open(logfile, "wb") as out:
        proc = procs.start(
            "faasbox " + " ".join(extra), argv, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if m := warm.LISTEN_RE.search(logfile.read_text(errors="replace")):
            return m.group(1).rstrip("/.,;)"), proc
        if proc.poll() is not None:
            raise RuntimeError(f"faasbox exited: {logfile.read_text()[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError("faasbox did not start")


def deploy(c: httpx.Client, name: str, code: str, requirements: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", code)
        if requirements:
            zf.writestr("requirements.txt", requirements)
    spec = {
        "service": name,
        "limits": {"memory": "256Mi"},
        "labels": {"com.openfaas.scale.max": "4", "com.openfaas.scale.zero-duration": "1h"},
        "code": {"zip": base64.b64encode(buf.getvalue()).decode()},
    }
    t0 = time.perf_counter()
    r = c.post("/system/functions", params={"wait": "true"}, json=spec, timeout=900)
    if r.status_code >= 400:
        raise RuntimeError(f"deploying {name}: {r.status_code} {r.text[:500]}")
    log(f"deployed {name} in {time.perf_counter() - t0:.1f}s")


def replicas(c: httpx.Client, name: str) -> dict[str, Any]:
    fn: dict[str, Any] = c.get(f"/system/function/{name}").json()
    return fn


def pool_ready(c: httpx.Client) -> bool:
    state = c.get("/system/info").json()["provider"]["sandbox"]["prewarm"]
    return state is None or (state["ready"] >= 1 and not state["starting"])


def sample(c: httpx.Client, slow: list[httpx.Client], name: str) -> dict[str, Any]:
    # From zero to two warm replicas (faasbox scales down only to zero, or by idling): with
    # zygotes, the first alone and the second forked (which starts the zygote).
    c.post(f"/system/scale-function/{name}", json={"replicas": 0}).raise_for_status()
    wait(lambda: replicas(c, name)["replicas"] == 0)
    c.post(f"/system/scale-function/{name}", json={"replicas": 2}).raise_for_status()
    wait(lambda: replicas(c, name)["availableReplicas"] == 2, timeout=120)
    wait(lambda: pool_ready(c), timeout=60)  # a prewarmed sandbox waits for the third
    time.sleep(0.1)
    held = [
        threading.Thread(target=lambda s=s: s.get(f"/function/{name}", params={"sleep": "0.3"}))
        for s in slow
    ]
    for t in held:
        t.start()
    wait(lambda: replicas(c, name)["inflight"] == 2)
    time.sleep(0.02)
    t0 = time.perf_counter()
    r = c.get(f"/function/{name}")
    ms = (time.perf_counter() - t0) * 1000
    for t in held:
        t.join()
    if r.status_code != 200 or r.headers.get("x-faasbox-cold-start") != "true":
        raise RuntimeError(
            f"{name}: {r.status_code} cold={r.headers.get('x-faasbox-cold-start')} {r.text[:200]}"
        )
    rec = c.get(f"/system/activations/{r.headers['x-call-id']}").json()
    return {"ms": ms, "init_ms": rec.get("initMs"), "path": rec.get("startPath")}


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--samples", type=int, default=30, help="timed scale-ups per case (30)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    procs = warm.Processes()
    results: dict[str, dict[str, list[Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="faasbox-zygote-") as tmp:
        try:
            for mode, extra in (
                ("zygote", ["--prewarm", "2"]),
                ("prewarmed", ["--prewarm", "2", "--zygotes", "off"]),
            ):
                url, proc = start(procs, Path(tmp) / f"data-{mode}", extra)
                with (
                    httpx.Client(base_url=url, timeout=120) as c,
                    httpx.Client(base_url=url, timeout=120) as slow1,
                    httpx.Client(base_url=url, timeout=120) as slow2,
                ):
                    slow = [slow1, slow2]
                    for fn, (code, reqs) in FUNCTIONS.items():
                        deploy(c, f"z-{fn}", code, reqs)
                        key = f"{fn}, {mode}"
                        res = results[key] = {"ms": [], "init_ms": [], "path": []}
                        for i in range(args.samples + 2):
                            s = sample(c, slow, f"z-{fn}")
                            if i >= 2:  # the first two warm up
                                for k in res:
                                    res[k].append(s[k])
                        log(f"{key}: p50 {statistics.median(res['ms']):.1f} ms")
                procs.stop(proc)
        finally:
            procs.stop_all()  # before the directory goes: its sandboxes mount parts of it
    lines = render(results, args)
    print("\n".join(lines))
    if not args.no_write:
        warm.write_section("\n".join(lines) + "\n", START_MARK, END_MARK)


def render(results: dict[str, dict[str, list[Any]]], args: argparse.Namespace) -> list[str]:
    out = [
        START_MARK,
        "## Zygotes: adding a replica to a warm function",
        "",
        f"Generated by `bench/run zygote` ({time.strftime('%Y-%m-%d')}, {args.samples} samples "
        "per case). Each sample scales the function from zero to two warm replicas, holds both "
        "with slow calls, then times a call that must start a third. *zygote*: `faasbox up` "
        "as by default, the third forked from the function's zygote (which imported it once, "
        "when the second started); *prewarmed*: "
        "`--zygotes off`, the replica takes a prewarmed sandbox and imports the function "
        "there. `numpy` is a function whose module imports numpy (its dependency layer "
        "built from requirements.txt at deploy).",
        "",
        "| function, mode | call p50 | call p99 | initMs p50 | initMs p99 | start paths |",
        "|---|---|---|---|---|---|",
    ]
    for key, res in results.items():
        paths: dict[str, int] = {}
        for p in res["path"]:
            paths[str(p)] = paths.get(str(p), 0) + 1
        inits = [x for x in res["init_ms"] if x is not None]
        out.append(
            f"| {key} | {statistics.median(res['ms']):.1f} ms | {pct(res['ms'], 0.99):.1f} ms | "
            f"{statistics.median(inits):.1f} ms | {pct(inits, 0.99):.1f} ms | "
            + ", ".join(f"{k} {v}" for k, v in sorted(paths.items()))
            + " |"
        )
    speed = []
    for fn in FUNCTIONS:
        z, p = results.get(f"{fn}, zygote"), results.get(f"{fn}, prewarmed")
        if z and p:
            forked = sum(1 for x in z["path"] if x == "forked")
            speed.append(
                f"{fn}: {statistics.median(z['ms']):.1f} ms with zygotes against "
                f"{statistics.median(p['ms']):.1f} ms without "
                f"({statistics.median(p['ms']) / statistics.median(z['ms']):.1f}x); faasbox "
                f"forked {forked} of {len(z['path'])} (it forks when the function's import costs "
                "more than a fork, else takes a prewarmed sandbox)"
            )
    out += ["", "- " + "; ".join(speed) + "." if speed else "", "", END_MARK]
    return out


if __name__ == "__main__":
    main()
