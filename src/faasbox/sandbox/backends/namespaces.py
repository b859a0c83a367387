"""The ``namespaces`` backend: each replica in its own Linux namespaces, via bubblewrap.

Each replica gets new PID, mount, IPC, UTS, network, cgroup and user namespaces; uid/gid
65534 with every capability dropped, ``no_new_privs`` and a seccomp filter
(``sandbox/seccomp.py``); a root that holds only the Python installation, the shared
libraries, and the directories the spec names (function code, dependency layers, the
runtime) and its secrets, all read-only; a private size-limited tmpfs at ``/tmp`` as
working directory; a minimal ``/dev`` and its own ``/proc``; loopback only, no route to
the host; a function that asks for egress gets its own user-mode network (``slirp.py``)
that reaches out but not the host's loopback. The process backend's rlimits still
apply (set on bwrap and inherited), except the address-space limit: memory is a cgroup
limit here, as are CPU (a CFS quota) and the number of processes (``sandbox/cgroups.py``,
v1 or v2); a replica killed by the cgroup's OOM killer is reported as out of memory.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path

from faasbox.errors import BadRequest
from faasbox.sandbox import cgroups, seccomp, slirp
from faasbox.sandbox.api import SECRETS_DIR, ExitStatus, SandboxSpec
from faasbox.sandbox.backends.process import ProcessBackend, _rlimits
from faasbox.sandbox.slirp import SlirpNet, find_slirp

NOBODY = "65534"
TMP_BYTES = 64 * 1024 * 1024
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
# What an interpreter and the libraries it loads need from the host, read-only.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")
# Name resolution and TLS roots, for functions allowed out (label faasbox.network=egress).
EGRESS_FILES = ("/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl")


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
            "mounts",
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
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise BadRequest(
                "the namespaces backend needs setpriv (apt-get install util-linux) to run "
                "functions as an unprivileged user; or use --backend process"
            )
        self.setpriv = setpriv
        self.cgroups = cgroups.detect()
        self.slirp = find_slirp()
        self._nets: dict[str, SlirpNet] = {}

    def preexec(self, spec: SandboxSpec) -> Callable[[], None]:
        procs = self.cgroups.create(spec.sandbox_id, spec.limits)
        set_rlimits = _rlimits(spec.limits, address_space=False)

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
        if status.signal is not None and self.cgroups.oom_kills(spec.sandbox_id) > 0:
            return ExitStatus(None, signal=status.signal, oom_killed=True)
        return status

    def release(self, spec: SandboxSpec) -> None:
        net = self._nets.pop(spec.sandbox_id, None)
        if net is not None:
            net.close()
        self.cgroups.remove(spec.sandbox_id)

    def spawn_fds(self, spec: SandboxSpec) -> list[int]:
        fds = [seccomp.program_fd()]
        if spec.egress:
            if self.slirp is None:
                os.close(fds[0])
                raise BadRequest(
                    "functions with egress (label faasbox.network=egress) need slirp4netns "
                    "on the platform's machine: apt-get install slirp4netns"
                )
            net = self._nets[spec.sandbox_id] = SlirpNet(self.slirp)
            fds += net.child_fds()
        return fds

    async def started(self, spec: SandboxSpec, pid: int) -> None:
        net = self._nets.get(spec.sandbox_id)
        if net is not None:
            await net.attach()

    def command(
        self, spec: SandboxSpec, tmp: Path, fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        # The interpreter by its real path: a venv's python is a symlink into a directory
        # the sandbox does not see.
        argv = [os.path.realpath(spec.argv[0]), *spec.argv[1:]]
        cmd = [
            self.bwrap,
            # No user namespace: bwrap runs as real root ("privileged" mode) and the runtime
            # is then switched to uid/gid 65534 of the host itself by setpriv below; a user
            # namespace would map the sandbox's user onto the platform's (root) and leave
            # root-owned host files such as /proc/sys writable to it.
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup",
            "--unshare-net",
            # Every capability is dropped, except the two setpriv needs to change users;
            # the change itself clears them.
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            # bwrap sets no_new_privs and loads the filter last, just before setpriv.
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
            # Read-only, as runc's default spec has them: kernel settings and switches.
            *(a for p in PROC_READ_ONLY if os.path.exists(p) for a in ("--ro-bind", p, p)),
            "--perms",
            "1777",
            "--size",
            str(TMP_BYTES),
            "--tmpfs",
            "/tmp",
            "--perms",
            "1777",
            "--size",
            str(TMP_BYTES),
            "--tmpfs",
            "/dev/shm",
            "--chdir",
            "/tmp",
        ]
        if spec.egress:
            # The network comes up (slirp4netns) while bwrap waits on --block-fd.
            cmd += ["--info-fd", str(fds[1]), "--block-fd", str(fds[2])]
        readable = [*SYSTEM_DIRS, *_interpreter_files(argv[0]), *(str(p) for p in spec.read_only)]
        if spec.egress:
            readable += EGRESS_FILES
        binds = [(p, p) for p in dict.fromkeys(readable) if os.path.exists(p)]
        if spec.egress:
            resolv = spec.workdir / "resolv.conf"
            resolv.write_text(f"nameserver {slirp.DNS}\n")
            binds.append((str(resolv), "/etc/resolv.conf"))
        binds += [(str(src), f"{SECRETS_DIR}/{name}") for name, src in spec.secrets.items()]
        # bwrap would give the directories it creates on the way the modes of the host's
        # (/root is 0700): make them traversable, then mount parents before children.
        for parent in _parents(dest for _, dest in binds):
            cmd += ["--perms", "0755", "--dir", parent]
        for src, dest in sorted(binds, key=lambda b: b[1].count("/")):
            cmd += ["--ro-bind", src, dest]
        # The interpreter's own site-packages holds the host's installed packages: hidden.
        site = Path(sysconfig.get_paths()["stdlib"]) / "site-packages"
        if site.is_dir():
            cmd += ["--tmpfs", str(site), "--remount-ro", str(site)]
        cmd += ["--remount-ro", "/"]
        argv = [
            self.setpriv,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
            *argv,
        ]
        return [*cmd, "--", *argv], {"TMPDIR": "/tmp", "HOME": "/tmp"}


def _parents(paths: Iterable[str]) -> list[str]:
    """Every ancestor directory of ``paths`` below /, outermost first, without the system
    directories (bound whole)."""
    out: dict[str, None] = {}
    for path in paths:
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in SYSTEM_DIRS:
                out[str(parent)] = None
    return sorted(out, key=lambda p: p.count("/"))


def _interpreter_files(executable: str) -> list[str]:
    """The interpreter binary, its shared library and its standard library: no more of its
    installation (which may live in a home directory)."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
    files = [executable, sysconfig.get_paths()["stdlib"]]
    if libdir and ldlibrary:
        files += [str(p) for p in Path(libdir).glob(ldlibrary + "*")]
    return files
