"""Prewarmed sandboxes ("stem cells") end to end: a real `faasbox up --backend namespaces
--prewarm N`, real bubblewrap sandboxes, checked from inside deployed functions."""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, deploy, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)

MiB = 1024 * 1024

# Reports what it sees; with ?leave=1 it also leaves traces of every kind it can.
PROBE = """
import errno, os, re, sys

import probe_helper  # a module of this function's own

SECRETS = "/var/openfaas/secrets"


def _slot():
    # Which stem cell this is: its slot's name, in the source of its mounts.
    with open("/proc/self/mountinfo") as f:
        found = re.findall(r"prewarm-[0-9a-f]{8}", f.read())
    return found[0] if found else None


def _try_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "written"


def handle(event, context):
    code = os.path.dirname(os.path.abspath(__file__))
    if event.query.get("leave"):
        with open("/tmp/left-behind", "w") as f:
            f.write("from " + context.function_name)
        os.environ["LEFT_BEHIND"] = "yes"
        sys.modules["left_behind"] = sys
    secrets = sorted(os.listdir(SECRETS)) if os.path.isdir(SECRETS) else None
    other = event.query.get("other")
    return {
        "slot": _slot(),
        "code": code,
        "helper": probe_helper.NAME,
        "modules": sorted(m for m in ("probe_helper", "left_behind") if m in sys.modules),
        "tmp": sorted(os.listdir("/tmp")),
        "env": {k: os.environ.get(k) for k in ("GREETING", "LEFT_BEHIND", "FAASBOX_FUNCTION", "FAASBOX_SECRETS_DIR")},
        "secrets": secrets,
        "secret_values": {n: open(os.path.join(SECRETS, n)).read() for n in secrets or []},
        "code_store": sorted(os.listdir(os.path.dirname(code))),
        "other_code_visible": os.path.exists(other) if other else None,
        "write_code": _try_write(os.path.join(code, "evil.py")),
        "write_secrets": _try_write(os.path.join(SECRETS, "evil")) if secrets is not None else None,
        "code_mount_ro": any(
            line.split()[4] == code and "ro" in line.split()[5].split(",")
            for line in open("/proc/self/mountinfo")
        ),
    }
"""


def _files(name: str) -> dict[str, str | bytes]:
    return {"probe_helper.py": f"NAME = {name!r}\n"}


def _prewarm(c: httpx.Client) -> dict[str, Any] | None:
    state: dict[str, Any] | None = c.get("/system/info").json()["provider"]["sandbox"]["prewarm"]
    return state


def _full(c: httpx.Client, *, idle: bool = False) -> bool:
    """The pool has its minimum ready (and, with ``idle``, is making no more)."""
    state = _prewarm(c)
    if state is None or state["ready"] < state["min"]:
        return False
    return not (idle and state["starting"])


def _record(c: httpx.Client, r: httpx.Response) -> dict[str, Any]:
    rec: dict[str, Any] = c.get(f"/system/activations/{r.headers['x-call-id']}").json()
    return rec


