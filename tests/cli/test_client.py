"""faasbox.client against an in-memory transport: request shapes and error mapping.

(The real thing is exercised through the CLI in test_cli_e2e.py.)"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from faasbox.client import (
    CallTimeout,
    Client,
    ClientError,
    GatewayUnreachable,
    NotAGateway,
    normalize_url,
)

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def make_client() -> Iterator[Callable[[Handler], Client]]:
    made: list[Client] = []

    def make(handler: Handler) -> Client:
        c = Client("http://gw.test:8080/", 5.0, transport=httpx.MockTransport(handler))
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def error(status: int, code: str, message: str, detail: str | None = None) -> httpx.Response:
    err = {"code": code, "message": message}
    if detail:
        err["detail"] = detail
    return httpx.Response(status, json={"error": err})


def parse_multipart(request: httpx.Request) -> dict[str, tuple[str | None, str, bytes]]:
    raw = (
        b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.read()
    )
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = {}
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts[str(part.get_param("name", header="content-disposition"))] = (
            part.get_filename(),
            part.get_content_type(),
            payload,
        )
    return parts


def test_deploy_sends_spec_and_zip_as_multipart_and_waits(
    make_client: Callable[[Handler], Client],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": "hello", "status": "ready", "version": 1})

    progress: list[tuple[int, int]] = []
    zip_bytes = bytes(range(256)) * 1000  # binary, larger than one upload chunk
    status = make_client(handler).deploy(
        {"service": "hello", "runtime": "python3"},
        zip_bytes,
        update=False,
        on_upload=lambda sent, total: progress.append((sent, total)),
    )
    assert status["version"] == 1
    (req,) = seen
    assert req.method == "POST" and req.url.path == "/system/functions"
    assert req.url.params["wait"] == "true"
    parts = parse_multipart(req)
    assert parts["spec"][1] == "application/json"
    assert json.loads(parts["spec"][2]) == {"service": "hello", "runtime": "python3"}
    assert parts["code"][:2] == ("code.zip", "application/zip")
    assert parts["code"][2] == zip_bytes
    assert int(req.headers["content-length"]) == len(req.content)
    assert progress[-1] == (len(req.content), len(req.content))
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)


def test_deploy_update_uses_put_and_build_failure_carries_the_log(
    make_client: Callable[[Handler], Client],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "PUT"
        return error(400, "build_failed", "build of hello v2 failed", "pip: no such package\n")

    with pytest.raises(ClientError) as info:
        make_client(handler).deploy({"service": "hello"}, b"zip", update=True)
    exc = info.value
    assert (exc.status, exc.code, exc.message) == (400, "build_failed", "build of hello v2 failed")
    assert exc.detail == "pip: no such package\n"


def test_management_calls(make_client: Callable[[Handler], Client]) -> None:
    calls: list[tuple[str, str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, str(request.url.params), request.read()))
        if request.url.path == "/system/functions" and request.method == "GET":
            return httpx.Response(200, json=[{"name": "a"}])
        if request.url.path.startswith("/system/activations"):
            return httpx.Response(
                200, json=[] if request.url.path.endswith("s") else {"callId": "x"}
            )
        return httpx.Response(200, json={"name": "a"})

    c = make_client(handler)
    assert c.list_functions() == [{"name": "a"}]
    assert c.get_function("a") == {"name": "a"}
    c.delete_function("a")
    c.scale("a", 0)
    assert c.activations("a", 5) == []
    assert c.activations() == []
    assert c.activation("x") == {"callId": "x"}
    assert calls == [
        ("GET", "/system/functions", "", b""),
        ("GET", "/system/function/a", "", b""),
        ("DELETE", "/system/functions", "", b'{"functionName":"a"}'),
        ("POST", "/system/scale-function/a", "", b'{"serviceName":"a","replicas":0}'),
        ("GET", "/system/activations", "name=a&limit=5", b""),
        ("GET", "/system/activations", "", b""),
        ("GET", "/system/activations/x", "", b""),
    ]


def test_a_404_without_faasbox_error_shape_means_a_wrong_gateway_url(
    make_client: Callable[[Handler], Client],
) -> None:
    c = make_client(lambda r: httpx.Response(404, text="Not Found"))
    with pytest.raises(NotAGateway, match="does not look like a faasbox gateway") as info:
        c.get_function("ghost")
    assert info.value.status == 404
    assert "GET /system/function/ghost answered 404" in info.value.message
    with pytest.raises(NotAGateway):
        list(c.logs("ghost"))


def test_a_404_for_an_unknown_route_means_a_wrong_gateway_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return error(404, "not_found", "Not Found")

    with (
        Client("http://gw.test:8080/api/", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(NotAGateway) as info,
    ):
        c.list_functions()
    assert info.value.message == (
        "http://gw.test:8080/api does not look like a faasbox gateway (GET "
        "/api/system/functions answered 404 Not Found); a gateway URL has no path: try "
        "http://gw.test:8080"
    )


def test_404s_that_name_what_is_missing(make_client: Callable[[Handler], Client]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/system/activations/"):
            return error(404, "not_found", "activation 'abc' not found")
        return error(404, "function_not_found", "function 'nope' not found")

    c = make_client(handler)
    for call, message in [
        (lambda: c.get_function("nope"), "function 'nope' not found"),
        (lambda: c.activations("nope"), "function 'nope' not found"),
        (lambda: c.scale("nope", 1), "function 'nope' not found"),
        (lambda: c.activation("abc"), "activation 'abc' not found"),
    ]:
        with pytest.raises(ClientError) as info:
            call()
        assert not isinstance(info.value, NotAGateway)
        assert (info.value.status, info.value.message) == (404, message)


def test_activations_of_an_unknown_name_without_a_message(
    make_client: Callable[[Handler], Client],
) -> None:
    c = make_client(lambda r: httpx.Response(404, json={"error": {"code": "function_not_found"}}))
    with pytest.raises(ClientError, match="function 'nope' not found"):
        c.activations("nope")


def test_scale_returns_the_status_after_scaling(make_client: Callable[[Handler], Client]) -> None:
    c = make_client(lambda r: httpx.Response(202, json={"name": "a", "replicas": 5}))
    assert c.scale("a", 10) == {"name": "a", "replicas": 5}
    c = make_client(lambda r: httpx.Response(202))
    assert c.scale("a", 10) == {}


def test_invoke_read_timeout_is_a_call_timeout(make_client: Callable[[Handler], Client]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(CallTimeout) as info:
        make_client(handler).invoke("slow", timeout=0.5)
    assert (info.value.name, info.value.timeout) == ("slow", 0.5)
    assert not isinstance(info.value, GatewayUnreachable)


def test_other_errors_show_status_and_text(make_client: Callable[[Handler], Client]) -> None:
    c = make_client(lambda r: httpx.Response(502, text="bad gateway from a proxy"))
    with pytest.raises(ClientError, match="HTTP 502 Bad Gateway: bad gateway from a proxy"):
        c.list_functions()


def test_non_json_success_is_a_client_error(make_client: Callable[[Handler], Client]) -> None:
    c = make_client(lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(ClientError, match="expected JSON"):
        c.list_functions()


def test_invoke_builds_the_request_and_never_raises_on_status(
    make_client: Callable[[Handler], Client],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return error(500, "handler_error", "boom")

    c = make_client(handler)
    r = c.invoke(
        "hello",
        data=b"\x00body",
        path="users/1 2",
        query=[("a", "1"), ("a", "2")],
        headers=[("X-K", "v")],
    )
    assert r.status_code == 500
    assert c.invoke("hello").status_code == 500
    first, second = seen
    assert first.method == "POST" and first.url.raw_path == b"/function/hello/users/1%202?a=1&a=2"
    assert first.headers["x-k"] == "v" and first.content == b"\x00body"
    assert second.method == "GET" and second.url.path == "/function/hello"


def test_logs_are_parsed_line_by_line(make_client: Callable[[Handler], Client]) -> None:
    body = b'{"text": "one", "instance": "i1"}\n\nnot json\n{"text": "two"}\n'

    def handler(request: httpx.Request) -> httpx.Response:
        assert dict(request.url.params) == {
            "name": "fn",
            "follow": "true",
            "tail": "3",
            "since": "2024-01-01T00:00:00Z",
        }
        return httpx.Response(200, content=body, headers={"content-type": "application/x-ndjson"})

    lines = list(make_client(handler).logs("fn", tail=3, since="2024-01-01T00:00:00Z", follow=True))
    assert lines == [{"text": "one", "instance": "i1"}, {"text": "not json"}, {"text": "two"}]


def test_logs_of_an_unknown_function(make_client: Callable[[Handler], Client]) -> None:
    c = make_client(lambda r: error(404, "function_not_found", "function 'x' not found"))
    with pytest.raises(ClientError, match="function 'x' not found"):
        list(c.logs("x"))


def _all_httpx_errors() -> list[type[httpx.HTTPError]]:
    return sorted(
        (v for v in vars(httpx).values() if isinstance(v, type) and issubclass(v, httpx.HTTPError)),
        key=lambda t: t.__name__,
    )


@pytest.mark.parametrize("exc_type", _all_httpx_errors(), ids=lambda t: t.__name__)
def test_every_httpx_error_is_mapped(
    make_client: Callable[[Handler], Client], exc_type: type[httpx.HTTPError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if issubclass(exc_type, httpx.HTTPStatusError):
            raise exc_type("boom", request=request, response=httpx.Response(500))
        if issubclass(exc_type, httpx.RequestError):
            raise exc_type("boom", request=request)
        raise exc_type("boom")

    c = make_client(handler)
    for call in (c.list_functions, lambda: c.invoke("x"), lambda: list(c.logs("x"))):
        with pytest.raises(ClientError) as info:
            call()
        connect = issubclass(exc_type, httpx.ConnectError | httpx.ConnectTimeout)
        assert isinstance(info.value, GatewayUnreachable) == connect
        if isinstance(info.value, CallTimeout):
            # invoke: the gateway took the call and the function is slow
            assert exc_type is httpx.ReadTimeout
            assert info.value.message == "'x' did not answer within 600s"
        else:
            assert "gw.test:8080" in info.value.message


def test_gateway_urls() -> None:
    assert normalize_url("localhost:8080/") == "http://localhost:8080"
    assert normalize_url(" https://fb.example ") == "https://fb.example"
    with pytest.raises(ClientError, match="invalid gateway URL"):
        Client("ftp://x")
    with pytest.raises(ClientError, match="invalid gateway URL"):
        Client("http://")
