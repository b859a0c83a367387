"""The commands in-process against a fake gateway (an httpx mock transport): what they print
and their exit codes for answers a real gateway gives only in awkward states (a failed
update, a capped scale, a newer gateway's fields)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import faasbox.cli.state
from faasbox.cli.main import main
from faasbox.client import Client

Handler = Callable[[httpx.Request], httpx.Response]
GW = "http://gw.test:8080"


class Fake:
    def __init__(self) -> None:
        self.handler: Handler = lambda r: httpx.Response(500)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fake]:
    fake = Fake()

    def client(url: str, timeout: float = 30.0) -> Client:
        return Client(url, timeout, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(faasbox.cli.state, "Client", client)
    monkeypatch.delenv("FAASBOX_GATEWAY", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    yield fake


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def error(status: int, code: str, message: str, detail: str | None = None) -> httpx.Response:
    err = {"code": code, "message": message}
    if detail:
        err["detail"] = detail
    return httpx.Response(status, json={"error": err})


def fn_status(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "greeter",
        "runtime": "python3",
        "handler": "handler.handle",
        "version": 1,
        "latestVersion": 1,
        "status": "ready",
        "replicas": 0,
        "availableReplicas": 0,
        "invocationCount": 0,
        "labels": {},
        "limits": {},
    }
    base.update(kw)
    return base


# -- list and describe: which version serves ----------------------------------------------


@pytest.mark.parametrize(
    ("version", "latest", "status", "shown"),
    [
        (2, 2, "ready", "ready (v2)"),
        (2, 3, "failed", "ready (v2), v3 failed"),
        (2, 3, "building", "ready (v2), v3 building"),
        (1, 1, "failed", "failed"),
        (1, 1, "building", "building"),
    ],
)
def test_list_shows_the_serving_version_and_a_pending_or_failed_update(
    fake: Fake,
    capsys: pytest.CaptureFixture[str],
    version: int,
    latest: int,
    status: str,
    shown: str,
) -> None:
    fake.handler = lambda r: httpx.Response(
        200, json=[fn_status(version=version, latestVersion=latest, status=status)]
    )
    code, out, _ = run(capsys, "-g", GW, "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "REPLICAS"]
    assert row.startswith("greeter")
    assert row[len("greeter") :].strip().startswith(shown + "  ")


def test_list_without_latest_version_from_an_older_gateway(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    old = fn_status(version=4)
    del old["latestVersion"]
    fake.handler = lambda r: httpx.Response(200, json=[old])
    assert "ready (v4)" in run(capsys, "-g", GW, "list")[1]


def test_describe_a_failed_update_shows_both_versions_and_the_failed_build_log(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handler = lambda r: httpx.Response(
        200,
        json=fn_status(
            version=2,
            latestVersion=3,
            status="failed",
            buildLog="handler: importing handler.handle\nSyntaxError: expected ':'\n",
        ),
    )
    code, out, _ = run(capsys, "-g", GW, "describe", "greeter")
    assert code == 0
    assert "ready (v2), v3 failed" in out
    assert "serving      v2" in out
    assert "latest       v3 failed (v2 keeps serving)" in out
    assert "build log of v3 (failed):" in out
    assert "SyntaxError: expected ':'" in out


def test_describe_of_a_function_that_never_built(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handler = lambda r: httpx.Response(
        200, json=fn_status(status="failed", buildLog="pip: no such package\n")
    )
    out = run(capsys, "-g", GW, "describe", "greeter")[1]
    assert "status       failed" in out
    assert "serving      none" in out
    assert "build log of v1 (failed):" in out


def test_describe_shows_the_effective_timeout_and_memory_the_gateway_sends(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handler = lambda r: httpx.Response(
        200, json=fn_status(timeout="30s", limits={"memory": "256Mi"}, maxReplicas=5)
    )
    out = run(capsys, "-g", GW, "describe", "greeter")[1]
    assert "timeout      30s" in out
    assert "memory       256Mi" in out
    assert "replicas     0 available / 0 (max 5)" in out
    assert "build log" not in out


# -- scale -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "answer", "expected"),
    [
        (10, {"replicas": 5, "maxReplicas": 5}, "scaled 'greeter' to 5 replicas, not 10: capped at 5 (com.openfaas.scale.max)"),
        (10, {"replicas": 3, "labels": {"com.openfaas.scale.max": "3"}}, "scaled 'greeter' to 3 replicas, not 10: capped at 3 (com.openfaas.scale.max)"),
        (10, {"replicas": 5}, "scaled 'greeter' to 5 replicas, not 10: capped at 5 (com.openfaas.scale.max)"),
        (2, {"replicas": 2, "maxReplicas": 5}, "scaled 'greeter' to 2 replicas"),
        (1, {"replicas": 1}, "scaled 'greeter' to 1 replica"),
        (0, {"replicas": 0}, "scaled 'greeter' to 0 replicas"),
        (2, {"replicas": 4}, "'greeter' has 4 replicas, more than the 2 asked for"),
    ],
)  # fmt: skip
def test_scale_says_what_the_gateway_did(
    fake: Fake,
    capsys: pytest.CaptureFixture[str],
    wanted: int,
    answer: dict[str, object],
    expected: str,
) -> None:
    fake.handler = lambda r: httpx.Response(202, json=fn_status(**answer))
    code, out, _ = run(capsys, "-g", GW, "scale", "greeter", str(wanted))
    assert code == 0
    assert out.strip().startswith(expected), out
    (req,) = fake.requests
    assert json.loads(req.content) == {"serviceName": "greeter", "replicas": wanted}


def test_scale_with_an_empty_answer(fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    fake.handler = lambda r: httpx.Response(202)
    assert run(capsys, "-g", GW, "scale", "greeter", "3")[1].strip() == (
        "scaled 'greeter' to 3 replicas"
    )


# -- errors and exit codes -----------------------------------------------------------------


def test_activations_of_an_unknown_function(fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    fake.handler = lambda r: error(404, "function_not_found", "function 'nope' not found")
    for args in (["activations", "nope"], ["activations", "nope", "--json"]):
        code, out, err = run(capsys, "-g", GW, *args)
        assert (code, out, err) == (1, "", "error: function 'nope' not found\n")


def test_activations_of_an_unknown_function_on_a_gateway_that_answers_empty(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/system/activations":
            return httpx.Response(200, json=[])
        return error(404, "function_not_found", "function 'nope' not found")

    fake.handler = handler
    assert run(capsys, "-g", GW, "activations", "nope")[:3:2] == (
        1,
        "error: function 'nope' not found\n",
    )
    fake.handler = lambda r: httpx.Response(
        200, json=[] if r.url.path == "/system/activations" else fn_status()
    )
    assert run(capsys, "-g", GW, "activations", "greeter")[:2] == (0, "no activations yet\n")


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(404, text="Not Found"),  # some other web server
        httpx.Response(404, json={"detail": "Not Found"}),
        error(404, "not_found", "Not Found"),  # faasbox, but the route is unknown
    ],
)
def test_a_gateway_url_with_a_path_is_not_a_faasbox_gateway(
    fake: Fake, capsys: pytest.CaptureFixture[str], answer: httpx.Response
) -> None:
    fake.handler = lambda r: answer
    code, out, err = run(capsys, "-g", GW + "/system", "list")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {GW}/system does not look like a faasbox gateway")
    assert "GET /system/system/functions answered 404" in err
    assert f"try {GW}" in err
    code, _, err = run(capsys, "-g", GW, "describe", "greeter")
    assert code == 2 and "does not look like a faasbox gateway" in err
    assert "try" not in err  # no path to drop


def test_invoke_timeout_says_the_call_was_slow(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"]["read"] == 0.2
        raise httpx.ReadTimeout("timed out", request=request)

    fake.handler = handler
    code, out, err = run(capsys, "-g", GW, "invoke", "slow", "--timeout", "0.2")
    assert (code, out) == (1, "")
    assert err.startswith("error: the call to 'slow' took longer than --timeout 0.2s")
    assert "--timeout SECONDS" in err
    assert "timed out waiting for faasbox" not in err


def test_invoke_passes_the_functions_own_404_through(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handler = lambda r: httpx.Response(404, text="no such item")
    code, out, err = run(capsys, "-g", GW, "invoke", "api", "--path", "/items/9")
    assert (code, out) == (1, "no such item")
    assert "404" in err and "faasbox gateway" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["describe", "Bad_Name"],
        ["rm", "-x"],
        ["scale", "UPPER", "1"],
        ["logs", "a" * 64],
        ["invoke", "no_underscores"],
        ["activations", "Bad_Name"],
        ["new", "Bad_Name"],
        ["new", "ok", "--lang", "node"],
        ["-g", "ftp://x", "list"],
        ["scale", "greeter"],
        ["nosuchcommand"],
        ["list", "--bogus"],
    ],
)
def test_usage_errors_exit_2_before_asking_the_gateway(
    fake: Fake, capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    code, out, err = run(capsys, *args, *(["--dir", str(tmp_path)] if args[0] == "new" else []))
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("error: ")
    assert lines[-1].startswith("Try 'faasbox") and lines[-1].endswith("--help' for help.")
    assert fake.requests == []
    assert list(tmp_path.iterdir()) == []


def test_server_side_errors_exit_1(fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    fake.handler = lambda r: error(404, "function_not_found", "function 'nope' not found")
    for args in (["describe", "nope"], ["rm", "nope"], ["scale", "nope", "1"], ["logs", "nope"]):
        assert run(capsys, "-g", GW, *args)[::2] == (1, "error: function 'nope' not found\n")


# -- new: the hint names the gateway --------------------------------------------------------


def test_new_hint_keeps_a_gateway_given_on_the_command_line(
    fake: Fake,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = run(capsys, "--gateway", "10.0.0.5:8080", "new", "one")[1]
    assert "  faasbox --gateway http://10.0.0.5:8080 deploy one\n" in out
    assert "  faasbox --gateway http://10.0.0.5:8080 invoke one --data 'hi'\n" in out
    # the default needs no flag, and FAASBOX_GATEWAY is still set for the next command
    out = run(capsys, "-g", "http://127.0.0.1:8080/", "new", "two")[1]
    assert "  faasbox deploy two\n" in out
    monkeypatch.setenv("FAASBOX_GATEWAY", "http://10.0.0.5:8080")
    out = run(capsys, "new", "three")[1]
    assert "  faasbox deploy three\n" in out and "--gateway" not in out
    assert fake.requests == []