def _cold_call(c: httpx.Client, name: str, **params: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait until the pool is full, then call ``name`` cold; (its answer, its record)."""
    wait_for(lambda: _full(c))
    r = c.get(f"/function/{name}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["x-faasbox-cold-start"] == "true"
    return r.json(), _record(c, r)


def _cgroup(srv: Server, sandbox: str, controller: str, name: str) -> int:
    """A setting of a sandbox's cgroup (v1, as on this machine and CI)."""
    assert srv.proc is not None
    own = ""
    for line in Path(f"/proc/{srv.proc.pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            own = path.lstrip("/")
    root = Path("/sys/fs/cgroup") / controller / own / "faasbox" / str(srv.proc.pid)
    return int((root / sandbox / name).read_text())


def test_cold_starts_take_prewarmed_sandboxes_and_the_pool_refills(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces", "--prewarm", "2").start()
    try:
        with srv.client() as c:
            wait_for(lambda: _full(c))
            state = _prewarm(c)
            assert state is not None and state["min"] == 2 and state["runtime"] == "python3"
            deploy(
                c,
                "pw-hello",
                PROBE,
                files=_files("hello"),
                envVars={"GREETING": "hi"},
                limits={"memory": "64Mi"},
            )
            facts, rec = _cold_call(c, "pw-hello")
            assert rec["coldStart"] is True and rec["startPath"] == "prewarmed", rec
            assert 0 < rec["initMs"] < 1000
            # The function's own environment, code and limits, injected at claim.
            assert (
                facts["env"]["GREETING"] == "hi" and facts["env"]["FAASBOX_FUNCTION"] == "pw-hello"
            )
            assert facts["helper"] == "hello"
            assert facts["code_store"] == [Path(facts["code"]).name]
            assert facts["slot"] is not None
            assert _cgroup(srv, facts["slot"], "memory", "memory.limit_in_bytes") == 64 * MiB
            # Its CPU share is the default; so is the waiting stem cells' (small only while
            # their runtime starts), so that a claim writes no cgroup file for it.
            assert _cgroup(srv, facts["slot"], "cpu", "cpu.shares") == 1024
            wait_for(lambda: _full(c, idle=True))
            waiting = [
                p.name
                for p in (srv.data_dir / "run" / "slots").iterdir()
                if p.name != facts["slot"]
            ]
            assert waiting and all(_cgroup(srv, w, "cpu", "cpu.shares") == 1024 for w in waiting)
            # Mounted at claim, read-only: not even the mount is writable.
            assert facts["code_mount_ro"] is True
            assert facts["write_code"] == "EROFS"
            # Warm calls stay on the replica; metrics count the path.
            r = c.get("/function/pw-hello")
            assert r.headers["x-faasbox-cold-start"] == "false"
            assert _record(c, r)["startPath"] is None
            wait_for(lambda: _full(c))  # refilled
            metrics = c.get("/metrics").text
            assert (
                'faasbox_cold_starts_by_path_total{function_name="pw-hello",path="prewarmed"} 1.0'
                in metrics
            ), metrics
            assert re.search(r'^faasbox_prewarm_ready\{runtime="python3"\} [12]\.0$', metrics, re.M)
            assert 'faasbox_prewarm_target{runtime="python3"}' in metrics
            # Functions a stem cell cannot serve are created from scratch: egress needs its
            # network at creation, a loader variable takes effect only at exec.
            deploy(c, "pw-egress", PROBE, files=_files("e"), labels={"faasbox.network": "egress"})
            _, rec = _cold_call(c, "pw-egress")
            assert rec["startPath"] == "created", rec
            deploy(c, "pw-loader", PROBE, files=_files("l"), envVars={"LD_BIND_NOW": "1"})
            _, rec = _cold_call(c, "pw-loader")
            assert rec["startPath"] == "created", rec
    finally:
        srv.stop()
    assert not any(
        str(srv.data_dir) in line for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ), "the platform's mounts are gone once it stopped"


def test_prewarm_zero_turns_it_off(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces", "--prewarm", "0").start()
    try:
        with srv.client() as c:
            assert _prewarm(c) is None
            deploy(c, "pw-off", "def handle(event, context):\n    return 'ok'\n")
            r = c.get("/function/pw-off")
            assert r.headers["x-faasbox-cold-start"] == "true"
            assert _record(c, r)["startPath"] == "created"
            assert "faasbox_prewarm_ready" not in c.get("/metrics").text
    finally:
        srv.stop()


def test_nothing_of_one_function_reaches_the_next_through_the_pool(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces", "--prewarm", "1").start()
    try:
        with srv.client() as c:
            r = c.post("/system/secrets", json={"name": "pw-token", "value": "s3cret"})
            assert r.status_code == 201, r.text
            deploy(
                c,
                "pw-a",
                PROBE,
                files=_files("a"),
                envVars={"GREETING": "from-a"},
                secrets=["pw-token"],
            )
            deploy(c, "pw-b", PROBE, files=_files("b"))
            a, rec_a = _cold_call(c, "pw-a", leave="1")
            assert rec_a["startPath"] == "prewarmed", rec_a
            assert a["secrets"] == ["pw-token"] and a["secret_values"] == {"pw-token": "s3cret"}
            assert a["env"]["FAASBOX_SECRETS_DIR"] == "/var/openfaas/secrets"
            assert a["write_secrets"] == "EROFS"
            assert "left-behind" in a["tmp"] and a["env"]["LEFT_BEHIND"] == "yes"
            # A is gone; B takes a stem cell from the pool that A's traces never reached.
            c.post("/system/scale-function/pw-a", json={"replicas": 0})
            wait_for(lambda: c.get("/system/function/pw-a").json()["replicas"] == 0)
            b, rec_b = _cold_call(c, "pw-b", other=a["code"])
            assert rec_b["startPath"] == "prewarmed", rec_b
            assert b["slot"] is not None and b["slot"] != a["slot"], "another stem cell"
            assert b["helper"] == "b"
            assert "left-behind" not in b["tmp"]
            assert b["env"] == {
                "GREETING": None,
                "LEFT_BEHIND": None,
                "FAASBOX_FUNCTION": "pw-b",
                "FAASBOX_SECRETS_DIR": None,
            }
            assert b["modules"] == ["probe_helper"]
            assert b["secrets"] == []
            assert b["other_code_visible"] is False
            assert b["code_store"] == [Path(b["code"]).name]
            # A's stem cell is gone for good: its slot no longer exists on the host.
            assert not (srv.data_dir / "run" / "slots" / a["slot"]).exists()
    finally:
        srv.stop()


def _mounts_in(data: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(str(data.resolve()) + "/")]


def test_a_killed_platforms_mounts_are_removed_by_the_next(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = Server(data, "--backend", "namespaces", "--prewarm", "1").start()
    try:
        with srv.client() as c:
            deploy(c, "pw-killed", PROBE, files=_files("k"))
            _, rec = _cold_call(c, "pw-killed")
            assert rec["startPath"] == "prewarmed"
    finally:
        srv.stop(signal.SIGKILL)
    # Killed outright: its slots' mounts stay behind (its sandboxes died with it).
    left = _mounts_in(data)
    assert any(p.endswith("/run/slots") for p in left) and len(left) >= 2, left
    again = Server(data, "--backend", "namespaces", "--prewarm", "1").start()
    try:
        with again.client() as c:
            wait_for(lambda: _full(c))
            assert _mounts_in(data) == [str((data / "run" / "slots").resolve())]
            facts, rec = _cold_call(c, "pw-killed")
            assert rec["startPath"] == "prewarmed" and facts["helper"] == "k"
    finally:
        again.stop()
    assert _mounts_in(data) == []
