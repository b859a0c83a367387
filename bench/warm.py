#!/usr/bin/env python3
"""Warm-path benchmark: faasbox "hello" against a bare uvicorn "hello", in one run.

    bench/run                                   # sets up .venv and wrk, then runs this
    .venv/bin/python bench/warm.py [--rounds 5] [--duration 8] [--connections 16]

1. Starts bench/bare_app.py (raw ASGI, uvicorn + uvloop + httptools) on an ephemeral port,
   and `faasbox up --port 0 --data-dir <tmp>` with examples/hello deployed (with the CLI,
   or over the HTTP API if the CLI fails). Both stay up for the whole run; each is warmed
   up (sequential calls, then --warmup-seconds of load).
2. Runs --rounds interleaved rounds. In each, both servers are measured back to back with
   wrk at --connections (default 16), then both at 1 connection; bare goes first in odd
   rounds and faasbox first in even ones, so that slow drifts of the machine's speed hit
   both alike. Every measurement lasts --duration seconds after a discarded
   --round-warmup seconds of load at the same concurrency.
3. Reports per round and medians over rounds: the throughput ratio (faasbox / bare
   requests/s, judged by its median over rounds, with min and max), latency percentiles,
   added latency at one connection (median over rounds of faasbox minus bare), and CPU
   time per request. Prints tables and rewrites the "Warm path" section of
   docs/benchmarks.md (between <!-- warm:start --> and <!-- warm:end -->) and
   docs/benchmarks-warm.png. Raw results go to bench/.results/ (git-ignored).

Why rounds: on a small shared VM, identical runs differ by 15% or more from one minute
to the next, so a single bare/faasbox pair gives a ratio that moves by several points
for the same code; the median of interleaved pairs does not.

Targets (issue 4): median throughput ratio at --connections >= 50%; median added
latency at one connection p50 <= 0.5 ms, p99 <= 2 ms. Exit status: 0 when everything was measured (pass or fail is
reported in the output), 1 when something could not be measured.

Without wrk a Python asyncio load generator is used instead; it is much slower than wrk
(it can become the bottleneck), so its numbers are only comparable with each other within
the same run, never with wrk numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
EXAMPLES = ROOT / "examples"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks-warm.png"
RESULTS = BENCH / ".results"

START_MARK = "<!-- warm:start -->"
END_MARK = "<!-- warm:end -->"
DOC_INTRO = """# Benchmarks

Performance claims of faasbox, measured by scripts in [`bench/`](../bench) that anyone can
run. Every benchmark compares against a baseline measured in the same run on the same
machine, because absolute numbers mean little across machines. Each section below is
owned by one script and rewritten by it between its `<!-- name:start -->` /
`<!-- name:end -->` markers; text outside the markers is left alone.
"""

TARGET_RATIO = 0.50  # faasbox requests/s >= 50% of bare at --connections
TARGET_ADDED_P50_MS = 0.5  # faasbox p50 - bare p50 at one connection
TARGET_ADDED_P99_MS = 2.0  # faasbox p99 - bare p99 at one connection
PERCENTILES = ("50", "75", "90", "99")
EXPECTED_BODY = "Hello from faasbox!"


def log(msg: str) -> None:
    print(f"[warm] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


class Processes:
    """Every subprocess this script starts, each in its own process group, so that
    cleanup reaches their children too (faasbox's sandboxes)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        log(f"starting {name}: {' '.join(cmd)}")
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)  # let faasbox tear its sandboxes down
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {grace:.0f}s, killing its group")
        # Anything left in the group (this process's own children) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def python_cmd() -> list[str]:
    return [sys.executable]


def faasbox_cmd() -> tuple[list[str], dict[str, str]]:
    """How to run the faasbox CLI: the console script beside this interpreter if
    installed, else `python -m faasbox` with src/ on the path."""
    env = dict(os.environ)
    script = Path(sys.executable).with_name("faasbox")
    if script.exists():
        return [str(script)], env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "faasbox"], env


