"""Secrets end to end: /system/secrets over real HTTP, values encrypted at rest and kept
across restarts, and read by real sandboxed replicas at /var/openfaas/secrets/<name>
(``$FAASBOX_SECRETS_DIR`` on the process backend, which cannot mount). Every test checks
that a value shows up nowhere it should not."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, deploy, error_code

MOUNT = "/var/openfaas/secrets"

# Reports what it can read, as digests: the response never carries a value either.
READER = f"""
import hashlib, os

def _digest(directory, name):
    try:
        with open(os.path.join(directory, name), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def handle(event, context):
    name = event.query["name"]
    env_dir = os.environ.get("FAASBOX_SECRETS_DIR")
    print("reader called for", name)
    return {{
        "mount": _digest("{MOUNT}", name),
        "mount_exists": os.path.exists(os.path.join("{MOUNT}", name)),
        "env_dir": env_dir,
        "via_env": _digest(env_dir, name) if env_dir else None,
    }}
"""


def sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def fresh_value() -> bytes:
    return f"v-{secrets.token_hex(16)}".encode()


def backend(c: httpx.Client) -> str:
    return str(c.get("/system/info").json()["provider"]["sandbox"]["backend"])


def read_secret(c: httpx.Client, function: str, name: str) -> str | None:
    """The digest of ``name`` as ``function`` sees it where its backend puts secrets."""
    r = c.get(f"/function/{function}", params={"name": name})
    assert r.status_code == 200, r.text
    facts = r.json()
    return facts["via_env" if backend(c) == "process" else "mount"]  # type: ignore[no-any-return]


def files_containing(root: Path, needle: bytes) -> list[Path]:
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def assert_nowhere(c: httpx.Client, srv: Server, *values: bytes) -> None:
    """No value in any listing, status, log, activation, metric or platform output."""
    seen = [
        c.get("/system/secrets").content,
        c.get("/system/functions").content,
        c.get("/system/logs").content,
        c.get("/system/activations", params={"limit": 10_000}).content,
        c.get("/metrics").content,
        "".join(srv.output).encode(),
    ]
    for fn in c.get("/system/functions").json():
        seen.append(c.get(f"/system/function/{fn['name']}").content)
    for value in values:
        for text in seen:
            assert value not in text
            assert base64.b64encode(value) not in text


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("secrets-data")).start()
    yield server
    server.stop()


@pytest.fixture
def c(srv: Server) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def test_crud(c: httpx.Client, srv: Server) -> None:
    value, other = fresh_value(), fresh_value()
    r = c.post("/system/secrets", json={"name": "crud-key", "value": value.decode()})
    assert r.status_code == 201 and r.json() == {"name": "crud-key"}
    listed = c.get("/system/secrets").json()
    assert {"name": "crud-key", "namespace": "faasbox"} in listed
    assert all(set(s) == {"name", "namespace"} for s in listed)

    r = c.post("/system/secrets", json={"name": "crud-key", "value": other.decode()})
    assert r.status_code == 409 and error_code(r) == "conflict"
    assert "crud-key" in r.json()["error"]["message"]

    r = c.put("/system/secrets", json={"name": "crud-key", "value": other.decode()})
    assert r.status_code == 200 and r.json() == {"name": "crud-key"}
    r = c.put("/system/secrets", json={"name": "crud-nope", "value": "x"})
    assert r.status_code == 404 and error_code(r) == "not_found"
    assert "crud-nope" in r.json()["error"]["message"]

    binary = b"\x00\xff\n" + fresh_value()
    r = c.post(
        "/system/secrets",
        json={"name": "crud.raw_1", "rawValue": base64.b64encode(binary).decode()},
    )
    assert r.status_code == 201, r.text

    r = c.request("DELETE", "/system/secrets", json={"name": "crud-key"})
    assert r.status_code == 200 and "crud-key" in r.json()["message"]
    r = c.request("DELETE", "/system/secrets", json={"name": "crud-key"})
    assert r.status_code == 404 and error_code(r) == "not_found"
    names = [s["name"] for s in c.get("/system/secrets").json()]
    assert "crud-key" not in names and "crud.raw_1" in names
    assert c.request("DELETE", "/system/secrets", json={"name": "crud.raw_1"}).status_code == 200
    assert_nowhere(c, srv, value, other, binary)


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ({"name": "Bad_Name", "value": "x"}, 400, "invalid_name", "invalid secret name"),
        ({"name": "-lead", "value": "x"}, 400, "invalid_name", "invalid secret name"),
        ({"name": "a" * 254, "value": "x"}, 400, "invalid_name", "at most 253"),
        ({"name": "a/b", "value": "x"}, 400, "invalid_name", "invalid secret name"),
        ({"name": "trailing\n", "value": "x"}, 400, "invalid_name", "invalid secret name"),
        ({"value": "x"}, 400, "bad_request", '"name"'),
        ({"name": 3, "value": "x"}, 400, "bad_request", '"name"'),
        ({"name": "ok"}, 400, "bad_request", "needs a value"),
        ({"name": "ok", "value": ""}, 400, "bad_request", "empty"),
        ({"name": "ok", "value": 5}, 400, "bad_request", '"value" must be a string'),
        ({"name": "ok", "value": "x", "rawValue": "eA=="}, 400, "bad_request", "not both"),
        ({"name": "ok", "rawValue": "not base64!"}, 400, "bad_request", "not valid base64"),
        ({"name": "ok", "valeu": "x"}, 400, "bad_request", "did you mean 'value'"),
        ({"name": "ok", "value": "x" * (1024 * 1024 + 1)}, 413, "payload_too_large", "1024 KiB"),
    ],
)
def test_validation(
    c: httpx.Client, body: dict[str, object], status: int, code: str, says: str
) -> None:
    for method in ("POST", "PUT"):
        r = c.request(method, "/system/secrets", json=body)
        assert r.status_code == status, r.text
        assert error_code(r) == code
        message = r.json()["error"]["message"]
        assert says in message
        for key in ("value", "rawValue"):
            value = body.get(key)
            if isinstance(value, str) and len(value) > 1:
                assert value not in message
    assert "ok" not in [s["name"] for s in c.get("/system/secrets").json()]


def test_bad_bodies(c: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE"):
        r = c.request(method, "/system/secrets", content=b'{"name": "x", "value": "secr')
        assert r.status_code == 400 and error_code(r) == "bad_request"
        assert "secr" not in r.json()["error"]["message"]
        r = c.request(method, "/system/secrets", json=["x"])
        assert r.status_code == 400 and error_code(r) == "bad_request"
    # Too big to be a secret: refused before it is read in full.
    r = c.post("/system/secrets", content=b"x" * (2 * 1024 * 1024))
    assert r.status_code == 413 and error_code(r) == "payload_too_large"
    r = c.request("DELETE", "/system/secrets", json={"name": "Nope!"})
    assert r.status_code == 400 and error_code(r) == "invalid_name"


def test_functions_read_only_the_secrets_they_list(c: httpx.Client, srv: Server) -> None:
    value, other, newer = fresh_value(), fresh_value(), fresh_value()
    for name, v in (("fn-db-password", value), ("fn-other", other)):
        assert (
            c.post("/system/secrets", json={"name": name, "value": v.decode()}).status_code == 201
        )

    deploy(c, "sec-reader", READER, secrets=["fn-db-password"])
    deploy(c, "sec-plain", READER)
    on = backend(c)

    r = c.get("/function/sec-reader", params={"name": "fn-db-password"}).json()
    if on == "process":
        # No mount without isolation: the replica finds its files through the variable.
        assert r["env_dir"] and r["via_env"] == sha(value), r
    else:
        assert r["mount"] == sha(value) and r["env_dir"] == MOUNT, r
    # A secret the function does not list is not there at all.
    r = c.get("/function/sec-reader", params={"name": "fn-other"}).json()
    assert r["mount"] is None and not r["mount_exists"] and r["via_env"] is None, r
    # A function that lists none sees none, and has no secrets directory to look in.
    for name in ("fn-db-password", "fn-other"):
        r = c.get("/function/sec-plain", params={"name": name}).json()
        assert r == {"mount": None, "mount_exists": False, "env_dir": None, "via_env": None}

    # An update reaches replicas started after it; the running one keeps its value.
    r = c.put("/system/secrets", json={"name": "fn-db-password", "value": newer.decode()})
    assert r.status_code == 200
    assert read_secret(c, "sec-reader", "fn-db-password") == sha(value)
    r = c.post("/system/scale-function/sec-reader", json={"replicas": 0})
    assert r.status_code == 202
    assert read_secret(c, "sec-reader", "fn-db-password") == sha(newer)

    # Removing a secret a function lists is refused, naming the function.
    r = c.request("DELETE", "/system/secrets", json={"name": "fn-db-password"})
    assert r.status_code == 409 and error_code(r) == "conflict"
    assert "sec-reader" in r.json()["error"]["message"]

    assert_nowhere(c, srv, value, other, newer)

    # Once no function lists it, it can go.
    assert c.request("DELETE", "/system/functions", json={"functionName": "sec-reader"}).is_success
    assert c.request("DELETE", "/system/functions", json={"functionName": "sec-plain"}).is_success
    for name in ("fn-db-password", "fn-other"):
        assert c.request("DELETE", "/system/secrets", json={"name": name}).status_code == 200


def test_deploy_refuses_a_missing_secret(c: httpx.Client) -> None:
    r = deploy(c, "sec-missing", READER, secrets=["no-such-secret"], expect=400)
    assert error_code(r) == "bad_request"
    assert "'no-such-secret' does not exist" in r.json()["error"]["message"]
    assert c.get("/system/function/sec-missing").status_code == 404
    r = deploy(c, "sec-missing", READER, secrets=["Bad_Name"], expect=400)
    assert error_code(r) == "invalid_name"
    assert c.get("/system/function/sec-missing").status_code == 404

    # An update that adds a missing secret is refused too; the serving version stays.
    deploy(c, "sec-update", READER)
    r = deploy(c, "sec-update", READER, method="PUT", secrets=["nope-1", "nope-2"], expect=400)
    assert "'nope-1', 'nope-2'" in r.json()["error"]["message"]
    st = c.get("/system/function/sec-update").json()
    assert st["version"] == 1 and st["secrets"] == []
    assert c.request("DELETE", "/system/functions", json={"functionName": "sec-update"}).is_success


def test_encrypted_at_rest_and_kept_across_restarts(fresh_server: Server) -> None:
    data = fresh_server.data_dir
    value = fresh_value()
    fresh_server.start()
    key = data / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key_bytes = key.read_bytes()
    with fresh_server.client() as c:
        r = c.post("/system/secrets", json={"name": "at-rest", "value": value.decode()})
        assert r.status_code == 201
        assert stat.S_IMODE((data / "secrets").stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "secrets" / "at-rest").stat().st_mode) == 0o600
        assert files_containing(data, value) == []

        deploy(
            c,
            "sec-keep",
            READER,
            secrets=["at-rest"],
            labels={"com.openfaas.scale.min": "1"},
        )
        assert read_secret(c, "sec-keep", "at-rest") == sha(value)
        # While a replica runs, its own copy is the only plaintext: in its private,
        # owner-only directory, removed with it.
        copies = files_containing(data, value)
        assert copies and all(p.parent.name == ".secrets" for p in copies), copies
        for p in copies:
            assert p.parent.parent.parent == data / "run"
            assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    fresh_server.stop(signal.SIGTERM)
    assert files_containing(data, value) == []

    again = Server(data).start()
    try:
        assert key.read_bytes() == key_bytes
        with again.client() as c:
            assert "at-rest" in [s["name"] for s in c.get("/system/secrets").json()]
            assert read_secret(c, "sec-keep", "at-rest") == sha(value)
            left = files_containing(data, value)
    finally:
        again.stop(signal.SIGKILL)
    # A platform killed outright leaves its replicas' copies; the next one removes them.
    assert left and all(p.exists() for p in left)
    third = Server(data).start()
    try:
        assert not any(p.exists() for p in left)
        with third.client() as c:
            assert read_secret(c, "sec-keep", "at-rest") == sha(value)
            assert_nowhere(c, third, value)
    finally:
        third.stop()
