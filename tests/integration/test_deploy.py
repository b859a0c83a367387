"""Deploy, update, list, describe and remove through real HTTP; every bad input."""

from __future__ import annotations

import base64
import io
import json
import stat
import time
import zipfile

import httpx
import pytest

from tests.support import deploy, error_code, make_zip, wait_for

HELLO = "def handle(event, context):\n    return 'v1'\n"


def _raw_deploy(
    client: httpx.Client, spec: dict, code: bytes, method: str = "POST"
) -> httpx.Response:
    return client.request(
        method,
        "/system/functions?wait=true",
        files={"spec": (None, json.dumps(spec), "application/json"), "code": ("c.zip", code)},
    )


def test_deploy_json_body_and_lifecycle(client: httpx.Client) -> None:
    body = {
        "service": "dep-json",
        "runtime": "python3",
        "handler": "handler.handle",
        "code": {"zip": base64.b64encode(make_zip({"handler.py": HELLO})).decode()},
        "envVars": {"GREETING": "hi"},
        "labels": {"team": "a"},
        "limits": {"memory": "128Mi"},
        "timeout": "10s",
    }
    r = client.post("/system/functions?wait=true", json=body)
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["name"] == "dep-json" and st["status"] == "ready" and st["version"] == 1
    assert "ready" in st["buildLog"]
    assert client.get("/function/dep-json").text == "v1"
    one = client.get("/system/function/dep-json").json()
    for key in (
        "name",
        "namespace",
        "runtime",
        "handler",
        "version",
        "status",
        "replicas",
        "availableReplicas",
        "invocationCount",
        "envVars",
        "labels",
        "annotations",
        "limits",
        "timeout",
        "concurrency",
        "createdAt",
    ):
        assert key in one, key
    assert one["envVars"] == {"GREETING": "hi"} and one["invocationCount"] == 1
    names = [f["name"] for f in client.get("/system/functions").json()]
    assert "dep-json" in names
    r = client.request("DELETE", "/system/functions", json={"functionName": "dep-json"})
    assert r.status_code == 200
    assert client.get("/system/function/dep-json").status_code == 404
    assert client.get("/function/dep-json").status_code == 404
    r = client.request("DELETE", "/system/functions", json={"functionName": "dep-json"})
    assert r.status_code == 404


def test_env_vars_reach_the_function_and_host_env_does_not(client: httpx.Client) -> None:
    code = """
    import os
    def handle(event, context):
        return {"greeting": os.environ.get("GREETING"), "home": os.environ.get("HOME"),
                "leak": [k for k in os.environ if k.startswith(("PYTEST", "VIRTUAL_ENV", "CI"))]}
    """
    deploy(client, "dep-env", code, envVars={"GREETING": "hola"})
    data = client.get("/function/dep-env").json()
    assert data["greeting"] == "hola"
    assert data["leak"] == []


def test_post_existing_is_409_and_put_unknown_is_404(client: httpx.Client) -> None:
    deploy(client, "dep-conflict", HELLO)
    r = deploy(client, "dep-conflict", HELLO, expect=409)
    assert error_code(r) == "conflict"
    r = deploy(client, "dep-never-was", HELLO, method="PUT", expect=404)
    assert error_code(r) == "function_not_found"


@pytest.mark.parametrize("name", ["Bad_Name", "-lead", "trail-", "a" * 64, "dots.no", ""])
def test_invalid_names_are_400(client: httpx.Client, name: str) -> None:
    r = deploy(client, name, HELLO, expect=400)
    assert error_code(r) in ("invalid_name", "bad_request")


