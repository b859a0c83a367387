#!/usr/bin/env python3
"""Cold-start benchmark: a Python hello with no warm replica, per sandbox backend, against
a bare Python hello (alone, under bwrap, with `runc run`) measured in the same run.

    bench/run coldstart                          # sets up .venv, then runs this
    .venv/bin/python bench/coldstart.py [--samples 60] [--bursts 2] [--backends process,...]

The method is spelled out in the section this rewrites in docs/benchmarks.md (between
<!-- coldstart:start --> and <!-- coldstart:end -->), with docs/coldstart-cdf.png; raw
samples go to bench/.results/. A backend that does not start is skipped with the reason.
Exit status 0 when every backend and baseline was measured without errors, else 1.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import warm  # the warm-path benchmark beside this file: its process and report helpers

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs" / "coldstart-cdf.png"
RESULTS = ROOT / "bench" / ".results"
BOOTSTRAP = ROOT / "src" / "faasbox" / "runtime" / "python" / "bootstrap.py"
START_MARK = "<!-- coldstart:start -->"
END_MARK = "<!-- coldstart:end -->"

# "+prewarm": the same backend with prewarmed sandboxes (faasbox up --prewarm 2, the
# default); "+prewarm50": with a pool sized for the burst (--prewarm 50); the others run
# with --prewarm 0, so that they measure a sandbox created on the request path.
BACKENDS = ("process", "namespaces", "namespaces+prewarm", "namespaces+prewarm50", "oci")
SERIAL_FN = "cold-hello"
BURST_FN = "cold-burst-{:02d}"
EXPECTED = "Hello, {}, from faasbox!"
HELLO_SCRIPT = 'print("hello")'
SPEC = {  # as examples/faasbox.yml, but replicas stop only when this script scales to zero
    "runtime": "python3",
    "labels": {"com.openfaas.scale.max": "1", "com.openfaas.scale.zero-duration": "1h"},
    "limits": {"memory": "128Mi"},
}


def log(msg: str) -> None:
    print(f"[coldstart] {msg}", file=sys.stderr, flush=True)


def interpreter() -> str:
    """The interpreter replicas run (the venv's python, by its real path)."""
    return os.path.realpath(sys.executable)


def interpreter_files() -> list[str]:
    """What the interpreter needs beyond the system directories: itself, its shared
    library and its standard library (as the namespaces backend binds them)."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
    files = [interpreter(), sysconfig.get_paths()["stdlib"]]
    if libdir and ldlibrary:
        files += [str(p) for p in sorted(Path(libdir).glob(ldlibrary + "*"))]
    return files


SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def busy_ms() -> float:
    """CPU time the whole machine has spent so far, every core, every process (not idle,
    not waiting for I/O). Counted in clock ticks: only means over many samples are exact."""
    with open("/proc/stat") as f:
        user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) * 1000 / CLK_TCK


# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One timed cold start. For faasbox subjects also what the platform said about it."""

    ms: float
    call_id: str = ""
    gateway_ms: float | None = None  # X-Duration-Seconds: time spent inside faasbox
    init_ms: float | None = None  # activation record: the replica's start-up
    warm_ms: float | None = None  # a warm call to the same replica right after
    cpu_ms: float | None = None  # CPU time of the whole machine while it ran (serial only)


class SampleError(RuntimeError):
    pass


@dataclass
class Series:
    label: str
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    makespans_ms: list[float] = field(default_factory=list)  # burst only: to the last answer
    burst_cpu_ms: list[float] = field(default_factory=list)  # burst only: machine CPU / call

    def values(self, attr: str = "ms") -> list[float]:
        return [v for s in self.samples if (v := getattr(s, attr)) is not None]


# --------------------------------------------------------------------------- baselines


class Subject:
    """One thing measured in the serial rounds: `prepare` (untimed), then `sample`."""

    kind = "baseline"

    def __init__(self, key: str, label: str) -> None:
        self.key, self.label = key, label

    def prepare(self) -> None:
        """Set-up before each sample, off the clock."""

    def sample(self) -> Sample:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the subject holds, at the end of the run."""


class CommandSubject(Subject):
    """A bare Python hello run as a command, timed from spawn to exit."""

    def __init__(self, key: str, label: str, argv: list[str]) -> None:
        super().__init__(key, label)
        self.argv = argv

    def command(self) -> list[str]:
        return self.argv

    def sample(self) -> Sample:
        argv = self.command()
        c0, t0 = busy_ms(), time.perf_counter()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        ms, cpu = (time.perf_counter() - t0) * 1000, busy_ms() - c0
        if r.returncode != 0 or r.stdout != b"hello\n":
            raise SampleError(
                f"{argv[0]} exited with {r.returncode}, stdout {r.stdout[:100]!r}, "
                f"stderr {r.stderr.decode(errors='replace')[-300:]!r}"
            )
        return Sample(ms, cpu_ms=cpu)


def python_argv() -> list[str]:
    return [interpreter(), "-I", "-S", "-c", HELLO_SCRIPT]


def runtime_imports() -> tuple[list[str], list[str]]:
    """The runtime bootstrap's top-level import statements, and the modules they name."""
    body = ast.parse(BOOTSTRAP.read_text()).body
    nodes = [n for n in body if isinstance(n, ast.Import | ast.ImportFrom)]
    modules = [n.module or "" if isinstance(n, ast.ImportFrom) else n.names[0].name for n in nodes]
    return [ast.unparse(n) for n in nodes], modules


def imports_subject() -> CommandSubject:
    """The hello after the runtime bootstrap's top-level imports, flags as replicas run it:
    what a replica's interpreter pays before it can speak to the host."""
    argv = [interpreter(), "-I", "-S", "-B", "-c", "\n".join([*runtime_imports()[0], HELLO_SCRIPT])]
    return CommandSubject("imports", "python3 + runtime imports", argv)


def import_profile(runs: int = 15) -> dict[str, float]:
    """Median cumulative import time (ms) of each module the runtime bootstrap imports,
    most expensive first, from `python -X importtime`."""
    statements, modules = runtime_imports()
    argv = [interpreter(), "-I", "-S", "-B", "-X", "importtime", "-c", "\n".join(statements)]
    times: dict[str, list[float]] = {}
    for _ in range(runs):
        stderr = subprocess.run(argv, capture_output=True, text=True, timeout=60).stderr
        for line in stderr.splitlines():  # "import time: <self µs> | <cumulative µs> | <name>"
            cells = line.partition("import time:")[2].split("|")
            # Only what the script imports itself: a nested import is indented further.
            if len(cells) == 3 and cells[1].strip().isdigit() and cells[2][1:] in modules:
                times.setdefault(cells[2][1:], []).append(int(cells[1]) / 1000)
    profile = {m: percentile(v, 50) for m, v in times.items()}
    return dict(sorted(profile.items(), key=lambda kv: -kv[1]))


def bwrap_subject(bwrap: str) -> CommandSubject:
    """bwrap with the namespaces backend's isolation flags (no cgroups, no rlimits)."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534"]
    cmd += ["--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "hello"]
    cmd += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    for path in dict.fromkeys([*SYSTEM_DIRS, *interpreter_files()]):
        if os.path.exists(path):
            cmd += ["--ro-bind", path, path]
    return CommandSubject("bwrap", "bwrap + python3", [*cmd, "--", *python_argv()])


class RuncSubject(CommandSubject):
    """`runc run` of the hello from a minimal bundle: an empty read-only rootfs with the
    system directories and the interpreter bind-mounted read-only, runc's default
    namespaces, mounts, capabilities and cgroup. Its own --root, so that no other runc
    user's containers are touched."""

    def __init__(self, runc: str, workdir: Path) -> None:
        self.runc = runc
        self.bundle = workdir / "runc-bundle"
        self.state = workdir / "runc-state"
        self.count = 0
        make_bundle(runc, self.bundle)
        super().__init__("runc", "runc run + python3", [])

    def _runc(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.state), *args]

    def command(self) -> list[str]:
        self.count += 1
        cid = f"coldstart-{os.getpid()}-{self.count}"
        return self._runc("run", "--bundle", str(self.bundle), cid)

    def close(self) -> None:  # `runc run` removes its container on exit, unless it failed
        for entry in self.state.iterdir() if self.state.is_dir() else []:
            subprocess.run(self._runc("delete", "--force", entry.name), capture_output=True)


