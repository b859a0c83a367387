"""A fork bomb: forks until refused, and every child forks too, forever, each named so the
host can count them. Returns how many forks the first process got before a refusal.

Should nothing contain it, it stops itself at 512 processes (four times the suite's
limit), counted in a shared file: this suite must be safe to get wrong. Only forks that
succeeded count (refused ones are retried, and counting them would let the retries of a
contained bomb reach the cap before its first process is refused)."""

import os
import tempfile
import time

from probe import set_comm

CAP = 512


def _may_fork(counter):
    return os.fstat(counter).st_size < CAP


def _forked(counter):
    os.write(counter, b"x")  # O_APPEND: one byte per fork, atomically


def _bomb(tag, counter):
    try:
        set_comm(tag)
        while True:
            try:
                if _may_fork(counter):
                    if os.fork():
                        _forked(counter)
                else:
                    time.sleep(1)
            except OSError:
                time.sleep(0.05)
    finally:
        os._exit(0)


def handle(event, context):
    if event.path == "/ping":
        return {"pong": True}
    path = os.path.join(tempfile.mkdtemp(), "forks")
    counter = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    started = 0
    while _may_fork(counter):
        try:
            pid = os.fork()
        except OSError as exc:
            return {"started": started, "refused": type(exc).__name__, "message": str(exc)}
        if pid == 0:
            _bomb(event.query["tag"], counter)
        _forked(counter)
        started += 1
    return {"started": started, "refused": None, "message": f"stopped itself at {CAP}"}