def test_malformed_bodies_are_400(client: httpx.Client) -> None:
    r = client.post(
        "/system/functions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and error_code(r) == "bad_request"
    r = client.post("/system/functions", json={"service": "dep-nocode"})
    assert r.status_code == 400 and "code" in r.json()["error"]["message"]
    r = client.post("/system/functions", json={"service": "dep-b64", "code": {"zip": "@@@"}})
    assert r.status_code == 400 and "base64" in r.json()["error"]["message"]
    r = client.post(
        "/system/functions",
        content=b"--xyz\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 400
    r = client.post("/system/functions", files={"spec": (None, "{}")})
    assert r.status_code == 400 and "code" in r.json()["error"]["message"]
    r = client.post("/system/functions", files={"spec": (None, "[1]"), "code": ("c.zip", b"x")})
    assert r.status_code == 400
    r = _raw_deploy(client, {"service": "dep-x", "concurrency": 0}, make_zip({"handler.py": HELLO}))
    assert r.status_code == 400 and "concurrency" in r.json()["error"]["message"]
    r = _raw_deploy(
        client, {"service": "dep-x", "runtime": "cobol"}, make_zip({"handler.py": HELLO})
    )
    assert r.status_code == 400 and "runtime" in r.json()["error"]["message"]
    r = _raw_deploy(
        client,
        {"service": "dep-x", "labels": {"com.openfaas.scale.max": "lots"}},
        make_zip({"handler.py": HELLO}),
    )
    assert r.status_code == 400 and "scale.max" in r.json()["error"]["message"]
    r = _raw_deploy(
        client, {"service": "dep-x", "limits": {"memory": "huge"}}, make_zip({"handler.py": HELLO})
    )
    assert r.status_code == 400 and "memory" in r.json()["error"]["message"]
    assert client.get("/system/function/dep-x").status_code == 404


def _zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link.py")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        (b"this is not a zip", "not a valid zip"),
        (_zip_with([("handler.py", HELLO.encode()), ("/etc/evil", b"x")]), "absolute"),
        (_zip_with([("handler.py", HELLO.encode()), ("../../evil.py", b"x")]), ".."),
        (
            _zip_with([("handler.py", HELLO.encode()), (_symlink_entry(), b"/etc/passwd")]),
            "symlink",
        ),
    ],
    ids=["not-zip", "absolute", "dotdot", "symlink"],
)
def test_unsafe_bundles_are_400(client: httpx.Client, bundle: bytes, message: str) -> None:
    r = _raw_deploy(client, {"service": "dep-unsafe"}, bundle)
    assert r.status_code == 400, r.text
    assert error_code(r) == "invalid_bundle"
    assert message in r.json()["error"]["message"]
    assert client.get("/system/function/dep-unsafe").status_code == 404


def test_bundle_that_unpacks_too_large_is_400(client: httpx.Client) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("handler.py", HELLO)
        zf.writestr("zeros.bin", b"\0" * (300 * 1024 * 1024))  # compresses to ~300 KiB
    r = _raw_deploy(client, {"service": "dep-bomb"}, buf.getvalue())
    assert r.status_code == 400 and "MiB" in r.json()["error"]["message"]
    assert client.get("/system/function/dep-bomb").status_code == 404


@pytest.mark.parametrize(
    ("files", "handler", "needle"),
    [
        ({"handler.py": HELLO}, "missing.handle", "No module named 'missing'"),
        ({"handler.py": HELLO}, "handler.nope", "has no function 'nope'"),
        ({"handler.py": "def handle(:\n"}, "handler.handle", "SyntaxError"),
        ({"handler.py": "import not_installed_pkg\n"}, "handler.handle", "not_installed_pkg"),
    ],
    ids=["no-module", "no-function", "syntax", "import-error"],
)
def test_bad_handler_fails_deploy_with_build_log(
    client: httpx.Client, files: dict[str, str], handler: str, needle: str
) -> None:
    r = deploy(client, "dep-badhandler", files=files, handler=handler, expect=400)
    err = r.json()["error"]
    assert err["code"] == "build_failed"
    assert needle in err["message"] or needle in err["detail"], err
    assert "handler: importing" in err["detail"]
    # Nothing half-deployed
    assert client.get("/system/function/dep-badhandler").status_code == 404
    assert "dep-badhandler" not in [f["name"] for f in client.get("/system/functions").json()]


def test_update_rolls_to_new_version(client: httpx.Client) -> None:
    code = """
    import time
    VERSION = "{v}"
    def handle(event, context):
        if event.query.get("slow"):
            time.sleep(1.5)
        return VERSION
    """
    deploy(client, "dep-roll", code.replace("{v}", "one"))
    assert client.get("/function/dep-roll").text == "one"
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        slow = ex.submit(client.get, "/function/dep-roll?slow=1")
        wait_for(lambda: client.get("/system/function/dep-roll").json()["inflight"] == 1)
        r = deploy(client, "dep-roll", code.replace("{v}", "two"), method="PUT")
        assert r.json()["version"] == 2
        assert client.get("/function/dep-roll").text == "two"
        # The in-flight call finished on the version it started on.
        assert slow.result().text == "one"
    # Old replicas drain and stop.
    wait_for(lambda: client.get("/system/function/dep-roll").json()["replicas"] == 1)