def make_bundle(runc: str, bundle: Path) -> None:
    (bundle / "rootfs").mkdir(parents=True)
    subprocess.run([runc, "spec"], cwd=bundle, check=True, capture_output=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    process = config["process"]
    process["terminal"] = False
    process["args"] = python_argv()
    process["env"] = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
    config["root"] = {"path": "rootfs", "readonly": True}
    config["hostname"] = "hello"
    for path in dict.fromkeys([*SYSTEM_DIRS, *interpreter_files()]):
        if os.path.exists(path):
            mount = {"destination": path, "type": "bind", "source": path}
            config["mounts"].append(mount | {"options": ["rbind", "ro", "nosuid", "nodev"]})
    config_path.write_text(json.dumps(config, indent=2))


# --------------------------------------------------------------------------- faasbox


@dataclass
class Server:
    backend: str
    url: str
    proc: subprocess.Popen[bytes]
    logfile: Path
    client: httpx.Client
    # Times the calls (RawClient); ``client`` does the rest (scaling, activations).
    raw: RawClient


def prewarm_size(variant: str) -> int:
    """ "prewarm" is faasbox's default pool (2 cells, growing to 8 with demand), "prewarmN"
    a pool of N; anything else none."""
    if not variant.startswith("prewarm"):
        return 0
    return int(variant.removeprefix("prewarm") or 2)


def start_server(procs: warm.Processes, backend: str, workdir: Path, timeout: float) -> Server:
    cmd, env = warm.faasbox_cmd()
    name, _, variant = backend.partition("+")
    prewarm = ["--prewarm", str(prewarm_size(variant))]
    if prewarm_size(variant) > 8:
        prewarm += ["--prewarm-max", str(prewarm_size(variant))]
    data = workdir / f"data-{backend}"
    logfile = workdir / f"faasbox-{backend}.log"
    with open(logfile, "wb") as out:
        proc = procs.start(
            f"faasbox ({backend})",
            [*cmd, "up", "--backend", name, *prewarm, "--port", "0", "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = logfile.read_text(errors="replace")
        if m := warm.LISTEN_RE.search(text):
            url = m.group(1).rstrip("/.,;)")
            warm.wait_http_ok(url + "/healthz", time.monotonic() + 30, proc)
            log(f"{backend}: faasbox is up at {url}")
            return Server(
                backend, url, proc, logfile, httpx.Client(base_url=url, timeout=60), RawClient(url)
            )
        if proc.poll() is not None:
            procs.stop(proc)
            last = text.strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(
                f"`faasbox up --backend {backend}` exited with status {proc.returncode}: "
                f"{last[0].strip()}"
            )
        time.sleep(0.05)
    procs.stop(proc)
    raise TimeoutError(f"`faasbox up --backend {backend}` did not start within {timeout:.0f}s")


def deploy(server: Server, names: list[str]) -> None:
    code = base64.b64encode(warm.zip_dir(warm.EXAMPLES / "hello")).decode()

    def one(name: str) -> None:
        spec = {"service": name, "handler": "handler.handle", "code": {"zip": code}} | SPEC
        with httpx.Client(base_url=server.url, timeout=300) as c:
            r = c.post("/system/functions", params={"wait": "true"}, json=spec)
            if r.status_code == 409:
                r = c.put("/system/functions", params={"wait": "true"}, json=spec)
            if r.status_code >= 400:
                raise RuntimeError(f"deploying {name} failed: {r.status_code} {r.text[:500]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, names))
    log(f"{server.backend}: deployed {len(names)} functions in {time.perf_counter() - t0:.1f}s")


def scale_to_zero(server: Server, names: list[str], timeout: float = 30.0) -> None:
    """Stop every replica of these functions and wait until none is left."""
    for name in names:
        r = server.client.post(
            f"/system/scale-function/{name}", json={"serviceName": name, "replicas": 0}
        )
        if r.status_code >= 400:
            raise SampleError(f"scaling {name} to zero failed: {r.status_code} {r.text[:300]}")
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        statuses = server.client.get("/system/functions").json()
        left = {s["name"]: s["replicas"] for s in statuses if s["name"] in wanted}
        if len(left) == len(wanted) and not any(left.values()):
            return
        if time.monotonic() > deadline:
            raise SampleError(f"replicas still running {timeout:g}s after scaling to zero: {left}")
        time.sleep(0.005)


class Answer:
    """What ``RawClient.get`` read: enough of a response for the checks below."""

    def __init__(self, path: str, status: int, headers: dict[str, str], body: bytes) -> None:
        self.path, self.status_code, self.headers, self.body = path, status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class RawClient:
    """HTTP/1.1 GETs on one keep-alive connection, with nothing between the timer and the
    socket: a client library's own work per request (httpx: ~1-2 ms on this VM, as much as
    a prewarmed cold start) would be counted as the server's. Like wrk for the warm path."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
        self.host, self.port = host, int(port or 80)
        self.sock: socket.socket | None = None
        self.buf = b""

    def connect(self) -> None:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=120)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get(self, path: str) -> Answer:
        self.connect()
        assert self.sock is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        try:
            self.sock.sendall(request)
            while b"\r\n\r\n" not in self.buf:
                self.buf += self._recv()
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            while len(self.buf) < n:
                self.buf += self._recv()
            body, self.buf = self.buf[:n], self.buf[n:]
        except (OSError, ValueError, IndexError) as exc:
            self.close()
            raise SampleError(f"GET {path}: {exc}") from None
        return Answer(path, status, headers, body)

    def _recv(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise OSError("the server closed the connection")
        return data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock, self.buf = None, b""


def call(client: RawClient, name: str) -> tuple[Answer, float]:
    client.connect()  # off the clock: a keep-alive connection is open already
    t0 = time.perf_counter()
    r = client.get(f"/function/{name}?name={name}")
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200 or r.text != EXPECTED.format(name):
        raise SampleError(f"/function/{name} answered {r.status_code}: {r.text[:300]!r}")
    return r, ms


def cold_sample(r: Answer, ms: float) -> Sample:
    """What a cold call's answer says; an answer from a warm replica is not a sample."""
    if r.headers.get("x-faasbox-cold-start") != "true":
        raise SampleError(f"{r.path} was served warm, not cold (X-Faasbox-Cold-Start)")
    duration = r.headers.get("x-duration-seconds")
    return Sample(
        ms,
        call_id=r.headers.get("x-call-id", ""),
        gateway_ms=float(duration) * 1000 if duration else None,
    )


class FaasboxSubject(Subject):
    kind = "faasbox"

    def __init__(self, server: Server, gap: float) -> None:
        super().__init__(server.backend, f"faasbox {server.backend}")
        self.server, self.gap = server, gap

    def prepare(self) -> None:
        scale_to_zero(self.server, [SERIAL_FN])
        time.sleep(self.gap)  # let the last replica's teardown finish off the clock

    def sample(self) -> Sample:
        c0 = busy_ms()
        r, ms = call(self.server.raw, SERIAL_FN)
        s = cold_sample(r, ms)
        s.cpu_ms = busy_ms() - c0
        _, s.warm_ms = call(self.server.raw, SERIAL_FN)
        return s


# --------------------------------------------------------------------------- measuring


def run_serial(
    subjects: list[Subject], args: argparse.Namespace
) -> tuple[dict[str, Series], float]:
    """The serial rounds; also returns the highest 1-minute load average seen."""
    series = {s.key: Series(s.label) for s in subjects}
    active = list(subjects)
    total = args.warmup + args.samples
    max_load = 0.0
    for i in range(total):
        max_load = max(max_load, os.getloadavg()[0])
        if i % 10 == 0:
            log(f"serial round {i + 1}/{total}" + (" (warm-up)" if i < args.warmup else ""))
        k = i % len(active) if active else 0
        for subject in active[k:] + active[:k]:
            ser = series[subject.key]
            try:
                subject.prepare()
                sample = subject.sample()
            except (SampleError, httpx.HTTPError, subprocess.SubprocessError, OSError) as exc:
                ser.errors.append(f"round {i + 1}: {exc}")
                log(f"{subject.key}: {exc}")
                if len(ser.errors) >= args.max_errors:
                    log(f"{subject.key}: {len(ser.errors)} errors, dropped from the run")
                    active.remove(subject)
                continue
            if i >= args.warmup:
                ser.samples.append(sample)
    return series, max_load


def run_burst(server: Server, names: list[str], ser: Series, gap: float) -> None:
    """All `names` at once, each on its own thread and already open connection."""
    scale_to_zero(server, names)
    time.sleep(gap)
    clients = [RawClient(server.url) for _ in names]
    barrier = threading.Barrier(len(names) + 1, timeout=120)
    outcomes: list[tuple[float, Sample | str]] = []  # (when answered, what)

    def worker(name: str, client: RawClient) -> None:
        with contextlib.suppress(OSError):  # open the connection before the barrier
            client.connect()
        barrier.wait()
        try:
            outcome: Sample | str = cold_sample(*call(client, name))
        except (SampleError, OSError) as exc:
            outcome = f"burst call to {name}: {exc}"
        outcomes.append((time.perf_counter(), outcome))

    threads = [threading.Thread(target=worker, args=a) for a in zip(names, clients, strict=True)]
    for t in threads:
        t.start()
    c0 = busy_ms()
    barrier.wait()
    released = time.perf_counter()
    for t in threads:
        t.join()
    ser.burst_cpu_ms.append((busy_ms() - c0) / len(names))
    for c in clients:
        c.close()
    for _, outcome in outcomes:
        if isinstance(outcome, str):
            ser.errors.append(outcome)
        else:
            ser.samples.append(outcome)
    if outcomes:
        ser.makespans_ms.append((max(t for t, _ in outcomes) - released) * 1000)


def join_activations(server: Server, series: list[Series]) -> None:
    """Fill in initMs from the activation records, and check they call it cold."""
    r = server.client.get("/system/activations", params={"limit": "10000"})
    r.raise_for_status()
    records = {a["callId"]: a for a in r.json()}
    for ser in series:
        for s in ser.samples:
            rec = records.get(s.call_id)
            if rec is None:
                ser.errors.append(f"call {s.call_id} has no activation record")
            elif not rec.get("coldStart"):
                ser.errors.append(f"call {s.call_id}: its activation record says not cold")
            else:
                s.init_ms = rec.get("initMs")


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def median(values: list[float]) -> float | None:
    return percentile(values, 50) if values else None


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f} ms" if abs(v) < 100 else f"{v:,.0f} ms"


STAT_HEADER = ["n", "p50", "p90", "p99", "mean", "min", "max"]


def stat_cells(values: list[float]) -> list[str]:
    if not values:
        return ["0", *["-"] * 6]
    pcts = [percentile(values, p) for p in (50, 90, 99)]
    return [str(len(values)), *map(fmt, [*pcts, mean(values), min(values), max(values)])]


SPLIT_HEADER = [
    "backend, mode",
    "cold call",
    "in faasbox",
    "replica start (initMs)",
    "in faasbox, outside initMs",
    "outside faasbox",
    "warm call after it",
]
SPLIT_LEGEND = (
    ", medians per column. *In faasbox* is `X-Duration-Seconds`. *Replica start* is the "
    "activation's `initMs`: from the gateway attaching to the new sandbox's channel, right "
    "after spawning it, to the handler imported; normally the wrapper's own set-up (bwrap's "
    "or runc's namespaces and mounts), the interpreter's start, the runtime's bootstrap and "
    "the import. *In faasbox, outside initMs* is the rest inside the gateway: preparing the "
    "sandbox (working directory, cgroups, bundle), the spawn (fork and exec), any wait for "
    "these, and the call. *Outside faasbox* is the HTTP client, the loopback, and any time "
    "the request or its answer waits for the gateway's event loop. The warm call is the new "
    "replica's second call."
)


def outside_init(s: Sample) -> float | None:
    return s.gateway_ms - s.init_ms if s.gateway_ms and s.init_ms else None


def outside_faasbox(s: Sample) -> float | None:
    return s.ms - s.gateway_ms if s.gateway_ms else None


def split(ser: Series) -> list[float | None]:
    """Medians of: the call, in faasbox, initMs, in faasbox outside initMs, outside faasbox,
    and the warm call after it."""
    parts: list[Callable[[Sample], float | None]] = [
        lambda s: s.ms,
        lambda s: s.gateway_ms,
        lambda s: s.init_ms,
        outside_init,
        outside_faasbox,
        lambda s: s.warm_ms,
    ]
    return [median([v for s in ser.samples if (v := f(s)) is not None]) for f in parts]


def split_row(ser: Series, mode: str) -> list[str]:
    return [f"{ser.label}, {mode}", *map(fmt, split(ser))]


# --------------------------------------------------------------------------- report


@dataclass
class Run:
    serial: dict[str, Series]
    burst: dict[str, Series]
    kinds: dict[str, str]
    info: dict[str, str]
    notes: list[str]
    args: argparse.Namespace
    imports: dict[str, float] = field(default_factory=dict)  # module -> ms, by -X importtime


def tables(run: Run) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table, for the console and the docs alike."""
    a = run.args
    serial = [
        [s.label, *stat_cells(s.values()), fmt(mean(s.values("cpu_ms")))]
        for s in run.serial.values()
    ]
    out = [
        (
            f"Serial cold starts ({a.samples} rounds), request to response:",
            ["subject", *STAT_HEADER, "CPU (mean)"],
            serial,
        )
    ]
    burst = [
        [s.label, *stat_cells(s.values()), fmt(median(s.makespans_ms)), fmt(mean(s.burst_cpu_ms))]
        for s in run.burst.values()
        if s.makespans_ms
    ]
    if burst:
        title = f"{a.burst} functions at once ({plural(a.bursts, 'burst')}, every call cold):"
        out.append(
            (title, ["backend", *STAT_HEADER, "last answer (median)", "CPU per call"], burst)
        )
    rows = [split_row(s, "serial") for k, s in run.serial.items() if run.kinds[k] == "faasbox"]
    rows += [split_row(s, "burst") for s in run.burst.values()]
    if rows:
        out.append(("Where the time goes:", SPLIT_HEADER, rows))
    return out


def print_report(run: Run) -> None:
    for title, header, rows in tables(run):
        print("\n" + title)
        for line in warm.console_table(header, rows, 1):
            print("  " + line)
    print("\nThe runtime's imports, by -X importtime (median ms, with what each pulls in):")
    print("  " + ", ".join(f"{m} {v:.1f}" for m, v in run.imports.items()))
    for note in run.notes:
        print("note: " + note)


WRAPPERS = {"namespaces": "bwrap", "oci": "runc"}  # the baseline with each backend's wrapper
BASES = ("python", "imports")  # bare interpreter; with the runtime's imports


def analysis(run: Run) -> list[str]:
    """A few sentences on where the time goes, from this run's medians."""
    py, imp = (median(run.serial[k].values()) if k in run.serial else None for k in BASES)
    out = []
    if py and imp:
        line = (
            f"- Baselines: a bare `python3 -I -S` hello starts and exits in {fmt(py)}, and in "
            f"{fmt(imp)} when it first imports what the runtime bootstrap imports"
        )
        if top := [f"`{m}` {fmt(v)}" for m, v in run.imports.items() if v >= 1][:3]:
            line += f" (`python -X importtime`, each with what it pulls in: {', '.join(top)})"
        for key in ("bwrap", "runc"):
            if key in run.serial and (v := median(run.serial[key].values())):
                line += f"; under {key} it takes {fmt(v)} ({fmt(v - py)} more)"
        out.append(line + ".")
    for key, ser in run.serial.items():
        total, _, init, rest, _, warm_ms = split(ser)
        if not (run.kinds[key] == "faasbox" and total and init and rest and warm_ms and imp):
            continue
        line = (
            f"- `{key}`: a cold call takes {fmt(total)}, {total / warm_ms:.0f}x a warm call. "
            f"initMs is {fmt(init)} of it ({init / total:.0%}); the interpreter with the "
            f"runtime's imports alone takes {fmt(imp)}"
        )
        if (wrapper := WRAPPERS.get(key)) in run.serial and py:
            line += f", and {wrapper} adds {fmt(median(run.serial[wrapper].values()) - py)}"
        if "+prewarm" in key:
            line += (
                ": here the sandbox and the interpreter were up before the call (a prewarmed "
                "sandbox), so initMs is only the injection (mounting the code, applying "
                "limits, env and secrets) and the handler's import"
            )
        elif imp / init >= 0.5:
            line += ": Python's start and imports are the bulk of it, not the sandbox"
        out.append(
            line + f". Inside faasbox but outside initMs (preparing and spawning the sandbox, "
            f"and the call): {fmt(rest)}. The machine spent {fmt(mean(ser.values('cpu_ms')))} "
            "of CPU per cold call (mean)."
        )
    for key, ser in run.burst.items():
        burst, _, init, rest, before_clock, _ = split(ser)
        serial_p50, _, serial_init, *_ = split(run.serial[key])
        makespan, cpu = median(ser.makespans_ms), mean(ser.burst_cpu_ms)
        if not (serial_p50 and burst and init and makespan and cpu):
            continue
        busy = cpu * run.args.burst / (makespan * int(run.info.get("nproc") or 1))
        line = (
            f"- `{key}`, {run.args.burst} at once: p50 {fmt(burst)} ({burst / serial_p50:.1f}x "
            f"serial), the last answer after {fmt(makespan)}; {fmt(cpu)} of CPU per cold start, "
            f"the CPUs {busy:.0%} busy{' (CPU bound)' if busy > 0.85 else ''}"
        )
        if (first := min(ser.values())) > makespan / 2:
            line += (
                f". Even the first answer took {fmt(first)}: the starts share the CPUs, so they "
                "all finish late, together"
            )
        line += (
            f". Medians: initMs {fmt(init)}, in faasbox outside initMs {fmt(rest)} (waiting for "
            f"the spawn, the spawn, the call), outside faasbox {fmt(before_clock)} (the request "
            "and its answer waiting for the gateway's event loop)"
        )
        if serial_init and init < serial_init:
            line += (
                f". initMs is lower than serially ({fmt(serial_init)}): its clock starts when "
                "the gateway gets round to the new sandbox, by when, under load, the runtime "
                "has often started"
            )
        out.append(line + ".")
    return out


def render_section(run: Run, plot_ok: bool) -> str:
    a, info = run.args, run.info
    out = [
        START_MARK,
        "## Cold start",
        "",
        "What a call pays when its function has no warm replica: the gateway creates a "
        "sandbox, starts the Python runtime in it, imports the handler, then runs the call. "
        "The function is [`examples/hello`](../examples/hello/handler.py), deployed under "
        f"{a.burst + 1} names per backend. The baselines, measured in the same run, are a bare "
        f"Python hello (`python3 -I -S -c '{HELLO_SCRIPT}'`, the interpreter replicas run) "
        "timed from spawn to exit: alone; after the runtime bootstrap's top-level imports "
        "(what a replica's interpreter loads before it can talk to the host); under `bwrap` "
        "with the namespaces backend's isolation flags (no cgroups); and with `runc run` from a "
        "minimal OCI bundle (read-only empty root, the system directories and the interpreter "
        "bind-mounted read-only, runc's default namespaces and cgroup). `namespaces+prewarm` is the namespaces "
        "backend with prewarmed sandboxes (`faasbox up --prewarm 2`, the default), "
        "`namespaces+prewarm50` the same with a pool sized for the burst (`--prewarm 50`: "
        "50 idle sandboxes, ~5 MiB each); every other faasbox "
        "subject runs with `--prewarm 0`, so it creates its sandbox on the request path. "
        "Issue 4's targets for prewarmed cold starts: p50 <= 5 ms, p99 <= 20 ms; 50 at once: "
        "p99 <= 250 ms.",
        "",
        "Method: each backend runs in its own `faasbox up --backend B`, all up at once. "
        f"Serial: {a.samples} rounds (after {a.warmup} discarded) in which every subject is "
        "measured once, in an order that rotates from round to round. Before each faasbox "
        "sample its function is scaled to zero (`POST /system/scale-function`, then polled "
        "until it reports 0 replicas); then one `GET /function/NAME` is timed on a keep-alive "
        "connection, request sent to response read, by a raw-socket HTTP/1.1 client (as wrk "
        "times the warm path: an HTTP library's own work per request, ~1-2 ms with httpx on "
        "this VM, would be counted as faasbox's); its body and `X-Faasbox-Cold-Start: true` "
        "are checked and it is joined with its activation record for `initMs`. Burst: "
        f"{a.burst} distinct functions at zero called at the same moment (a thread and an open "
        f"connection each, released by a barrier), {plural(a.bursts, 'time')} per backend. CPU is the "
        "whole machine's busy time from `/proc/stat` while a sample ran (client, gateway and "
        "sandbox alike; tick-granular, so only its mean is given). The p99 of a few dozen "
        "samples is close to their maximum.",
        "",
        "Reproduce (sets up `.venv`):",
        "",
        "```bash",
        f"bench/run coldstart --samples {a.samples} --bursts {a.bursts}",
        "# or, with an existing venv: .venv/bin/python bench/coldstart.py",
        "```",
        "",
        f"Measured {info['date']} on: {info['nproc']} CPUs (`nproc`), {info['cpu']}, "
        f"{info['memory']} RAM; {info['kernel']}; {info['python']}; {info['runc']}; "
        f"{info['bwrap']}; faasbox commit {info['commit'] or 'unknown'}. 1-minute load "
        f"average before the run: {info['loadavg']}, at most {info['loadavg_max']} during the "
        "serial rounds.",
        "",
    ]
    for title, header, rows in tables(run):
        if header == SPLIT_HEADER:
            title = title.rstrip(":") + SPLIT_LEGEND
        out += [title, "", *warm.md_table(header, rows, 1), ""]
    if lines := analysis(run):
        out += ["Where the time goes:", "", *lines, ""]
    if run.notes:
        out += ["Notes:", "", *(f"- {n}" for n in run.notes), ""]
    if plot_ok:
        out.append(f"![cold-start latency CDFs, serial and burst](./{PLOT.name})")
    return "\n".join([*out, END_MARK]) + "\n"


def update_doc(section: str) -> None:
    # After the warm section and the hand-written analysis under it: at the end.
    warm.write_section(section, START_MARK, END_MARK)


STYLES = {  # colour, line style
    "process": ("#2b7bb9", "-"),
    "namespaces": ("#e08a1e", "-"),
    "namespaces+prewarm": ("#000000", "-"),
    "namespaces+prewarm50": ("#000000", "--"),
    "oci": ("#3a9a4a", "-"),
    "python": ("#444444", ":"),
    "imports": ("#444444", "-."),
    "bwrap": ("#999999", "--"),
    "runc": ("#b04a9a", "--"),
}
TICKS = [n * 10**e for e in range(5) for n in (1, 2, 3, 5)]


def plot(run: Run) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator
    except ImportError:
        log("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return False
    panels = [("serial: one cold start at a time", run.serial)]
    if any(s.samples for s in run.burst.values()):
        panels.append((f"burst: {run.args.burst} distinct functions at once", run.burst))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.6 * len(panels), 5.6), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        lo, hi = float("inf"), 0.0
        for key, ser in series.items():
            if not (xs := sorted(ser.values())):
                continue
            lo, hi = min(lo, xs[0]), max(hi, xs[-1])
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            color, style = STYLES.get(key, ("#000000", "-"))
            label = f"{ser.label} (p50 {fmt(median(xs))})"
            ax.step(xs, ys, where="post", color=color, ls=style, lw=1.8, label=label)
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.15, hi * 1.15)
        ax.xaxis.set_major_locator(FixedLocator(TICKS))
        ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:,.0f}")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("request to response (ms, log scale)")
        ax.set_ylabel("fraction of calls")
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle(
        f"faasbox cold starts, Python hello ({run.info['date']}, {run.info['nproc']} CPUs)",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)
    log(f"wrote {PLOT.relative_to(ROOT)}")
    return True


def save_raw(run: Run) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"coldstart-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    data = {"info": run.info, "args": vars(run.args), "notes": run.notes, "imports": run.imports}
    data |= {
        mode: {k: asdict(v) for k, v in g.items()}
        for mode, g in (("serial", run.serial), ("burst", run.burst))
    }
    path.write_text(json.dumps(data, indent=2))
    log(f"raw results in {path.relative_to(ROOT)}")


# --------------------------------------------------------------------------- main


def tool_versions(info: dict[str, str]) -> None:
    for tool in ("runc", "bwrap"):
        exe = shutil.which(tool)
        out = (
            subprocess.run([exe, "--version"], capture_output=True, text=True).stdout if exe else ""
        )
        info[tool] = out.splitlines()[0].strip() if out else f"{tool} not found"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--samples", type=int, default=60, help="serial rounds measured (60)")
    p.add_argument("--warmup", type=int, default=3, help="serial rounds discarded first (3)")
    p.add_argument("--burst", type=int, default=50, help="functions called at once (50)")
    p.add_argument("--bursts", type=int, default=2, help="bursts per backend (2)")
    all_backends = ",".join(BACKENDS)
    p.add_argument("--backends", default=all_backends, help=f"to measure ({all_backends})")
    p.add_argument(
        "--gap", type=float, default=0.05, help="rest after a scale to zero (0.05 s; bursts 20x)"
    )
    p.add_argument("--max-errors", type=int, default=5, help="drop a subject after this many")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.samples < 1 or args.warmup < 0 or args.burst < 0 or args.bursts < 0:
        p.error("--samples must be >= 1; --warmup, --burst and --bursts >= 0")
    return args


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def baselines(workdir: Path, notes: list[str]) -> list[Subject]:
    subjects: list[Subject] = [
        CommandSubject("python", "python3 alone", python_argv()),
        imports_subject(),
    ]
    bwrap, runc = shutil.which("bwrap"), shutil.which("runc")
    if bwrap:
        subjects.append(bwrap_subject(bwrap))
    if runc:
        subjects.append(RuncSubject(runc, workdir))
    notes += [
        f"Baseline {n} skipped: not installed."
        for n, p in (("bwrap", bwrap), ("runc", runc))
        if not p
    ]
    return subjects


def setup_servers(
    procs: warm.Processes, workdir: Path, args: argparse.Namespace, notes: list[str]
) -> list[Server]:
    names = [SERIAL_FN, *(BURST_FN.format(i) for i in range(args.burst))]
    servers = []
    for backend in args.backends:
        server = None
        try:
            server = start_server(procs, backend, workdir, args.startup_timeout)
            deploy(server, names)
            servers.append(server)
        except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
            output = warm.tail(server.logfile.read_text(), 10) if server else ""
            log(f"SKIPPING backend {backend}: {exc}\n{output}")
            notes.append(f"Backend `{backend}` was skipped: {exc}")
            if server:
                procs.stop(server.proc)
    return servers


def measure(servers: list[Server], base: list[Subject], args: argparse.Namespace) -> Run:
    subjects: list[Subject] = [*(FaasboxSubject(s, args.gap) for s in servers), *base]
    serial, max_load = run_serial(subjects, args)
    burst: dict[str, Series] = {}
    names = [BURST_FN.format(i) for i in range(args.burst)]
    for b in range(args.bursts if names else 0):
        for server in servers:
            ser = burst.setdefault(server.backend, Series(f"faasbox {server.backend}"))
            log(f"{server.backend}: burst {b + 1}/{args.bursts} of {len(names)} cold starts")
            try:
                run_burst(server, names, ser, args.gap * 20)
            except (SampleError, httpx.HTTPError, threading.BrokenBarrierError) as exc:
                ser.errors.append(f"burst {b + 1}: {exc!r}")
                log(f"{server.backend}: burst failed: {exc}")
    for server in servers:
        join_activations(server, [serial[server.backend], burst.get(server.backend, Series(""))])
    kinds = {s.key: s.kind for s in subjects}
    info = {"loadavg_max": f"{max_load:.2f}"}
    return Run(serial, burst, kinds, info, [], args, import_profile())


def error_notes(run: Run) -> list[str]:
    return [
        f"{ser.label}, {mode}: {len(ser.errors)} error(s), not counted; the first: {ser.errors[0]}"
        for mode, group in (("serial", run.serial), ("burst", run.burst))
        for ser in group.values()
        if ser.errors
    ]


BUSY_LOAD = 2.0  # above this the serial rounds (at most ~1 runnable) shared the machine


def src_stamp() -> float:
    """When faasbox's source last changed: replicas load the runtime from src/ as they
    start, so an edit during the run (a shared working tree) mixes versions."""
    return max(p.stat().st_mtime for p in (ROOT / "src").rglob("*.py"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    info = warm.machine_info()
    info.pop("wrk", None)
    tool_versions(info)
    if float(info["loadavg"]) > BUSY_LOAD:
        log(f"warning: load average is {info['loadavg']}: other work skews the numbers")
    notes: list[str] = []
    procs = warm.Processes()
    workdir = Path(tempfile.mkdtemp(prefix="faasbox-coldstart-"))
    base: list[Subject] = []
    t_start, stamp = time.monotonic(), src_stamp()
    try:
        base = baselines(workdir, notes)
        servers = setup_servers(procs, workdir, args, notes)
        if not servers:
            log("no backend could be started: nothing to measure")
            return 1
        run = measure(servers, base, args)
        for server in servers:
            server.client.close()
            server.raw.close()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        for subject in base:
            subject.close()
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    run.info = info = info | run.info
    if src_stamp() != stamp:
        log("warning: files under src/ changed during the run")
        notes.append("Files under `src/` changed during the run: the numbers may mix versions.")
    if float(info["loadavg_max"]) > BUSY_LOAD:
        notes.append(
            f"The 1-minute load average reached {info['loadavg_max']} during the serial "
            "rounds: other work was competing for this machine's CPUs, which inflates these "
            "numbers; compare with a run on a quiet machine."
        )
    run.notes = notes + error_notes(run)
    log(f"measured in {time.monotonic() - t_start:.0f}s")
    print_report(run)
    save_raw(run)
    if not args.no_write:
        update_doc(render_section(run, plot(run)))
    complete = len(servers) == len(args.backends) and len(base) == 4
    return 0 if complete and not any(s.errors for s in run.serial.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
