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

Stem cells (capability ``prewarm``, see ``sandbox/api.py``): a prewarmed sandbox binds,
read-only, one empty host directory per ``Prewarm.roots`` entry (the code and layer
stores) at that root's path: subdirectories of its *slot*, ``Prewarm.slot``. ``inject``
mounts the function's code and layer directories into the slot on the host, and each
mount appears in that one sandbox: the slots' parent directory is a shared mount, bwrap
makes the sandbox's copy of the host's mounts slaves (so mounts propagate in, never out),
and a mount reaches only the sandboxes whose bind contains its mount point. Each mount is
read-only from its first instant (``open_tree`` + ``mount_setattr`` + ``move_mount``: a
read-only remount after a plain bind would not propagate). Secrets need no mount: they are
files written into ``Prewarm.secrets``, bound read-only at ``SECRETS_DIR`` from the start
(a 0700 directory owned by the sandbox's user, in the working directory, itself 0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import shutil
import socket
import sysconfig
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from faasbox.errors import BadRequest
from faasbox.sandbox import cgroups, forked, seccomp, slirp
from faasbox.sandbox.api import (
    SECRETS_DIR,
    ExitStatus,
    Injection,
    Limits,
    OutputSink,
    Prewarm,
    SandboxSpec,
)
from faasbox.sandbox.backends.process import ProcessBackend, ProcessSandbox, _rlimits
from faasbox.sandbox.slirp import Egress

log = logging.getLogger("faasbox.sandbox")

NOBODY = "65534"
TMP_BYTES = 64 * 1024 * 1024
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
# What an interpreter and the libraries it loads need from the host, read-only.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")
# Name resolution and TLS roots, for functions allowed out (label faasbox.network=egress).
EGRESS_FILES = ("/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl")


# Joining a cgroup can take tens of milliseconds (the kernel waits for an RCU grace period
# on the first migration after a quiet spell), and between fork and exec the platform's
# event loop waits for the child: so the child joins its groups after the exec, in a shell
# that writes to each cgroup.procs given before "--", then becomes bwrap.
SH = "/bin/sh"
JOIN_CGROUPS = (
    'for p; do [ "$p" = -- ] && break; echo 0 > "$p" || exit 125; shift; done; shift; exec "$@"'
)


def classify_wrapped(groups: cgroups.Cgroups, sandbox_id: str, status: ExitStatus) -> ExitStatus:
    """How a sandbox behind a wrapper ended: the wrapper (bwrap, a shell) reports its
    child's death by signal N as exit status 128 + N; the cgroup tells an OOM kill."""
    if status.returncode is not None and status.returncode > 128:
        status = ExitStatus(None, signal=status.returncode - 128)
    if status.signal is not None and groups.oom_kills(sandbox_id) > 0:
        return ExitStatus(None, signal=status.signal, oom_killed=True)
    return status


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
            "fork",
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
        self.egress = Egress()
        self._slots = _Slots()
        if os.geteuid() == 0 and _mount_api():
            self.capabilities = type(self).capabilities | {"prewarm"}
        if os.uname().machine != "x86_64":
            # The runtime's zygote guard (a seccomp filter each fork installs) is written
            # for x86-64 only: elsewhere no zygotes, every replica in a sandbox of its own.
            self.capabilities = self.capabilities - {"fork"}

    async def create(self, spec: SandboxSpec, on_output: OutputSink) -> ProcessSandbox:
        try:
            return await super().create(spec, on_output)
        except BaseException:
            # A failure before the spawn leaves the groups and the slot: release is
            # idempotent, so whatever was released already is no matter.
            await asyncio.to_thread(self.release, spec)
            raise

    async def relimit(self, sandbox_id: str, limits: Limits) -> None:
        self.cgroups.update(sandbox_id, limits)

    async def inject(self, sandbox_id: str, injection: Injection) -> None:
        # On the loop: a few system calls of ~0.1 ms each, on the cold path only.
        self._slots.inject(sandbox_id, injection)
        self.cgroups.update(sandbox_id, injection.limits)

    async def fork(
        self,
        zygote: socket.socket,
        sandbox_id: str,
        limits: Limits,
        on_output: OutputSink,
        timeout: float,
    ) -> forked.ForkedSandbox:
        groups = self.cgroups
        joins: list[bytes] = []

        def prepare() -> None:
            # On the loop, while the zygote forks: a mkdir and the limits per controller.
            joins.extend(groups.create(sandbox_id, limits))

        def adopt(pid: int) -> None:
            for procs in joins:
                with open(procs, "wb") as f:
                    f.write(str(pid).encode())

        def classify(code: int | None) -> ExitStatus:
            # ``code`` is what its zygote reported (None: the zygote is gone too).
            oom = groups.oom_kills(sandbox_id) > 0
            if code is not None and code < 0:
                return ExitStatus(None, signal=-code, oom_killed=oom)
            return ExitStatus(code, oom_killed=oom)

        return await forked.fork(
            zygote,
            sandbox_id,
            on_output,
            prepare,
            adopt,
            classify,
            lambda: cgroups.kill(groups, sandbox_id),
            lambda: groups.remove(sandbox_id),
            timeout,
        )

    def preexec(self, spec: SandboxSpec) -> Callable[[], None]:
        # Only the rlimits: the cgroups are joined after the exec (see JOIN_CGROUPS).
        return _rlimits(spec.limits, address_space=False)

    def classify(self, spec: SandboxSpec, status: ExitStatus) -> ExitStatus:
        return classify_wrapped(self.cgroups, spec.sandbox_id, status)

    def release(self, spec: SandboxSpec) -> None:
        self.egress.close(spec.sandbox_id)
        self._slots.close(spec.sandbox_id)
        self.cgroups.remove(spec.sandbox_id)

    def spawn_fds(self, spec: SandboxSpec) -> list[int]:
        fds = [seccomp.program_fd()]
        if spec.egress:
            try:
                fds += self.egress.open(spec.sandbox_id)
            except BaseException:
                os.close(fds[0])
                raise
        return fds

    async def started(self, spec: SandboxSpec, pid: int) -> None:
        await self.egress.attach(spec.sandbox_id)

    def command(
        self, spec: SandboxSpec, tmp: Path, fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        # The interpreter by its real path: a venv's python is a symlink into a directory
        # the sandbox does not see.
        argv = [os.path.realpath(spec.argv[0]), *spec.argv[1:]]
        procs = [os.fsdecode(p) for p in self.cgroups.create(spec.sandbox_id, spec.limits)]
        cmd = [
            SH,
            "-c",
            JOIN_CGROUPS,
            "join-cgroups",
            *procs,
            "--",
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
        if spec.prewarm is not None:
            binds += self._slots.open(spec.sandbox_id, spec.prewarm)
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


# -- stem cells: the slots and their mounts ------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
# The same numbers on every architecture (the shared table from 424 on; alpha aside).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
MS_BIND, MS_SHARED, MNT_DETACH = 0x1000, 0x100000, 0x2


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _sys(what: str, result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _syscall(number: int, *args: object) -> int:
    return int(_libc.syscall(ctypes.c_long(number), *args))


def _mount_api() -> bool:
    """Whether the kernel has the new mount API (5.12+) and lets this process use it: each
    call is made with a bad descriptor, so it can only fail; ENOSYS or EPERM means no."""
    for number in (SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR):
        failed = _syscall(number, ctypes.c_long(-1), b"", ctypes.c_long(0)) < 0
        if failed and ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            return False
    return True


def bind_read_only(source: Path, target: Path) -> None:
    """Mount a read-only, nosuid, nodev copy of ``source`` (and what is mounted below it) at
    ``target``, read-only before it is attached, so that every copy propagated from it is
    too."""
    fd = _sys(
        f"open_tree {source}",
        _syscall(
            SYS_OPEN_TREE,
            ctypes.c_long(AT_FDCWD),
            os.fsencode(source),
            ctypes.c_long(OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE),
        ),
    )
    try:
        attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
        _sys(
            f"mount_setattr {source}",
            _syscall(
                SYS_MOUNT_SETATTR,
                ctypes.c_long(fd),
                b"",
                ctypes.c_long(AT_EMPTY_PATH | AT_RECURSIVE),
                ctypes.byref(attr),
                ctypes.c_long(ctypes.sizeof(attr)),
            ),
        )
        _sys(
            f"move_mount {target}",
            _syscall(
                SYS_MOVE_MOUNT,
                ctypes.c_long(fd),
                b"",
                ctypes.c_long(AT_FDCWD),
                os.fsencode(target),
                ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH),
            ),
        )
    finally:
        os.close(fd)


def _unmount(path: Path) -> None:
    if _libc.umount2(os.fsencode(path), MNT_DETACH) < 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            log.warning("cannot unmount %s: %s", path, os.strerror(err))


def _mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory`` in this mount namespace, deepest first."""
    prefix = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = line.split(b" ")[4]
            # mountinfo escapes space, tab, newline and backslash as \ooo.
            point = raw.decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: -len(p.parts))


class _Slots:
    """The slots of this backend's stem cells. Sandboxes end in a worker thread (the
    backend's ``release``), so the bookkeeping is locked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Prewarm] = {}
        self._mounts: dict[str, list[Path]] = {}
        # Shared parent directory -> slots open in it; unshared when the last one closes.
        self._users: dict[Path, int] = {}

    def open(self, sandbox_id: str, prewarm: Prewarm) -> list[tuple[str, str]]:
        """Make the slot; returns the binds (host path, sandbox path) that show it."""
        slot = prewarm.slot
        parent = slot.parent
        with self._lock:
            if not self._users.get(parent):
                _share(parent)
            self._users[parent] = self._users.get(parent, 0) + 1
            self._open[sandbox_id] = prewarm
            self._mounts[sandbox_id] = []
        try:
            os.mkdir(slot, 0o700)
            for i in range(len(prewarm.roots)):
                os.mkdir(slot / str(i))
                os.chmod(slot / str(i), 0o755)  # the sandbox's user reads through the binds
            # Only root and the sandbox's user (through its bind) reach the secrets.
            os.chmod(prewarm.secrets.parent, 0o700)
            os.mkdir(prewarm.secrets, 0o700)
            os.chown(prewarm.secrets, int(NOBODY), int(NOBODY))
        except BaseException:
            self.close(sandbox_id)
            raise
        binds = [(str(slot / str(i)), str(root)) for i, root in enumerate(prewarm.roots)]
        return [*binds, (str(prewarm.secrets), SECRETS_DIR)]

    def inject(self, sandbox_id: str, injection: Injection) -> None:
        prewarm = self._open.get(sandbox_id)
        if prewarm is None:
            raise RuntimeError(f"sandbox {sandbox_id} is not a stem cell")
        mounts = self._mounts[sandbox_id]
        for path in injection.read_only:
            try:
                i = prewarm.roots.index(path.parent)
            except ValueError:
                raise BadRequest(f"{path} is not in a prewarmed sandbox's roots") from None
            target = prewarm.slot / str(i) / path.name
            os.mkdir(target, 0o755)
            bind_read_only(path, target)
            mounts.append(target)
        secrets = prewarm.secrets
        for name, value in injection.secrets.items():
            if "/" in name or name in ("", ".", ".."):
                raise BadRequest(f"bad secret name {name!r}")
            fd = os.open(
                secrets / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444
            )
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o444)
                f.write(value)

    def close(self, sandbox_id: str) -> None:
        """Unmount and remove the slot (idempotent); the last slot of a parent unshares it."""
        with self._lock:
            prewarm = self._open.pop(sandbox_id, None)
            mounts = self._mounts.pop(sandbox_id, [])
        if prewarm is None:
            return
        for target in reversed(mounts):
            _unmount(target)
        shutil.rmtree(prewarm.slot, ignore_errors=True)
        parent = prewarm.slot.parent
        with self._lock:
            self._users[parent] -= 1
            if not self._users[parent]:
                del self._users[parent]
                _unmount(parent)


def _share(parent: Path) -> None:
    """Make ``parent`` a shared mount of itself, emptied of what a platform that was killed
    left in it (its mounts first)."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(parent, 0o700)  # only the platform reaches the slots (and their secrets)
    for point in _mounts_under(parent):
        _unmount(point)
    for stale in parent.iterdir():
        with contextlib.suppress(OSError):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
    path = os.fsencode(parent)
    _sys(f"bind {parent}", _libc.mount(path, path, None, MS_BIND, None))
    try:
        _sys(f"share {parent}", _libc.mount(None, path, None, MS_SHARED, None))
    except OSError:
        _unmount(parent)
        raise
