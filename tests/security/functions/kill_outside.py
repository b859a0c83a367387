"""Tries to kill processes outside its sandbox: host pids from the query, pid 1, and -1
(every process it may signal)."""

import os
import signal

from probe import attempt, cmdlines, visible_pids

# A host shows hundreds of processes; a replica's own PID namespace a handful.
OWN_NAMESPACE_AT_MOST = 32


def handle(event, context):
    if event.path == "/ping":
        return {"pong": True}
    if event.path == "/broadcast":
        # Last: these may take its own sandbox down, which is its own business. Not tried
        # where it would reach a whole machine: this suite must be safe to get wrong.
        if len(visible_pids()) > OWN_NAMESPACE_AT_MOST:
            return {"skipped": f"{len(visible_pids())} processes visible: no PID namespace"}
        return {
            "pid1": attempt(os.kill, 1, signal.SIGKILL),
            "all": attempt(os.kill, -1, signal.SIGKILL),
        }
    marker = event.query["marker"]
    targets = {
        pid: attempt(os.kill, int(pid), signal.SIGKILL) for pid in event.query["pids"].split(",")
    }
    seen = cmdlines()
    return {
        "targets": targets,
        "visible": sorted(seen),
        "marker_visible": [pid for pid, line in seen.items() if marker in line],
        "platform_visible": [pid for pid, line in seen.items() if "faasbox up" in line],
    }
