"""Hostile functions, deployed and invoked through the gateway: each attack must be
contained, with a clear answer to its caller, while the neighbour keeps answering (see
``conftest.py``). The functions live in ``functions/``; each reports what it tried and
what happened, so a failure here shows how far an attack got."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import NEIGHBOUR_EVERY, Hostile, dir_bytes, host_processes
from tests.support import error_code, wait_for

MiB = 1024 * 1024
# Each replica's process limit (Limits.pids) and private /tmp size (64 MiB tmpfs).
PIDS_LIMIT = 128
TMP_LIMIT = 64 * MiB


def tag() -> str:
    """A name no other process has (fits a process name, 15 bytes)."""
    return "hx" + secrets.token_hex(6)


def show(r: httpx.Response) -> str:
    return f"HTTP {r.status_code}: {r.text[:3000]}"


def json_of(r: httpx.Response) -> Any:
    assert r.status_code == 200, show(r)
    return r.json()


def refused(result: dict[str, Any], allowed: set[str]) -> bool:
    """The attempt failed, for one of the ``allowed`` reasons: another one (EINVAL,
    ENOSYS...) would say it got further than it should have, or was not really tried."""
    return result["ok"] is False and result.get("errno") in allowed


# -- resources -----------------------------------------------------------------------------


def test_fork_bomb_is_contained(hostile: Hostile) -> None:
    name, bomb = "fork-bomb", tag()
    hostile.deploy(name, "fork_bomb", timeout="30s")
    r = hostile.call(name, tag=bomb)
    out = json_of(r)
    assert out["refused"] == "BlockingIOError", out
    assert out["started"] < PIDS_LIMIT, out
    # The bomb is still going inside its sandbox, and held there by the pids limit.
    running = host_processes(bomb)
    assert 0 < len(running) <= PIDS_LIMIT, running
    # A call to a replica with no process to spare gets an answer, whatever it is.
    again = hostile.call(name, "/ping", timeout=40)
    assert again.status_code == 200 or error_code(again), show(again)
    hostile.scale(name, 0)
    wait_for(lambda: not host_processes(bomb), timeout=20)
    after = hostile.call(name, "/ping")
    assert json_of(after) == {"pong": True}
    assert after.headers["x-faasbox-cold-start"] == "true"


def test_memory_past_the_limit_is_out_of_memory(hostile: Hostile) -> None:
    name = "memory-hog"
    hostile.deploy(name, "oom", limits={"memory": "64Mi"})
    r = hostile.call(name)
    assert r.status_code == 502, show(r)
    assert error_code(r) == "out_of_memory", show(r)
    assert "out of memory (limit 64Mi)" in r.json()["error"]["message"], show(r)
    after = hostile.call(name, "/ping")
    assert json_of(after) == {"pong": True}
    assert after.headers["x-faasbox-cold-start"] == "true"


def test_cpu_spin_past_the_timeout_is_killed(hostile: Hostile) -> None:
    name, spinner = "cpu-spin", tag()
    hostile.deploy(name, "spin", timeout="2s")
    t0 = time.monotonic()
    r = hostile.call(name, tag=spinner)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, show(r)
    assert error_code(r) == "timeout", show(r)
    assert "2s" in r.json()["error"]["message"], show(r)
    assert elapsed < 10, f"the caller waited {elapsed:.1f}s for a 2s timeout"
    # Killed, not abandoned spinning.
    wait_for(lambda: not host_processes(spinner), timeout=15)
    after = hostile.call(name, "/ping")
    assert json_of(after) == {"pong": True}


def test_filling_tmp_is_refused_and_stays_off_the_host_disk(hostile: Hostile) -> None:
    name = "fill-tmp"
    hostile.deploy(name, "fill_tmp")
    before = dir_bytes(hostile.data_dir)
    out = json_of(hostile.call(name))
    assert out.get("errno") == "ENOSPC", out
    assert 0 < out["written"] <= TMP_LIMIT, out
    # The files are still there (the replica lives): the host holds at most the limit.
    grown = dir_bytes(hostile.data_dir) - before
    assert grown <= TMP_LIMIT + 4 * MiB, f"the data directory grew by {grown / MiB:.1f} MiB"
    hostile.scale(name, 0)
    wait_for(lambda: dir_bytes(hostile.data_dir) - before < 4 * MiB, timeout=15)


@pytest.mark.parametrize("place", ["/", "/dev/shm"])
def test_no_other_place_to_fill(hostile: Hostile, place: str) -> None:
    """The root is read-only (DESIGN.md, the backends' "read-only-root" capability); any
    other writable place is as bounded as /tmp, refusing with ENOSPC rather than letting
    a function grow to its memory limit and be killed."""
    name = "fill-root" if place == "/" else "fill-shm"
    hostile.deploy(name, "fill_tmp")
    r = hostile.call(name, dir=place)
    assert r.status_code == 200, f"filling {place}: {show(r)}"
    out = r.json()
    if place == "/":
        assert out["written"] == 0 and out["errno"] in ("EROFS", "EACCES"), out
    else:
        writable_bounded = out["errno"] == "ENOSPC" and out["written"] <= TMP_LIMIT
        not_writable = out["written"] == 0 and out["errno"] in ("EROFS", "EACCES", "ENOENT")
        assert writable_bounded or not_writable, out


def test_printing_gigabytes_leaves_the_platform_usable(hostile: Hostile) -> None:
    name, size = "stdout-flood", 2 * 1024 * MiB
    hostile.deploy(name, "stdout_flood", timeout="90s")
    rss_before = hostile.rss_bytes()
    t0 = time.monotonic()
    r = hostile.call(name, bytes=size, timeout=120)
    elapsed = time.monotonic() - t0
    out = json_of(r)
    assert out["stdout_bytes"] >= size, out
    grown = hostile.rss_bytes() - rss_before
    assert grown < 100 * MiB, f"the platform grew by {grown / MiB:.0f} MiB in {elapsed:.1f}s"
    # The logs stay usable: bounded on disk, readable, and saying what was dropped.
    t0 = time.monotonic()
    tail = hostile.client.get("/system/logs", params={"name": name, "tail": 5}, timeout=10)
    assert tail.status_code == 200, show(tail)
    assert len([json.loads(line) for line in tail.text.splitlines()]) == 5
    assert time.monotonic() - t0 < 5
    files = list((hostile.data_dir / "logs").glob(f"{name}.ndjson*"))
    on_disk = sum(p.stat().st_size for p in files)
    assert on_disk < 40 * MiB, f"{on_disk / MiB:.0f} MiB of logs for one call"
    wait_for(
        lambda: (
            "bytes dropped"
            in hostile.client.get("/system/logs", params={"name": name, "tail": 50}).text
        )
    )
    neighbour_logs = hostile.client.get("/system/logs", params={"name": "neighbour", "tail": 1})
    assert neighbour_logs.status_code == 200, show(neighbour_logs)


# -- reading what is not its own -----------------------------------------------------------


def test_cannot_read_etc_shadow(hostile: Hostile) -> None:
    hostile.deploy("read-shadow", "read_shadow")
    out = json_of(hostile.call("read-shadow"))
    assert not out["read"]["ok"] and not out["read_gshadow"]["ok"], out
    host = Path("/etc/shadow")
    if host.exists():
        first = host.read_text().split(":", 2)
        assert ":".join(first[:2]) not in json.dumps(out), "a shadow entry reached the caller"


def test_cannot_see_the_data_directory(hostile: Hostile) -> None:
    data = hostile.data_dir
    assert (data / "faasbox.db").exists(), "the test looks for the wrong data directory"
    hostile.deploy("read-data", "read_data_dir")
    out = json_of(hostile.call("read-data", data=str(data)))
    assert not out["database"]["ok"], out
    assert not out["logs"]["ok"] and not out["run"]["ok"], out
    own = out["own_code"] + "/"
    strangers = [p for p in out["visible_files"] if not p.startswith(own)]
    assert strangers == [], f"of the data directory, more than its own code: {strangers[:20]}"


def test_cannot_read_another_functions_code(hostile: Hostile) -> None:
    token = secrets.token_hex(16)
    files = hostile.deploy("victim", "victim", substitutions={"TOKEN": token})
    other = json_of(hostile.call("victim"))["code_dir"]
    # Where the platform keeps it, as the victim itself reports: the test aims right.
    assert other == str(hostile.code_dir(files)), other
    assert token in (Path(other) / "handler.py").read_text()
    hostile.deploy("read-other", "read_other_code")
    out = json_of(hostile.call("read-other", other=other, token=token))
    assert not out["handler"]["ok"] and not out["listing"]["ok"], out
    assert out["token_found_in"] == [], out
    listing = out["code_root"]
    assert not listing["ok"] or listing["value"] == [Path(out["own_code"]).name], out


def test_cannot_read_a_secret_it_did_not_list(hostile: Hostile) -> None:
    name, value = "hostile-s1", "sekret-" + secrets.token_hex(16)
    r = hostile.client.post("/system/secrets", json={"name": name, "value": value})
    assert r.status_code in (200, 201, 202), show(r)
    hostile.deploy("secret-owner", "secret_owner", secrets=[name])
    hostile.deploy("secret-thief", "secret_thief")
    owner = json_of(hostile.call("secret-owner", name=name))
    assert owner["read"] == {"ok": True, "value": value}, owner
    data = hostile.data_dir
    assert (data / "secrets").is_dir() and (data / "secret.key").is_file(), "store moved?"
    out = json_of(hostile.call("secret-thief", name=name, value=value, data=str(data)))
    assert not out["read"]["ok"], out
    assert not out["listing"]["ok"] or name not in out["listing"]["value"], out
    assert out["env"] == [] and out["found_in"] == [] and out["cmdline"] == [], out
    assert out["searched"] > 0, out
    assert not out["store"]["ok"] and not out["key"]["ok"] and not out["replicas"]["ok"], out
    assert value not in json.dumps(out)


# -- writing, reaching, signalling ---------------------------------------------------------


def test_cannot_write_its_own_code(hostile: Hostile) -> None:
    files = hostile.deploy("write-code", "write_code")
    out = json_of(hostile.call("write-code"))
    assert out["code_dir"] == str(hostile.code_dir(files)), out
    # The deploy compiled the code to bytecode: later replicas run that, so it is read-only
    # too.
    assert out["pyc_exists"], out
    for attempt in ("create", "append", "chmod", "rename", "mkdir", "pyc", "pyc_new"):
        assert refused(out[attempt], {"EROFS", "EACCES", "EPERM"}), (attempt, out)
    on_host = Path(out["code_dir"])
    assert sorted(p.name for p in on_host.iterdir()) == ["__pycache__", "handler.py", "probe.py"]
    assert (on_host / "handler.py").read_text() == files["handler.py"]
    assert all(
        p.name.startswith(("handler.", "probe.")) for p in (on_host / "__pycache__").iterdir()
    )


class HostListener:
    """A TCP server on the host that greets whoever connects, and counts them."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_server((address, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.accepted += 1
                conn.sendall(b"host says hello\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _host_address() -> str | None:
    """The host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture
def listeners() -> Iterator[list[HostListener]]:
    opened = [HostListener("127.0.0.1")]
    address = _host_address()
    if address:
        opened.append(HostListener(address))
    yield opened
    for listener in opened:
        listener.close()


def test_cannot_reach_the_hosts_loopback(hostile: Hostile, listeners: list[HostListener]) -> None:
    for listener in listeners:  # the servers do answer whoever can reach them
        address = listener.sock.getsockname()[0]
        with socket.create_connection((address, listener.port), timeout=5) as s:
            assert s.recv(100) == b"host says hello\n"
        wait_for(lambda lst=listener: lst.accepted == 1)  # type: ignore[misc]
    targets = [f"{lst.sock.getsockname()[0]}:{lst.port}" for lst in listeners]
    targets.append(f"127.0.0.1:{hostile.port}")  # the platform's own API
    hostile.deploy("connect-host", "connect_host")
    out = json_of(hostile.call("connect-host", targets=",".join(targets), timeout=60))
    reached = {t: res for t, res in out["results"].items() if res["ok"]}
    assert reached == {}, f"reached from a function without egress: {reached} ({out})"
    assert [lst.accepted for lst in listeners] == [1] * len(listeners)


def test_cannot_kill_processes_outside(hostile: Hostile) -> None:
    marker = tag()
    victim = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", marker],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        hostile.deploy("killer", "kill_outside")
        pids = f"{victim.pid},{hostile.platform_pid}"
        out = json_of(hostile.call("killer", pids=pids, marker=marker))
        for pid, result in out["targets"].items():
            assert refused(result, {"ESRCH", "EPERM"}), (pid, out)
        assert out["marker_visible"] == [] and out["platform_visible"] == [], out
        assert len(out["visible"]) <= 32, f"not in a PID namespace of its own: {out}"
        # Signals to "every process" and to pid 1 reach its own sandbox at most.
        broadcast = hostile.call("killer", "/broadcast")
        assert broadcast.status_code == 200 or error_code(broadcast) == "replica_failed", show(
            broadcast
        )
        assert "skipped" not in broadcast.text, show(broadcast)
        # One more round trip (kill(2) has queued any SIGKILL it sent by now), then look.
        assert json_of(hostile.call("killer", "/ping")) == {"pong": True}
        assert victim.poll() is None, "a function killed a host process"
        assert hostile.server.proc is not None and hostile.server.proc.poll() is None
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()


@pytest.fixture
def host_markers(hostile: Hostile) -> Iterator[tuple[str, list[Path]]]:
    """Files only the host has, in places a sandbox sees the outline of: the data directory
    (its code lives below) and root's home (the interpreter may live below)."""
    token, name = secrets.token_hex(16), f".hostile-marker-{secrets.token_hex(4)}"
    places = [hostile.data_dir, Path("/root")]
    markers = [p / name for p in places if p.is_dir() and os.access(p, os.W_OK)]
    for marker in markers:
        marker.write_text(token)
    yield token, markers
    for marker in markers:
        marker.unlink(missing_ok=True)


def test_proc_root_does_not_lead_to_the_host(
    hostile: Hostile, host_markers: tuple[str, list[Path]]
) -> None:
    token, markers = host_markers
    hostile.deploy("proc-root", "proc_root")
    out = json_of(
        hostile.call(
            "proc-root",
            markers=",".join(map(str, markers)),
            data=str(hostile.data_dir),
            platform=hostile.platform_pid,
        )
    )
    assert not any(result["ok"] for result in out["direct"].values()), out["direct"]
    assert {"/proc/self/root", "/proc/1/root"} <= set(out["via"]), out
    for prefix, via in out["via"].items():
        assert not any(r["ok"] for r in via["markers"].values()), (prefix, via)
        assert not via["database"]["ok"], (prefix, via)
    assert token not in json.dumps(out)


def test_kernel_settings_are_out_of_reach(hostile: Hostile) -> None:
    """No /proc/sys file (nor sysrq, binfmt_misc) opens for writing: through one such as
    kernel.core_pattern a function would run commands as root on the host."""
    hostile.deploy("proc-sys", "proc_sys")
    out = json_of(hostile.call("proc-sys"))
    assert out["tried"] > 100, out  # it did see a /proc/sys to try
    shown = out["writable"][:15]
    assert out["writable"] == [], f"{len(out['writable'])} writable, among them {shown}"


EPERM_ONLY = (
    "mount_tmpfs",
    "remount_code_rw",
    "bind_root",
    "umount_code",
    "chroot",
    "unshare_user",
    "unshare_user_mount",
    "unshare_mount",
    "unshare_net",
    "unshare_pid",
    "ptrace_traceme",
    "ptrace_attach_child",
    "ptrace_seize_pid1",
)


def test_mount_unshare_and_ptrace_are_refused(hostile: Hostile) -> None:
    hostile.deploy("mount-ptrace", "mount_ptrace")
    out = json_of(hostile.call("mount-ptrace"))
    assert "child_failed" not in out, out
    got = {key: out[key] for key in EPERM_ONLY if not refused(out[key], {"EPERM"})}
    assert got == {}, f"not refused with EPERM: {json.dumps(got, indent=1)}"
    assert out["mounted"] == {"ok": True, "value": False}, out


def test_setuid_binaries_gain_nothing(hostile: Hostile) -> None:
    hostile.deploy("setuid", "setuid")
    out = json_of(hostile.call("setuid"))
    assert "0" not in out["self"]["Uid"], out["self"]
    observed = {}
    for path, run in out["runs"].items():
        if not run["ok"]:  # not even allowed to run it (e.g. mode 4754, root:messagebus)
            assert refused(run, {"EACCES", "EPERM"}), (path, run)
            continue
        status = run["value"]["status"]  # read once the binary itself runs
        if status:
            observed[path] = status
            assert "0" not in status["Uid"], (path, status)
            assert int(status["CapEff"][0], 16) == 0, (path, status)
            assert int(status["CapPrm"][0], 16) == 0, (path, status)
    if out["setuid_binaries"]:
        assert observed, f"no setuid binary could be observed running: {out}"
    if out["mount"] is not None:
        assert out["mount"]["ok"], out["mount"]
        mount = out["mount"]["value"]
        assert mount["returncode"] != 0 and not mount["mounted"], mount
    own = out["own_setuid"]
    if own is not None:
        assert own["euid"]["ok"] and own["euid"]["value"] not in ("", "0"), own
        assert not own["chown_root"]["ok"], own


def test_leftover_children_die_with_the_replica(hostile: Hostile) -> None:
    name, marker = "leftover", tag()
    hostile.deploy(name, "leftover")
    try:
        for retire in ("scale to zero", "delete"):
            json_of(hostile.call(name, tag=marker))
            # They outlive the answer...
            wait_for(lambda: len(host_processes(marker)) == 2, timeout=10)
            if retire == "scale to zero":
                hostile.scale(name, 0)
            else:
                r = hostile.client.request(
                    "DELETE", "/system/functions", json={"functionName": name}
                )
                assert r.status_code == 200, show(r)
            # ...but not the replica.
            try:
                wait_for(lambda: not host_processes(marker), timeout=15)
            except AssertionError:
                pytest.fail(f"after {retire}, left behind on the host: {host_processes(marker)}")
    finally:
        for pid in host_processes(marker):  # the test's own, should the platform fail
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- last: the neighbour, over the whole run -------------------------------------------------


def test_the_neighbour_answered_throughout(hostile: Hostile) -> None:
    hostile.neighbour.settle()
    calls = hostile.neighbour.snapshot()
    bad = [c for c in calls if c.problem]
    assert bad == [], "\n".join(f"{c.test}: {c.describe()}" for c in bad[:20])
    elapsed = calls[-1].started - calls[0].started
    slowest = max(c.seconds for c in calls)
    print(f"neighbour: {len(calls)} calls in {elapsed:.0f}s, slowest {slowest:.2f}s")
    # Sequential calls 50 ms apart: at least a third of the ideal count, whatever ran.
    assert len(calls) >= elapsed / NEIGHBOUR_EVERY / 3, (len(calls), elapsed, slowest)
    assert hostile.rss_bytes() < 512 * MiB
