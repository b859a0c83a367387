#!/usr/bin/env python3
"""Warm-path benchmark: faasbox "hello" against a bare uvicorn "hello", in one run.

    bench/run                                   # sets up .venv and wrk, then runs this
    .venv/bin/python bench/warm.py [--duration 10] [--connections 16]

1. Starts bench/bare_app.py (raw ASGI, uvicorn + uvloop + httptools) on an ephemeral port
   and measures it with wrk at --connections (default 16) and at 1 connection.
2. Starts `faasbox up --port 0 --data-dir <tmp>`, deploys examples/hello (with the CLI,
   or over the HTTP API if the CLI fails), warms it up and measures /function/hello the
   same way.
3. Prints a table and rewrites the "Warm path" section of docs/benchmarks.md (between
   <!-- warm:start --> and <!-- warm:end -->) and docs/benchmarks-warm.png. Raw results go
   to bench/.results/ (git-ignored).

Targets: faasbox throughput >= 40% of bare at --connections; added p50 latency at one
connection <= 1 ms. Exit status: 0 when both were measured (pass or fail is reported in
the output), 1 when something could not be measured.

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

TARGET_RATIO = 0.40  # faasbox requests/s >= 40% of bare at --connections
TARGET_ADDED_P50_MS = 1.0  # faasbox p50 - bare p50 at one connection
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


def measure_target(
    name: str, tool: str, url: str, args: argparse.Namespace, pid: int | None = None
) -> dict[str, Load]:
    """Warm-up at full concurrency (discarded), then --connections, then one connection.
    With the server's pid, also its CPU time (and its children's) per request."""
    log(f"{name}: warm-up {args.warmup_seconds:g}s at c={args.connections}")
    measure(tool, url, args.connections, args.threads, args.warmup_seconds)
    out = {}
    for c in (args.connections, 1):
        log(f"{name}: measuring {args.duration:g}s at c={c}")
        before = tree_cpu(pid) if pid else None
        load = measure(tool, url, c, args.threads, args.duration)
        if before and pid and load.requests:
            after = tree_cpu(pid)
            kids = sum(t - before[1].get(p, 0.0) for p, t in after[1].items())
            load.cpu_us_per_req = {"server": (after[0] - before[0]) / load.requests * 1e6}
            if after[1] or before[1]:
                load.cpu_us_per_req["children"] = kids / load.requests * 1e6
        log(
            f"{name}: c={c}: {load.rps:,.0f} req/s, p50 {load.latency_ms.get('50', 0):.3f} ms, "
            f"p99 {load.latency_ms.get('99', 0):.3f} ms, errors {load.errors}"
        )
        out[str(c)] = load
    return out


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
    return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.2f} ms"


def fmt_signed_ms(v: float) -> str:
    return ("+" if v >= 0 else "-") + fmt_ms(abs(v))


def summarize(res: dict[str, Any], c: str) -> dict[str, Any]:
    """The comparisons the targets are about (None where not measured)."""
    bare, fb = res.get("bare") or {}, res.get("faasbox") or {}
    s: dict[str, Any] = {"ratio": None, "added_p50": None, "added_p99": None, "cpu_ratio": None}
    if c in bare and c in fb and bare[c].rps:
        s["ratio"] = fb[c].rps / bare[c].rps
        cb, cf = bare[c].cpu_us_per_req, fb[c].cpu_us_per_req
        if cb and cf:
            s["cpu_ratio"] = sum(cb.values()) / sum(cf.values())
    if "1" in bare and "1" in fb:
        s["added_p50"] = fb["1"].latency_ms["50"] - bare["1"].latency_ms["50"]
        s["added_p99"] = fb["1"].latency_ms["99"] - bare["1"].latency_ms["99"]
    return s


def table_rows(res: dict[str, Any], conns: list[str]) -> list[list[str]]:
    rows = []
    labels = {"bare": "bare uvicorn (raw ASGI)", "faasbox": "faasbox `/function/hello`"}
    for c in conns:
        for key in ("bare", "faasbox"):
            load = (res.get(key) or {}).get(c)
            if load is None:
                rows.append([labels[key], c, "not measured", "", "", "", "", "", ""])
                continue
            rows.append(
                [
                    labels[key],
                    c,
                    f"{load.rps:,.0f}",
                    *(fmt_ms(load.latency_ms.get(p)) for p in PERCENTILES),
                    fmt_cpu(load.cpu_us_per_req),
                    str(load.errors),
                ]
            )
    return rows


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


def fmt_cpu(cpu: dict[str, float]) -> str:
    if not cpu:
        return "-"
    if "children" not in cpu:
        return f"{cpu['server']:.0f}"
    return f"{cpu['server'] + cpu['children']:.0f} ({cpu['server']:.0f} + {cpu['children']:.0f})"


def print_table(res: dict[str, Any], args: argparse.Namespace) -> None:
    conns = [str(args.connections), "1"]
    rows = [HEADER, *table_rows(res, conns)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    print()
    for i, r in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if j < 2 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    s = summarize(res, str(args.connections))
    print()
    for line in verdict_lines(s, args):
        print(line.replace("**", "").replace("`", ""))
    print()


def verdict_lines(s: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = []
    if s["ratio"] is None:
        lines.append(
            f"- Throughput at {args.connections} connections: **not measured** "
            f"(target: faasbox ≥ {TARGET_RATIO:.0%} of bare)."
        )
    else:
        ok = s["ratio"] >= TARGET_RATIO
        lines.append(
            f"- Throughput at {args.connections} connections: faasbox reaches "
            f"**{s['ratio']:.1%}** of bare uvicorn (target ≥ {TARGET_RATIO:.0%}): "
            f"**{'PASS' if ok else 'FAIL'}**."
        )
    if s["cpu_ratio"] is not None:
        lines.append(
            f"- CPU cost per request at {args.connections} connections, bare / faasbox: "
            f"{s['cpu_ratio']:.1%} (less sensitive to other load on the machine than "
            "requests/s; with every core busy, throughput ratio tends to this)."
        )
    if s["added_p50"] is None:
        lines.append(
            f"- Added latency at 1 connection: **not measured** "
            f"(target: p50 added ≤ {TARGET_ADDED_P50_MS:g} ms)."
        )
    else:
        ok = s["added_p50"] <= TARGET_ADDED_P50_MS
        lines.append(
            f"- Added latency at 1 connection (faasbox minus bare): p50 "
            f"**{fmt_signed_ms(s['added_p50'])}** (target ≤ {TARGET_ADDED_P50_MS:g} ms): "
            f"**{'PASS' if ok else 'FAIL'}**; p99 {fmt_signed_ms(s['added_p99'])} "
            f"(no target)."
        )
    return lines


def render_section(
    res: dict[str, Any],
    info: dict[str, str],
    args: argparse.Namespace,
    notes: list[str],
    plot_ok: bool,
) -> str:
    conns = [str(args.connections), "1"]
    s = summarize(res, str(args.connections))
    tool = res.get("tool", "wrk")
    if tool == "wrk":
        load_desc = (
            f"`wrk -t{min(args.threads, args.connections)} -c{args.connections} "
            f"-d{args.duration:g}s --latency URL`, then `wrk -t1 -c1 -d{args.duration:g}s "
            f"--latency URL`"
        )
    else:
        load_desc = (
            "the Python asyncio load generator in `bench/warm.py` (wrk was not used). "
            "It is slower than wrk and may itself be the bottleneck: these numbers "
            "compare bare and faasbox within this run only and are not comparable "
            "with wrk numbers"
        )
    out = [
        START_MARK,
        "## Warm path",
        "",
        "What every call pays once a replica is warm: request into the gateway, through the "
        "pool to a sandboxed replica, the handler, and back. The baseline is the cheapest "
        'possible Python HTTP "hello": a raw ASGI app on uvicorn with uvloop and httptools '
        "([`bench/bare_app.py`](../bench/bare_app.py)). faasbox serves "
        "[`examples/hello`](../examples/hello/handler.py), deployed from "
        "[`examples/faasbox.yml`](../examples/faasbox.yml). Both are measured by the same "
        "load generator in the same run, one after the other, each measurement after a "
        f"{args.warmup_seconds:g} s warm-up at full concurrency. Load generator: {load_desc}.",
        "",
        "Reproduce (sets up `.venv`, installs wrk if missing and root):",
        "",
        "```bash",
        f"bench/run --duration {args.duration:g} --connections {args.connections}",
        "# or, with an existing venv: .venv/bin/python bench/warm.py",
        "```",
        "",
        f"Measured {info['date']} on: {info['nproc']} CPUs (`nproc`), {info['cpu']}"
        + (f", {info['memory']} RAM" if info["memory"] else "")
        + f"; {info['kernel']}; {info['python']}"
        + (f"; {info['wrk']}" if info["wrk"] and tool == "wrk" else "")
        + (f"; faasbox commit {info['commit']}" if info["commit"] else "")
        + f". Load generator and servers share these CPUs; 1-minute load average before "
        f"the run: {info['loadavg']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADER) - 2)) + "|",
        *("| " + " | ".join(r) + " |" for r in table_rows(res, conns)),
        "",
        "CPU µs/request is the CPU time (user + system) the server spent per request during "
        "that measurement, from /proc; for faasbox it is split as (gateway process + its "
        "replicas). The load generator's own CPU is not included.",
        "",
        "Targets:",
        "",
        *verdict_lines(s, args),
    ]
    if notes:
        out += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    if plot_ok:
        out += ["", f"![warm path: throughput and latency](./{PLOT.name})"]
    out += [END_MARK]
    return "\n".join(out) + "\n"


def update_doc(section: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else DOC_INTRO
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start != -1 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(END_MARK) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    if not text.endswith("\n"):
        text += "\n"
    DOC.write_text(text)
    log(f"wrote {DOC.relative_to(ROOT)}")


def plot(res: dict[str, Any], args: argparse.Namespace) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return False
    c = str(args.connections)
    names = [("bare", "bare uvicorn", "#999999"), ("faasbox", "faasbox", "#2b7bb9")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    xs, hs, cs = [], [], []
    for key, label, color in names:
        load = (res.get(key) or {}).get(c)
        if load:
            xs.append(label)
            hs.append(load.rps)
            cs.append(color)
    bars = ax.bar(xs, hs, color=cs)
    ax.bar_label(bars, labels=[f"{h:,.0f}" for h in hs])
    ax.set_title(f"throughput, {c} connections")
    ax.set_ylabel("requests/s")
    for ax, conn in ((axes[1], c), (axes[2], "1")):
        width = 0.38
        for i, (key, label, color) in enumerate(names):
            load = (res.get(key) or {}).get(conn)
            if not load:
                continue
            vals = [load.latency_ms[p] for p in PERCENTILES]
            pos = [j + (i - 0.5) * width for j in range(len(PERCENTILES))]
            ax.bar(pos, vals, width, label=label, color=color)
        ax.set_xticks(range(len(PERCENTILES)), [f"p{p}" for p in PERCENTILES])
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"latency, {conn} connection{'s' if conn != '1' else ''}")
        ax.legend()
    fig.suptitle(
        f"faasbox warm path vs bare uvicorn ({res.get('tool', 'wrk')}, {args.duration:g} s per run)"
    )
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)
    log(f"wrote {PLOT.relative_to(ROOT)}")
    return True


def save_raw(res: dict[str, Any], info: dict[str, str], notes: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": info,
        "notes": notes,
        "tool": res.get("tool"),
        "results": {
            k: {c: asdict(v) for c, v in res[k].items()} for k in ("bare", "faasbox") if res.get(k)
        },
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
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (10)")
    p.add_argument(
        "--connections",
        type=int,
        default=16,
        help="concurrent connections of the loaded run (16); a 1-connection run always follows",
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads for the loaded run (2)")
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=3.0,
        help="load before each measurement, discarded (3)",
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
    if args.connections < 1 or args.duration <= 0:
        p.error("--connections must be >= 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
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
    res: dict[str, Any] = {"tool": tool}
    notes: list[str] = []
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="faasbox-bench-"))
    failed = ""
    try:
        # 1. the baseline
        url, proc = start_bare(procs, workdir)
        check_hello(url, 20)
        res["bare"] = measure_target("bare", tool, url, args, proc.pid)
        procs.stop(proc)

        # 2. faasbox
        try:
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
            res["faasbox"] = measure_target("faasbox", tool, fn_url, args, fb_pid)
            status = function_status(gw)
            notes.append(
                f"hello was deployed with {how}; the first call took "
                f"{first_ms:.0f} ms (cold start: {first.get('cold_start') or 'unknown'}), "
                f"then {args.warmup_requests} sequential warm-up calls."
            )
            if status:
                scale = ", ".join(
                    f"`{k}: {v}`" for k, v in (status.get("labels") or {}).items() if "scale" in k
                )
                notes.append(
                    f"After the run hello had {status.get('replicas')} replica(s) "
                    f"({status.get('availableReplicas')} available), concurrency "
                    f"{status.get('concurrency')} per replica" + (f"; {scale}." if scale else ".")
                )
        except (RuntimeError, TimeoutError, OSError) as exc:
            failed = f"faasbox could not be measured: {exc}"
            log(failed)
            log_file = workdir / "faasbox.log"
            if log_file.exists():
                log("faasbox output:\n" + tail(log_file.read_text(errors="replace"), 40))
            notes.append(failed.splitlines()[0].rstrip(":") + " (see the script's output).")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    finally:
        procs.stop_all()

    for key in ("bare", "faasbox"):
        for c, load in (res.get(key) or {}).items():
            if load.errors:
                notes.append(
                    f"{key} at c={c}: {load.errors} failed requests (non-2xx or socket "
                    "errors); its numbers are not valid."
                )
                failed = failed or "errors during measurement"
    print_table(res, args)
    save_raw(res, info, notes)
    shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_write and (not failed or args.write_partial):
        plot_ok = plot(res, args)
        update_doc(render_section(res, info, args, notes, plot_ok))
    elif failed and not args.no_write:
        log("docs/ left unchanged because the run is incomplete (use --write-partial)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
