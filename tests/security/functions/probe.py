"""Deployed next to every hostile function (``from probe import ...``): runs attempts and
reports what happened as JSON, so a test can tell "refused" from "did not try"."""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

libc = ctypes.CDLL(None, use_errno=True)

# Host-shared trees that hold nothing of the platform's: not worth a search's time budget.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/usr", "/lib", "/lib64", "/bin", "/sbin")


def attempt(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``{"ok": True, "value": ...}`` or ``{"ok": False, "error", "errno", "message"}``."""
    try:
        value = fn(*args)
    except Exception as exc:
        out: dict[str, Any] = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:300]}
        if isinstance(exc, OSError) and exc.errno is not None:
            out["errno"] = errno.errorcode.get(exc.errno, str(exc.errno))
        return out
    return {"ok": True, "value": value}


def check(rc: int) -> int:
    """A libc call's -1 as the OSError it stands for."""
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def read_head(path: str, n: int = 200) -> str:
    with open(path, "rb") as f:
        return f.read(n).decode("utf-8", "replace")


def set_comm(name: str) -> None:
    """Name this process (``/proc/PID/comm``, 15 bytes), so the host can find it."""
    pr_set_name = 15
    check(libc.prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0))


def walk_files(roots: Iterable[str], skip: Iterable[str] = (), budget_s: float = 5.0) -> list[str]:
    """Every regular file visible under ``roots`` (no symlinks followed), within a time budget."""
    skip = tuple(skip)
    deadline = time.monotonic() + budget_s
    found: list[str] = []
    for root in roots:
        for top, dirs, files in os.walk(root, onerror=lambda _exc: None):
            dirs[:] = [d for d in dirs if not os.path.join(top, d).startswith(skip)]
            for name in files:
                path = os.path.join(top, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    found.append(path)
            if time.monotonic() > deadline:
                found.append("<time budget exhausted>")
                return found
    return found


def grep(paths: Iterable[str], needle: bytes, max_bytes: int = 1 << 20) -> list[str]:
    """The readable files among ``paths`` whose first ``max_bytes`` contain ``needle``."""
    hits = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                if needle in f.read(max_bytes):
                    hits.append(path)
        except OSError:
            continue
    return hits


def visible_pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def cmdlines() -> dict[int, str]:
    out = {}
    for pid in visible_pids():
        try:
            out[pid] = read_head(f"/proc/{pid}/cmdline", 4096).replace("\0", " ")
        except OSError:
            continue
    return out
