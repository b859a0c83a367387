"""The ``oci`` backend: each replica an OCI runtime bundle run by ``runc``.

The same guarantees as the ``namespaces`` backend, from the runtime most container
platforms use: new PID, mount, IPC, UTS, cgroup and network namespaces (loopback only; a
function that asks for egress gets slirp4netns in its namespace, as there: out to the
world, not to the host's loopback); host uid/gid 65534 with every capability dropped and
no_new_privs; the shared seccomp filter; an empty read-only root holding, read-only,
exactly what the namespaces backend binds, and the replica's secrets; 64 MiB tmpfs at
``/tmp`` (the working directory) and ``/dev/shm``; its own ``/proc`` (masked and partly
read-only as in runc's default spec) and a minimal ``/dev``; memory, CPU and process
limits as runc's cgroup resources, with OOM kills reported as out of memory.

Per replica, ``<workdir>/bundle`` holds ``config.json`` and an empty ``rootfs`` (runc
creates the mount points in it before it makes the root read-only; the workdir itself is
not visible inside). The platform starts a small ``/bin/sh`` wrapper that runs ``runc run
--detach``: runc sets the container up and leaves, so the container holds the platform's
stdout/stderr pipes itself, and the channel as descriptor 3. (A foreground ``runc run``
relays the container's output through pipes of its own, and whatever it has not passed
on yet is lost when it is killed: a failing runtime's last traceback, typically.) The
wrapper lives as long as the container's init, which hands it its exit status over a
pipe; the container and its cgroup stay after that, so that an OOM kill can still be
read, until ``release`` kills what is left and deletes them. runc's state lives under a
private root per platform process; containers left by platforms that died are deleted
at start-up.

The runtime does not run as the namespace's PID 1: a PID 1 ignores the signals it has no
handler for (a function could not even kill itself) and nothing would reap orphans. A
``/bin/sh`` parent plays init, as bubblewrap's own process does for the namespaces
backend: it reaps orphans while it waits, and passes on the runtime's exit status (128 +
N for a death by signal N). When the platform dies, the wrapper gets SIGTERM (its
parent-death signal) and kills the container, like bwrap's ``--die-with-parent``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faasbox.errors import BadRequest
from faasbox.sandbox import cgroups, slirp
from faasbox.sandbox.api import SECRETS_DIR, ExitStatus, SandboxSpec
from faasbox.sandbox.backends.namespaces import (
    EGRESS_FILES,
    SYSTEM_DIRS,
    TMP_BYTES,
    NamespacesBackend,
    _interpreter_files,
    classify_wrapped,
)
from faasbox.sandbox.backends.process import ProcessBackend
from faasbox.sandbox.slirp import Egress

STATE_ROOT = Path("/run/faasbox-oci")
NOBODY = 65534
# What the platform starts (see the module docstring): runc starts the container
# detached, with the platform's stdout/stderr as the container's own and the write end of
# a pipe (the "lifeline") as descriptor 4; the container's init writes its exit status
# there when it ends, and that ends this wrapper with the same status. On SIGTERM (the
# parent-death signal it asks for) it kills the container.
WRAPPER = r"""
runc=$1 root=$2 id=$3 bundle=$4
exec 5>&1
trap '"$runc" --root "$root" kill "$id" KILL; exit 143' TERM
{
    "$runc" --root "$root" run --detach --preserve-fds 2 --bundle "$bundle" "$id" 4>&1 1>&5 5>&- \
        || echo "$?"
} | { read -r status; exit "${status:-137}"; } &
wait $!
"""
# The runtime's parent inside the container: it reports the runtime's exit status on the
# lifeline, which the runtime itself does not hold.
INIT = ["/bin/sh", "-c", '"$@" 4>&-; status=$?; echo "$status" >&4; exit "$status"', "init"]
PR_SET_PDEATHSIG = 1
# An egress replica's network: runc runs this hook once the container's namespaces exist
# and before the runtime starts (runc waits for it). It hands the container's pid to the
# platform, which attaches slirp4netns to its network namespace, then waits for the
# platform's go: the same exchange as bwrap's --info-fd and --block-fd, through runc's own
# descriptors ($1 and $2, inherited from the platform through the wrapper; runc is the
# hook's parent).
NET_HOOK = r"""
pid=$(sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p')
printf '{"child-pid": %s}' "$pid" > "/proc/$PPID/fd/$1"
head -c 1 < "/proc/$PPID/fd/$2" > /dev/null
"""

# As in `runc spec`.
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
NO_CAPABILITIES: dict[str, list[str]] = {
    s: [] for s in ("bounding", "effective", "inheritable", "permitted", "ambient")
}


def find_runc() -> str | None:
    # Debian installs it in /usr/sbin, which a non-login PATH may lack.
    return shutil.which("runc") or shutil.which("runc", path="/usr/local/sbin:/usr/sbin:/sbin")


class OciBackend(ProcessBackend):
    name = "oci"
    # The same guarantees as the namespaces backend (without its stem cells).
    # Forking replicas (zygotes) is the namespaces backend's alone: runc would have to
    # adopt a process it did not start.
    capabilities = NamespacesBackend.capabilities - {"fork"}
    # runc hands the container only descriptors 3 .. 3 + N - 1 (--preserve-fds N).
    channel_fd = 3

    def __init__(self) -> None:
        runc = find_runc()
        if runc is None:
            raise BadRequest(
                "the oci backend needs runc: install it (apt-get install runc) "
                "or use --backend namespaces"
            )
        if os.geteuid() != 0:
            raise BadRequest(
                "the oci backend runs runc as root: run faasbox as root, "
                "or use --backend namespaces"
            )
        from faasbox.sandbox.seccomp import oci_seccomp

        self.runc = runc
        # One runc state root per platform process, like its cgroups: what a dead
        # platform left behind is told apart by its pid and removed.
        self.state = STATE_ROOT / str(os.getpid())
        _remove_stale(runc)
        self.state.mkdir(parents=True, exist_ok=True)
        # Made (and stale groups removed) by the cgroups module, which also delegates the
        # v2 controllers; runc makes and configures each replica's group below it.
        self.cgroups = cgroups.detect()
        if isinstance(self.cgroups, cgroups.CgroupV2):
            self._cgroup_parent = "/" + str(self.cgroups.parent.relative_to(cgroups.ROOT))
            self._swap = True  # runc skips memory.swap.max where it does not exist
        else:
            # A relative cgroupsPath is resolved by runc from its own group in each v1
            # hierarchy, the platform's: exactly where the cgroups module's parents are.
            self._cgroup_parent = f"faasbox/{os.getpid()}"
            self._swap = (cgroups.ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()
            # runc makes a group in every hierarchy, not only in the three the cgroups
            # module keeps tidy: the dead platforms' parents there go too.
            for base in _v1_hierarchies():
                cgroups._remove_stale(base / "faasbox")
        self._seccomp = oci_seccomp()
        self._site = Path(sysconfig.get_paths()["stdlib"]) / "site-packages"
        # Looked up here: between fork and exec the child should only call it.
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self.egress = Egress()

    def _runc(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return _run([self.runc, "--root", str(self.state), *args])

    def preexec(self, spec: SandboxSpec) -> Callable[[], None]:
        # runc sets the limits on the container; an address-space limit on runc (a Go
        # program) would only break it. What the wrapper does instead: ask for SIGTERM when
        # the platform dies, on which it kills the container. (The signal comes when the
        # thread that forked ends: the event loop's, which lives as long as the platform.)
        prctl = self._prctl
        parent = os.getpid()

        def child() -> None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the platform died before that took effect
                os._exit(1)

        return child

    def spawn_fds(self, spec: SandboxSpec) -> list[int]:
        return self.egress.open(spec.sandbox_id) if spec.egress else []

    async def started(self, spec: SandboxSpec, pid: int) -> None:
        await self.egress.attach(spec.sandbox_id)

    def command(
        self, spec: SandboxSpec, tmp: Path, fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        bundle = spec.workdir / "bundle"
        (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
        config = self._config(spec, bundle)
        if spec.egress:
            config["hooks"] = {
                "createRuntime": [
                    {
                        "path": "/bin/sh",
                        "args": ["sh", "-c", NET_HOOK, "faasbox-net", *map(str, fds)],
                        "env": ["PATH=/usr/bin:/bin"],
                        "timeout": 30,
                    }
                ]
            }
        (bundle / "config.json").write_text(json.dumps(config))
        wrapper = [WRAPPER, "faasbox-oci", self.runc, str(self.state), spec.sandbox_id]
        return ["/bin/sh", "-c", *wrapper, str(bundle)], {}

    def _config(self, spec: SandboxSpec, bundle: Path) -> dict[str, Any]:
        # runc passes none of its own environment: the container's is all in config.json.
        env = dict(spec.env)
        env["FAASBOX_CHANNEL_FD"] = str(self.channel_fd)
        env.setdefault("TMPDIR", "/tmp")
        env.setdefault("HOME", "/tmp")
        # The interpreter by its real path: a venv's python is a symlink into a directory
        # the sandbox does not see.
        argv = [os.path.realpath(spec.argv[0]), *spec.argv[1:]]
        limits = spec.limits
        resources: dict[str, Any] = {
            "devices": [{"allow": False, "access": "rwm"}],
            # swap = memory + swap in runc's terms: equal to the limit, no swap at all.
            "memory": {"limit": limits.memory_bytes}
            | ({"swap": limits.memory_bytes} if self._swap else {}),
            "pids": {"limit": limits.pids},
        }
        if limits.cpu:
            resources["cpu"] = {
                "quota": max(1000, int(limits.cpu * cgroups.CFS_PERIOD_US)),
                "period": cgroups.CFS_PERIOD_US,
            }
        # runc brings up loopback in the new network namespace; an egress replica's tap
        # device comes from slirp4netns (the hook in `command`).
        namespaces = ["pid", "ipc", "uts", "mount", "cgroup", "network"]
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": NOBODY, "gid": NOBODY},
                "args": [*INIT, *argv],
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": "/tmp",
                "capabilities": NO_CAPABILITIES,
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "hard": limits.open_files, "soft": limits.open_files},
                    {
                        "type": "RLIMIT_FSIZE",
                        "hard": limits.max_file_bytes,
                        "soft": limits.max_file_bytes,
                    },
                    {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                ],
                "noNewPrivileges": True,
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "faasbox",
            "mounts": self._mounts(spec, argv[0], bundle),
            "linux": {
                "cgroupsPath": f"{self._cgroup_parent}/{spec.sandbox_id}",
                "resources": resources,
                "namespaces": [{"type": t} for t in namespaces],
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
                "seccomp": self._seccomp,
            },
        }

    def _mounts(self, spec: SandboxSpec, interpreter: str, bundle: Path) -> list[dict[str, Any]]:
        readable = [*SYSTEM_DIRS, *_interpreter_files(interpreter), *map(str, spec.read_only)]
        if spec.egress:
            readable += EGRESS_FILES
        mounts = {
            path: _bind(path, path) for path in dict.fromkeys(readable) if os.path.exists(path)
        }
        if spec.egress:
            resolv = bundle / "resolv.conf"
            resolv.write_text(f"nameserver {slirp.DNS}\n")
            mounts["/etc/resolv.conf"] = _bind(str(resolv), "/etc/resolv.conf")
        for name, source in spec.secrets.items():
            mounts[f"{SECRETS_DIR}/{name}"] = _bind(str(source), f"{SECRETS_DIR}/{name}")
        mounts["/tmp"] = _tmpfs("/tmp", "nosuid", "nodev", f"size={TMP_BYTES}", "mode=1777")
        # The interpreter's own site-packages holds the host's installed packages: hidden.
        if self._site.is_dir():
            mounts[str(self._site)] = _tmpfs(str(self._site), "ro", "nosuid", "nodev", "noexec")
        mounts["/proc"] = {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "nodev", "noexec"],
        }
        # runc makes its default devices (null, zero, full, random, urandom, tty) in it.
        mounts["/dev"] = _tmpfs("/dev", "nosuid", "noexec", "strictatime", "mode=755", "size=64k")
        mounts["/dev/shm"] = _tmpfs(
            "/dev/shm", "nosuid", "nodev", "noexec", "mode=1777", f"size={TMP_BYTES}"
        )
        # Parents before what is mounted inside them: code below /tmp lands on the tmpfs.
        return [mounts[k] for k in sorted(mounts, key=lambda p: Path(p).parts)]

    def classify(self, spec: SandboxSpec, status: ExitStatus) -> ExitStatus:
        # The shells report a death by signal N as exit status 128 + N, as bwrap does.
        return classify_wrapped(self.cgroups, spec.sandbox_id, status)

    def release(self, spec: SandboxSpec) -> None:
        # The container's init leads a session of its own, so killing the wrapper's process
        # group (destroy) leaves it running: kill it here, then delete the container (state
        # and cgroups). `delete --force` alone would kill it too, but then polls for its end
        # in steps of 100 ms.
        self._kill(spec.sandbox_id)
        self._runc("delete", "--force", spec.sandbox_id)
        self.egress.close(spec.sandbox_id)
        shutil.rmtree(spec.workdir / "bundle", ignore_errors=True)

    def _kill(self, container: str) -> None:
        state = self._runc("state", container)
        try:
            pid = int(json.loads(state.stdout)["pid"])
        except (ValueError, KeyError, TypeError):
            return  # no such container (it never started)
        if pid <= 0:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return  # already gone
        try:
            # The pidfd pins the process: if it is still in this container's group it is
            # the container's init, not a stranger that was given a recycled pid.
            if f"/{container}\n" not in Path(f"/proc/{pid}/cgroup").read_text():
                return
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], 5)  # readable once it has exited
        except OSError:
            pass
        finally:
            os.close(fd)


def _bind(source: str, destination: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["bind", "ro", "nosuid", "nodev"],
    }


def _tmpfs(destination: str, *options: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": list(options),
    }


def _run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
    )


def _remove_stale(runc: str) -> None:
    """Delete the containers of platform processes that no longer run (killed, crashed):
    the processes, the runc state and the cgroups (their parents go with the cgroups
    module's own clean-up)."""
    with contextlib.suppress(OSError):
        for root in STATE_ROOT.iterdir():
            if not root.name.isdigit() or Path(f"/proc/{root.name}").exists():
                continue
            listed = _run([runc, "--root", str(root), "list", "--quiet"])
            for cid in listed.stdout.decode().split():
                _run([runc, "--root", str(root), "delete", "--force", cid])
            shutil.rmtree(root, ignore_errors=True)


def _v1_hierarchies() -> list[Path]:
    """This process's group in each cgroup v1 hierarchy (and, in hybrid mode, the unified
    one, where runc makes a group as well)."""
    groups = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            mount = cgroups.ROOT / (names.removeprefix("name=") if names else "unified")
            if mount.is_dir():
                groups.append(mount / path.lstrip("/"))
    return groups
