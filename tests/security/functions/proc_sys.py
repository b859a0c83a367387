"""Looks for kernel settings it could change: every file under /proc/sys, and the other
/proc files that act on the whole machine, opened for writing. Nothing is ever written
(opening a sysctl runs none of its code), so this is safe whatever the sandbox."""

import os

from probe import attempt

MACHINE_WIDE = ("/proc/sysrq-trigger", "/proc/sys/fs/binfmt_misc/register", "/proc/kcore")


def _open_for_writing(path):
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)
    return "opened for writing"


def handle(event, context):
    paths = list(MACHINE_WIDE)
    for top, _, files in os.walk("/proc/sys"):
        paths += [os.path.join(top, name) for name in files]
    results = {path: attempt(_open_for_writing, path) for path in paths}
    return {
        "tried": len(results),
        "writable": sorted(path for path, result in results.items() if result["ok"]),
        "errnos": sorted({result.get("errno", "?") for result in results.values()}),
    }
