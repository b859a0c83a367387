"""Asynchronous invocations through real HTTP against a real `faasbox up`: the durable
queue, retries, dead letters, callbacks, status, idempotency, fairness and metrics."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Receiver, Server, deploy, error_code, wait_for

# Every retry here waits ~50-100 ms (the first), doubling.
RETRY = ("--async-retry-delay", "50ms")

ECHO = """
def handle(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-From": "echo"},
        "body": {
            "method": event.method,
            "path": event.path,
            "query": event.query,
            "header": event.headers.get("X-Custom"),
            "attempt": context.attempt,
            "attempt_header": event.headers.get("X-Faasbox-Attempt"),
            "body": event.body.decode(),
            "call_id": context.call_id,
        },
    }
"""

# Fails its first two runs: 500 (raises), then 502 (the replica dies); then answers.
FLAKY = """
import os

def handle(event, context):
    if context.attempt == 1:
        raise RuntimeError("first run fails")
    if context.attempt == 2:
        os._exit(3)
    return f"ok after {context.attempt}"
"""

ALWAYS_FAILS = """
def handle(event, context):
    raise ValueError("never works")
"""

BAD_REQUEST = """
def handle(event, context):
    return {"statusCode": 422, "body": "no such thing"}
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("async") / "data", *RETRY, "--async-max-body", "4Ki").start()
    yield s
    s.stop()


@pytest.fixture
def client(srv: Server) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def submit(client: httpx.Client, path: str, **kw: Any) -> str:
    r = client.post("/async-function/" + path, **kw)
    assert r.status_code == 202, r.text
    assert r.content == b""
    return r.headers["x-call-id"]