def test_failed_update_keeps_serving_old_version(client: httpx.Client) -> None:
    deploy(client, "dep-badupdate", HELLO)
    r = deploy(client, "dep-badupdate", "def handle(:\n", method="PUT", expect=400)
    assert error_code(r) == "build_failed"
    assert client.get("/function/dep-badupdate").text == "v1"
    st = client.get("/system/function/dep-badupdate").json()
    assert st["version"] == 1 and st["status"] == "failed" and "SyntaxError" in st["buildLog"]


def test_deploy_without_wait_is_202_then_ready(client: httpx.Client) -> None:
    r = deploy(client, "dep-async", HELLO, wait=False, expect=202)
    assert r.json()["status"] in ("building", "ready")
    wait_for(lambda: client.get("/system/function/dep-async").json()["status"] == "ready")
    assert client.get("/function/dep-async").text == "v1"


def test_deploy_without_wait_failing_build_is_visible(client: httpx.Client) -> None:
    deploy(
        client,
        "dep-async-bad",
        files={"handler.py": HELLO},
        handler="nope.handle",
        wait=False,
        expect=202,
    )
    st = wait_for(
        lambda: (
            (s := client.get("/system/function/dep-async-bad").json())["status"] == "failed" and s
        )
    )
    assert "No module named 'nope'" in st["buildLog"]
    r = client.get("/function/dep-async-bad")
    assert r.status_code == 503 and error_code(r) == "function_not_ready"


def test_system_info_and_health(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    info = client.get("/system/info").json()
    assert info["provider"]["provider"] == "faasbox"
    assert "version" in info and "arch" in info


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    r = client.get("/system/nothing-here")
    assert r.status_code == 404 and error_code(r) == "not_found"


def test_redeploying_identical_code_and_spec_makes_no_new_version(client: httpx.Client) -> None:
    deploy(client, "dep-same", HELLO, envVars={"A": "1"})
    r = deploy(client, "dep-same", HELLO, envVars={"A": "1"}, method="PUT").json()
    assert r["unchanged"] is True and r["deployedVersion"] == 1 and r["version"] == 1
    r = deploy(client, "dep-same", HELLO, envVars={"A": "2"}, method="PUT").json()
    assert r["unchanged"] is False and r["deployedVersion"] == 2


def test_status_shows_effective_defaults(client: httpx.Client) -> None:
    deploy(client, "dep-defaults", HELLO)
    st = client.get("/system/function/dep-defaults").json()
    assert st["timeout"] == "30s" and st["limits"]["memory"] == "256Mi"
    assert (st["minReplicas"], st["maxReplicas"]) == (0, 5)


def test_unknown_spec_field_suggests_the_right_one(client: httpx.Client) -> None:
    r = _raw_deploy(
        client, {"service": "dep-typo", "envVar": {"A": "1"}}, make_zip({"handler.py": HELLO})
    )
    assert r.status_code == 400
    assert "did you mean 'envVars'" in r.json()["error"]["message"]


def test_build_log_traceback_shows_only_the_functions_own_frames(client: httpx.Client) -> None:
    code = "import json\n\ndef helper():\n    raise RuntimeError('broken at import')\n\nhelper()\n"
    r = deploy(client, "dep-trace", code, expect=400)
    detail = r.json()["error"]["detail"]
    assert 'File "handler.py", line 6' in detail and "RuntimeError: broken at import" in detail
    assert "bootstrap.py" not in detail and "importlib" not in detail


def test_function_removed_while_building_never_serves(client: httpx.Client) -> None:
    slow_import = (
        "import time\ntime.sleep(1.5)\n\ndef handle(event, context):\n    return 'ghost'\n"
    )
    deploy(client, "dep-ghost", slow_import, wait=False, expect=202)
    r = client.request("DELETE", "/system/functions", json={"functionName": "dep-ghost"})
    assert r.status_code == 200
    time.sleep(3)  # let the build that was running finish: nothing may come of it
    assert client.get("/function/dep-ghost").status_code == 404
    assert client.get("/system/function/dep-ghost").status_code == 404
