"""The ``namespaces`` backend: each replica in its own Linux namespaces, via bubblewrap.

First cut (issue 3 goes further): new PID, mount, IPC, UTS, network, cgroup and user
namespaces; an unprivileged uid/gid with every capability dropped; a root that holds only
the Python installation, the shared libraries, and the directories the spec names
(function code, dependency layers, the runtime), all read-only; a private size-limited
tmpfs at ``/tmp`` as working directory; a minimal ``/dev`` and its own ``/proc``; loopback
only, no route to the host. The process backend's rlimits still apply (they are set on
bwrap and inherited), except the address-space limit: memory is a cgroup limit here, as
are CPU (a CFS quota) and the number of processes; a replica killed by the cgroup's OOM
killer is reported as out of memory. cgroup v1 (this machine and CI run the v1
controllers in hybrid mode); v2 is still to do, and so is a seccomp filter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from faasbox.errors import BadRequest
from faasbox.sandbox import seccomp
from faasbox.sandbox.api import SECRETS_DIR, ExitStatus, SandboxSpec
from faasbox.sandbox.backends.process import ProcessBackend, _rlimits

CGROUP_V1 = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000

NOBODY = "65534"
TMP_BYTES = 64 * 1024 * 1024
# What an interpreter and the libraries it loads need from the host, read-only.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")
# Name resolution and TLS roots, for functions allowed out (label faasbox.network=egress).
EGRESS_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl")


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


class NamespacesBackend(ProcessBackend):
    name = "namespaces"
    capabilities = frozenset(
        {
            "namespaces",
            "read-only-root",
            "no-network",
            "unprivileged",
            "rlimits",
            "private-tmp",
            "cgroups",
            "seccomp",
            "no-new-privs",
        }
    )

    def __init__(self) -> None:
        bwrap = find_bwrap()
        if bwrap is None:
            raise BadRequest(
                "the namespaces backend needs bubblewrap: install it "
                "(apt-get install bubblewrap) or use --backend process"
            )
        self.bwrap = bwrap
        # One group per platform process, so that a crashed platform's leftovers can be
        # told apart (by its pid) and removed without touching a live neighbour's.
        self.cgroup_parents = {
            c: _own_cgroup(c) / "faasbox" / str(os.getpid()) for c in CONTROLLERS
        }
        for controller, parent in self.cgroup_parents.items():
            _remove_stale(parent.parent)
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BadRequest(
                    f"the namespaces backend needs the cgroup v1 {controller} controller "
                    f"writable at {parent.parent}: {exc.strerror}; run faasbox as root, "
                    "or use --backend process"
                ) from None

    def _cgroups(self, spec: SandboxSpec) -> dict[str, Path]:
        return {c: parent / spec.sandbox_id for c, parent in self.cgroup_parents.items()}

    def preexec(self, spec: SandboxSpec) -> Callable[[], None]:
        groups = self._cgroups(spec)
        limits = spec.limits
        settings = {
            "memory": {"memory.limit_in_bytes": limits.memory_bytes},
            "pids": {"pids.max": limits.pids},
            "cpu": (
                {
                    "cpu.cfs_period_us": CFS_PERIOD_US,
                    "cpu.cfs_quota_us": max(1000, int(limits.cpu * CFS_PERIOD_US)),
                }
                if limits.cpu
                else {}
            ),
        }
        for controller, path in groups.items():
            path.mkdir(parents=True, exist_ok=True)
            for name, value in settings[controller].items():
                (path / name).write_text(str(value))
        procs = [os.fsencode(p / "cgroup.procs") for p in groups.values()]
        set_rlimits = _rlimits(limits, address_space=False)

        def child() -> None:  # between fork and exec: join the cgroups, then the rlimits
            for path in procs:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
            set_rlimits()

        return child

    def classify(self, spec: SandboxSpec, status: ExitStatus) -> ExitStatus:
        # bwrap reports its child's death by signal N as exit status 128 + N.
        if status.returncode is not None and status.returncode > 128:
            status = ExitStatus(None, signal=status.returncode - 128)
        if status.signal is not None and _oom_kills(self._cgroups(spec)["memory"]) > 0:
            return ExitStatus(None, signal=status.signal, oom_killed=True)
        return status

    def release(self, spec: SandboxSpec) -> None:
        for path in self._cgroups(spec).values():
            # The kernel frees a cgroup only once its last process is gone: retry briefly.
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)

    def spawn_fds(self, spec: SandboxSpec) -> list[int]:
        return [seccomp.program_fd()]

    def command(
        self, spec: SandboxSpec, tmp: Path, fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        # The interpreter by its real path: a venv's python is a symlink into a directory
        # the sandbox does not see.
        argv = [os.path.realpath(spec.argv[0]), *spec.argv[1:]]
        cmd = [
            self.bwrap,
            "--unshare-all",
            *(["--share-net"] if spec.egress else []),
            "--unshare-user",
            "--uid",
            NOBODY,
            "--gid",
            NOBODY,
            "--cap-drop",
            "ALL",
            # bwrap sets no_new_privs and loads the filter last, just before the runtime.
            "--seccomp",
            str(fds[0]),
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
        readable = [*SYSTEM_DIRS, *_interpreter_files(argv[0]), *(str(p) for p in spec.read_only)]
        if spec.egress:
            readable += EGRESS_FILES
        for path in dict.fromkeys(readable):
            if os.path.exists(path):
                cmd += ["--ro-bind", path, path]
        for name, secret in sorted(spec.secrets.items()):
            cmd += ["--ro-bind", str(secret), f"{SECRETS_DIR}/{name}"]
        # The interpreter's own site-packages holds the host's installed packages: hidden.
        site = Path(sysconfig.get_paths()["stdlib"]) / "site-packages"
        if site.is_dir():
            cmd += ["--tmpfs", str(site), "--remount-ro", str(site)]
        return [*cmd, "--", *argv], {"TMPDIR": "/tmp", "HOME": "/tmp"}


def _own_cgroup(controller: str) -> Path:
    """Where this process sits in a v1 hierarchy: replicas nest below it, under its limits."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if controller in names.split(","):
                return CGROUP_V1 / controller / path.lstrip("/")
    return CGROUP_V1 / controller


def _oom_kills(memory_cgroup: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in (memory_cgroup / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


def _remove_stale(root: Path) -> None:
    """Remove the groups of platform processes that no longer run (killed, crashed)."""
    with contextlib.suppress(OSError):
        for group in root.iterdir():
            if not group.is_dir() or not group.name.isdigit():
                continue
            if Path(f"/proc/{group.name}").exists():
                continue
            for child in group.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                group.rmdir()


def _interpreter_files(executable: str) -> list[str]:
    """The interpreter binary, its shared library and its standard library: no more of its
    installation (which may live in a home directory)."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
    files = [executable, sysconfig.get_paths()["stdlib"]]
    if libdir and ldlibrary:
        files += [str(p) for p in Path(libdir).glob(ldlibrary + "*")]
    return files
