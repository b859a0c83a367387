"""`faasbox invoke --async`, `faasbox queue ...` and `faasbox activation` of an asynchronous
call, as a user runs them (`python -m faasbox` subprocesses) against a real `faasbox up`
whose retries wait ~50 ms; outcomes are checked through the HTTP API. Usage errors, which
never reach a gateway, run in-process."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faasbox.cli.main import main
from tests.cli.test_cli_e2e import closed_port_url, ok, run
from tests.support import Receiver, Server, deploy, wait_for

# Fails its first run; answers what it was sent from the second on.
FLAKY = """
def handle(event, context):
    if context.attempt < 2:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return {"attempt": context.attempt, "path": event.path, "query": event.query,
            "thing": event.headers.get("x-thing"), "body": event.text}
"""

ALWAYS_FAILS = """
def handle(event, context):
    raise ValueError("never works")
"""

FIXED = """
def handle(event, context):
    return "fixed"
"""

SLOW = """
import time

def handle(event, context):
    time.sleep(4)
    return "slept"
"""

NO_RETRIES = {"faasbox.async.retries": "0"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("cli-async") / "data", "--async-retry-delay", "50ms")
    yield s.start()
    s.stop()


@pytest.fixture
def client(srv: Server) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


def record(client: httpx.Client, call_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/system/activations/{call_id}").json()
    return body


def settled(client: httpx.Client, call_id: str, attempts: int = 1) -> dict[str, Any]:
    """The call's record once it is finished after at least ``attempts`` runs."""

    def done() -> dict[str, Any] | None:
        body = record(client, call_id)
        finished = body.get("state") in ("succeeded", "failed", "dead")
        return body if finished and len(body["async"]["attempts"]) >= attempts else None

    result: dict[str, Any] = wait_for(done, 20)
    return result


def queue_call(srv: Server, *args: str) -> str:
    """``faasbox invoke ... --async``: its call id, the one line on stdout."""
    r = ok(run("invoke", *args, "--async", gateway=srv.url))
    call_id = r.stdout.strip()
    assert re.fullmatch(r"[\w-]+", call_id), r.stdout
    return call_id


def test_invoke_async_retries_calls_back_and_shows_its_attempts(
    srv: Server, client: httpx.Client
) -> None:
    name = "cli-async-flaky"
    deploy(client, name, FLAKY)
    receiver = Receiver()
    try:
        args = (
            "invoke", name, "--async", "--data", "hello", "--path", "/items/7", "-q", "a=1",
            "-H", "X-Thing=yes", "--callback", receiver.url, "--idempotency-key", "cli-key-1",
        )  # fmt: skip
        r = ok(run(*args, gateway=srv.url))
        call_id = r.stdout.strip()
        assert r.stderr.splitlines() == [
            f"queued an asynchronous call to '{name}': {call_id}",
            f"follow it with: faasbox --gateway {srv.url} activation {call_id}",
        ]
        # The same key again: the same call, nothing new queued, and it says so.
        again = ok(run(*args, gateway=srv.url))
        assert again.stdout.strip() == call_id
        assert "nothing new queued: the idempotency key 'cli-key-1' names an earlier call" in (
            again.stderr
        )

        rec = settled(client, call_id, attempts=2)
        assert rec["state"] == "succeeded", rec
        assert [a["statusCode"] for a in rec["async"]["attempts"]] == [500, 200]
        assert rec["async"]["callbackUrl"] == receiver.url
        wait_for(lambda: record(client, call_id)["async"]["callback"] == "delivered")
        [callback] = receiver.calls
        assert json.loads(callback["body"]) == {
            "attempt": 2,
            "path": "/items/7",
            "query": {"a": "1"},
            "thing": "yes",
            "body": "hello",
        }
    finally:
        receiver.close()
    assert client.get("/system/async").json()["unfinished"] == 0

    shown = ok(run("activation", call_id, gateway=srv.url)).stdout
    for needle in ("state", "succeeded", "attempts", "2 (retries allowed: 2)", receiver.url):
        assert needle in shown, shown
    assert "(delivered)" in shown
    assert "RuntimeError: attempt 1 fails" in shown  # the first attempt's row
    assert re.search(r"^\s*2\s.*\b200\b", shown, re.MULTILINE), shown


