"""Invocation through real HTTP against a real `faasbox up` with real runtime processes."""

from __future__ import annotations

import concurrent.futures
import json

import httpx

from tests.support import deploy, error_code, wait_for

ECHO = """
import json

def handle(event, context):
    return {
        "statusCode": 201,
        "headers": {"X-Echo": "yes", "Content-Type": "application/json"},
        "body": {
            "method": event.method,
            "path": event.path,
            "query": event.query,
            "query_string": event.query_string,
            "header": event.headers.get("X-Custom"),
            "header_ci": event.headers["x-CUSTOM"],
            "body": event.body.decode(),
            "call_id": context.call_id,
            "function": context.function_name,
            "remaining_ok": 0 < context.remaining_time() <= 30,
        },
    }
"""


def test_request_reaches_handler_and_response_comes_back(client: httpx.Client) -> None:
    deploy(client, "inv-echo", ECHO)
    r = client.put(
        "/function/inv-echo/items/42?color=red&n=1",
        content=b"hello body",
        headers={"X-Custom": "abc"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["x-echo"] == "yes"
    data = r.json()
    assert data["method"] == "PUT"
    assert data["path"] == "/items/42"
    assert data["query"] == {"color": "red", "n": "1"}
    assert data["query_string"] == "color=red&n=1"
    assert data["header"] == "abc" and data["header_ci"] == "abc"
    assert data["body"] == "hello body"
    assert data["function"] == "inv-echo"
    assert data["remaining_ok"] is True
    # The platform's headers
    assert r.headers["x-call-id"] == data["call_id"]
    assert int(r.headers["x-start-time"]) > 1_600_000_000 * 10**9
    assert float(r.headers["x-duration-seconds"]) >= 0
    assert r.headers["x-faasbox-cold-start"] in ("true", "false")
    # No path suffix → "/"
    assert client.get("/function/inv-echo", headers={"X-Custom": "1"}).json()["path"] == "/"


def test_first_call_is_cold_then_warm(client: httpx.Client) -> None:
    deploy(client, "inv-cold", "def handle(event, context):\n    return 'ok'\n")
    first = client.get("/function/inv-cold")
    second = client.get("/function/inv-cold")
    assert first.headers["x-faasbox-cold-start"] == "true"
    assert second.headers["x-faasbox-cold-start"] == "false"
    rec = client.get(f"/system/activations/{first.headers['x-call-id']}").json()
    assert rec["coldStart"] is True and rec["initMs"] > 0
    rec2 = client.get(f"/system/activations/{second.headers['x-call-id']}").json()
    assert rec2["coldStart"] is False
    assert rec2["replica"] == rec["replica"], "warm call must reuse the replica"
    # Call ids differ where people look (the first characters), not only at the end.
    assert first.headers["x-call-id"][:8] != second.headers["x-call-id"][:8]
    assert len(first.headers["x-call-id"]) == 32


def test_return_value_mapping(client: httpx.Client) -> None:
    code = """
    import asyncio

    def handle(event, context):
        kind = event.query.get("kind")
        if kind == "str":
            return "plain text"
        if kind == "bytes":
            return b"\\x00\\x01raw"
        if kind == "dict":
            return {"a": 1}
        if kind == "list":
            return [1, 2]
        if kind == "none":
            return None
        if kind == "b64":
            return {"statusCode": 200, "body": "aGk=", "isBase64Encoded": True}
        return {"statusCode": 418, "body": "teapot", "headers": {"X-T": "1"}}
    """
    deploy(client, "inv-map", code)
    r = client.get("/function/inv-map?kind=str")
    assert (r.text, r.headers["content-type"]) == ("plain text", "text/plain; charset=utf-8")
    r = client.get("/function/inv-map?kind=bytes")
    assert r.content == b"\x00\x01raw"
    assert r.headers["content-type"] == "application/octet-stream"
    r = client.get("/function/inv-map?kind=dict")
    assert r.json() == {"a": 1} and r.headers["content-type"] == "application/json"
    assert client.get("/function/inv-map?kind=list").json() == [1, 2]
    r = client.get("/function/inv-map?kind=none")
    assert r.status_code == 200 and r.content == b""
    assert client.get("/function/inv-map?kind=b64").content == b"hi"
    r = client.get("/function/inv-map")
    assert (r.status_code, r.text, r.headers["x-t"]) == (418, "teapot", "1")


def test_classic_one_argument_handler(client: httpx.Client) -> None:
    deploy(client, "inv-classic", "def handle(req):\n    return req.upper()\n")
    r = client.post("/function/inv-classic", content="shout")
    assert r.status_code == 200 and r.text == "SHOUT"


def test_handlers_that_are_not_plain_functions(client: httpx.Client) -> None:
    # A callable object and a functools.partial: the runtime reads their signature with
    # inspect rather than from a code object.
    code = """
    import functools

    class Greeter:
        def __call__(self, event, context):
            return "object:" + event.text

    greet = Greeter()

    async def _tagged(tag, event, context):
        return tag + event.text

    tagged = functools.partial(_tagged, "partial:")
    """
    deploy(client, "inv-object", code, handler="handler.greet")
    deploy(client, "inv-partial", code, handler="handler.tagged")
    assert client.post("/function/inv-object", content="x").text == "object:x"
    assert client.post("/function/inv-partial", content="y").text == "partial:y"


def test_async_handler_with_concurrency(client: httpx.Client) -> None:
    code = """
    import asyncio

    async def handle(event, context):
        await asyncio.sleep(0.3)
        return {"id": event.query["i"]}
    """
    deploy(client, "inv-async", code, concurrency=4, labels={"com.openfaas.scale.max": "1"})
    client.get("/function/inv-async?i=warm")
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda i: client.get(f"/function/inv-async?i={i}"), range(4)))
    assert sorted(r.json()["id"] for r in rs) == ["0", "1", "2", "3"]
    durations = [float(r.headers["x-duration-seconds"]) for r in rs]
    # One replica with concurrency 4 runs them side by side, not one after another.
    assert max(durations) < 1.1, durations
    assert client.get("/system/function/inv-async").json()["replicas"] == 1


