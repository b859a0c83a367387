"""The runtime's channel ending: a host that closes it, even with the runtime's frames
unread (the kernel then reports ECONNRESET, not EOF), ends the runtime quietly."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from faasbox.runtime.protocol import BOOTSTRAP


def test_a_channel_closed_with_frames_unread_ends_the_runtime_quietly() -> None:
    host, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-B", str(BOOTSTRAP)],
        env={"PATH": "/usr/bin:/bin", "FAASBOX_CHANNEL_FD": str(child.fileno())},
        pass_fds=(child.fileno(),),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.close()
    # The runtime's hello arrives and stays unread; closing now resets the connection.
    deadline = time.monotonic() + 30
    while not host.recv(1, socket.MSG_PEEK):
        assert time.monotonic() < deadline
    host.close()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"Traceback" not in out, err
