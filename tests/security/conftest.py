"""One real platform per isolating backend for the whole hostile suite, and a well-behaved
neighbour function called every 50 ms from a thread while the attacks run.

Every test is guarded (``guard``): after it, the platform must still be running and
healthy, and every neighbour call that started during the test must have answered
correctly and in time; otherwise that test fails at teardown, naming what broke. A test
that takes the platform down makes the following ones fail at once with its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, deploy, make_zip, wait_for

FUNCTIONS = Path(__file__).parent / "functions"
# Backend -> the tool it runs sandboxes with.
BACKENDS = {"namespaces": "bwrap", "oci": "runc"}
# The platforms the suite attacks: each backend, and namespaces with every replica forked
# from its function's zygote (`--zygotes always`) so that each attack runs in a fork.
PLATFORMS = {
    "namespaces": ("namespaces", ()),
    "namespaces+forked": ("namespaces", ("--zygotes", "always")),
    "oci": ("oci", ()),
}
NEIGHBOUR = "neighbour"
NEIGHBOUR_EVERY = 0.05
# A neighbour call slower than this counts as a failure: "keeps answering" means promptly.
NEIGHBOUR_SLOW = 5.0


def bundle(module: str, **substitutions: str) -> dict[str, str | bytes]:
    """A function's files: ``functions/<module>.py`` as its handler, plus ``probe.py``.
    ``@NAME@`` placeholders in the handler are replaced by ``substitutions``."""
    text = (FUNCTIONS / f"{module}.py").read_text()
    for key, value in substitutions.items():
        text = text.replace(f"@{key}@", value)
    return {"handler.py": text, "probe.py": (FUNCTIONS / "probe.py").read_text()}


def _gate(backend: str) -> None:
    """Outside CI a backend whose tool is missing, or a non-root run, is skipped; in CI
    nothing is: a missing tool must fail there."""
    if os.environ.get("CI"):
        return
    tool = BACKENDS[backend]
    if shutil.which(tool) is None:
        pytest.skip(f"the {backend} backend needs {tool}, which is not installed")
    if os.geteuid() != 0:
        pytest.skip(f"the {backend} backend needs root (cgroups)")


@dataclass(frozen=True)
class NeighbourCall:
    started: float  # monotonic
    seconds: float
    test: str
    problem: str | None

    def describe(self) -> str:
        return f"after {self.seconds:.2f}s: {self.problem}"


class Neighbour:
    """Calls the neighbour function in a loop and records every answer."""

    def __init__(self, url: str) -> None:
        self.test = "(setup)"
        self.calls: list[NeighbourCall] = []
        self.started = time.monotonic()
        self._client = httpx.Client(base_url=url, timeout=NEIGHBOUR_SLOW * 3)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neighbour", daemon=True)

    def start(self) -> Neighbour:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(NEIGHBOUR_SLOW * 4)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            body = os.urandom(64)
            test, t0 = self.test, time.monotonic()
            problem: str | None
            try:
                r = self._client.post(f"/function/{NEIGHBOUR}", content=body)
                good = r.status_code == 200 and r.text == hashlib.sha256(body).hexdigest()
                problem = None if good else f"HTTP {r.status_code}: {r.text[:300]}"
            except Exception as exc:  # whatever it is, it is the neighbour's failure
                problem = f"{type(exc).__name__}: {exc}"
            seconds = time.monotonic() - t0
            if problem is None and seconds > NEIGHBOUR_SLOW:
                problem = f"answered correctly but took {seconds:.1f}s"
            with self._lock:
                self.calls.append(NeighbourCall(t0, seconds, test, problem))
            self._stop.wait(NEIGHBOUR_EVERY)

    def settle(self, timeout: float = NEIGHBOUR_SLOW * 4) -> bool:
        """Wait until a call that started from now on has answered: then every call that
        started before has too. False if none did (the neighbour is stuck)."""
        mark = time.monotonic()
        deadline = mark + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.calls and self.calls[-1].started >= mark:
                    return True
            time.sleep(0.02)
        return False

    def snapshot(self) -> list[NeighbourCall]:
        with self._lock:
            return list(self.calls)


@dataclass
class Hostile:
    backend: str
    server: Server
    client: httpx.Client
    neighbour: Neighbour
    died_during: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir.resolve()

    @property
    def platform_pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1].rstrip("/"))

    def deploy(self, name: str, module: str, **spec: Any) -> dict[str, str | bytes]:
        files = bundle(module, **spec.pop("substitutions", {}))
        deploy(self.client, name, files=files, **spec)
        return files

    def code_dir(self, files: dict[str, str | bytes]) -> Path:
        """Where the platform keeps a bundle's code: content-addressed by the zip's sha256."""
        return self.data_dir / "code" / hashlib.sha256(make_zip(files)).hexdigest()

    def call(
        self, function: str, path: str = "", /, *, timeout: float = 60.0, **query: Any
    ) -> httpx.Response:
        """GET ``/function/<function><path>`` with ``query`` (any names, ``name`` too)."""
        return self.client.get(f"/function/{function}{path}", params=query, timeout=timeout)

    def scale(self, name: str, replicas: int) -> None:
        r = self.client.post(f"/system/scale-function/{name}", json={"replicas": replicas})
        assert r.status_code == 202, r.text

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.platform_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for the platform")

    def output_tail(self, lines: int = 30) -> str:
        return "".join(self.server.output[-lines:])


def host_processes(needle: str) -> list[int]:
    """Pids of the host's processes whose name or command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            comm = Path(f"/proc/{entry}/comm").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            if needle in comm or needle.encode() in cmdline:
                found.append(int(entry))
    return found