def wait_http_ok(url: str, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} while starting")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready: {last}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_bare(procs: Processes, logdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    # A free port picked by binding and closing, not `--fd`: uvicorn wraps an inherited fd
    # as a Unix socket, so TCP_NODELAY is never set and every response waits ~40 ms for
    # Nagle + delayed ACK. The small race with another process taking the port is retried.
    last: Exception | None = None
    for _ in range(3):
        port = free_port()
        cmd = [
            *python_cmd(),
            "-m",
            "uvicorn",
            "bare_app:app",
            "--app-dir",
            str(BENCH),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        logfile = logdir / "bare.log"
        with open(logfile, "wb") as out:
            proc = procs.start("bare uvicorn", cmd, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_http_ok(url, time.monotonic() + 30, proc)
            return url, proc
        except (RuntimeError, TimeoutError) as exc:
            last = exc
            log(f"bare uvicorn did not start: {exc}\n" + tail(logfile.read_text(errors="replace")))
            procs.stop(proc)
    raise RuntimeError(f"bare uvicorn did not start: {last}")


LISTEN_RE = re.compile(r"faasbox listening on (https?://[^\s'\"<>]+)")


def start_faasbox(
    procs: Processes, data_dir: Path, logdir: Path, timeout: float
) -> tuple[str, subprocess.Popen[bytes]]:
    cmd, env = faasbox_cmd()
    logfile = logdir / "faasbox.log"
    with open(logfile, "wb") as out:
        proc = procs.start(
            "faasbox",
            [*cmd, "up", "--port", "0", "--data-dir", str(data_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = logfile.read_text(errors="replace")
        m = LISTEN_RE.search(text)
        if m:
            url = m.group(1).rstrip("/.,;)")
            log(f"faasbox is up at {url}")
            wait_http_ok(url + "/healthz", time.monotonic() + 30, proc)
            return url, proc
        if proc.poll() is not None:
            raise RuntimeError(f"`faasbox up` exited with status {proc.returncode}:\n" + tail(text))
        time.sleep(0.05)
    raise TimeoutError(
        f"`faasbox up` printed no 'faasbox listening on' line within "
        f"{timeout:.0f}s:\n" + tail(logfile.read_text(errors="replace"))
    )


def tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- deploy


def hello_spec() -> dict[str, Any]:
    import yaml

    stack = yaml.safe_load((EXAMPLES / "faasbox.yml").read_text())
    fn = stack["functions"]["hello"]
    spec: dict[str, Any] = {"service": "hello", "runtime": fn["runtime"], "handler": fn["handler"]}
    for src, dst in (
        ("env", "envVars"),
        ("labels", "labels"),
        ("limits", "limits"),
        ("timeout", "timeout"),
        ("concurrency", "concurrency"),
    ):
        if fn.get(src) not in (None, {}):
            spec[dst] = fn[src]
    return spec


def zip_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(path.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                zf.write(f, f.relative_to(path).as_posix())
    return buf.getvalue()


def deploy_hello(url: str) -> str:
    """Deploy examples/hello; returns how it was deployed."""
    import httpx

    cmd, env = faasbox_cmd()
    env["FAASBOX_GATEWAY"] = url
    full = [*cmd, "--gateway", url, "deploy", "-f", str(EXAMPLES / "faasbox.yml"), "hello"]
    log("deploying: " + " ".join(full))
    try:
        r = subprocess.run(full, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            return "faasbox deploy (CLI)"
        log(
            f"CLI deploy failed (status {r.returncode}), falling back to the HTTP API:\n"
            + tail(r.stdout + r.stderr, 10)
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"CLI deploy failed ({exc}), falling back to the HTTP API")

    spec = json.dumps(hello_spec())
    code = zip_dir(EXAMPLES / "hello")
    for method in ("POST", "PUT"):
        files: dict[str, Any] = {
            "spec": (None, spec, "application/json"),
            "code": ("hello.zip", code, "application/zip"),
        }
        r2 = httpx.request(
            method, url + "/system/functions", params={"wait": "true"}, files=files, timeout=300
        )
        if r2.status_code == 409 and method == "POST":
            continue  # already there: deploy a new version instead
        if r2.status_code >= 400:
            raise RuntimeError(f"HTTP deploy failed: {r2.status_code} {r2.text[:2000]}")
        return f"HTTP API ({method} /system/functions, multipart)"
    raise RuntimeError("HTTP deploy failed")


def check_hello(url: str, n: int) -> dict[str, Any]:
    """n sequential requests that must all succeed; returns what the first one said."""
    import httpx

    info: dict[str, Any] = {}
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            r = client.get(url)
            if r.status_code != 200 or not r.text.startswith(EXPECTED_BODY.split(" ")[0]):
                raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]!r}")
            if i == 0:
                info = {
                    "first_status": r.status_code,
                    "body": r.text,
                    "cold_start": r.headers.get("x-faasbox-cold-start"),
                }
    return info


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    tool: str
    url: str
    connections: int
    threads: int
    duration: float
    rps: float = 0.0
    requests: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: int = 0  # socket errors + non-2xx/3xx responses
    # CPU time of the server per request (µs): "server" = the process we started,
    # "children" = its descendants (faasbox's replicas). Empty if not measured.
    cpu_us_per_req: dict[str, float] = field(default_factory=dict)
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.errors == 0


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_ms": {}, "errors": 0}
    for pct in PERCENTILES:
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        if m:
            out["latency_ms"][pct] = _ms(m.group(1), m.group(2))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    out["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        out["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] += sum(int(g) for g in m.groups())
    return out


def run_wrk(url: str, connections: int, threads: int, duration: float) -> Load:
    threads = max(1, min(threads, connections))
    duration = max(1, round(duration))  # wrk takes whole seconds only
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "--latency",
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr or r.stdout}")
    parsed = parse_wrk(r.stdout)
    if not parsed["requests"] or len(parsed["latency_ms"]) != len(PERCENTILES):
        raise RuntimeError(f"could not parse wrk output:\n{r.stdout}")
    return Load(
        tool="wrk",
        url=url,
        connections=connections,
        threads=threads,
        duration=duration,
        rps=parsed["rps"],
        requests=parsed["requests"],
        latency_ms=parsed["latency_ms"],
        errors=parsed["errors"],
        raw=r.stdout,
    )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    keep = headers.get("connection", "").lower() != "close"
    return status, keep


async def _py_load(
    url: str, connections: int, duration: float
) -> tuple[int, int, list[float], float]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: warm.py\r\n\r\n".encode()
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    stop_at = started + duration

    async def worker() -> None:
        nonlocal errors
        reader = writer = None
        while time.perf_counter() < stop_at:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                t0 = time.perf_counter()
                writer.write(request)
                status, keep = await asyncio.wait_for(_read_response(reader), 10)
                latencies.append(time.perf_counter() - t0)
                if status >= 400:
                    errors += 1
                if not keep:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(latencies), errors, latencies, time.perf_counter() - started


def run_python_load(url: str, connections: int, duration: float) -> Load:
    run: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    n, errors, latencies, elapsed = run(_py_load(url, connections, duration))
    latencies.sort()
    pct = (
        {
            p: latencies[min(len(latencies) - 1, int(len(latencies) * int(p) / 100))] * 1000
            for p in PERCENTILES
        }
        if latencies
        else {}
    )
    return Load(
        tool="python-asyncio",
        url=url,
        connections=connections,
        threads=1,
        duration=duration,
        rps=n / elapsed if elapsed else 0.0,
        requests=n,
        latency_ms=pct,
        errors=errors,
    )


def measure(tool: str, url: str, connections: int, threads: int, duration: float) -> Load:
    if tool == "wrk":
        return run_wrk(url, connections, threads, duration)
    return run_python_load(url, connections, duration)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu() -> dict[int, tuple[int, float]]:
    """{pid: (ppid, user+system CPU seconds)} of every process we can read."""
    out: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else []:
        if not d.name.isdigit():
            continue
        try:
            rest = (d / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(d.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK)
        except (OSError, IndexError, ValueError):
            continue
    return out


def tree_cpu(root: int) -> tuple[float, dict[int, float]]:
    """CPU seconds of root, and of each of its live descendants."""
    procs = process_cpu()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    desc: dict[int, float] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        desc[pid] = procs[pid][1]
        todo.extend(children.get(pid, []))
    return procs.get(root, (0, 0.0))[1], desc


SERVERS = ("bare", "faasbox")
LABELS = {"bare": "bare uvicorn (raw ASGI)", "faasbox": "faasbox `/function/hello`"}


@dataclass
class Target:
    """A server under test: the URL to load, and the pid whose CPU time (with its
    descendants') is charged to it, when we started it ourselves."""

    name: str
    url: str
    pid: int | None = None


@dataclass
class Round:
    """One round: every server measured at every concurrency, in `order`."""

    index: int  # 1-based
    order: list[str]
    loads: dict[str, dict[str, Load]] = field(default_factory=dict)  # server -> conns -> Load

    def get(self, server: str, conns: str) -> Load | None:
        return self.loads.get(server, {}).get(conns)


def measured_rounds(rounds: list[Round]) -> int:
    return sum(1 for r in rounds if r.loads)


def conn_levels(args: argparse.Namespace) -> list[str]:
    """The concurrencies measured in each round: --connections, then 1."""
    return [str(args.connections)] + (["1"] if args.connections != 1 else [])


def round_order(index: int, servers: list[str]) -> list[str]:
    """bare first in odd rounds, faasbox first in even rounds."""
    ordered = list(SERVERS) if index % 2 else list(reversed(SERVERS))
    return [s for s in ordered if s in servers]


def measure_once(target: Target, tool: str, connections: int, args: argparse.Namespace) -> Load:
    """A short warm-up at the same concurrency (discarded), then one measurement.
    With the server's pid, also its CPU time (and its children's) per request."""
    if args.round_warmup > 0:
        measure(tool, target.url, connections, args.threads, args.round_warmup)
    before = tree_cpu(target.pid) if target.pid else None
    load = measure(tool, target.url, connections, args.threads, args.duration)
    if before is not None and target.pid and load.requests:
        after = tree_cpu(target.pid)
        kids = sum(t - before[1].get(p, 0.0) for p, t in after[1].items())
        load.cpu_us_per_req = {"server": (after[0] - before[0]) / load.requests * 1e6}
        if after[1] or before[1]:
            load.cpu_us_per_req["children"] = kids / load.requests * 1e6
    return load


def run_rounds(
    targets: dict[str, Target], tool: str, args: argparse.Namespace, rounds: list[Round]
) -> None:
    """--rounds rounds; in each, for each concurrency, every server back to back, the
    order alternating between rounds so that slow drifts of the machine hit both alike.
    Appends to `rounds` as it goes, so whatever was measured survives a failure."""
    for i in range(1, args.rounds + 1):
        rnd = Round(i, round_order(i, list(targets)))
        rounds.append(rnd)
        log(f"round {i}/{args.rounds}: {' then '.join(rnd.order)}")
        for c in conn_levels(args):
            for name in rnd.order:
                load = measure_once(targets[name], tool, int(c), args)
                rnd.loads.setdefault(name, {})[c] = load
                log(
                    f"  {name:<7} c={c:<3} {load.rps:>9,.0f} req/s  "
                    f"p50 {fmt_ms(load.latency_ms.get('50'))}  "
                    f"p99 {fmt_ms(load.latency_ms.get('99'))}  errors {load.errors}"
                )
            bare, fb = rnd.get("bare", c), rnd.get("faasbox", c)
            if bare and fb and bare.rps:
                log(f"  c={c}: faasbox / bare = {fb.rps / bare.rps:.1%}")


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(len(os.sched_getaffinity(0)))
    wrk = ""
    if shutil.which("wrk"):
        r = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (r.stdout or r.stderr).splitlines()[0] if (r.stdout or r.stderr) else "wrk"
        wrk = wrk.split(" Copyright")[0].strip()
    commit = ""
    with contextlib.suppress(OSError):
        r = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        commit = r.stdout.strip()
        if commit:
            d = subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                capture_output=True,
                text=True,
            )
            if d.stdout.strip():
                commit += " (with uncommitted changes in src/)"
    load1 = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg": load1,
        "nproc": nproc,
        "cpu": cpu,
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "wrk": wrk,
        "commit": commit,
    }


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} µs" if abs(v) < 1 else f"{v:.2f} ms"


def fmt_signed_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return ("+" if v >= 0 else "-") + fmt_ms(abs(v))


def fmt_cpu(cpu: dict[str, float]) -> str:
    if not cpu:
        return "-"
    if "children" not in cpu:
        return f"{cpu['server']:.0f}"
    return f"{cpu['server'] + cpu['children']:.0f} ({cpu['server']:.0f} + {cpu['children']:.0f})"


def spread(values: list[float]) -> dict[str, Any] | None:
    """Median, min, max (and the values, in round order) of a per-round quantity."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def median_cpu(cpus: list[dict[str, float]]) -> dict[str, float]:
    """The median CPU cost per request, split as in the measurement it comes from: the
    split of the middle round by total (mean of the two middle ones for an even count),
    so that the parts add up to the total shown."""
    cpus = sorted((c for c in cpus if c), key=lambda c: sum(c.values()))
    if not cpus:
        return {}
    mid = cpus[(len(cpus) - 1) // 2 : len(cpus) // 2 + 1]
    return {k: sum(c.get(k, 0.0) for c in mid) / len(mid) for k in mid[0]}


def server_medians(rounds: list[Round], server: str, c: str) -> dict[str, Any] | None:
    """Medians over the rounds of one server's measurements at one concurrency."""
    loads = [load for r in rounds if (load := r.get(server, c)) is not None]
    if not loads:
        return None
    lat = {p: [load.latency_ms[p] for load in loads if p in load.latency_ms] for p in PERCENTILES}
    return {
        "n": len(loads),
        "rps": statistics.median(load.rps for load in loads),
        "latency_ms": {p: statistics.median(v) for p, v in lat.items() if v},
        "latency_ms_min": {p: min(v) for p, v in lat.items() if v},
        "latency_ms_max": {p: max(v) for p, v in lat.items() if v},
        "cpu_us_per_req": median_cpu([load.cpu_us_per_req for load in loads]),
        "errors": sum(load.errors for load in loads),
    }


def paired(rounds: list[Round], c: str, f: Callable[[Load, Load], float | None]) -> list[float]:
    """f(bare, faasbox) for every round where both were measured at c."""
    out = []
    for r in rounds:
        bare, fb = r.get("bare", c), r.get("faasbox", c)
        if bare is not None and fb is not None and (v := f(bare, fb)) is not None:
            out.append(v)
    return out


def _ratio(bare: Load, fb: Load) -> float | None:
    return fb.rps / bare.rps if bare.rps else None


def _cpu_ratio(bare: Load, fb: Load) -> float | None:
    b, f = sum(bare.cpu_us_per_req.values()), sum(fb.cpu_us_per_req.values())
    return b / f if b and f else None


def _added(p: str) -> Callable[[Load, Load], float | None]:
    def f(bare: Load, fb: Load) -> float | None:
        if p in bare.latency_ms and p in fb.latency_ms:
            return fb.latency_ms[p] - bare.latency_ms[p]
        return None

    return f


def summarize(rounds: list[Round], args: argparse.Namespace) -> dict[str, Any]:
    """The comparisons the targets are about, as medians over rounds of per-round
    comparisons (None where not measured)."""
    conns = conn_levels(args)
    hi = conns[0]
    return {
        "rounds": len(paired(rounds, hi, _ratio)),
        "servers": {s: {c: server_medians(rounds, s, c) for c in conns} for s in SERVERS},
        "ratio": {c: spread(paired(rounds, c, _ratio)) for c in conns},
        "cpu_ratio": spread(paired(rounds, hi, _cpu_ratio)),
        "added_p50": spread(paired(rounds, "1", _added("50"))),
        "added_p99": spread(paired(rounds, "1", _added("99"))),
    }


HEADER = [
    "server",
    "connections",
    "requests/s",
    "p50",
    "p75",
    "p90",
    "p99",
    "CPU µs/request",
    "errors",
]


def summary_rows(s: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for c in conn_levels(args):
        for key in SERVERS:
            m = s["servers"][key][c]
            if m is None:
                rows.append([LABELS[key], c, "not measured", *[""] * (len(HEADER) - 3)])
                continue
            rows.append(
                [
                    LABELS[key],
                    c,
                    f"{m['rps']:,.0f}",
                    *(fmt_ms(m["latency_ms"].get(p)) for p in PERCENTILES),
                    fmt_cpu(m["cpu_us_per_req"]),
                    str(m["errors"]),
                ]
            )
    return rows


ROUND_HEADER = [
    "round",
    "order",
    "connections",
    "bare req/s",
    "faasbox req/s",
    "faasbox / bare",
    "bare p50",
    "faasbox p50",
    "added p50",
    "bare p99",
    "faasbox p99",
    "added p99",
]


def round_rows(rounds: list[Round], args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for r in rounds:
        for j, c in enumerate(conn_levels(args)):
            bare, fb = r.get("bare", c), r.get("faasbox", c)
            if bare is None and fb is None:
                continue

            def rps(load: Load | None) -> str:
                return f"{load.rps:,.0f}" if load else "-"

            def lat(load: Load | None, p: str) -> str:
                return fmt_ms(load.latency_ms.get(p)) if load else "-"

            ratio = _ratio(bare, fb) if bare and fb else None
            add50 = _added("50")(bare, fb) if bare and fb else None
            add99 = _added("99")(bare, fb) if bare and fb else None
            rows.append(
                [
                    str(r.index) if j == 0 else "",
                    f"{r.order[0]} first" if j == 0 and len(r.order) > 1 else "",
                    c,
                    rps(bare),
                    rps(fb),
                    f"{ratio:.1%}" if ratio is not None else "-",
                    lat(bare, "50"),
                    lat(fb, "50"),
                    fmt_signed_ms(add50),
                    lat(bare, "99"),
                    lat(fb, "99"),
                    fmt_signed_ms(add99),
                ]
            )
    return rows


def console_table(header: list[str], rows: list[list[str]], left: int) -> list[str]:
    """Plain-text table; the first `left` columns left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if j < left else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def md_table(header: list[str], rows: list[list[str]], left: int) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def print_report(rounds: list[Round], args: argparse.Namespace) -> None:
    s = summarize(rounds, args)
    print()
    print(f"Per round ({args.duration:g} s per measurement):")
    for line in console_table(ROUND_HEADER, round_rows(rounds, args), 2):
        print("  " + line)
    print()
    print(f"Medians over {measured_rounds(rounds)} round(s):")
    for line in console_table(HEADER, summary_rows(s, args), 2):
        print("  " + line)
    print()
    for line in verdict_lines(s, args):
        print(line.replace("**", "").replace("`", ""))
    print()


def fmt_range_pct(sp: dict[str, Any]) -> str:
    return f"{sp['min']:.1%} to {sp['max']:.1%}"


def fmt_range_ms(sp: dict[str, Any]) -> str:
    return f"{fmt_signed_ms(sp['min'])} to {fmt_signed_ms(sp['max'])}"


def verdict_lines(s: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = []
    c = str(args.connections)
    cs = f"{c} connection" + ("s" if c != "1" else "")
    ratio = s["ratio"][c]
    if ratio is None:
        lines.append(
            f"- Throughput at {cs}: **not measured** "
            f"(target: faasbox ≥ {TARGET_RATIO:.0%} of bare)."
        )
    else:
        ok = ratio["median"] >= TARGET_RATIO
        hits = sum(v >= TARGET_RATIO for v in ratio["values"])
        lines.append(
            f"- Throughput at {cs}: faasbox reaches **{ratio['median']:.1%}** of "
            f"bare uvicorn, median of {ratio['n']} rounds (range {fmt_range_pct(ratio)}; "
            f"{hits} of {ratio['n']} rounds at or above the target). "
            f"Target ≥ {TARGET_RATIO:.0%}: **{'PASS' if ok else 'FAIL'}**."
        )
    one = s["ratio"].get("1")
    if one is not None and c != "1":
        lines.append(
            f"- Throughput at 1 connection: faasbox reaches {one['median']:.1%} of bare "
            f"(range {fmt_range_pct(one)}; no target)."
        )
    cpu = s["cpu_ratio"]
    if cpu is not None:
        lines.append(
            f"- CPU cost per request at {cs}, bare / faasbox: {cpu['median']:.1%} "
            f"(median; range {fmt_range_pct(cpu)}). Less sensitive to other load on the "
            "machine than requests/s; with every core busy, the throughput ratio tends to "
            "this."
        )
    add50, add99 = s["added_p50"], s["added_p99"]
    if add50 is None:
        lines.append(
            f"- Added latency at 1 connection: **not measured** "
            f"(target: p50 added ≤ {TARGET_ADDED_P50_MS:g} ms)."
        )
    else:
        ok = add50["median"] <= TARGET_ADDED_P50_MS
        lines.append(
            f"- Added latency at 1 connection (faasbox minus bare in the same round, median "
            f"of {add50['n']} rounds): p50 **{fmt_signed_ms(add50['median'])}** (range "
            f"{fmt_range_ms(add50)}). Target ≤ {TARGET_ADDED_P50_MS:g} ms: "
            f"**{'PASS' if ok else 'FAIL'}**."
            + (
                f" p99 {fmt_signed_ms(add99['median'])} (range {fmt_range_ms(add99)}). Target "
                f"≤ {TARGET_ADDED_P99_MS:g} ms: "
                f"**{'PASS' if add99['median'] <= TARGET_ADDED_P99_MS else 'FAIL'}**."
                if add99
                else ""
            )
        )
    return lines


def render_section(
    rounds: list[Round],
    info: dict[str, str],
    args: argparse.Namespace,
    tool: str,
    notes: list[str],
    plot_ok: bool,
) -> str:
    s = summarize(rounds, args)
    c = args.connections
    if tool == "wrk":
        load_desc = (
            f"`wrk -t{min(args.threads, c)} -c{c} -d{args.duration:g}s --latency URL` and "
            f"`wrk -t1 -c1 -d{args.duration:g}s --latency URL`"
        )
    else:
        load_desc = (
            "the Python asyncio load generator in `bench/warm.py` (wrk was not used). "
            "It is slower than wrk and may itself be the bottleneck: these numbers "
            "compare bare and faasbox within this run only and are not comparable "
            "with wrk numbers"
        )
    n = measured_rounds(rounds)
    out = [
        START_MARK,
        "## Warm path",
        "",
        "What every call pays once a replica is warm: request into the gateway, through the "
        "pool to a sandboxed replica, the handler, and back. The baseline is the cheapest "
        'possible Python HTTP "hello": a raw ASGI app on uvicorn with uvloop and httptools '
        "([`bench/bare_app.py`](../bench/bare_app.py)). faasbox serves "
        "[`examples/hello`](../examples/hello/handler.py), deployed from "
        "[`examples/faasbox.yml`](../examples/faasbox.yml).",
        "",
        f"Method: both servers stay up for the whole run and are measured back to back, "
        f"by the same load generator, in {n} rounds (at {c} connections, then at 1), bare "
        f"first in odd rounds and faasbox first in even rounds, so that slow drifts in the "
        f"machine's speed hit both alike. Every number reported is a median over the "
        f"rounds, and the throughput ratio is the median of the per-round ratios. Each "
        f"measurement lasts {args.duration:g} s after a discarded {args.round_warmup:g} s "
        f"warm-up at the same concurrency. Load generator: {load_desc}.",
        "",
        "Reproduce (sets up `.venv`, installs wrk if missing and root):",
        "",
        "```bash",
        f"bench/run --rounds {args.rounds} --duration {args.duration:g} --connections {c}",
        "# or, with an existing venv: .venv/bin/python bench/warm.py",
        "```",
        "",
        f"Measured {info['date']} on: {info['nproc']} CPUs (`nproc`), {info['cpu']}"
        + (f", {info['memory']} RAM" if info["memory"] else "")
        + f"; {info['kernel']}; {info['python']}"
        + (f"; {info['wrk']}" if info["wrk"] and tool == "wrk" else "")
        + (f"; faasbox commit {info['commit']}" if info["commit"] else "")
        + ". Load generator and servers share these CPUs; 1-minute load average before "
        f"the run: {info['loadavg']}, after: {info.get('loadavg_after', '?')}.",
        "",
        "Targets:",
        "",
        *verdict_lines(s, args),
        "",
        f"Medians over {n} rounds:",
        "",
        *md_table(HEADER, summary_rows(s, args), 2),
        "",
        "CPU µs/request is the CPU time (user + system) the server spent per request during "
        "a measurement, from /proc; for faasbox it is split as (gateway process + its "
        "replicas), taken from the median round. The load generator's own CPU is not "
        "included. Errors are summed over the rounds.",
        "",
        "Per round (added = faasbox minus bare in the same round):",
        "",
        *md_table(ROUND_HEADER, round_rows(rounds, args), 3),
    ]
    if notes:
        out += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    if plot_ok:
        out += ["", f"![warm path: throughput ratio per round, and latency](./{PLOT.name})"]
    out += [END_MARK]
    return "\n".join(out) + "\n"


def write_section(
    section: str, start_mark: str, end_mark: str, after_mark: str | None = None
) -> None:
    """Put ``section`` (which begins with ``start_mark`` and ends with ``end_mark``) into
    docs/benchmarks.md: in place of the previous one, else right after ``after_mark``'s
    line, else at the end. The other benchmarks' sections are left as they are."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else DOC_INTRO
    start, end = text.find(start_mark), text.find(end_mark)
    after = text.find(after_mark) if after_mark else -1
    if start != -1 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(end_mark) :]
    elif after != -1 and after_mark:
        cut = after + len(after_mark)
        text = text[:cut] + "\n\n" + section.rstrip("\n") + text[cut:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text if text.endswith("\n") else text + "\n")
    log(f"wrote {DOC.relative_to(ROOT)}")


def update_doc(section: str) -> None:
    write_section(section, START_MARK, END_MARK)


COLORS = {"bare": "#8c8c8c", "faasbox": "#2b7bb9"}


def plot(rounds: list[Round], args: argparse.Namespace, tool: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import PercentFormatter
    except ImportError:
        log("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return False
    s = summarize(rounds, args)
    conns = conn_levels(args)
    hi = conns[0]
    fig, axes = plt.subplots(
        1,
        1 + len(conns),
        figsize=(6 + 4.6 * len(conns), 4.6),
        width_ratios=[1.3] + [1] * len(conns),
    )

    # 1. faasbox / bare requests/s in each round, and their median
    ax = axes[0]
    styles = {hi: ("o", "#2b7bb9"), "1": ("s", "#e08a1e")}
    top = TARGET_RATIO
    for c in conns:
        marker, color = styles[c]
        pts = [
            (r.index, v)
            for r in rounds
            if (b := r.get("bare", c)) and (f := r.get("faasbox", c)) and (v := _ratio(b, f))
        ]
        sp = s["ratio"][c]
        if not pts or sp is None:
            continue
        top = max(top, sp["max"])
        label = f"{c} connection{'s' if c != '1' else ''}"
        ax.plot(*zip(*pts, strict=True), marker, color=color, ms=7, label=f"{label}, per round")
        ax.axhline(sp["median"], color=color, lw=1.8, label=f"{label}, median {sp['median']:.1%}")
    ax.axhline(TARGET_RATIO, color="#c0392b", ls="--", lw=1.2, label=f"target {TARGET_RATIO:.0%}")
    ax.set_xlim(0.5, max(len(rounds), 1) + 0.5)
    ax.set_xticks(range(1, len(rounds) + 1))
    ax.set_ylim(0, top * 1.2)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("round (bare first in odd rounds, faasbox first in even)")
    ax.set_ylabel("faasbox / bare requests/s")
    bare_m, fb_m = s["servers"]["bare"][hi], s["servers"]["faasbox"][hi]
    ax.set_title(
        "throughput ratio per round"
        + (
            f"\nmedian req/s at {hi} connections: bare {bare_m['rps']:,.0f}, "
            f"faasbox {fb_m['rps']:,.0f}"
            if bare_m and fb_m
            else ""
        ),
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower center", ncol=2)
    ax.grid(axis="y", alpha=0.3)

    # 2. latency percentiles, median over rounds, whiskers = min..max over rounds
    width = 0.38
    for ax, c in zip(axes[1:], conns, strict=True):
        ymax = 0.0
        for i, key in enumerate(SERVERS):
            m = s["servers"][key][c]
            if m is None:
                continue
            ps = [p for p in PERCENTILES if p in m["latency_ms"]]
            vals = [m["latency_ms"][p] for p in ps]
            err = [
                [v - m["latency_ms_min"][p] for p, v in zip(ps, vals, strict=True)],
                [m["latency_ms_max"][p] - v for p, v in zip(ps, vals, strict=True)],
            ]
            pos = [PERCENTILES.index(p) + (i - 0.5) * width for p in ps]
            ax.bar(
                pos,
                vals,
                width,
                yerr=err if len(rounds) > 1 else None,
                capsize=3,
                error_kw={"elinewidth": 0.8, "ecolor": "#444444"},
                label=("bare uvicorn" if key == "bare" else "faasbox") + ", median",
                color=COLORS[key],
            )
            tops = [
                m["latency_ms_max"][p] if len(rounds) > 1 else v
                for p, v in zip(ps, vals, strict=True)
            ]
            for x, v, t in zip(pos, vals, tops, strict=True):
                ax.annotate(
                    f"{v * 1000:.0f} µs" if v < 1 else f"{v:.1f} ms",
                    (x, t),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
            ymax = max([ymax, *tops])
        ax.set_xticks(range(len(PERCENTILES)), [f"p{p}" for p in PERCENTILES])
        ax.set_ylabel("latency (ms)")
        ax.set_ylim(0, ymax * 1.3 if ymax else 1)
        ax.set_title(f"latency, {c} connection{'s' if c != '1' else ''}")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"faasbox warm path vs bare uvicorn: {len(rounds)} interleaved rounds, "
        f"{tool}, {args.duration:g} s per measurement (whiskers: min to max over rounds)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)
    log(f"wrote {PLOT.relative_to(ROOT)}")
    return True


def save_raw(
    rounds: list[Round], info: dict[str, str], args: argparse.Namespace, tool: str, notes: list[str]
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": info,
        "args": vars(args),
        "tool": tool,
        "notes": notes,
        "summary": summarize(rounds, args),
        "rounds": [asdict(r) for r in rounds],
    }
    path = RESULTS / f"warm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2))
    log(f"raw results in {path.relative_to(ROOT)}")


# --------------------------------------------------------------------------- main


def function_status(url: str) -> dict[str, Any]:
    import httpx

    with contextlib.suppress(Exception):
        r = httpx.get(url + "/system/function/hello", timeout=5)
        if r.status_code == 200:
            return dict(r.json())
    return {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds, each measuring both servers at both concurrencies (5)",
    )
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measurement (8)")
    p.add_argument(
        "--connections",
        type=int,
        default=16,
        help="concurrent connections of the loaded run (16); a 1-connection run always follows",
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads for the loaded run (2)")
    p.add_argument(
        "--round-warmup",
        type=float,
        default=1.0,
        help="load at the same concurrency right before each measurement, discarded (1)",
    )
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=3.0,
        help="load at --connections on each server before the first round, discarded (3)",
    )
    p.add_argument(
        "--warmup-requests",
        type=int,
        default=300,
        help="sequential requests right after deploy (300)",
    )
    p.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument(
        "--gateway",
        help="measure an already running faasbox at this URL instead "
        "of starting one (hello must be deployable there)",
    )
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument(
        "--write-partial",
        action="store_true",
        help="update docs/ even when faasbox could not be measured",
    )
    args = p.parse_args(argv)
    if args.connections < 1 or args.duration <= 0 or args.rounds < 1:
        p.error("--connections and --rounds must be >= 1, --duration > 0")
    if args.round_warmup < 0 or args.warmup_seconds < 0:
        p.error("warm-up durations must be >= 0")
    return args


def setup_faasbox(
    procs: Processes, workdir: Path, args: argparse.Namespace, notes: list[str]
) -> Target:
    """Start faasbox (unless --gateway), deploy hello, warm it up."""
    fb_pid = None
    if args.gateway:
        gw = args.gateway.rstrip("/")
    else:
        gw, fb = start_faasbox(procs, workdir / "data", workdir, args.startup_timeout)
        fb_pid = fb.pid
    how = deploy_hello(gw)
    log(f"deployed hello via {how}")
    fn_url = gw + "/function/hello"
    t0 = time.perf_counter()
    first = check_hello(fn_url, 1)
    first_ms = (time.perf_counter() - t0) * 1000
    check_hello(fn_url, args.warmup_requests)
    notes.append(
        f"hello was deployed with {how}; the first call took "
        f"{first_ms:.0f} ms (cold start: {first.get('cold_start') or 'unknown'}), "
        f"then {args.warmup_requests} sequential warm-up calls."
    )
    return Target("faasbox", fn_url, fb_pid)


def status_note(gateway: str) -> str | None:
    status = function_status(gateway)
    if not status:
        return None
    scale = ", ".join(
        f"`{k}: {v}`" for k, v in (status.get("labels") or {}).items() if "scale" in k
    )
    return (
        f"After the run hello had {status.get('replicas')} replica(s) "
        f"({status.get('availableReplicas')} available), concurrency "
        f"{status.get('concurrency')} per replica" + (f"; {scale}." if scale else ".")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    if tool == "wrk" and not shutil.which("wrk"):
        log("wrk not found (apt-get install wrk)")
        return 1
    if tool == "python":
        log(
            "wrk not found: using the Python load generator (much slower than wrk; numbers "
            "are comparable within this run only)"
        )
    info = machine_info()
    with contextlib.suppress(ValueError):
        if float(info["loadavg"]) > 0.5:
            log(
                f"warning: load average is {info['loadavg']}: other work on this machine "
                "skews the numbers"
            )
    per_round = len(conn_levels(args)) * len(SERVERS) * (args.duration + args.round_warmup)
    log(f"{args.rounds} rounds of ~{per_round:.0f} s each")
    rounds: list[Round] = []
    notes: list[str] = []
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="faasbox-bench-"))
    failed = ""
    try:
        # 1. both servers, started once and warmed up
        targets: dict[str, Target] = {}
        url, proc = start_bare(procs, workdir)
        check_hello(url, 20)
        targets["bare"] = Target("bare", url, proc.pid)
        try:
            targets["faasbox"] = setup_faasbox(procs, workdir, args, notes)
        except (RuntimeError, TimeoutError, OSError) as exc:
            failed = f"faasbox could not be measured: {exc}"
            log(failed)
            log_file = workdir / "faasbox.log"
            if log_file.exists():
                log("faasbox output:\n" + tail(log_file.read_text(errors="replace"), 40))
            notes.append(failed.splitlines()[0].rstrip(":") + " (see the script's output).")
        if args.warmup_seconds > 0:
            for t in targets.values():
                log(f"{t.name}: warm-up {args.warmup_seconds:g}s at c={args.connections}")
                measure(tool, t.url, args.connections, args.threads, args.warmup_seconds)

        # 2. the interleaved rounds
        try:
            run_rounds(targets, tool, args, rounds)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            msg = f"measurement failed in round {len(rounds)}: {exc}"
            log(msg)
            notes.append(msg.splitlines()[0].rstrip(":") + "; later rounds were not run.")
            failed = failed or msg
        if "faasbox" in targets and (
            note := status_note(targets["faasbox"].url.rsplit("/function/", 1)[0])
        ):
            notes.append(note)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_after"] = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"

    for r in rounds:
        for key in SERVERS:
            for c, load in r.loads.get(key, {}).items():
                if load.errors:
                    notes.append(
                        f"round {r.index}, {key} at c={c}: {load.errors} failed requests "
                        "(non-2xx or socket errors); its numbers are not valid."
                    )
                    failed = failed or "errors during measurement"
    print_report(rounds, args)
    save_raw(rounds, info, args, tool, notes)
    if not args.no_write and (not failed or args.write_partial):
        plot_ok = plot(rounds, args, tool)
        update_doc(render_section(rounds, info, args, tool, notes, plot_ok))
    elif failed and not args.no_write:
        log("docs/ left unchanged because the run is incomplete (use --write-partial)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
