"""Crash safety of the asynchronous queue: accept 1,000 calls, SIGKILL the platform while
they run, start it again on the same data directory, and count what the function did.

The function records each run as a file on the host (a file per run, named by its call
id), so this test runs on the process backend: a sandboxed function cannot write where the
test can read. The queue does not depend on the backend.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import Server, deploy, wait_for

CALLS = 1000
MAX_REPLICAS = 4
# The dispatcher keeps at most max_replicas x concurrency - 1 of a function's async calls
# in flight (the last slot is for synchronous callers): at most these run twice.
IN_FLIGHT = MAX_REPLICAS - 1

# It picks its backend: the runs of the suite on the other backends would repeat it as is.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FAASBOX_TEST_BACKEND")),
    reason="runs on the process backend in the default run (see the module's docstring)",
)

RECORDS_RUNS = """
import os, time

def handle(event, context):
    out = os.environ["OUT"]
    name = f"{context.call_id}.{os.getpid()}.{time.monotonic_ns()}"
    with open(os.path.join(out, name + ".tmp"), "w") as f:
        f.write(str(context.attempt))
    os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    time.sleep(0.05)  # 3 at a time: ~60 a second, so most are still queued at the kill
    return "ok"
"""


def _runs(out: Path) -> Counter[str]:
    return Counter(p.name.split(".")[0] for p in out.iterdir() if not p.name.endswith(".tmp"))


def test_sigkill_while_running_loses_no_accepted_call(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    data = tmp_path / "data"
    server = Server(data, "--backend", "process").start()
    try:
        with server.client() as client:
            deploy(
                client,
                "crash-counter",
                RECORDS_RUNS,
                envVars={"OUT": str(out)},
                labels={"com.openfaas.scale.max": str(MAX_REPLICAS)},
            )

            def submit(i: int) -> str:
                with httpx.Client(base_url=server.url, timeout=60) as c:
                    r = c.post("/async-function/crash-counter", content=str(i).encode())
                    assert r.status_code == 202, r.text
                    return r.headers["x-call-id"]

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                accepted = list(pool.map(submit, range(CALLS)))
        assert len(set(accepted)) == CALLS
        # Kill the platform process alone, mid-drain, as a crash would.
        wait_for(lambda: len(_runs(out)) >= 50, timeout=60)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        done_at_crash = len(_runs(out))
        assert done_at_crash < CALLS, "everything ran before the kill: nothing was tested"
    finally:
        server.stop()

    time.sleep(0.5)  # replicas orphaned by the kill see their channel close and exit
    server = Server(data, "--backend", "process").start()
    try:
        with server.client() as client:
            wait_for(lambda: len(_runs(out)) == CALLS, timeout=180, interval=0.2)
            wait_for(lambda: client.get("/system/async").json()["unfinished"] == 0, timeout=60)
            runs = _runs(out)
            assert set(runs) == set(accepted)  # every accepted call ran at least once
            twice = {c: n for c, n in runs.items() if n > 1}
            assert sum(n - 1 for n in twice.values()) <= IN_FLIGHT, twice
            for call_id in twice:  # a redelivery: the function saw attempt 2
                body = client.get(f"/system/activations/{call_id}").json()
                assert body["async"]["attempt"] == 2, body
                assert "interrupted" in body["async"]["attempts"][0]["error"], body
            states = Counter(
                client.get(f"/system/activations/{c}").json()["state"] for c in accepted[:50]
            )
            assert states == {"succeeded": 50}, states
    finally:
        server.stop()
