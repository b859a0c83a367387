"""Runs the setuid binaries it can see and looks at the identity they get; makes a setuid
program of its own; tries to hand a file to root."""

import os
import shutil
import stat
import subprocess
import tempfile
import time

from probe import attempt

SEARCH = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin")
SEARCH_DEEP = ("/usr/lib", "/usr/libexec")


def _setuid_files():
    found = []
    for top in SEARCH:
        for name in attempt(os.listdir, top).get("value") or []:
            found.append(os.path.join(top, name))
    for root in SEARCH_DEEP:
        for top, dirs, files in os.walk(root):
            if top.count("/") - root.count("/") >= 2:
                dirs[:] = []
            found += [os.path.join(top, f) for f in files]
    out, seen = [], set()
    for path in found:
        try:
            st = os.stat(path)
        except OSError:
            continue
        # /bin may be /usr/bin again: the same file counts once.
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            out.append(path)
    return out


def _status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "CapEff", "CapPrm", "NoNewPrivs"):
                fields[key] = value.split()
    return fields


def _run_frozen(path):
    """Run ``path`` with stdout/stderr on a pipe that is already full: its first message
    blocks it, long enough to read the identity it runs with."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"\0" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=w, stderr=w)
    os.close(w)
    seen = exe = None
    try:
        # Until it has replaced the forked interpreter, the identity is not its own yet.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                exe = os.readlink(f"/proc/{proc.pid}/exe")
                if exe == os.path.realpath(path):
                    time.sleep(0.05)
                    seen = _status(proc.pid)
                    break
            except OSError:
                break
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        os.close(r)
    return {"status": seen, "exe": exe, "returncode": proc.returncode}


def _mount_with_setuid_mount(scratch):
    target = os.path.join(scratch, "mnt")
    os.mkdir(target)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "none", target], capture_output=True, text=True, timeout=10
    )
    mounted = os.path.ismount(target)
    if mounted:  # undo it: this suite must be safe to get wrong
        subprocess.run(["umount", target], capture_output=True, timeout=10)
    return {"returncode": done.returncode, "stderr": done.stderr[-300:], "mounted": mounted}


def _own_setuid_program(scratch):
    own = {}
    copy = os.path.join(scratch, "my-id")
    shutil.copy(shutil.which("id"), copy)
    own["chmod"] = attempt(os.chmod, copy, 0o4755)
    own["chown_root"] = attempt(os.chown, copy, 0, 0)
    own["euid"] = attempt(
        lambda: subprocess.run([copy, "-u"], capture_output=True, text=True).stdout.strip()
    )
    os.unlink(copy)
    return own


def handle(event, context):
    binaries = _setuid_files()
    runs = {path: attempt(_run_frozen, path) for path in binaries[:16]}
    scratch = tempfile.mkdtemp()
    return {
        "self": _status("self"),
        "setuid_binaries": binaries,
        "runs": runs,
        "mount": attempt(_mount_with_setuid_mount, scratch) if shutil.which("mount") else None,
        "own_setuid": _own_setuid_program(scratch) if shutil.which("id") else None,
    }
