"""The CLI as a user runs it: `python -m faasbox ...` subprocesses against a real `faasbox up`
(the ``gateway_url`` fixture of tests/conftest.py). Function names start with ``cli-`` so
they do not meet other tests' functions on the shared server."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import wait_for


def run(
    *args: str,
    gateway: str | None,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FAASBOX_GATEWAY"}
    gw = ["--gateway", gateway] if gateway else []
    return subprocess.run(
        [sys.executable, "-m", "faasbox", *gw, *args],
        cwd=cwd,
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def new_function(tmp_path: Path, gateway_url: str, name: str, handler: str | None = None) -> None:
    ok(run("new", name, "--lang", "python", gateway=gateway_url, cwd=tmp_path))
    if handler is not None:
        (tmp_path / name / "handler.py").write_text(handler)


def test_new_deploy_invoke_inspect_scale_remove(tmp_path: Path, gateway_url: str) -> None:
    name = "cli-hello"
    gw = gateway_url

    new_function(tmp_path, gw, name)
    r = ok(run("deploy", "-v", gateway=gw, cwd=tmp_path))
    assert f"{name} ready: version 1" in r.stdout
    assert f"curl {gw}/function/{name}" in r.stdout

    # invoke with data and a header; -v puts the status line and headers on stderr
    r = ok(
        run("invoke", name, "--data", "hi there", "-H", "X-Test=1", "-v", gateway=gw, cwd=tmp_path)
    )
    assert json.loads(r.stdout) == {
        "message": f"Hello from {name}!",
        "method": "POST",
        "received": "hi there",
    }
    assert re.search(r"^HTTP/1.1 200 OK$", r.stderr, re.M)
    assert re.search(r"^x-faasbox-cold-start: (true|false)$", r.stderr, re.M | re.I)
    assert re.search(r"^x-call-id: \S+$", r.stderr, re.M | re.I)
    assert re.search(r"^x-duration-seconds: [\d.]+$", r.stderr, re.M | re.I)

    # without data: GET; stdin from a pipe becomes the body
    r = ok(run("invoke", name, gateway=gw))
    assert json.loads(r.stdout)["method"] == "GET"
    r = ok(run("invoke", name, gateway=gw, input="from stdin"))
    assert json.loads(r.stdout)["received"] == "from stdin"

    r = ok(run("list", gateway=gw))
    row = next(line for line in r.stdout.splitlines() if line.startswith(name + " "))
    assert row.split()[1:3] == ["ready", "(v1)"]
    listed = {f["name"]: f for f in json.loads(ok(run("list", "--json", gateway=gw)).stdout)}
    assert listed[name]["status"] == "ready" and listed[name]["invocationCount"] >= 3

    r = ok(run("describe", name, gateway=gw))
    for text in (name, "status", "ready", "handler.handle", "python3", "backend"):
        assert text in r.stdout

    # logs: what the handler printed, with its call id
    def logged() -> str | None:
        out = ok(run("logs", name, gateway=gw)).stdout
        return out if f"{name} called: POST / (8 bytes)" in out else None

    out = wait_for(logged, timeout=20)
    assert re.search(rf"^\S+ \S+ \[[0-9a-f-]{{8}}\] {name} called: POST / \(8 bytes\)$", out, re.M)
    assert len(ok(run("logs", name, "--tail", "1", gateway=gw)).stdout.splitlines()) == 1
    assert ok(run("logs", name, "--since", "1h", gateway=gw)).stdout

    # scale to zero: the next call is a cold start
    r = ok(run("scale", name, "0", gateway=gw))
    assert "0 replicas" in r.stdout
    r = ok(run("invoke", name, "-v", gateway=gw))
    assert re.search(r"^x-faasbox-cold-start: true$", r.stderr, re.M | re.I)

    r = ok(run("rm", name, gateway=gw))
    assert name in r.stdout
    r = run("invoke", name, gateway=gw)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: function '{name}' not found"
    assert r.stdout == ""
    r = run("describe", name, gateway=gw)
    assert r.returncode == 1 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_redeploy_makes_a_new_version(tmp_path: Path, gateway_url: str) -> None:
    name = "cli-versions"
    new_function(tmp_path, gateway_url, name, "def handle(event, context):\n    return 'one'\n")
    assert "ready: version 1" in ok(run("deploy", gateway=gateway_url, cwd=tmp_path)).stdout
    (tmp_path / name / "handler.py").write_text("def handle(event, context):\n    return 'two'\n")
    assert "ready: version 2" in ok(run("deploy", name, gateway=gateway_url, cwd=tmp_path)).stdout
    assert ok(run("invoke", name, gateway=gateway_url)).stdout == "two"
    same = ok(run("deploy", name, gateway=gateway_url, cwd=tmp_path)).stdout
    assert "unchanged: version 2" in same
    assert f"--gateway {gateway_url} invoke {name}" in same
    ok(run("rm", name, gateway=gateway_url))


def test_a_failed_update_shows_the_version_that_still_serves(
    tmp_path: Path, gateway_url: str
) -> None:
    name = "cli-failed-update"
    gw = gateway_url
    new_function(tmp_path, gw, name, "def handle(event, context):\n    return 'one'\n")
    ok(run("deploy", gateway=gw, cwd=tmp_path))
    (tmp_path / name / "handler.py").write_text("def handle(event, context)\n")  # syntax
    assert run("deploy", gateway=gw, cwd=tmp_path).returncode == 1

    row = next(
        line for line in ok(run("list", gateway=gw)).stdout.splitlines() if line.startswith(name)
    )
    assert "ready (v1), v2 failed" in row
    r = ok(run("describe", name, gateway=gw))
    assert "ready (v1), v2 failed" in r.stdout
    assert re.search(r"serving +v1", r.stdout)
    assert re.search(r"latest +v2 failed \(v1 keeps serving\)", r.stdout)
    log = r.stdout.split("build log of v2 (failed):", 1)[1]
    assert "SyntaxError" in log
    assert ok(run("invoke", name, gateway=gw)).stdout == "one"
    ok(run("rm", name, gateway=gw))


def test_scale_beyond_scale_max_says_it_is_capped(tmp_path: Path, gateway_url: str) -> None:
    name = "cli-capped"
    new_function(tmp_path, gateway_url, name)
    stack = tmp_path / "faasbox.yml"
    stack.write_text(
        stack.read_text().replace(
            "  # labels:", '  labels: {com.openfaas.scale.max: "2"}\n    # labels:'
        )
    )
    ok(run("deploy", gateway=gateway_url, cwd=tmp_path))
    r = ok(run("scale", name, "4", gateway=gateway_url))
    assert r.stdout.strip() == (
        f"scaled '{name}' to 2 replicas, not 4: capped at 2 (com.openfaas.scale.max)"
    )
    ok(run("rm", name, gateway=gateway_url))


def test_invoke_past_its_timeout_blames_the_call_not_the_gateway(
    tmp_path: Path, gateway_url: str
) -> None:
    name = "cli-slow"
    handler = "import time\ndef handle(event, context):\n    time.sleep(3)\n    return 'late'\n"
    new_function(tmp_path, gateway_url, name, handler)
    ok(run("deploy", gateway=gateway_url, cwd=tmp_path))
    r = run("invoke", name, "--timeout", "0.5", gateway=gateway_url)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"error: the call to '{name}' took longer than --timeout 0.5s")
    assert "--timeout SECONDS" in r.stderr
    ok(run("rm", name, gateway=gateway_url))


def test_wrong_gateway_urls_and_unknown_names(gateway_url: str) -> None:
    r = run("list", gateway=gateway_url + "/system")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"error: {gateway_url}/system does not look like a faasbox gateway (GET "
        f"/system/system/functions answered 404 Not Found); a gateway URL has no path: try "
        f"{gateway_url}"
    )
    r = run("activations", "cli-nope", gateway=gateway_url)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.strip() == "error: function 'cli-nope' not found"
    r = run("describe", "Not_A_Name", gateway=gateway_url)
    assert r.returncode == 2 and "not a valid function name" in r.stderr


def test_failed_build_shows_the_build_log(tmp_path: Path, gateway_url: str) -> None:
    name = "cli-broken"
    new_function(tmp_path, gateway_url, name)
    stack = tmp_path / "faasbox.yml"
    stack.write_text(
        stack.read_text().replace("handler: handler.handle", "handler: handler.nothere")
    )
    r = run("deploy", gateway=gateway_url, cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" not in r.stderr.split("\n", 1)[0]
    lines = r.stderr.splitlines()
    error_line = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[error_line].startswith(f"error: {name}: ")
    # the build log follows the message
    log = "\n".join(lines[error_line + 1 :])
    assert "nothere" in log and len(lines) - error_line > 2


def test_deploying_several_continues_past_a_failure(tmp_path: Path, gateway_url: str) -> None:
    new_function(tmp_path, gateway_url, "cli-bad-one", "def handle(event, context)\n")  # syntax
    new_function(
        tmp_path, gateway_url, "cli-good-one", "def handle(event, context):\n    return 'ok'\n"
    )
    r = run("deploy", gateway=gateway_url, cwd=tmp_path)
    assert r.returncode == 1
    assert "cli-good-one ready: version 1" in r.stdout
    assert "error: cli-bad-one:" in r.stderr
    assert "1 deployed, 1 failed: cli-bad-one" in r.stderr
    assert ok(run("invoke", "cli-good-one", gateway=gateway_url)).stdout == "ok"
    ok(run("rm", "cli-good-one", gateway=gateway_url))


def test_invoke_options_and_handler_errors(tmp_path: Path, gateway_url: str) -> None:
    name = "cli-echo"
    handler = (
        "import json\n"
        "def handle(event, context):\n"
        "    if event.path.endswith('/fail'):\n"
        "        raise ValueError('asked to fail')\n"
        "    if event.path.endswith('/teapot'):\n"
        "        return {'statusCode': 418, 'body': 'short and stout'}\n"
        "    return {'method': event.method, 'path': event.path, 'query': str(event.query),\n"
        "            'x': event.headers.get('x-thing'), 'body': event.body.decode()}\n"
    )
    new_function(tmp_path, gateway_url, name, handler)
    ok(run("deploy", gateway=gateway_url, cwd=tmp_path))
    (tmp_path / "body.txt").write_text("file body")
    r = ok(
        run(
            "invoke", name, "-X", "put", "--path", "/items/3", "-q", "a=1", "-q", "b=x y",
            "-H", "X-Thing: curl style", "--data-file", str(tmp_path / "body.txt"),
            gateway=gateway_url,
        )
    )  # fmt: skip
    got = json.loads(r.stdout)
    assert got["method"] == "PUT" and got["path"].endswith("/items/3")
    assert "a" in got["query"] and "x y" in got["query"]
    assert got["x"] == "curl style" and got["body"] == "file body"

    r = run("invoke", name, "--path", "/fail", gateway=gateway_url)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "asked to fail" in r.stderr
    assert "Traceback" not in r.stderr.splitlines()[0]

    # the function's own error answer is its output; the exit code still says it failed
    r = run("invoke", name, "--path", "/teapot", gateway=gateway_url)
    assert r.returncode == 1 and r.stdout == "short and stout"
    assert "418" in r.stderr

    r = run("invoke", name, "--data", "a", "--data-file", "x", gateway=gateway_url)
    assert r.returncode == 2 and "not both" in r.stderr

    records = json.loads(
        ok(run("activations", name, "--json", "-n", "5", gateway=gateway_url)).stdout
    )
    assert records and all(a["function"] == name for a in records)
    assert any(a["statusCode"] == 500 for a in records)
    r = ok(run("activations", name, gateway=gateway_url))
    assert records[0]["callId"] in r.stdout
    r = ok(run("activation", records[0]["callId"], gateway=gateway_url))
    assert name in r.stdout
    r = run("activation", "no-such-call", gateway=gateway_url)
    assert r.returncode == 1 and "not found" in r.stderr
    ok(run("rm", name, gateway=gateway_url))


def test_logs_follow_streams_and_ctrl_c_exits_quietly(tmp_path: Path, gateway_url: str) -> None:
    name = "cli-follow"
    new_function(tmp_path, gateway_url, name)
    ok(run("deploy", gateway=gateway_url, cwd=tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "FAASBOX_GATEWAY"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faasbox",
            "--gateway",
            gateway_url,
            "logs",
            name,
            "-f",
            "--tail",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        seen = ""
        needle = f"{name} called: POST / (6 bytes)"
        # Invoke until the follower shows the line: it may subscribe after the first call.
        while needle not in seen:
            assert time.monotonic() < deadline, f"follow never showed the line; got {seen!r}"
            ok(run("invoke", name, "-d", "follow", gateway=gateway_url))
            with contextlib.suppress(queue.Empty):
                while needle not in seen:
                    seen += lines.get(timeout=2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in err and "Aborted" not in err
    ok(run("rm", name, gateway=gateway_url))


def test_unreachable_gateway_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = closed_port_url()
    expected = f"error: cannot reach faasbox at {url} — is `faasbox up` running?"
    for args in (["list"], ["invoke", "x", "-d", "1"], ["logs", "x"], ["describe", "x"]):
        r = run(*args, gateway=url)
        assert r.returncode == 2, args
        assert r.stderr.strip() == expected
    # deploy: the gateway of the stack file counts when there is no --gateway
    ok(run("new", "cli-nowhere", gateway=None, cwd=tmp_path))
    stack = tmp_path / "faasbox.yml"
    stack.write_text(stack.read_text() + f"provider:\n  gateway: {url}\n")
    r = run("deploy", gateway=None, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().endswith(expected)


def test_gateway_flag_beats_the_stack_file(tmp_path: Path, gateway_url: str) -> None:
    name = "cli-precedence"
    new_function(tmp_path, gateway_url, name)
    stack = tmp_path / "faasbox.yml"
    stack.write_text(stack.read_text() + f"provider:\n  gateway: {closed_port_url()}\n")
    assert "ready: version 1" in ok(run("deploy", gateway=gateway_url, cwd=tmp_path)).stdout
    ok(run("rm", name, gateway=gateway_url))


@pytest.mark.parametrize(
    ("yml", "message"),
    [
        (None, "faasbox.yml not found"),
        ("functions:\n  x:\n    timeout: soon\n", "functions.x.timeout: invalid duration 'soon'"),
        ("functions: {}\n", "no functions listed"),
    ],
)
def test_deploy_stack_file_errors(tmp_path: Path, yml: str | None, message: str) -> None:
    if yml is not None:
        (tmp_path / "faasbox.yml").write_text(yml)
    r = run("deploy", gateway=closed_port_url(), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.stderr


def test_deploy_of_an_unlisted_name(tmp_path: Path) -> None:
    ok(run("new", "cli-listed", gateway=None, cwd=tmp_path))
    r = run("deploy", "cli-other", gateway=closed_port_url(), cwd=tmp_path)
    assert r.returncode == 1
    assert "no function 'cli-other' (listed: cli-listed)" in r.stderr
