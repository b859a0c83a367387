"""`faasbox up`'s own errors: readable, non-zero, no traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import Server


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faasbox", "up", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--data-dir", "/proc/faasbox-nope", "--port", "0"], "cannot use data directory"),
        (["--port", "99999"], "--port"),
        (["--backend", "proces", "--port", "0"], "did you mean 'process'"),
        (["--keep-alive", "500ms", "--port", "0"], "--keep-alive 500ms: use at least 1s"),
        (["--keep-alive", "soon", "--port", "0"], "soon"),
    ],
)
def test_bad_options_are_readable(args: list[str], needle: str, tmp_path: Path) -> None:
    r = _up(*args) if "--data-dir" in args else _up(*args, "--data-dir", str(tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_port_in_use_is_readable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _up("--port", str(s.getsockname()[1]), "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "cannot listen on" in r.stderr
    assert "Traceback" not in r.stderr


def _info(srv: Server) -> dict[str, object]:
    sandbox: dict[str, object] = httpx.get(srv.url + "/system/info").json()["provider"]["sandbox"]
    return sandbox


@pytest.mark.skipif(
    sys.platform != "linux" or (shutil.which("bwrap") is None and not os.environ.get("CI")),
    reason="the namespaces backend needs Linux and bubblewrap",
)
def test_default_backend_is_namespaces_on_linux(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FAASBOX_TEST_BACKEND"}
    srv = Server(tmp_path, env=env).start()
    try:
        info = _info(srv)
        assert (info["backend"], info["reason"]) == ("namespaces", "default on Linux")
        assert "seccomp" in info["capabilities"]  # type: ignore[operator]
        assert any("sandbox backend: namespaces (default on Linux)" in ln for ln in srv.output)
    finally:
        srv.stop()


def test_default_falls_back_to_process_and_says_why(tmp_path: Path) -> None:
    # No bubblewrap on PATH: the default cannot be namespaces, and every surface says why.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "FAASBOX_TEST_BACKEND"}
    env["PATH"] = str(bin_dir)
    srv = Server(tmp_path / "data", env=env).start()
    try:
        info = _info(srv)
        assert info["backend"] == "process"
        assert "needs bubblewrap" in str(info["reason"])
        assert any("sandbox backend: process (namespaces unavailable" in ln for ln in srv.output)
    finally:
        srv.stop()
