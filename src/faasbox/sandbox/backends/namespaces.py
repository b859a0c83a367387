"""The ``namespaces`` backend: each replica in its own Linux namespaces, via bubblewrap.

First cut (issue 3 goes further): new PID, mount, IPC, UTS, network, cgroup and user
namespaces; an unprivileged uid/gid with every capability dropped; a root that holds only
the Python installation, the shared libraries, and the directories the spec names
(function code, dependency layers, the runtime), all read-only; a private size-limited
tmpfs at ``/tmp`` as working directory; a minimal ``/dev`` and its own ``/proc``; loopback
only, no route to the host. The process backend's rlimits still apply (they are set on
bwrap and inherited). Not yet: cgroup limits (memory, cpu, pids) and a seccomp filter.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from faasbox.errors import BadRequest
from faasbox.sandbox.api import SandboxSpec
from faasbox.sandbox.backends.process import ProcessBackend

NOBODY = "65534"
TMP_BYTES = 64 * 1024 * 1024
# What an interpreter and the libraries it loads need from the host, read-only.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


class NamespacesBackend(ProcessBackend):
    name = "namespaces"
    capabilities = frozenset(
        {"namespaces", "read-only-root", "no-network", "unprivileged", "rlimits", "private-tmp"}
    )
    signal_in_status = True

    def __init__(self) -> None:
        bwrap = find_bwrap()
        if bwrap is None:
            raise BadRequest(
                "the namespaces backend needs bubblewrap: install it "
                "(apt-get install bubblewrap) or use --backend process"
            )
        self.bwrap = bwrap

    def command(self, spec: SandboxSpec, tmp: Path) -> tuple[list[str], dict[str, str]]:
        # The interpreter by its real path: a venv's python is a symlink into a directory
        # the sandbox does not see.
        argv = [os.path.realpath(spec.argv[0]), *spec.argv[1:]]
        cmd = [
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--uid",
            NOBODY,
            "--gid",
            NOBODY,
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "faasbox",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--size",
            str(TMP_BYTES),
            "--tmpfs",
            "/tmp",
            "--chdir",
            "/tmp",
        ]
        readable = [*SYSTEM_DIRS, sys.base_prefix, *(str(p) for p in spec.read_only)]
        for path in dict.fromkeys(readable):
            if os.path.exists(path):
                cmd += ["--ro-bind", path, path]
        return [*cmd, "--", *argv], {"TMPDIR": "/tmp", "HOME": "/tmp"}
