"""The Python runtime as a prewarmed sandbox runs it: started with no function, warmed up,
then given its function's environment in the init frame. A real runtime process on a
socket pair, without a sandbox."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from faasbox.runtime.protocol import BOOTSTRAP, PROTOCOL_VERSION, FrameDecoder, encode

HANDLER = """
import os, sys, tempfile

AT_IMPORT = os.environ.get("GREETING")


def handle(event, context):
    return {
        "at_import": AT_IMPORT,
        "now": os.environ.get("GREETING"),
        "prewarmed_flag": os.environ.get("FAASBOX_PREWARMED"),
        "warm_up_module": "_faasbox_warm_up" in sys.modules,
        "tmp": sorted(os.listdir(os.environ["TMPDIR"])),
        "gettempdir": tempfile.gettempdir(),
    }
"""


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames: list[tuple[dict[str, Any], bytes]] = []
        self.decoder = FrameDecoder(lambda h, b: self.frames.append((h, b)), max_body=1 << 20)

    def read(self) -> tuple[dict[str, Any], bytes]:
        while not self.frames:
            data = self.sock.recv(65536)
            assert data, "the runtime closed its channel"
            self.decoder.feed(data)
        return self.frames.pop(0)


def test_a_prewarmed_runtime_gets_its_environment_before_the_import(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "handler.py").write_text(textwrap.dedent(HANDLER))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    own = tmp_path / "own-tmp"
    own.mkdir()
    host, child = socket.socketpair()
    env = {
        "PATH": "/usr/bin:/bin",
        "TMPDIR": str(tmp),
        "FAASBOX_CHANNEL_FD": str(child.fileno()),
        "FAASBOX_PREWARMED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-B", str(BOOTSTRAP)],
        env=env,
        pass_fds=(child.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    child.close()
    try:
        host.settimeout(30)
        ch = Channel(host)
        hello, _ = ch.read()
        assert hello["t"] == "hello" and hello["v"] == PROTOCOL_VERSION
        init = {
            "t": "init",
            "v": PROTOCOL_VERSION,
            "code": str(code),
            "layers": [],
            "handler": "handler.handle",
            "function": "greeter",
            "concurrency": 1,
            "max_response": 1 << 20,
            "env": {"GREETING": "hi", "TMPDIR": str(own)},
        }
        host.sendall(encode(init))
        ready, _ = ch.read()
        assert ready["t"] == "ready", ready
        host.sendall(encode({"t": "run", "id": 1, "cid": "c1", "m": "GET", "p": "/", "dl": 0}))
        res, body = ch.read()
        assert res["t"] == "res", res
        facts = json.loads(body)
        assert facts["at_import"] == "hi" and facts["now"] == "hi"
        assert facts["prewarmed_flag"] is None, "the runtime's own flag is not the function's"
        assert facts["warm_up_module"] is False
        assert facts["tmp"] == [], "the warm-up left nothing behind"
        assert facts["gettempdir"] == str(own), "the function's TMPDIR counts"
        assert os.listdir(tmp) == []
    finally:
        host.close()
        proc.kill()
        proc.wait()