def dir_bytes(root: Path) -> int:
    total = 0
    for top, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


@pytest.fixture(scope="module", params=list(PLATFORMS))
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    platform: str = request.param
    backend, extra = PLATFORMS[platform]
    _gate(backend)
    server = Server(
        tmp_path_factory.mktemp(f"hostile-{platform}") / "data", "--backend", backend, *extra
    )
    server.start()
    client = server.client(timeout=60.0)
    neighbour: Neighbour | None = None
    try:
        info = client.get("/system/info").json()
        assert info["provider"]["sandbox"]["backend"] == backend, info
        deploy(
            client,
            NEIGHBOUR,
            files=bundle("neighbour"),
            labels={"com.openfaas.scale.min": "1"},
        )
        if extra:  # the neighbour, like every function, runs in a fork of its zygote
            wait_for(
                lambda: client.get("/system/info").json()["provider"]["sandbox"]["zygotes"] == 1
            )
        neighbour = Neighbour(server.url).start()
        yield Hostile(platform, server, client, neighbour)
    finally:
        if neighbour is not None:
            neighbour.stop()
        client.close()
        server.stop()


@pytest.fixture(autouse=True)
def guard(hostile: Hostile, request: pytest.FixtureRequest) -> Iterator[None]:
    if hostile.died_during is not None:
        pytest.fail(f"the {hostile.backend} platform died during {hostile.died_during}")
    name = request.node.name
    hostile.neighbour.test = name
    yield
    hostile.neighbour.test = f"(after {name})"
    assert hostile.server.proc is not None
    if hostile.server.proc.poll() is not None:
        hostile.died_during = name
        pytest.fail(
            f"the platform died during {name} (exit {hostile.server.proc.returncode}):\n"
            + hostile.output_tail()
        )
    health: int | str
    try:
        health = hostile.client.get("/healthz", timeout=NEIGHBOUR_SLOW).status_code
    except httpx.HTTPError as exc:
        health = f"{type(exc).__name__}: {exc}"
    if health != 200:
        pytest.fail(f"the platform was unhealthy after {name}: /healthz -> {health}")
    if not hostile.neighbour.settle():
        pytest.fail(f"the neighbour stopped answering during {name}")
    bad = [c for c in hostile.neighbour.snapshot() if c.test == name and c.problem]
    if bad:
        shown = "\n".join(f"  {c.describe()}" for c in bad[:10])
        pytest.fail(f"the neighbour failed {len(bad)} time(s) during {name}:\n{shown}")
