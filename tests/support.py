"""Test helpers: a real `faasbox up` subprocess on an ephemeral port, and deploy helpers."""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def running_with(marker: str) -> list[str]:
    """Host pids of live processes whose command line holds ``marker`` (found on the host:
    inside a PID namespace a sandbox cannot know its processes' host pids)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(proc.name)
    return found


class Server:
    """`faasbox up --port 0` in a subprocess; ``url`` once it prints its listening line."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def _args(self) -> list[str]:
        # FAASBOX_TEST_BACKEND runs the whole suite on another sandbox backend.
        backend = (os.environ if self.env is None else self.env).get("FAASBOX_TEST_BACKEND")
        if backend and "--backend" not in self.extra:
            return [*self.extra, "--backend", backend]
        return list(self.extra)

    def start(self, timeout: float = 30.0) -> Server:
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faasbox",
                "up",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
                *self._args(),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if line.startswith("faasbox listening on "):
                    self.url = line.split()[-1]
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError("faasbox up did not start:\n" + "".join(self.output))
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


def make_zip(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            data = textwrap.dedent(content) if isinstance(content, str) else content
            # A fixed timestamp: the same files make the same bundle, byte for byte.
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def deploy(
    client: httpx.Client,
    name: str,
    handler_code: str | None = None,
    *,
    files: dict[str, str | bytes] | None = None,
    method: str = "POST",
    wait: bool = True,
    expect: int | None = 200,
    **spec: Any,
) -> httpx.Response:
    files = dict(files or {})
    if handler_code is not None:
        files["handler.py"] = handler_code
    body = {"service": name, **spec}
    r = client.request(
        method,
        "/system/functions" + ("?wait=true" if wait else ""),
        files={
            "spec": (None, json.dumps(body), "application/json"),
            "code": ("code.zip", make_zip(files), "application/zip"),
        },
    )
    if expect is not None:
        assert r.status_code == expect, r.text
    return r


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return str(body["error"]["code"])


class Receiver:
    """A callback receiver on an ephemeral loopback port; answers ``statuses`` in turn
    (then 200) and records every request."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls.append({"headers": dict(self.headers), "body": body})
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/done"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
