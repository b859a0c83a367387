"""The seccomp filter every isolating backend applies: a deny list of what a function never
needs, in the spirit of Docker's default profile (which allows a list instead; a deny list
keeps working as the kernel grows new harmless calls, and it names what it refuses).

Denied calls fail with EPERM, so a function sees an ordinary error rather than dying;
``clone3`` fails with ENOSYS so that the C library falls back to ``clone``, whose flags a
filter can inspect: creating namespaces through ``clone`` is refused like ``unshare``.
The ``namespaces`` backend hands bubblewrap the compiled program (``bpf_program``); the
``oci`` backend gives runc the same list as the ``linux.seccomp`` section (``oci_seccomp``).
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from typing import Any

DENIED_SYSCALLS: tuple[str, ...] = (
    # Filesystems and the root: a replica's view is fixed when it starts.
    "mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    # Namespaces: no new ones, no joining others.
    "unshare", "setns",
    # Other processes' memory.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # The kernel itself.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module", "bpf", "perf_event_open",
    "lookup_dcookie", "syslog", "iopl", "ioperm", "uselib", "nfsservctl", "sysfs",
    "_sysctl", "personality", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register",
    # Keys, the machine's clock, name, swap, power, accounting, quotas.
    "keyctl", "add_key", "request_key", "reboot", "swapon", "swapoff", "acct", "quotactl",
    "quotactl_fd", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
    "sethostname", "setdomainname", "vhangup",
    # File handles bypass the mount namespace's view.
    "open_by_handle_at", "name_to_handle_at",
    # Fanotify watches whole mounts.
    "fanotify_init",
)  # fmt: skip

# Flags of clone(2) that create namespaces: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
# NEWUSER, NEWPID, NEWNET (and CLONE_NEWTIME, 0x80).
CLONE_NAMESPACE_FLAGS = (
    0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x80
)  # fmt: skip


@functools.cache
def bpf_program() -> bytes:
    """The filter compiled to classic BPF for this machine's architecture (libseccomp via
    pyseccomp), cached: every sandbox gets the same bytes."""
    import pyseccomp as seccomp  # type: ignore[import-untyped]

    f = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (ValueError, OSError):
            continue  # not a system call on this architecture (e.g. create_module)
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(
            seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag)
        )
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def program_fd() -> int:
    """A fresh descriptor from which the compiled filter can be read once, from the start
    (what ``bwrap --seccomp FD`` wants); the caller closes it."""
    fd = os.memfd_create("faasbox-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, bpf_program())
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def oci_seccomp() -> dict[str, Any]:
    """The same filter as an OCI runtime spec ``linux.seccomp`` section (for runc)."""
    clone_rules = [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        for flag in CLONE_NAMESPACE_FLAGS
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        if os.uname().machine == "x86_64"
        else [],
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
            *clone_rules,
        ],
    }
