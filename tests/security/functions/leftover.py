"""Leaves processes behind after answering: a child in a session of its own that ignores
SIGTERM, and an orphan (double fork) adopted by whatever reaps in its sandbox."""

import os
import subprocess
import sys

LOOP = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)"
)


def handle(event, context):
    tag = event.query["tag"]
    child = subprocess.Popen(
        [sys.executable, "-c", LOOP, tag + "-child"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", LOOP, tag + "-orphan"])
        os._exit(0)
    os.waitpid(pid, 0)
    return {"child": child.pid}
