#!/usr/bin/env python3
"""Asynchronous invocations: how fast faasbox durably accepts calls on
``POST /async-function/{name}``, and how fast its dispatcher drains them.

    bench/run async [--rounds 3] [--duration 5] [--connections 16,64] [--calls 5000]
    .venv/bin/python bench/async.py [options]

One `faasbox up --port 0 --data-dir <tmp>` (the default backend, started as bench/warm.py
does) with a function `noop` (a handler returning "", com.openfaas.scale.max 4) deployed
over the HTTP API, and the bare uvicorn app of bench/bare_app.py; both stay up for the
whole run. Each of --rounds rounds has two parts:

1. Accept. At each of --connections, three targets back to back, loaded by wrk POSTing
   the same small JSON body (reversed order in even rounds, so that drifts in the
   machine's speed hit all alike): the bare app (what Python HTTP can do here at all), the
   synchronous `POST /function/noop` (the call runs before the answer) and
   `POST /async-function/noop` (202 once the call is committed to the SQLite queue: WAL,
   synchronous=FULL). Each measurement lasts --duration s after a discarded
   --round-warmup s, and the async one starts with an empty queue. The dispatcher keeps
   running meanwhile, as it would in use: how much it ran during the window is reported,
   and how long the backlog left then took to drain. Flush requests of the data
   directory's disk (/proc/diskstats; on ext4 one fdatasync is one flush) are counted
   during every measurement: for the async target, less the bare app's rate in the same
   round, they are the queue's commits (accepts, claims and finishes share them). A probe
   (4 KiB append + fdatasync in the data dir) gives the disk's commit latency, and /proc
   the CPU time the servers (and faasbox's replicas) spent.
2. Drain. --calls calls are enqueued as fast as --enqueue-connections Python asyncio
   clients can, while GET /system/async is polled: end to end = calls / (first request to
   0 unfinished); backlog drain = unfinished at the last 202 / (last 202 to 0 unfinished).
   Every call must finish "succeeded" (counted from /metrics).

Reports medians over rounds with ranges, rewrites the "Asynchronous invocations" section of
docs/benchmarks.md (between <!-- async:start --> and <!-- async:end -->) and
docs/benchmarks-async.png; raw results go to bench/.results/ (git-ignored). Target: a
durable accept rate of at least 2,000 calls/s. Exit status 0 when everything was measured
(pass or fail is reported), 1 when something could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import warm
from warm import fmt_ms, md_table, spread

ROOT = warm.ROOT
PLOT = ROOT / "docs" / "benchmarks-async.png"
START_MARK = "<!-- async:start -->"
END_MARK = "<!-- async:end -->"

TARGET_ACCEPTS = 2000.0  # accepted calls/s on /async-function/noop
FUNCTION = "noop"
HANDLER = 'def handle(event, context):\n    return ""\n'
BODY = b'{"event": "bench", "n": 1}'
LUA = f"""wrk.method = "POST"
wrk.body = '{BODY.decode()}'
wrk.headers["Content-Type"] = "application/json"
"""
TARGETS = ("bare", "sync", "async")
LABELS = {
    "bare": "bare uvicorn `POST /`",
    "sync": f"faasbox `POST /function/{FUNCTION}` (runs it)",
    "async": f"faasbox `POST /async-function/{FUNCTION}` (202 when stored)",
}
SHORT = {"bare": "bare", "sync": "sync", "async": "async"}


def log(msg: str) -> None:
    print(f"[async] {msg}", file=sys.stderr, flush=True)


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    run: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    return run(coro)


# --------------------------------------------------------------------------- the disk


def disk_of(path: Path) -> dict[str, Any]:
    """The filesystem and block device that hold ``path``: where the queue's fsyncs go."""
    st = os.stat(path)
    info: dict[str, Any] = {"dev": [os.major(st.st_dev), os.minor(st.st_dev)]}
    best = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            source, point, fstype = line.split()[:3]
            if (str(path) + "/").startswith(point.rstrip("/") + "/") and len(point) >= len(best):
                best, info["fs"], info["source"] = point, fstype, source
    with contextlib.suppress(OSError):
        sysdev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
        for d in (sysdev, sysdev.parent):  # a partition's queue/ is its disk's
            if (d / "queue" / "write_cache").exists():
                info["write_cache"] = (d / "queue" / "write_cache").read_text().strip()
                break
    return info


