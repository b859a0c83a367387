"""`faasbox secret ...` as a user runs it: `python -m faasbox` subprocesses against the
shared real `faasbox up` (``gateway_url``), values from --from-literal, --from-file and
stdin, checked from inside a function deployed with the CLI. Names start with ``cli-``."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.support import Server

# Reports the digest of every secret it can read: values stay out of its answer too.
READER = """
import hashlib, os


def handle(event, context):
    directory = os.environ.get("FAASBOX_SECRETS_DIR", "/var/openfaas/secrets")
    found = {}
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                found[name] = hashlib.sha256(f.read()).hexdigest()
    return found
"""


def run(
    *args: str, gateway: str, input: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "FAASBOX_GATEWAY"}
    return subprocess.run(
        [sys.executable, "-m", "faasbox", "--gateway", gateway, *args],
        cwd=cwd,
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=90,
    )


def ok(r: subprocess.CompletedProcess[bytes]) -> str:
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    return out


def failed(r: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = r.stderr.decode()
    assert r.returncode == code, f"exit {r.returncode}\nstdout:\n{r.stdout!r}\nstderr:\n{err}"
    assert "Traceback" not in err and "error: " in err
    return err


def sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def test_create_list_update_rm(tmp_path: Path, gateway_url: str, server: Server) -> None:
    gw = gateway_url
    literal = f"lit-{secrets.token_hex(8)}".encode()
    from_file = b"file-" + secrets.token_hex(8).encode() + b"\n\x00\xff tail\n"
    piped = f"pipe-{secrets.token_hex(8)}".encode()
    newer = f"new-{secrets.token_hex(8)}".encode()
    values = (literal, from_file, piped, newer)
    outputs: list[bytes] = []

    def check(r: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
        outputs.extend((r.stdout, r.stderr))
        return r

    (tmp_path / "value.bin").write_bytes(from_file)
    out = ok(
        check(run("secret", "create", "cli-lit", "--from-literal", literal.decode(), gateway=gw))
    )
    assert out.strip() == "created secret 'cli-lit'"
    ok(
        check(
            run(
                "secret",
                "create",
                "cli-file",
                "--from-file",
                str(tmp_path / "value.bin"),
                gateway=gw,
            )
        )
    )
    # Piped: the newline echo adds is not part of the value.
    ok(check(run("secret", "create", "cli-pipe", gateway=gw, input=piped + b"\n")))

    out = ok(check(run("secret", "list", gateway=gw)))
    lines = out.splitlines()
    assert lines[0].strip() == "NAME"
    assert {"cli-lit", "cli-file", "cli-pipe"} <= {line.strip() for line in lines[1:]}
    listed = json.loads(ok(check(run("secret", "list", "--json", gateway=gw))))
    assert {"name": "cli-pipe", "namespace": "faasbox"} in listed

    # A function that lists them reads each value exactly as given.
    fn = tmp_path / "cli-secret-reader"
    fn.mkdir()
    (fn / "handler.py").write_text(READER)
    (tmp_path / "faasbox.yml").write_text(
        "version: 1\nfunctions:\n  cli-secret-reader:\n    secrets: [cli-lit, cli-file, cli-pipe]\n"
    )
    ok(check(run("deploy", gateway=gw, cwd=tmp_path)))
    seen = json.loads(ok(check(run("invoke", "cli-secret-reader", gateway=gw))))
    ok(check(run("describe", "cli-secret-reader", gateway=gw)))
    ok(check(run("activations", "cli-secret-reader", gateway=gw)))
    assert seen == {"cli-file": sha(from_file), "cli-lit": sha(literal), "cli-pipe": sha(piped)}

    err = failed(check(run("secret", "create", "cli-lit", "--from-literal", "x", gateway=gw)), 1)
    assert "already exists" in err and "faasbox secret update cli-lit" in err
    out = ok(check(run("secret", "update", "cli-lit", "--from-file", "-", gateway=gw, input=newer)))
    assert out.strip() == "updated secret 'cli-lit'"
    err = failed(check(run("secret", "update", "cli-nope", "--from-literal", "x", gateway=gw)), 1)
    assert "secret 'cli-nope' not found" in err and "faasbox secret create cli-nope" in err
    # New replicas read the new value.
    ok(check(run("scale", "cli-secret-reader", "0", gateway=gw)))
    seen = json.loads(ok(check(run("invoke", "cli-secret-reader", gateway=gw))))
    assert seen["cli-lit"] == sha(newer)

    logs = ok(check(run("logs", "cli-secret-reader", gateway=gw)))
    assert "Traceback" not in logs

    # In use: refused, naming the function; after the function goes, removed.
    err = failed(check(run("secret", "rm", "cli-lit", gateway=gw)), 1)
    assert "cli-secret-reader" in err
    ok(check(run("rm", "cli-secret-reader", gateway=gw)))
    for name in ("cli-lit", "cli-file", "cli-pipe"):
        assert (
            ok(check(run("secret", "rm", name, gateway=gw))).strip() == f"removed secret {name!r}"
        )
    err = failed(check(run("secret", "rm", "cli-lit", gateway=gw)), 1)
    assert err.strip() == "error: secret 'cli-lit' not found"
    names = {s["name"] for s in json.loads(ok(run("secret", "list", "--json", gateway=gw)))}
    assert not names & {"cli-lit", "cli-file", "cli-pipe"}

    # No command printed a value (logs and describe included), nor did the platform.
    outputs.append("".join(server.output).encode())
    for value in values:
        for text in outputs:
            assert value not in text


def test_usage_errors(tmp_path: Path, gateway_url: str) -> None:
    gw = gateway_url
    err = failed(run("secret", "create", "Bad_Name", "--from-literal", "x", gateway=gw), 2)
    assert "not a valid secret name" in err and "Usage: faasbox secret create" in err
    err = failed(
        run("secret", "create", "cli-x", "--from-literal", "a", "--from-file", "f", gateway=gw), 2
    )
    assert "not both" in err
    # stdin is /dev/null here: no value anywhere.
    err = failed(run("secret", "create", "cli-x", gateway=gw), 2)
    assert "--from-literal" in err and "stdin" in err
    (tmp_path / "empty").write_bytes(b"")
    err = failed(
        run("secret", "create", "cli-x", "--from-file", str(tmp_path / "empty"), gateway=gw), 2
    )
    assert "empty" in err
    err = failed(
        run("secret", "create", "cli-x", "--from-file", str(tmp_path / "missing"), gateway=gw), 2
    )
    assert "cannot read" in err
    err = failed(run("secret", "rm", "UPPER", gateway=gw), 2)
    assert "not a valid secret name" in err
    names = {s["name"] for s in json.loads(ok(run("secret", "list", "--json", gateway=gw)))}
    assert "cli-x" not in names


def test_deploy_with_a_missing_secret_says_which(tmp_path: Path, gateway_url: str) -> None:
    fn = tmp_path / "cli-needs-secret"
    fn.mkdir()
    (fn / "handler.py").write_text(READER)
    (tmp_path / "faasbox.yml").write_text(
        "version: 1\nfunctions:\n  cli-needs-secret:\n    secrets: [cli-never-created]\n"
    )
    err = failed(run("deploy", gateway=gateway_url, cwd=tmp_path), 1)
    assert "secret 'cli-never-created' does not exist" in err
    assert "faasbox secret create cli-never-created" in err
