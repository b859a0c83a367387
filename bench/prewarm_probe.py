#!/usr/bin/env python3
"""Quick probe: serial cold starts of a Python hello on one backend, with and without
prewarmed sandboxes, in the same run (the full benchmark is bench/coldstart.py).

    .venv/bin/python bench/prewarm_probe.py [--samples 50] [--backend namespaces] [--prewarm 2]

For each setting (``--prewarm 0`` and ``--prewarm N``) one `faasbox up --port 0`; each
sample scales the function to zero, waits until its replica is gone and, with prewarm,
until the pool is full again (serial cold starts grow the pool towards its maximum; no
refill runs while a sample is timed), pauses 50 ms, then times one call from the client.
Prints p50/p99 of the call and of the activation's `initMs`, how many calls each start
path served, and as a baseline a warm call after the same pause (on a VM, waking idle
CPUs costs milliseconds of its own).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
HELLO = "def handle(event, context):\n    return 'hello'\n"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.005)


def start(data: Path, backend: str, prewarm: int) -> tuple[subprocess.Popen[str], str]:
    args = ["--port", "0", "--data-dir", str(data), "--backend", backend]
    proc = subprocess.Popen(
        [sys.executable, "-m", "faasbox", "up", *args, "--prewarm", str(prewarm)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("faasbox listening on "):
            return proc, line.split()[-1]
    raise RuntimeError("faasbox up did not start")


def deploy(c: httpx.Client, name: str) -> None:
    import io
    import json
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", HELLO)
    spec = {"service": name, "limits": {"memory": "128Mi"}}
    r = c.post(
        "/system/functions?wait=true",
        files={"spec": (None, json.dumps(spec)), "code": ("c.zip", buf.getvalue())},
    )
    r.raise_for_status()


def run(backend: str, prewarm: int, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(Path(tmp) / "data", backend, prewarm)
        try:
            with httpx.Client(base_url=url, timeout=60) as c:
                deploy(c, "probe")
                out: dict[str, Any] = {"call": [], "init": [], "warm": [], "paths": {}}

                def settled_pool() -> bool:
                    state = c.get("/system/info").json()["provider"]["sandbox"]["prewarm"]
                    return state is None or (
                        state["ready"] >= state["target"] and not state["starting"]
                    )

                def settled() -> bool:
                    fn = c.get("/system/function/probe").json()
                    return not fn["replicas"] and settled_pool()

                for i in range(samples + 2):  # the first two warm up the machine
                    if i:
                        # Baseline: a warm call after the same pause, the pool full (what
                        # waking an idle machine costs before anything starts).
                        wait(settled_pool)
                        time.sleep(0.05)
                        t0 = time.perf_counter()
                        r = c.get("/function/probe")
                        out["warm"].append((time.perf_counter() - t0) * 1000)
                        assert r.headers["x-faasbox-cold-start"] == "false"
                    c.post("/system/scale-function/probe", json={"replicas": 0})
                    wait(settled)
                    time.sleep(0.05)  # let the refill's last process settle
                    t0 = time.perf_counter()
                    r = c.get("/function/probe")
                    ms = (time.perf_counter() - t0) * 1000
                    assert r.status_code == 200 and r.headers["x-faasbox-cold-start"] == "true"
                    rec = c.get(f"/system/activations/{r.headers['x-call-id']}").json()
                    out["call"].append(ms)
                    out["init"].append(rec["initMs"])
                    path = rec.get("startPath")
                    out["paths"][path] = out["paths"].get(path, 0) + 1
                out["call"], out["init"], out["warm"] = (
                    out["call"][2:],
                    out["init"][2:],
                    out["warm"][1:],
                )
                return out
        finally:
            proc.terminate()
            proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--backend", default="namespaces")
    ap.add_argument("--prewarm", type=int, default=2)
    a = ap.parse_args()
    for n in (0, a.prewarm):
        res = run(a.backend, n, a.samples)
        print(
            f"{a.backend} --prewarm {n}: call p50 {statistics.median(res['call']):.2f} ms "
            f"p99 {pct(res['call'], 0.99):.2f} ms | initMs p50 "
            f"{statistics.median(res['init']):.2f} p99 {pct(res['init'], 0.99):.2f} | "
            f"warm call after the same pause p50 {statistics.median(res['warm']):.2f} ms | "
            f"paths {res['paths']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