def test_print_goes_to_logs_not_response(client: httpx.Client) -> None:
    code = """
    import logging, sys

    def handle(event, context):
        print("printed-line", context.call_id)
        logging.getLogger("fn").warning("logged-line")
        logging.getLogger("fn").info("info-line")
        sys.stderr.write("stderr-line\\n")
        return "body-only"
    """
    deploy(client, "inv-logs", code)
    r = client.get("/function/inv-logs")
    assert r.text == "body-only"
    call_id = r.headers["x-call-id"]

    def lines() -> list[dict[str, str]]:
        text = client.get("/system/logs", params={"name": "inv-logs"}).text
        return [json.loads(x) for x in text.splitlines() if x.strip()]

    got = wait_for(lambda: (ls := lines()) and any("stderr-line" in x["text"] for x in ls) and ls)
    texts = {x["text"]: x for x in got}
    printed = next(x for t, x in texts.items() if t.startswith("printed-line"))
    assert printed["call_id"] == call_id
    assert printed["instance"].startswith("inv-logs-")
    assert printed["stream"] == "stdout"
    logged = next(x for t, x in texts.items() if "logged-line" in t)
    assert logged["call_id"] == call_id and logged["stream"] == "stderr"
    # The runtime configures logging (INFO, "LEVEL name: message") when a function imports it.
    assert "INFO fn: info-line" in texts and "WARNING fn: logged-line" in texts


def test_unknown_function_is_404(client: httpx.Client) -> None:
    r = client.get("/function/does-not-exist")
    assert r.status_code == 404 and error_code(r) == "function_not_found"
