"""The namespaces backend end to end: a real `faasbox up --backend namespaces`, real
bubblewrap sandboxes, checked from inside a deployed function."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import Server, deploy

# Missing bubblewrap fails in CI (scripts/test installs it) and skips on a developer's box.
pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)

PROBE = """
import ctypes, os, socket

def _refused(call, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    return getattr(libc, call)(*args) == -1 and ctypes.get_errno() == 1  # EPERM


def handle(event, context):
    if event.path == "/whereami":
        return {"code": os.path.dirname(os.path.abspath(__file__))}
    port = int(event.query["port"])
    facts = {
        "uid": os.getuid(),
        "hostname": socket.gethostname(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "etc_shadow": os.path.exists("/etc/shadow"),
        "database": os.path.exists(os.path.join(event.query["data"], "faasbox.db")),
        "logs": os.path.exists(os.path.join(event.query["data"], "logs")),
        "other_code": sorted(os.listdir(os.path.join(event.query["data"], "code"))),
        "home": os.path.exists("/home"),
        "host_packages": os.path.exists(os.path.join(os.path.dirname(os.__file__), "site-packages", "pip")),
        "tmp_writable": False,
        "code_writable": True,
        "status": dict(
            line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
            if line.startswith(("Seccomp", "NoNewPrivs", "CapEff"))
        ),
        # What the seccomp filter refuses, although the sandbox's user namespace would
        # allow it: a new user namespace, by unshare and by clone's flags.
        "unshare_refused": _refused("unshare", 0x10000000),
        "mount_refused": _refused("mount", b"none", b"/tmp", b"tmpfs", 0, None),
    }
    with open("/tmp/x", "w") as f:
        f.write("ok")
    facts["tmp_writable"] = True
    try:
        open(os.path.join(os.path.dirname(__file__), "evil.py"), "w")
    except OSError:
        facts["code_writable"] = False
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        facts["host_loopback"] = True
    except OSError:
        facts["host_loopback"] = False
    if "out" in event.query:  # a server on the host's outward address stands for the world
        host, _, out_port = event.query["out"].rpartition(":")
        try:
            socket.create_connection((host, int(out_port)), timeout=5).close()
            facts["outside"] = True
        except OSError as exc:
            facts["outside"] = str(exc)
        if os.path.exists("/etc/resolv.conf"):
            facts["resolv"] = open("/etc/resolv.conf").read()
    return facts
"""


def _outward_address() -> str:
    """One of this machine's own non-loopback IPv4 addresses."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True)
    addresses = [a for a in out.stdout.split() if "." in a and not a.startswith("127.")]
    assert addresses, "the machine needs a non-loopback IPv4 address for this test"
    return addresses[0]


def facts_code_dir(client: object) -> str:
    return str(client.get("/function/ns-probe/whereami").json()["code"])  # type: ignore[attr-defined]


def check_isolation(srv: Server, backend: str) -> None:
    """From inside deployed functions on ``srv``: what a replica sees and may do, its
    seccomp and capabilities, its network with and without egress. Shared by the
    isolating backends' tests."""
    listener = socket.create_server(("127.0.0.1", 0))
    out = socket.create_server(("0.0.0.0", 0))
    params = {"port": listener.getsockname()[1], "data": str(srv.data_dir.resolve())}
    try:
        with srv.client() as c:
            assert c.get("/system/info").json()["provider"]["sandbox"]["backend"] == backend
            deploy(c, "ns-other", "def handle(event, context):\n    return 'other'\n")
            deploy(c, "ns-probe", PROBE)
            r = c.get("/function/ns-probe", params=params)
            assert r.status_code == 200, r.text
            facts = r.json()
            assert facts["uid"] == 65534
            assert facts["hostname"] == "faasbox"
            assert len(facts["pids"]) <= 3, facts["pids"]  # its own PID namespace
            assert facts["etc_shadow"] is False and facts["home"] is False
            # Of the interpreter's installation only what runs it; not its site-packages.
            assert facts["host_packages"] is False
            assert facts["database"] is False and facts["logs"] is False
            # Of all the code the platform holds, only the function's own directory.
            assert facts["other_code"] == [Path(facts_code_dir(c)).name]
            assert facts["tmp_writable"] is True and facts["code_writable"] is False
            assert facts["host_loopback"] is False, "no network route to the host"
            assert facts["status"] == {
                "Seccomp": "2",  # filter mode
                "NoNewPrivs": "1",
                "CapEff": "0000000000000000",
                "Seccomp_filters": "1",
            }, facts["status"]
            assert facts["unshare_refused"] and facts["mount_refused"]
            assert c.get("/system/function/ns-probe").json()["backend"] == backend
            # Egress is opt-in, per function: out to the world, still not to the host's
            # loopback (where faasbox's API listens).
            params["out"] = f"{_outward_address()}:{out.getsockname()[1]}"
            deploy(c, "ns-egress", PROBE, labels={"faasbox.network": "egress"})
            r = c.get("/function/ns-egress", params=params)
            assert r.json()["outside"] is True, r.text
            assert r.json()["host_loopback"] is False, r.text
            assert r.json()["resolv"] == "nameserver 10.0.2.3\n"
            r = c.get("/function/ns-probe", params=params)  # no egress: nowhere to go
            assert r.json()["outside"] is not True, r.text
            bad = deploy(c, "ns-badnet", PROBE, labels={"faasbox.network": "all"}, expect=400)
            assert "faasbox.network" in bad.json()["error"]["message"]
    finally:
        listener.close()
        out.close()


def test_replicas_are_isolated(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces").start()
    try:
        check_isolation(srv, "namespaces")
    finally:
        srv.stop()


FORK_BOMB = """
import os, time

def handle(event, context):
    started = 0
    try:
        while True:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            started += 1
    except OSError as exc:
        return {"started": started, "error": type(exc).__name__}
"""


def check_fork_bomb(backend: str, tmp_path: Path) -> None:
    """A fork bomb stops at the pids limit and its neighbour keeps answering (shared by
    the namespaces and oci tests)."""
    srv = Server(tmp_path / "data", "--backend", backend).start()
    try:
        with srv.client() as c:
            deploy(c, "ns-neighbour", "def handle(event, context):\n    return 'fine'\n")
            deploy(c, "ns-forkbomb", FORK_BOMB)
            r = c.get("/function/ns-forkbomb")
            assert r.status_code == 200, r.text
            assert r.json()["started"] < 128, r.json()  # the pids limit stopped it
            assert c.get("/function/ns-neighbour").text == "fine"
            # Its leftover children die with the replica.
            c.post("/system/scale-function/ns-forkbomb", json={"replicas": 0})
            assert c.get("/function/ns-neighbour").text == "fine"
    finally:
        srv.stop()


def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    check_fork_bomb("namespaces", tmp_path)
