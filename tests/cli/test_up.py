"""`faasbox up`'s own errors: readable, non-zero, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


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