def finished(client: httpx.Client, call_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/system/activations/{call_id}").json()
        return body if body.get("state") in ("succeeded", "failed", "dead") else None

    result: dict[str, Any] = wait_for(done, timeout)
    return result


def test_accepted_call_runs_with_its_request_and_reports_its_state(
    client: httpx.Client, receiver: Receiver
) -> None:
    deploy(client, "as-echo", ECHO)
    call_id = submit(
        client,
        "as-echo/items/7?color=red",
        content=b"payload",
        headers={"X-Custom": "abc", "X-Callback-Url": receiver.url},
    )
    rec = finished(client, call_id)
    assert rec["state"] == "succeeded" and rec["function"] == "as-echo"
    assert rec["statusCode"] == 200 and rec["callId"] == call_id
    info = rec["async"]
    assert info["attempt"] == 1 and info["maxRetries"] == 2 and info["callbackUrl"] == receiver.url
    assert [a["statusCode"] for a in info["attempts"]] == [200]
    wait_for(lambda: receiver.calls)
    [cb] = receiver.calls
    seen = json.loads(cb["body"])
    assert seen == {
        "method": "POST",
        "path": "/items/7",
        "query": {"color": "red"},
        "header": "abc",
        "attempt": 1,
        "attempt_header": "1",
        "body": "payload",
        "call_id": call_id,
    }
    assert cb["headers"]["X-Call-Id"] == call_id
    assert cb["headers"]["X-Function-Name"] == "as-echo"
    assert cb["headers"]["X-Function-Status"] == "200"
    assert float(cb["headers"]["X-Duration-Seconds"]) > 0
    assert cb["headers"]["Content-Type"] == "application/json"
    wait_for(
        lambda: (
            client.get(f"/system/activations/{call_id}").json()["async"]["callback"] == "delivered"
        )
    )


def test_bad_submissions_get_clear_errors_and_nothing_is_queued(client: httpx.Client) -> None:
    deploy(client, "as-small", ECHO)
    before = client.get("/system/async").json()["unfinished"]
    r = client.post("/async-function/as-missing", content=b"x")
    assert r.status_code == 404 and error_code(r) == "function_not_found"
    r = client.post("/async-function/as-small", content=b"x" * 5000)  # --async-max-body 4Ki
    assert r.status_code == 413 and error_code(r) == "payload_too_large"
    r = client.get("/async-function/as-small")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.post("/async-function/as-small", headers={"X-Callback-Url": "ftp://x/y"})
    assert r.status_code == 400 and "X-Callback-Url" in r.json()["error"]["message"]
    assert client.get("/system/async").json()["unfinished"] == before


def test_failures_are_retried_until_the_function_answers(client: httpx.Client) -> None:
    deploy(client, "as-flaky", FLAKY)
    call_id = submit(client, "as-flaky")
    rec = finished(client, call_id)
    assert rec["state"] == "succeeded", rec
    attempts = rec["async"]["attempts"]
    assert [a["statusCode"] for a in attempts] == [500, 502, 200]
    assert "RuntimeError" in attempts[0]["error"] and attempts[1]["error"]
    # Backoff: each retry waited (~50 ms, then ~100 ms, jittered).
    assert attempts[1]["start"] - attempts[0]["start"] >= 0.025
    assert attempts[2]["start"] - attempts[1]["start"] >= 0.05
    assert rec["async"]["attempt"] == 3
    assert (
        'faasbox_async_retries_total{function_name="as-flaky"} 2.0' in client.get("/metrics").text
    )


def test_client_errors_are_not_retried(client: httpx.Client) -> None:
    deploy(client, "as-422", BAD_REQUEST)
    rec = finished(client, submit(client, "as-422"))
    assert rec["state"] == "failed" and rec["statusCode"] == 422
    assert len(rec["async"]["attempts"]) == 1


def test_exhausted_calls_become_dead_letters_and_can_be_redriven(client: httpx.Client) -> None:
    deploy(client, "as-dead", ALWAYS_FAILS, labels={"faasbox.async.retries": "1"})
    call_id = submit(client, "as-dead", content=b"keep me")
    rec = finished(client, call_id)
    assert rec["state"] == "dead"
    assert [a["statusCode"] for a in rec["async"]["attempts"]] == [500, 500]
    dead = client.get("/system/async/dead", params={"name": "as-dead"}).json()
    assert [d["callId"] for d in dead] == [call_id]
    assert "never works" in dead[0]["attempts"][-1]["error"]
    metrics = client.get("/metrics").text
    assert 'faasbox_async_dead_letters_total{function_name="as-dead"} 1.0' in metrics
    # Fixed, redeployed, redriven: it runs again with its original request.
    deploy(client, "as-dead", ECHO, method="PUT", labels={"faasbox.async.retries": "1"})
    r = client.post("/system/async/dead/redrive", json={"callId": call_id})
    assert r.status_code == 200 and r.json() == {"redriven": [call_id]}
    rec = wait_for(
        lambda: (
            (b := client.get(f"/system/activations/{call_id}").json())["state"] == "succeeded" and b
        )
    )
    assert [a["statusCode"] for a in rec["async"]["attempts"]] == [500, 500, 200]
    assert client.get("/system/async/dead", params={"name": "as-dead"}).json() == []
    r = client.post("/system/async/dead/redrive", json={"callId": call_id})
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = client.post("/system/async/dead/redrive", content=b"not json")
    assert r.status_code == 400


def test_a_timeout_is_retried(client: httpx.Client) -> None:
    slow_once = """
import time

def handle(event, context):
    if context.attempt == 1:
        time.sleep(5)
    return "in time"
"""
    deploy(client, "as-slow", slow_once, timeout="1s")
    rec = finished(client, submit(client, "as-slow"))
    assert rec["state"] == "succeeded"
    assert [a["statusCode"] for a in rec["async"]["attempts"]] == [504, 200]


def test_a_call_past_its_maximum_age_is_dead_lettered_not_retried(client: httpx.Client) -> None:
    deploy(
        client,
        "as-aged",
        ALWAYS_FAILS,
        labels={"faasbox.async.retries": "20", "faasbox.async.max-age": "1s"},
    )
    rec = finished(client, submit(client, "as-aged"))
    assert rec["state"] == "dead"
    attempts = rec["async"]["attempts"]
    runs = [a for a in attempts if a["statusCode"] == 500]
    assert 1 < len(runs) < 21  # retried, but not past its age:
    assert all(a["start"] - rec["async"]["enqueuedAt"] < 1.0 for a in runs), attempts
    # either the last run's retry would have been too late, or the call was found too old
    # when its turn came (then its last attempt says so, and it did not run)
    assert attempts[-1]["statusCode"] == 500 or "maximum age" in attempts[-1]["error"]


def test_a_call_that_never_gets_to_run_expires_and_its_callback_says_so(
    srv: Server, client: httpx.Client, receiver: Receiver
) -> None:
    deploy(
        client,
        "as-busy",
        "import time\ndef handle(e, c):\n    time.sleep(2.5)\n    return ''\n",
        labels={
            "faasbox.async.max-age": "1s",
            "com.openfaas.scale.max": "1",
            "faasbox.prefetch": "0",
        },
    )

    def sync_call() -> int:
        with srv.client() as c:
            return c.get("/function/as-busy").status_code

    # Two synchronous calls: one runs, one waits in the pool, and while a caller waits
    # no asynchronous call starts; by the time there is room, this one is too old.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(sync_call)]
        wait_for(lambda: _inflight(client, "as-busy"))
        calls.append(pool.submit(sync_call))
        wait_for(lambda: _function(client, "as-busy")["waiting"])
        stuck = submit(client, "as-busy", headers={"X-Callback-Url": receiver.url})
        rec = finished(client, stuck, timeout=20)
        assert [c.result() for c in calls] == [200, 200]
    assert rec["state"] == "dead" and "maximum age" in rec["async"]["attempts"][-1]["error"]
    wait_for(lambda: receiver.calls, timeout=10)
    [cb] = receiver.calls
    assert cb["headers"]["X-Call-Id"] == stuck and cb["headers"]["X-Function-Status"] == "504"
    assert json.loads(cb["body"])["error"]["code"] == "expired"


def _function(client: httpx.Client, name: str) -> dict[str, Any]:
    status: dict[str, Any] = client.get(f"/system/function/{name}").json()
    return status


def _inflight(client: httpx.Client, name: str) -> bool:
    return bool(_function(client, name)["inflight"])


def test_queued_calls_of_a_removed_function_become_dead_letters(
    client: httpx.Client, receiver: Receiver
) -> None:
    deploy(
        client,
        "as-removed",
        "import time\ndef handle(e, c):\n    time.sleep(2)\n    return ''\n",
        labels={"com.openfaas.scale.max": "1"},
    )
    submit(client, "as-removed")
    waiting = submit(client, "as-removed", headers={"X-Callback-Url": receiver.url})
    wait_for(lambda: _inflight(client, "as-removed"))  # one runs, the other waits
    r = client.request("DELETE", "/system/functions", json={"functionName": "as-removed"})
    assert r.status_code < 300, r.text
    # Within the 5 s sweep, not after the call's maximum age (6 h by default).
    rec = finished(client, waiting, timeout=15)
    assert rec["state"] == "dead" and "removed" in rec["async"]["attempts"][-1]["error"]
    wait_for(lambda: receiver.calls, timeout=10)
    [cb] = receiver.calls
    assert cb["headers"]["X-Function-Status"] == "404"
    assert json.loads(cb["body"])["error"]["code"] == "function_not_found"
    dead = client.get("/system/async/dead", params={"name": "as-removed"}).json()
    assert waiting in [d["callId"] for d in dead]


def test_a_repeated_idempotency_key_returns_the_first_call(client: httpx.Client) -> None:
    deploy(client, "as-idem", ECHO)
    key = {"X-Idempotency-Key": "order-42"}
    first = client.post("/async-function/as-idem", content=b"1", headers=key)
    again = client.post("/async-function/as-idem", content=b"2", headers=key)
    assert first.status_code == again.status_code == 202
    assert again.headers["x-call-id"] == first.headers["x-call-id"]
    assert again.headers["x-faasbox-idempotent-replay"] == "true"
    assert "x-faasbox-idempotent-replay" not in first.headers
    other = submit(client, "as-idem", content=b"3", headers={"X-Idempotency-Key": "order-43"})
    assert other != first.headers["x-call-id"]
    finished(client, other)
    calls = client.get("/system/activations", params={"name": "as-idem"}).json()
    assert sorted(c["callId"] for c in calls) == sorted([first.headers["x-call-id"], other])


def test_a_failing_callback_is_retried_and_never_holds_up_the_queue(client: httpx.Client) -> None:
    deploy(client, "as-cb", ECHO)
    flaky = Receiver([503, 500])
    # A port nobody listens on: its deliveries fail, while later calls still run.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    try:
        lost = submit(
            client, "as-cb", headers={"X-Callback-Url": f"http://127.0.0.1:{dead_port}/x"}
        )
        ok = submit(client, "as-cb", content=b"second", headers={"X-Callback-Url": flaky.url})
        assert finished(client, lost)["state"] == "succeeded"
        assert finished(client, ok)["state"] == "succeeded"
        wait_for(lambda: len(flaky.calls) == 3)  # 503, 500, then delivered
        assert json.loads(flaky.calls[-1]["body"])["body"] == "second"
        wait_for(
            lambda: (
                client.get(f"/system/activations/{ok}").json()["async"]["callback"] == "delivered"
            )
        )
        wait_for(
            lambda: (
                client.get(f"/system/activations/{lost}").json()["async"]["callback"] == "failed"
            ),
            timeout=30,
        )
    finally:
        flaky.close()


def test_async_work_never_takes_the_last_slot_from_waiting_callers(client: httpx.Client) -> None:
    slow = """
import time

def handle(event, context):
    time.sleep(0.3)
    return "done"
"""
    deploy(client, "as-fair", slow, labels={"com.openfaas.scale.max": "1", "faasbox.prefetch": "0"})
    assert client.get("/function/as-fair").status_code == 200  # warm
    ids = [submit(client, "as-fair") for _ in range(10)]
    wait_for(lambda: _inflight(client, "as-fair"))  # the first queued call is running now
    t0 = time.monotonic()
    r = client.get("/function/as-fair")
    waited = time.monotonic() - t0
    assert r.status_code == 200
    # Behind at most the async call already running (0.3 s), not all ten (3 s).
    assert waited < 1.5, waited
    states = [client.get(f"/system/activations/{c}").json()["state"] for c in ids]
    assert states.count("succeeded") < 8, states
    for c in ids:
        assert finished(client, c)["state"] == "succeeded"


def test_metrics_show_the_queue(client: httpx.Client) -> None:
    deploy(
        client,
        "as-metrics",
        "import time\ndef handle(e, c):\n    time.sleep(0.5)\n    return ''\n",
        labels={"com.openfaas.scale.max": "1"},
    )
    ids = [submit(client, "as-metrics") for _ in range(3)]
    text = client.get("/metrics").text
    assert 'faasbox_async_queue_depth{function_name="as-metrics"}' in text
    assert 'faasbox_async_oldest_age_seconds{function_name="as-metrics"}' in text
    assert 'faasbox_async_accepted_total{function_name="as-metrics"} 3.0' in text
    summary = client.get("/system/async").json()
    assert summary["functions"]["as-metrics"]["unfinished"] >= 1
    for c in ids:
        finished(client, c)
    text = client.get("/metrics").text
    assert 'faasbox_async_finished_total{function_name="as-metrics",state="succeeded"} 3.0' in text


def test_queue_full_is_429(tmp_path: Path) -> None:
    s = Server(tmp_path / "data", "--queue-max", "3").start()
    try:
        with s.client() as c:
            deploy(
                c,
                "as-full",
                "import time\ndef handle(e, c):\n    time.sleep(2)\n    return ''\n",
                labels={"com.openfaas.scale.max": "1"},
            )
            codes = [c.post("/async-function/as-full").status_code for _ in range(6)]
            assert codes[:3] == [202, 202, 202] and set(codes[3:]) == {429}, codes
            r = c.post("/async-function/as-full")
            assert (
                error_code(r) == "too_many_requests"
                and "--queue-max" in r.json()["error"]["message"]
            )
    finally:
        s.stop()


SLEEPS = """
import time

def handle(event, context):
    time.sleep(float(event.query["sleep"]))
    return f"slept at attempt {context.attempt}"
"""


def test_a_graceful_stop_lets_running_calls_finish_within_the_drain_timeout(
    tmp_path: Path,
) -> None:
    """SIGTERM: the dispatcher claims nothing more and gives running calls
    ``--drain-timeout`` to finish; one that does is recorded and never runs again, one that
    does not is stopped and runs again after the restart as attempt 2."""
    data = tmp_path / "data"
    s = Server(data, *RETRY, "--drain-timeout", "2s").start()
    try:
        with s.client() as c:
            for name in ("as-drain-short", "as-drain-long"):
                deploy(c, name, SLEEPS, labels={"com.openfaas.scale.max": "2"})
            short = submit(c, "as-drain-short?sleep=0.8")
            long = submit(c, "as-drain-long?sleep=5")

            def state(call_id: str) -> str:
                return str(c.get(f"/system/activations/{call_id}").json().get("state"))

            wait_for(lambda: state(short) == "running" and state(long) == "running")
        started = time.monotonic()
        s.stop()
        took = time.monotonic() - started
        assert 0.5 < took < 4.5, took  # waited for the short one, not for the long one
        assert any("waiting up to 2s for 2 running" in line for line in s.output), s.output
    finally:
        s.stop()
    again = Server(data, *RETRY).start()
    try:
        with again.client() as c:
            rec = finished(c, short)
            assert rec["state"] == "succeeded" and rec["async"]["attempt"] == 1
            assert [a["statusCode"] for a in rec["async"]["attempts"]] == [200]
            rec = finished(c, long, timeout=30)
            assert rec["state"] == "succeeded" and rec["async"]["attempt"] == 2
    finally:
        again.stop()
