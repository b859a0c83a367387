"""Tries mount, namespace and ptrace calls through libc. They run in a child process of
its own: one thread (unshare of a user namespace needs that), and nothing of the runtime
at stake should one of them succeed.

Each attempt undoes itself if it succeeds, so that a sandbox that fails to refuse them
(or none at all) is left as it was: mounts go on private directories and are unmounted,
and pid 1 is only seized (PTRACE_SEIZE stops nothing; the tracer's exit detaches it)."""

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

from probe import attempt, check, libc

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PTRACE_TRACEME = 0
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206


def _mount(source, target, fstype, flags, undo=None):
    check(libc.mount(source, target, fstype, ctypes.c_ulong(flags), None))
    if undo is None:
        check(libc.umount2(target, MNT_DETACH))
    else:
        undo()
    return "succeeded (undone)"


def _umount(target):
    check(libc.umount2(target, MNT_DETACH))
    return "succeeded"


def _ptrace(request, pid):
    return check(libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None))


def _traceme_in_child():
    # PTRACE_TRACEME makes the caller's parent its tracer: asked by a throwaway child.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, json.dumps(attempt(_ptrace, PTRACE_TRACEME, 0)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        result = json.loads(f.read())
    os.waitpid(pid, 0)
    return result


def _attach_to_child():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        result = attempt(_ptrace, PTRACE_ATTACH, pid)
        if result["ok"]:
            os.waitpid(pid, 0)  # its attach stop
            _ptrace(PTRACE_DETACH, pid)
        return result
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def main():
    code = sys.argv[1].encode()
    scratch = tempfile.mkdtemp().encode()
    ro_again = lambda: check(  # noqa: E731
        libc.mount(None, code, None, ctypes.c_ulong(MS_REMOUNT | MS_BIND | MS_RDONLY), None)
    )
    results = {
        "mount_tmpfs": attempt(_mount, b"none", scratch, b"tmpfs", 0),
        "bind_root": attempt(_mount, b"/", scratch, None, MS_BIND),
        "remount_code_rw": attempt(_mount, None, code, None, MS_REMOUNT | MS_BIND, ro_again),
        "umount_code": attempt(_umount, code),
        "chroot": attempt(lambda: check(libc.chroot(scratch))),
        "unshare_user": attempt(lambda: check(libc.unshare(CLONE_NEWUSER))),
        "unshare_user_mount": attempt(lambda: check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))),
        "unshare_mount": attempt(lambda: check(libc.unshare(CLONE_NEWNS))),
        "unshare_net": attempt(lambda: check(libc.unshare(CLONE_NEWNET))),
        "unshare_pid": attempt(lambda: check(libc.unshare(CLONE_NEWPID))),
        "ptrace_traceme": _traceme_in_child(),
        "ptrace_attach_child": _attach_to_child(),
        "ptrace_seize_pid1": attempt(_ptrace, PTRACE_SEIZE, 1),
    }
    results["mounted"] = attempt(os.path.ismount, scratch.decode())
    print(json.dumps(results))


def handle(event, context):
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-S", "-E", os.path.abspath(__file__), here],
        capture_output=True,
        text=True,
        timeout=20,
    )
    if proc.returncode != 0:
        return {"child_failed": proc.returncode, "stderr": proc.stderr[-2000:]}
    return json.loads(proc.stdout)


if __name__ == "__main__":
    main()
