"""Activation records, logs (tail, since, follow) and Prometheus metrics."""

from __future__ import annotations

import json
import threading

import httpx

from tests.support import deploy, error_code, wait_for


def test_activations_list_and_get(client: httpx.Client) -> None:
    deploy(client, "obs-act", "def handle(event, context):\n    return 'x'\n")
    ids = [client.get("/function/obs-act").headers["x-call-id"] for _ in range(3)]
    recs = client.get("/system/activations", params={"name": "obs-act", "limit": 2}).json()
    assert [r["callId"] for r in recs] == ids[::-1][:2], "newest first, limited"
    one = client.get(f"/system/activations/{ids[0]}").json()
    assert one["function"] == "obs-act" and one["version"] == 1 and one["statusCode"] == 200
    assert one["coldStart"] is True and one["initMs"] > 0 and one["durationSeconds"] > 0
    assert set(one) >= {
        "callId",
        "function",
        "version",
        "start",
        "durationSeconds",
        "statusCode",
        "coldStart",
        "initMs",
    }
    r = client.get("/system/activations/nope")
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = client.get("/system/activations", params={"limit": "many"})
    assert r.status_code == 400
    r = client.get("/system/activations", params={"name": "never-deployed"})
    assert r.status_code == 404 and error_code(r) == "function_not_found"


def test_logs_tail_since_and_follow(client: httpx.Client, server) -> None:  # type: ignore[no-untyped-def]
    code = """
    def handle(event, context):
        print("line", event.query.get("n"))
        return "ok"
    """
    deploy(client, "obs-logs", code)
    for n in range(3):
        client.get(f"/function/obs-logs?n={n}")

    def texts(**params: str) -> list[str]:
        body = client.get("/system/logs", params={"name": "obs-logs", **params}).text
        return [json.loads(x)["text"] for x in body.splitlines() if x]

    wait_for(lambda: "line 2" in texts())
    assert texts(tail="2") == ["line 1", "line 2"]
    assert texts(tail="0") == []
    assert texts(since="1h")[-1] == "line 2"
    assert texts(since="2999-01-01T00:00:00Z") == []

    got: list[dict] = []
    subscribed = threading.Event()
    with httpx.Client(base_url=server.url, timeout=30) as follower:

        def follow() -> None:
            with follower.stream(
                "GET",
                "/system/logs",
                params={"name": "obs-logs", "follow": "true", "since": "2999-01-01T00:00:00Z"},
            ) as r:
                subscribed.set()  # the server subscribes before it answers with headers
                for line in r.iter_lines():
                    if line:
                        got.append(json.loads(line))
                        if "line live" in got[-1]["text"]:
                            return

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        assert subscribed.wait(15)
        client.get("/function/obs-logs?n=live")
        t.join(15)
    assert any(x["text"] == "line live" for x in got), got

    r = client.get("/system/logs", params={"name": "Not_Valid"})
    assert r.status_code == 400
    r = client.get("/system/logs", params={"name": "never-deployed"})
    assert r.status_code == 404
    r = client.get("/system/logs", params={"name": "obs-logs", "since": "yesterday-ish"})
    assert r.status_code == 400
    r = client.get("/system/logs", params={"name": "obs-logs", "follow": "maybe"})
    assert r.status_code == 400


def test_metrics_have_openfaas_names(client: httpx.Client) -> None:
    deploy(client, "obs-metrics", "def handle(event, context):\n    return 'm'\n")
    client.get("/function/obs-metrics")
    client.get("/function/obs-metrics")
    text = client.get("/metrics").text
    assert 'gateway_function_invocation_total{code="200",function_name="obs-metrics"} 2.0' in text
    assert 'gateway_functions_seconds_count{function_name="obs-metrics"} 2.0' in text
    assert 'gateway_service_count{function_name="obs-metrics"} 1.0' in text
    assert 'faasbox_cold_starts_total{function_name="obs-metrics"} 1.0' in text
    assert 'faasbox_cold_start_seconds_count{function_name="obs-metrics"} 1.0' in text