def flush_count(dev: list[int]) -> int | None:
    """Flush requests completed by the block device ``dev`` (major, minor) since boot, from
    /proc/diskstats (kernel >= 5.5); None when it is not a block device (tmpfs, overlay)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/diskstats").read_text().splitlines():
            f = line.split()
            if [int(f[0]), int(f[1])] == dev and len(f) >= 20:
                return int(f[18])
    return None


def fsync_probe(directory: Path, n: int = 200) -> float:
    """Median ms of appending 4 KiB to a file in ``directory`` and fdatasync-ing it: about
    what one commit of the queue (a few WAL frames, one fdatasync) waits for the disk."""
    path = directory / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


# --------------------------------------------------------------------------- faasbox


def deploy_noop(gw: str, max_replicas: int) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", HANDLER)
    spec = {
        "service": FUNCTION,
        "labels": {
            "com.openfaas.scale.max": str(max_replicas),
            "com.openfaas.scale.zero-duration": "1h",
        },
        "code": {"zip": base64.b64encode(buf.getvalue()).decode()},
    }
    r = httpx.post(gw + "/system/functions", params={"wait": "true"}, json=spec, timeout=300)
    if r.status_code >= 400:
        raise RuntimeError(f"deploying {FUNCTION}: {r.status_code} {r.text[:500]}")


_METRIC = re.compile(
    r'^faasbox_async_(accepted|finished)_total\{function_name="' + FUNCTION + r'"'
    r'(?:,state="(\w+)")?\}\s+([\d.e+]+)$',
    re.M,
)


def async_counters(c: httpx.Client) -> dict[str, int]:
    """{"accepted": n, "succeeded": n, "failed": n, ...} for noop, from /metrics."""
    out: dict[str, int] = {}
    for kind, state, value in _METRIC.findall(c.get("/metrics").text):
        out[state or kind] = int(float(value))
    return out


def unfinished(c: httpx.Client) -> int:
    return int(c.get("/system/async").json()["unfinished"])


def wait_empty(c: httpx.Client, timeout: float, interval: float) -> float:
    """Seconds until GET /system/async reports no unfinished call."""
    t0 = time.perf_counter()
    while (n := unfinished(c)) > 0:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{n} asynchronous calls still unfinished after {timeout:.0f}s")
        time.sleep(interval)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- load


def run_wrk_post(
    url: str, connections: int, threads: int, duration: float, script: Path
) -> warm.Load:
    threads = max(1, min(threads, connections))
    duration = max(1, round(duration))  # wrk takes whole seconds only
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    cmd += ["--latency", "-s", str(script), url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr or r.stdout}")
    parsed = warm.parse_wrk(r.stdout)
    if not parsed["requests"] or len(parsed["latency_ms"]) != len(warm.PERCENTILES):
        raise RuntimeError(f"could not parse wrk output:\n{r.stdout}")
    return warm.Load(
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


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readline()
    return status, headers, body


def raw_request(method: str, url: str, body: bytes = b"") -> tuple[str, int, bytes]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    head = f"{method} {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: async.py\r\n"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return host, port, (head + "\r\n").encode() + body


@dataclass
class Burst:
    """What a Python client saw of many POSTs (times are time.perf_counter())."""

    sent: int = 0
    ok: int = 0  # 2xx
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    first_sent: float = 0.0
    last_ok: float = 0.0
    last_call_id: str = ""


async def post_burst(
    b: Burst, url: str, connections: int, *, count: int | None = None, duration: float = math.inf
) -> None:
    """POST BODY to url from `connections` keep-alive clients, `count` times in all or for
    `duration` seconds, filling ``b`` as it goes (its counts are read while it runs)."""
    host, port, raw = raw_request("POST", url, BODY)
    b.first_sent = time.perf_counter()
    stop_at = b.first_sent + duration

    async def client() -> None:
        reader = writer = None
        while (count is None or b.sent < count) and time.perf_counter() < stop_at:
            b.sent += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                t0 = time.perf_counter()
                writer.write(raw)
                status, headers, _ = await asyncio.wait_for(read_response(reader), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                b.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            now = time.perf_counter()
            if 200 <= status < 300:
                b.ok += 1
                b.latencies.append(now - t0)
                b.last_ok = now
                b.last_call_id = headers.get("x-call-id", b.last_call_id)
            else:
                b.errors += 1
            if headers.get("connection", "").lower() == "close" and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))


def python_post_load(url: str, connections: int, duration: float) -> warm.Load:
    b = Burst()
    run_async(post_burst(b, url, connections, duration=duration))
    elapsed = (b.last_ok - b.first_sent) or duration
    lat = sorted(b.latencies)
    pct = {
        p: lat[min(len(lat) - 1, int(len(lat) * int(p) / 100))] * 1000
        for p in warm.PERCENTILES
        if lat
    }
    return warm.Load(
        tool="python-asyncio",
        url=url,
        connections=connections,
        threads=1,
        duration=duration,
        rps=b.ok / elapsed,
        requests=b.ok,
        latency_ms=pct,
        errors=b.errors,
    )


# --------------------------------------------------------------------------- measurements


@dataclass
class Measure:
    """One target at one concurrency for --duration seconds."""

    target: str
    connections: int
    load: warm.Load
    seconds: float  # wall time of the load
    flushes_per_s: float | None = None
    # CPU time per second of wall time: the server process (faasbox: the gateway, with the
    # queue's writer thread), and its descendants (faasbox: the replicas)
    cpu: dict[str, float] = field(default_factory=dict)
    # async only: accepted as counted by faasbox, calls finished during the window, the
    # backlog left at its end and the seconds until it was drained
    server_accepted: int | None = None
    finished_during: int | None = None
    backlog: int | None = None
    backlog_drain_s: float | None = None

    @property
    def ran_per_s(self) -> float | None:
        return None if self.finished_during is None else self.finished_during / self.seconds

    @property
    def backlog_rate(self) -> float | None:
        if self.backlog and self.backlog_drain_s:
            return self.backlog / self.backlog_drain_s
        return None


@dataclass
class Drain:
    """--calls enqueued at once, polled until the queue was empty (seconds from the first
    request)."""

    calls: int
    accepted: int
    errors: int
    enqueue_s: float  # to the last 202
    empty_s: float  # to the first poll that saw 0 unfinished
    backlog: int  # unfinished at the first poll after the last 202...
    backlog_at_s: float  # ...made at this time
    replicas_max: int
    finished: dict[str, int]  # final states, from /metrics
    last_state: str  # of the last call accepted, from /system/activations/{id}
    flushes_per_s: float | None
    series: list[tuple[float, int, int]]  # (seconds, accepted so far, unfinished)

    @property
    def end_to_end(self) -> float:
        return self.accepted / self.empty_s

    @property
    def backlog_rate(self) -> float | None:
        span = self.empty_s - self.backlog_at_s
        return self.backlog / span if self.backlog and span > 0 else None

    @property
    def enqueue_rate(self) -> float:
        return self.accepted / self.enqueue_s


@dataclass
class Round:
    index: int
    order: list[str]
    fsync_ms: float | None = None
    accept: dict[str, dict[str, Measure]] = field(default_factory=dict)  # target -> c -> .
    drain: Drain | None = None

    def get(self, target: str, c: str) -> Measure | None:
        return self.accept.get(target, {}).get(c)


@dataclass
class Bench:
    """What the rounds run against."""

    urls: dict[str, str]
    pids: dict[str, int]
    gw: str
    client: httpx.Client
    script: Path
    dev: list[int] | None
    tool: str
    args: argparse.Namespace

    def load(self, target: str, connections: int, duration: float) -> warm.Load:
        url = self.urls[target]
        if self.tool == "wrk":
            return run_wrk_post(url, connections, self.args.threads, duration, self.script)
        return python_post_load(url, connections, duration)

    def flushes(self) -> int | None:
        return flush_count(self.dev) if self.dev else None

    def wait_empty(self) -> float:
        return wait_empty(self.client, self.args.drain_timeout, self.args.poll_interval)


def measure_accept(bench: Bench, target: str, connections: int) -> Measure:
    args = bench.args
    if args.round_warmup > 0:
        bench.load(target, connections, args.round_warmup)
    bench.wait_empty()  # the async warm-up's backlog, or an earlier one's
    before = async_counters(bench.client) if target == "async" else {}
    pid = bench.pids[target]
    f0, cpu0, t0 = bench.flushes(), warm.tree_cpu(pid), time.perf_counter()
    load = bench.load(target, connections, args.duration)
    seconds = time.perf_counter() - t0
    f1, cpu1 = bench.flushes(), warm.tree_cpu(pid)
    m = Measure(target, connections, load, seconds)
    m.cpu = {
        "server": (cpu1[0] - cpu0[0]) / seconds,
        "children": sum(t - cpu0[1].get(p, 0.0) for p, t in cpu1[1].items()) / seconds,
    }
    if f0 is not None and f1 is not None:
        m.flushes_per_s = (f1 - f0) / seconds
    if target == "async":
        m.backlog = unfinished(bench.client)
        after = async_counters(bench.client)
        m.server_accepted = after.get("accepted", 0) - before.get("accepted", 0)
        m.finished_during = sum(n - before.get(k, 0) for k, n in after.items() if k != "accepted")
        m.backlog_drain_s = bench.wait_empty()
    return m


async def _drain(bench: Bench, calls: int) -> tuple[Burst, list[tuple[float, int, int]], int]:
    """Enqueue `calls` and poll /system/async (and the function's replicas) on a connection
    of its own until the queue is empty. Times count from the start of the enqueue."""
    args = bench.args
    host, port, poll_raw = raw_request("GET", bench.gw + "/system/async")
    _, _, fn_raw = raw_request("GET", bench.gw + f"/system/function/{FUNCTION}")
    reader, writer = await asyncio.open_connection(host, port)
    b = Burst()
    t0 = time.perf_counter()
    sender = asyncio.ensure_future(
        post_burst(b, bench.urls["async"], args.enqueue_connections, count=calls)
    )
    series: list[tuple[float, int, int]] = []
    replicas = 0
    try:
        while True:
            writer.write(poll_raw)
            status, _, body = await read_response(reader)
            if status != 200:
                raise RuntimeError(f"GET /system/async answered {status}: {body[:200]!r}")
            now = time.perf_counter() - t0
            left = int(json.loads(body)["unfinished"])
            series.append((now, b.ok, left))
            if len(series) % 10 == 1:
                writer.write(fn_raw)
                _, _, fn = await read_response(reader)
                replicas = max(replicas, int(json.loads(fn).get("replicas") or 0))
            if sender.done() and left == 0:
                break
            if now > args.drain_timeout:
                raise TimeoutError(f"{left} calls still unfinished after {now:.0f}s")
            await asyncio.sleep(args.poll_interval)
        await sender  # its exceptions, if any
    finally:
        sender.cancel()
        writer.close()
    b.first_sent = t0  # what the series counts from
    return b, series, replicas


def measure_drain(bench: Bench) -> Drain:
    args = bench.args
    bench.wait_empty()
    before = async_counters(bench.client)
    f0, w0 = bench.flushes(), time.perf_counter()
    b, series, replicas = run_async(_drain(bench, args.calls))
    seconds = time.perf_counter() - w0
    f1 = bench.flushes()
    after = async_counters(bench.client)
    t_last = b.last_ok - b.first_sent
    # The first poll at or after the last 202: the backlog the dispatcher then had left.
    at_s, backlog = next(
        ((t, left) for t, _, left in series if t >= t_last), (series[-1][0], series[-1][2])
    )
    state = ""
    if b.last_call_id:
        r = bench.client.get(f"/system/activations/{b.last_call_id}")
        state = str(r.json().get("state", r.status_code)) if r.status_code == 200 else "?"
    return Drain(
        calls=args.calls,
        accepted=b.ok,
        errors=b.errors,
        enqueue_s=t_last,
        empty_s=series[-1][0],
        backlog=backlog,
        backlog_at_s=at_s,
        replicas_max=replicas,
        finished={k: n - before.get(k, 0) for k, n in after.items() if k != "accepted"},
        last_state=state,
        flushes_per_s=(f1 - f0) / seconds if f0 is not None and f1 is not None else None,
        series=series,
    )


def conn_levels(args: argparse.Namespace) -> list[str]:
    return [str(c) for c in args.connections]


def run_rounds(bench: Bench, rounds: list[Round], workdir: Path) -> None:
    """Appends to `rounds` as it goes, so that whatever was measured survives a failure."""
    args = bench.args
    for i in range(1, args.rounds + 1):
        order = list(TARGETS) if i % 2 else list(reversed(TARGETS))
        rnd = Round(i, order, fsync_probe(workdir))
        rounds.append(rnd)
        log(f"round {i}/{args.rounds}: {' then '.join(order)}; fdatasync {rnd.fsync_ms:.2f} ms")
        for c in conn_levels(args):
            for target in order:
                m = measure_accept(bench, target, int(c))
                rnd.accept.setdefault(target, {})[c] = m
                extra = ""
                if target == "async":
                    extra = (
                        f"  ran {m.finished_during} meanwhile; backlog {m.backlog} drained in "
                        f"{m.backlog_drain_s:.1f}s"
                    )
                log(
                    f"  {target:<5} c={c:<3} {m.load.rps:>7,.0f}/s  "
                    f"p50 {fmt_ms(m.load.latency_ms.get('50'))}  "
                    f"p99 {fmt_ms(m.load.latency_ms.get('99'))}  errors {m.load.errors}  "
                    f"flushes {fmt_rate(m.flushes_per_s)}/s{extra}"
                )
        d = rnd.drain = measure_drain(bench)
        log(
            f"  drain {d.accepted} calls: enqueued in {d.enqueue_s:.2f}s, empty after "
            f"{d.empty_s:.2f}s: end to end {d.end_to_end:,.0f}/s, backlog {d.backlog} at "
            f"{d.backlog_at_s:.2f}s drained at {fmt_rate(d.backlog_rate)}/s; "
            f"replicas {d.replicas_max}; finished {d.finished}"
        )


# --------------------------------------------------------------------------- report


def fmt_cpu(m: dict[str, Any]) -> str:
    """Median CPUs busy: the server process, and its descendants when it has any."""
    server, kids = m["cpu_server"], m["cpu_children"]
    if server is None:
        return "-"
    if not kids or kids["median"] < 0.005:
        return f"{server['median']:.2f}"
    return f"{server['median']:.2f} + {kids['median']:.2f}"


def fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def fmt_spread(sp: dict[str, Any] | None, fmt: Callable[[float], str] = fmt_rate) -> str:
    if sp is None:
        return "-"
    if sp["n"] == 1:
        return fmt(sp["median"])
    return f"{fmt(sp['median'])} ({fmt(sp['min'])} to {fmt(sp['max'])})"


def per_round(rounds: list[Round], f: Callable[[Round], float | None]) -> dict[str, Any] | None:
    return spread([v for r in rounds if (v := f(r)) is not None])


def accepts_per_flush(r: Round, c: str) -> float | None:
    """Async accepts per flush of the disk, less the bare app's flush rate in the same round
    (other work on the machine)."""
    a, bare = r.get("async", c), r.get("bare", c)
    if a is None or a.flushes_per_s is None:
        return None
    background = bare.flushes_per_s if bare and bare.flushes_per_s is not None else 0.0
    queue = a.flushes_per_s - background
    return a.load.rps / queue if queue > 0 else None


def over(
    rounds: list[Round], t: str, c: str, f: Callable[[Measure], float | None]
) -> dict[str, Any] | None:
    """spread() of f over the rounds' measurements of target t at c connections."""
    return spread([v for r in rounds if (m := r.get(t, c)) is not None and (v := f(m)) is not None])


def summarize(rounds: list[Round], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"accept": {}, "drain": {}}
    for c in conn_levels(args):
        row: dict[str, Any] = {}
        for t in TARGETS:
            row[t] = {
                "rps": over(rounds, t, c, lambda m: m.load.rps),
                "p50": over(rounds, t, c, lambda m: m.load.latency_ms.get("50")),
                "p99": over(rounds, t, c, lambda m: m.load.latency_ms.get("99")),
                "flushes_per_s": over(rounds, t, c, lambda m: m.flushes_per_s),
                "cpu_server": over(rounds, t, c, lambda m: m.cpu.get("server")),
                "cpu_children": over(rounds, t, c, lambda m: m.cpu.get("children")),
                "cpu_us": over(
                    rounds,
                    t,
                    c,
                    lambda m: m.cpu["server"] / m.load.rps * 1e6 if m.cpu and m.load.rps else None,
                ),
                "errors": sum(m.load.errors for r in rounds if (m := r.get(t, c))),
            }
        a = row["async"]
        a["vs_bare"] = per_round(rounds, lambda r, c=c: _ratio(r, c, "async", "bare"))
        a["vs_sync"] = per_round(rounds, lambda r, c=c: _ratio(r, c, "async", "sync"))
        a["per_flush"] = per_round(rounds, lambda r, c=c: accepts_per_flush(r, c))
        a["ran_per_s"] = over(rounds, "async", c, lambda m: m.ran_per_s)
        a["backlog"] = over(rounds, "async", c, lambda m: m.backlog)
        a["backlog_rate"] = over(rounds, "async", c, lambda m: m.backlog_rate)
        out["accept"][c] = row
    drains = [r.drain for r in rounds if r.drain]
    out["drain"] = {
        "end_to_end": spread([d.end_to_end for d in drains]),
        "backlog_rate": spread([v for d in drains if (v := d.backlog_rate) is not None]),
        "enqueue_rate": spread([d.enqueue_rate for d in drains]),
        "empty_s": spread([d.empty_s for d in drains]),
        "backlog": spread([float(d.backlog) for d in drains]),
        "replicas_max": spread([float(d.replicas_max) for d in drains]),
        "flushes_per_s": spread([d.flushes_per_s for d in drains if d.flushes_per_s is not None]),
    }
    out["fsync_ms"] = per_round(rounds, lambda r: r.fsync_ms)
    return out


def _range(sp: dict[str, Any], fmt: str = "{:,.0f}") -> str:
    return f"range {fmt.format(sp['min'])} to {fmt.format(sp['max'])}"


def _ratio(r: Round, c: str, a: str, b: str) -> float | None:
    ma, mb = r.get(a, c), r.get(b, c)
    return ma.load.rps / mb.load.rps if ma and mb and mb.load.rps else None


def verdict_lines(s: dict[str, Any], rounds: list[Round], args: argparse.Namespace) -> list[str]:
    lines = []
    n = len(rounds)
    for c, row in s["accept"].items():
        a = row["async"]
        rps = a["rps"]
        if rps is None:
            lines.append(f"- Durable accept rate at {c} connections: **not measured**.")
            continue
        ok = rps["median"] >= TARGET_ACCEPTS
        hits = sum(v >= TARGET_ACCEPTS for v in rps["values"])
        lines.append(
            f"- Durable accept rate at {c} connections: **{rps['median']:,.0f} calls/s** "
            f"(median of {rps['n']} rounds, range {rps['min']:,.0f} to {rps['max']:,.0f}; "
            f"{hits} of {rps['n']} at or above the target), 202 in p50 "
            f"{fmt_ms(a['p50']['median'])}, p99 {fmt_ms(a['p99']['median'])}. "
            f"Target ≥ {TARGET_ACCEPTS:,.0f}/s: **{'PASS' if ok else 'FAIL'}**."
            + (
                f" That is {a['vs_bare']['median']:.0%} of the bare app's requests/s and "
                f"{a['vs_sync']['median']:.2f} times the synchronous `/function/{FUNCTION}`'s, "
                "in the same rounds."
                if a["vs_bare"] and a["vs_sync"]
                else ""
            )
            + (
                f" The faasbox process spent {a['cpu_us']['median']:.0f} µs of CPU per accept, "
                f"against {row['sync']['cpu_us']['median']:.0f} µs per synchronous call "
                "(not counting its replicas)."
                if a["cpu_us"] and row["sync"]["cpu_us"]
                else ""
            )
        )
    in_flight = max(1, args.max_replicas - 1)  # the dispatcher's room: max x concurrency - 1
    ran = [
        f"{a['ran_per_s']['median']:,.0f} calls/s at {c} connections "
        f"({a['ran_per_s']['median'] / a['rps']['median']:.0%} of the accept rate)"
        for c, row in s["accept"].items()
        if (a := row["async"])["ran_per_s"] and a["rps"]
    ]
    if ran:
        lines.append(
            "- While accepting, the dispatcher ran only " + " and ".join(ran) + ": under a "
            "flood of accepts the backlog grows at nearly the accept rate, and drains "
            "afterwards (see the backlog columns below). Its claims and finishes wait for the "
            "same grouped commits as the accepts, with at most scale.max x concurrency - 1 = "
            f"{in_flight} calls of `{FUNCTION}` in flight."
        )
    d = s["drain"]
    if d["end_to_end"]:
        lines.append(
            f"- Drain of {args.calls:,} calls enqueued at once by "
            f"{args.enqueue_connections} clients: end to end (first request to an empty "
            f"queue) **{d['end_to_end']['median']:,.0f} calls/s** ({_range(d['end_to_end'])}); "
            "from the last 202 to an empty queue, with the backlog already queued, "
            + (
                f"**{d['backlog_rate']['median']:,.0f} calls/s** ({_range(d['backlog_rate'])})"
                if d["backlog_rate"]
                else "not measured"
            )
            + f". Medians of {n} rounds; no target."
        )
    fsync = s["fsync_ms"]
    parts = [
        f"{pf['median']:.1f} accepts per flush of the disk at {c} connections "
        f"({_range(pf, '{:.1f}')}; {fl['median']:,.0f} flushes/s)"
        for c, row in s["accept"].items()
        if (pf := row["async"]["per_flush"]) and (fl := row["async"]["flushes_per_s"])
    ]
    cpus = [
        (c, cpu["median"]) for c, row in s["accept"].items() if (cpu := row["async"]["cpu_server"])
    ]
    if fsync and parts:
        busiest = max(
            row["async"]["flushes_per_s"]["median"]
            for row in s["accept"].values()
            if row["async"]["flushes_per_s"]
        )
        lines.append(
            "- Cost in fsyncs (every commit fdatasyncs the WAL: `synchronous=FULL`): "
            + "; ".join(parts)
            + f". One fdatasync takes {fsync['median']:.2f} ms here (probe, "
            f"{_range(fsync, '{:.2f}')} ms), so at {busiest:,.0f} flushes/s the disk "
            f"syncs about {busiest * fsync['median'] / 1000:.0%} of the time"
            + (
                ", while the faasbox process (one Python process) kept "
                + " and ".join(f"{v:.2f} CPUs busy at {c} connections" for c, v in cpus)
                + ": the disk is not what limits accepting here"
                if cpus
                else ""
            )
            + ". Without grouping, one writer thread could commit at most "
            f"~{1000 / fsync['median']:,.0f} single accepts a second."
        )
    return lines


ACCEPT_HEADER = [
    "target",
    "connections",
    "requests/s",
    "p50",
    "p99",
    "disk flushes/s",
    "CPU: server + replicas",
    "errors",
]


def accept_rows(s: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c, row in s["accept"].items():
        for t in TARGETS:
            m = row[t]
            rows.append(
                [
                    LABELS[t],
                    c,
                    fmt_spread(m["rps"]),
                    fmt_spread(m["p50"], fmt_ms),
                    fmt_spread(m["p99"], fmt_ms),
                    fmt_spread(m["flushes_per_s"]),
                    fmt_cpu(m),
                    str(m["errors"]),
                ]
            )
    return rows


QUEUE_HEADER = [
    "connections",
    "accepted/s",
    "accepts per flush",
    "run meanwhile/s",
    "backlog left",
    "backlog drained/s",
]


def queue_rows(s: dict[str, Any]) -> list[list[str]]:
    return [
        [
            c,
            fmt_spread(a["rps"]),
            fmt_spread(a["per_flush"], lambda v: f"{v:.1f}"),
            fmt_spread(a["ran_per_s"]),
            fmt_spread(a["backlog"]),
            fmt_spread(a["backlog_rate"]),
        ]
        for c, row in s["accept"].items()
        if (a := row["async"])
    ]


DRAIN_HEADER = ["measure", "median (range) over rounds"]


def drain_rows(s: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    d = s["drain"]
    return [
        ["calls enqueued at once", f"{args.calls:,} by {args.enqueue_connections} clients"],
        ["enqueue rate (first request to last 202), calls/s", fmt_spread(d["enqueue_rate"])],
        ["**end to end (first request to empty queue), calls/s**", fmt_spread(d["end_to_end"])],
        ["first request to empty queue, s", fmt_spread(d["empty_s"], lambda v: f"{v:.2f}")],
        ["unfinished at the last 202", fmt_spread(d["backlog"])],
        ["**backlog drain (last 202 to empty), calls/s**", fmt_spread(d["backlog_rate"])],
        ["replicas of noop (most seen)", fmt_spread(d["replicas_max"])],
        ["disk flushes/s while draining", fmt_spread(d["flushes_per_s"])],
    ]


ROUND_HEADER = [
    "round",
    "order",
    "fdatasync",
    "connections",
    "bare/s",
    "sync/s",
    "async/s",
    "drain end to end/s",
    "backlog drain/s",
]


def round_rows(rounds: list[Round], args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for r in rounds:
        for j, c in enumerate(conn_levels(args)):
            first = j == 0
            rps = {t: fmt_rate(m.load.rps) if (m := r.get(t, c)) else "-" for t in TARGETS}
            rows.append(
                [
                    str(r.index) if first else "",
                    ", ".join(SHORT[t] for t in r.order) if first else "",
                    f"{r.fsync_ms:.2f} ms" if first and r.fsync_ms is not None else "",
                    c,
                    rps["bare"],
                    rps["sync"],
                    rps["async"],
                    fmt_rate(r.drain.end_to_end) if first and r.drain else "",
                    fmt_rate(r.drain.backlog_rate) if first and r.drain else "",
                ]
            )
    return rows


def print_report(rounds: list[Round], args: argparse.Namespace) -> None:
    s = summarize(rounds, args)
    for title, header, rows, left in (
        ("Per round:", ROUND_HEADER, round_rows(rounds, args), 2),
        ("Accept, medians (ranges) over rounds:", ACCEPT_HEADER, accept_rows(s), 2),
        ("The queue during accept:", QUEUE_HEADER, queue_rows(s), 1),
        ("Drain:", DRAIN_HEADER, drain_rows(s, args), 1),
    ):
        print(f"\n{title}")
        for line in warm.console_table(
            header, [[x.replace("**", "").replace("`", "") for x in r] for r in rows], left
        ):
            print("  " + line)
    print()
    for line in verdict_lines(s, rounds, args):
        print(line.replace("**", "").replace("`", ""))
    print()


def render_section(
    rounds: list[Round],
    info: dict[str, str],
    disk: dict[str, Any],
    args: argparse.Namespace,
    tool: str,
    notes: list[str],
    plot_ok: bool,
) -> str:
    s = summarize(rounds, args)
    conns = " and then ".join(conn_levels(args))
    if tool == "wrk":
        load_desc = (
            f"`wrk -t{args.threads} -c{'|'.join(conn_levels(args))} -d{args.duration:g}s "
            "--latency -s post.lua URL`, post.lua setting the method, body and content type"
        )
    else:
        load_desc = (
            "the Python asyncio client in `bench/async.py` (wrk was not found); it may itself "
            "be the bottleneck, so compare these numbers within this run only"
        )
    disk_desc = (
        f"the data directory on {disk.get('fs', '?')} ({disk.get('source', '?')}"
        + (f", write cache: {disk['write_cache']}" if disk.get("write_cache") else "")
        + ")"
    )
    out = [
        START_MARK,
        "## Asynchronous invocations",
        "",
        f"`POST /async-function/{{name}}` answers 202 once the call is committed to the "
        "SQLite queue (WAL, `synchronous=FULL`: the WAL is fsynced at every commit; one "
        "writer thread groups whatever arrived during the previous commit into the next), "
        "and a dispatcher runs queued calls through the function's replicas. Measured "
        f"here: how many calls a second it durably accepts, and how fast the queue drains. "
        f'The function is `{FUNCTION}`, a handler returning `""` with '
        f"`com.openfaas.scale.max: {args.max_replicas}`, deployed over the HTTP API to "
        "`faasbox up --port 0 --data-dir <tmp>` on the default backend "
        f"({info.get('backend', '?')}).",
        "",
        f"Method: {len(rounds)} rounds. In each, at {conns} connections, three targets are "
        "loaded back to back with the same small JSON POST (order reversed in even rounds): "
        "the bare uvicorn app of [`bench/bare_app.py`](../bench/bare_app.py) (what Python "
        f"HTTP can do on this machine at all), the synchronous `/function/{FUNCTION}` (the "
        f"call runs before the answer), and `/async-function/{FUNCTION}`. Each measurement "
        f"lasts {args.duration:g} s after a discarded {args.round_warmup:g} s warm-up; the "
        "async one starts with an empty queue, and its dispatcher keeps running during it "
        "(as in use: the replicas share the CPUs with accepting), after which the time the "
        f"left backlog takes to drain is measured. Load generator: {load_desc}. Then "
        f"{args.calls:,} calls are enqueued at once by {args.enqueue_connections} Python "
        "clients while `GET /system/async` is polled every "
        f"{args.poll_interval * 1000:g} ms, until it reports 0 unfinished; every call must "
        "finish `succeeded` (`faasbox_async_finished_total`). Fsync cost: flush requests "
        f"of the disk holding {disk_desc} are counted from `/proc/diskstats` during each "
        "measurement (on ext4 one fdatasync is one flush; the count is the whole machine's, "
        "so the bare app's rate in the same round is subtracted), and a probe times "
        "fdatasync of a 4 KiB append in the data directory. *CPU* is the CPUs kept busy "
        "during a measurement (CPU time / wall time, from /proc) by the server process, "
        "plus, for faasbox, its replicas; the load generator's is not included.",
        "",
        "Reproduce (sets up `.venv`, installs wrk if missing and root):",
        "",
        "```bash",
        f"bench/run async --rounds {args.rounds} --duration {args.duration:g} "
        f"--connections {','.join(conn_levels(args))} --calls {args.calls}",
        "# or, with an existing venv: .venv/bin/python bench/async.py",
        "```",
        "",
        f"Measured {info['date']} on: {info['nproc']} CPUs (`nproc`), {info['cpu']}"
        + (f", {info['memory']} RAM" if info["memory"] else "")
        + f"; {info['kernel']}; {info['python']}"
        + (f"; {info['wrk']}" if info["wrk"] and tool == "wrk" else "")
        + (f"; faasbox commit {info['commit']}" if info["commit"] else "")
        + f"; {disk_desc}. Load generator, gateway and replicas share these CPUs; 1-minute "
        f"load average before the run: {info['loadavg']}, after: "
        f"{info.get('loadavg_after', '?')}.",
        "",
        "Results:",
        "",
        *verdict_lines(s, rounds, args),
        "",
        "Accept, medians over rounds (range in brackets):",
        "",
        *md_table(ACCEPT_HEADER, accept_rows(s), 2),
        "",
        "The queue during the async measurements: accepts per flush = accepted/s / (disk "
        "flushes/s - the bare app's in the same round); *run meanwhile* = calls the "
        "dispatcher finished during the window; *backlog left* = unfinished when the load "
        "stopped, drained at the last column's rate.",
        "",
        *md_table(QUEUE_HEADER, queue_rows(s), 1),
        "",
        "Drain:",
        "",
        *md_table(DRAIN_HEADER, drain_rows(s, args), 1),
        "",
        "Per round:",
        "",
        *md_table(ROUND_HEADER, round_rows(rounds, args), 3),
    ]
    if notes:
        out += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    if plot_ok:
        out += ["", f"![asynchronous invocations: accept rate and drain](./{PLOT.name})"]
    out += [END_MARK]
    return "\n".join(out) + "\n"


COLORS = {"bare": "#8c8c8c", "sync": "#e08a1e", "async": "#2b7bb9"}


def plot(rounds: list[Round], args: argparse.Namespace) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return False
    s = summarize(rounds, args)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=[1, 1.2])

    # 1. requests/s per target and concurrency: median bars, min..max whiskers
    conns = conn_levels(args)
    width = 0.26
    top = TARGET_ACCEPTS
    for i, t in enumerate(TARGETS):
        xs, vals, errs = [], [], [[], []]
        for j, c in enumerate(conns):
            sp = s["accept"][c][t]["rps"]
            if sp is None:
                continue
            xs.append(j + (i - 1) * width)
            vals.append(sp["median"])
            errs[0].append(sp["median"] - sp["min"])
            errs[1].append(sp["max"] - sp["median"])
            top = max(top, sp["max"])
        ax.bar(
            xs,
            vals,
            width,
            yerr=errs if len(rounds) > 1 else None,
            capsize=3,
            color=COLORS[t],
            label=LABELS[t].replace("`", ""),
            error_kw={"elinewidth": 0.8, "ecolor": "#444444"},
        )
        for x, v in zip(xs, vals, strict=True):
            ax.annotate(
                f"{v:,.0f}",
                (x, v),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    ax.axhline(
        TARGET_ACCEPTS,
        color="#c0392b",
        ls="--",
        lw=1.2,
        label=f"target: {TARGET_ACCEPTS:,.0f} accepted/s",
    )
    ax.set_xticks(range(len(conns)), [f"{c} connections" for c in conns])
    ax.set_ylim(0, top * 1.35)
    ax.set_ylabel("requests/s (async: 202s/s)")
    ax.set_title("accept: requests/s, median over rounds (whiskers: min to max)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)

    # 2. the drain runs: accepted so far and unfinished over time
    for r in rounds:
        if not r.drain:
            continue
        ts = [p[0] for p in r.drain.series]
        line = ax2.plot(
            ts, [p[2] for p in r.drain.series], lw=1.5, label=f"round {r.index}: unfinished"
        )[0]
        ax2.plot(
            ts,
            [p[1] for p in r.drain.series],
            lw=1,
            ls=":",
            color=line.get_color(),
            label=f"round {r.index}: accepted so far",
        )
    d = s["drain"]
    ax2.set_xlabel("seconds since the first request")
    ax2.set_ylabel("calls")
    ax2.set_title(
        f"drain of {args.calls:,} calls enqueued at once: end to end "
        f"{fmt_rate(d['end_to_end']['median'] if d['end_to_end'] else None)}/s, "
        f"backlog {fmt_rate(d['backlog_rate']['median'] if d['backlog_rate'] else None)}/s "
        "(medians)",
        fontsize=10,
    )
    ax2.legend(fontsize=7, ncol=2)
    ax2.grid(alpha=0.3)
    fig.suptitle(
        f"faasbox asynchronous invocations: {len(rounds)} rounds, {args.duration:g} s per "
        "accept measurement",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)
    log(f"wrote {PLOT.relative_to(ROOT)}")
    return True


def save_raw(
    rounds: list[Round],
    info: dict[str, str],
    disk: dict[str, Any],
    args: argparse.Namespace,
    tool: str,
    notes: list[str],
) -> None:
    warm.RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": info,
        "disk": disk,
        "args": vars(args),
        "tool": tool,
        "notes": notes,
        "summary": summarize(rounds, args),
        "rounds": [asdict(r) for r in rounds],
    }
    path = warm.RESULTS / f"async-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2))
    log(f"raw results in {path.relative_to(ROOT)}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per accept measurement (5)")
    p.add_argument(
        "--connections",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[16, 64],
        help="comma-separated concurrencies of the accept measurements (16,64)",
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument(
        "--round-warmup",
        type=float,
        default=1.0,
        help="load right before each accept measurement, discarded (1)",
    )
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=2.0,
        help="load on each target before the first round, discarded (2)",
    )
    p.add_argument("--calls", type=int, default=5000, help="calls enqueued at once to drain (5000)")
    p.add_argument(
        "--enqueue-connections", type=int, default=16, help="clients enqueuing them (16)"
    )
    p.add_argument("--max-replicas", type=int, default=4, help="com.openfaas.scale.max of noop (4)")
    p.add_argument("--poll-interval", type=float, default=0.025, help="seconds (0.025)")
    p.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds to wait for an empty queue"
    )
    p.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.calls < 1 or min(args.connections) < 1:
        p.error("--rounds, --calls and --connections must be >= 1, --duration > 0")
    return args


def warm_up(bench: Bench) -> None:
    """Replicas started and every path exercised before anything is timed."""
    args = bench.args
    for _ in range(50):
        bench.client.post(f"/function/{FUNCTION}", content=BODY).raise_for_status()
    run_async(post_burst(Burst(), bench.urls["async"], 16, count=1000))
    bench.wait_empty()
    if args.warmup_seconds > 0:
        c = max(args.connections)
        for t in TARGETS:
            log(f"{t}: warm-up {args.warmup_seconds:g}s at c={c}")
            bench.load(t, c, args.warmup_seconds)
        bench.wait_empty()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, warm._on_signal)
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    if tool == "wrk" and not shutil.which("wrk"):
        log("wrk not found (apt-get install wrk)")
        return 1
    info = warm.machine_info()
    rounds: list[Round] = []
    notes: list[str] = []
    disk: dict[str, Any] = {}
    procs = warm.Processes()
    workdir = Path(tempfile.mkdtemp(prefix="faasbox-bench-async-"))
    failed = ""
    t_start = time.monotonic()
    try:
        bare_url, bare = warm.start_bare(procs, workdir)
        warm.check_hello(bare_url, 20)
        gw, fb = warm.start_faasbox(procs, workdir / "data", workdir, args.startup_timeout)
        with contextlib.suppress(Exception):
            backend = httpx.get(gw + "/system/info", timeout=10).json()["provider"]["sandbox"]
            info["backend"] = f"{backend['backend']}: {backend['reason']}"
        deploy_noop(gw, args.max_replicas)
        log(f"deployed {FUNCTION} (scale max {args.max_replicas})")
        disk = disk_of(workdir / "data")
        dev = disk["dev"] if flush_count(disk["dev"]) is not None else None
        if dev is None:
            notes.append(
                f"The data directory is on {disk.get('fs', '?')}, not a block device: fsync "
                "costs could not be counted (and on tmpfs they are free)."
            )
        script = workdir / "post.lua"
        script.write_text(LUA)
        with httpx.Client(base_url=gw, timeout=30) as client:
            bench = Bench(
                urls={
                    "bare": bare_url,
                    "sync": f"{gw}/function/{FUNCTION}",
                    "async": f"{gw}/async-function/{FUNCTION}",
                },
                pids={"bare": bare.pid, "sync": fb.pid, "async": fb.pid},
                gw=gw,
                client=client,
                script=script,
                dev=dev,
                tool=tool,
                args=args,
            )
            warm_up(bench)
            try:
                run_rounds(bench, rounds, workdir)
            except (RuntimeError, OSError, TimeoutError, httpx.HTTPError) as exc:
                failed = f"measurement failed in round {len(rounds)}: {exc}"
                log(failed)
                notes.append(failed.splitlines()[0] + "; later measurements were not run.")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
        failed = f"setup failed: {exc}"
        log(failed)
        log_file = workdir / "faasbox.log"
        if log_file.exists():
            log("faasbox output:\n" + warm.tail(log_file.read_text(errors="replace"), 40))
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_after"] = f"{os.getloadavg()[0]:.2f}"
    log(f"the run took {time.monotonic() - t_start:.0f}s")
    if not rounds:
        return 1
    for r in rounds:
        for t, by_c in r.accept.items():
            for c, m in by_c.items():
                if m.load.errors:
                    notes.append(f"round {r.index}, {t} at c={c}: {m.load.errors} failed requests.")
                    failed = failed or "errors during measurement"
        if r.drain and (
            r.drain.errors
            or r.drain.finished.get("succeeded", 0) != r.drain.accepted
            or r.drain.last_state != "succeeded"
        ):
            notes.append(
                f"round {r.index}, drain: {r.drain.errors} failed enqueues, finished "
                f"{r.drain.finished}, last call {r.drain.last_state!r}."
            )
            failed = failed or "calls did not all succeed"
    print_report(rounds, args)
    save_raw(rounds, info, disk, args, tool, notes)
    if not args.no_write and not failed:
        plot_ok = plot(rounds, args)
        warm.write_section(
            render_section(rounds, info, disk, args, tool, notes, plot_ok), START_MARK, END_MARK
        )
    elif failed and not args.no_write:
        log("docs/ left unchanged because the run is incomplete")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