def test_dead_letters_are_listed_and_redriven(srv: Server, client: httpx.Client) -> None:
    name = "cli-async-dead"
    deploy(client, name, ALWAYS_FAILS, labels=NO_RETRIES)
    first = queue_call(srv, name, "--data", "one")
    second = queue_call(srv, name, "--data", "two")
    for call_id in (first, second):
        assert settled(client, call_id)["state"] == "dead"

    table = ok(run("queue", "dead", "list", "--name", name, gateway=srv.url)).stdout
    header, *rows = table.splitlines()
    assert header.split() == [
        "CALL",
        "ID",
        "FUNCTION",
        "ATTEMPTS",
        "CODE",
        "ENQUEUED",
        "LAST",
        "ERROR",
    ]
    assert {row.split()[0] for row in rows} == {first, second}
    for row in rows:
        assert row.split()[1:4] == [name, "1", "500"]
        assert row.endswith("handler_error: ValueError: never works")
    listed = json.loads(
        ok(
            run("queue", "dead", "list", "--name", name, "--limit", "1", "--json", gateway=srv.url)
        ).stdout
    )
    api = client.get("/system/async/dead", params={"name": name, "limit": 1}).json()
    assert [d["callId"] for d in listed] == [d["callId"] for d in api]
    assert len(listed) == 1 and listed[0]["state"] == "dead"

    # One dead letter by its id: it runs again (and, still broken, dies again).
    r = ok(run("queue", "dead", "redrive", first, gateway=srv.url))
    assert r.stdout.splitlines()[:2] == ["queued 1 dead letter again:", f"  {first}"]
    rec = settled(client, first, attempts=2)
    assert rec["state"] == "dead" and rec["async"]["attempt"] == 2

    # Fixed, then every dead letter: both run again with their own requests and succeed.
    deploy(client, name, FIXED, method="PUT", labels=NO_RETRIES)
    r = ok(run("queue", "dead", "redrive", "--all", "--json", gateway=srv.url))
    assert sorted(json.loads(r.stdout)["redriven"]) == sorted([first, second])
    for call_id, runs in ((first, 3), (second, 2)):
        rec = settled(client, call_id, attempts=runs)
        assert rec["state"] == "succeeded", rec
        assert [a["statusCode"] for a in rec["async"]["attempts"]] == [500] * (runs - 1) + [200]
    assert client.get("/system/async/dead", params={"name": name}).json() == []
    r = ok(run("queue", "dead", "list", "--name", name, gateway=srv.url))
    assert r.stdout.strip() == f"no dead letters of '{name}'"
    r = ok(run("queue", "dead", "redrive", "--name", name, gateway=srv.url))
    assert r.stdout.strip() == f"no dead letters of '{name}' to queue again"

    # What cannot be redriven says why, and where to look.
    r = run("queue", "dead", "redrive", first, gateway=srv.url)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.strip() == (
        f"error: call '{first}' is not a dead letter (its state: succeeded); see the dead "
        f"letters with: faasbox --gateway {srv.url} queue dead list"
    )
    r = run("queue", "dead", "redrive", "cli-no-such-call", gateway=srv.url)
    assert r.returncode == 1 and r.stderr.startswith("error: no call 'cli-no-such-call'; see")


def test_queue_status_counts_unfinished_calls(srv: Server, client: httpx.Client) -> None:
    name = "cli-async-slow"
    deploy(client, name, SLOW)
    call_id = queue_call(srv, name)
    # It sleeps 4 s: still unfinished while the command runs.
    r = ok(run("queue", "status", gateway=srv.url))
    lines = r.stdout.splitlines()
    assert lines[0] == "1 unfinished asynchronous call (limit 100000: beyond it new calls get 429)"
    assert lines[1].split() == ["FUNCTION", "UNFINISHED", "OLDEST"]
    assert re.fullmatch(rf"{name}\s+1\s+\d+\.\ds", lines[2].strip()), lines
    summary = json.loads(ok(run("queue", "status", "--json", gateway=srv.url)).stdout)
    assert summary["unfinished"] == 1 and summary["max"] == 100_000
    assert summary["functions"][name]["unfinished"] == 1
    assert summary["functions"][name]["oldestAgeSeconds"] >= 0
    # Not run to its end yet: its state, and none of a finished run's fields.
    shown = ok(run("activation", call_id, gateway=srv.url)).stdout
    assert re.search(r"state\s+(queued|running)", shown) and "cold start" not in shown, shown

    assert settled(client, call_id)["state"] == "succeeded"
    r = ok(run("queue", "status", gateway=srv.url))
    assert (
        r.stdout.strip()
        == "0 unfinished asynchronous calls (limit 100000: beyond it new calls get 429)"
    )


def test_invoke_async_refusals_say_what_to_do(
    srv: Server, client: httpx.Client, tmp_path: Path
) -> None:
    r = run("invoke", "cli-async-nope", "--async", "--data", "x", gateway=srv.url)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.strip() == "error: function 'cli-async-nope' not found"
    name = "cli-async-small"
    deploy(client, name, FIXED)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (300 * 1024))  # over the default --async-max-body 256Ki
    r = run("invoke", name, "--async", "--data-file", str(big), gateway=srv.url)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.startswith("error: request body of 307200 bytes exceeds the limit")
    assert r.stderr.rstrip().endswith("is set with `faasbox up --async-max-body SIZE`")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["--gateway", closed_port_url(), *args])
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["invoke", "fn", "--callback", "http://127.0.0.1:9/done"],
            "error: Invalid value for --callback: only asynchronous calls take a callback: "
            "add --async",
        ),
        (
            ["invoke", "fn", "--idempotency-key", "k"],
            "error: Invalid value for --idempotency-key: only asynchronous calls take an "
            "idempotency key: add --async",
        ),
        (
            ["invoke", "fn", "--async", "--callback", "ftp://x/y"],
            "error: Invalid value for --callback: 'ftp://x/y' is not an http:// or https:// URL",
        ),
        (
            ["invoke", "fn", "--async", "-X", "get"],
            "error: Invalid value for --method: asynchronous calls are always POSTed, not GET: "
            "drop --method or --async",
        ),
        (
            ["queue", "dead", "redrive"],
            "error: Invalid value: say which dead letters to queue again: a CALL_ID, --name NAME "
            "or --all (see them with: faasbox queue dead list)",
        ),
        (
            ["queue", "dead", "redrive", "abc", "--name", "fn"],
            "error: Invalid value: give only one of CALL_ID, --name and --all, not CALL_ID and "
            "--name",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # The gateway address is closed: each is refused before anything is sent.
    code, out, err = cli(capsys, *args)
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == message
    assert "Traceback" not in err
