"""Tries to reach host files (paths in the query) through the roots and working
directories that /proc shows: its own, pid 1's, every visible process's, the platform's."""

import os

from probe import attempt, read_head, visible_pids


def handle(event, context):
    markers = event.query["markers"].split(",")
    data = event.query["data"]
    prefixes = [
        "/proc/self/root",
        "/proc/1/root",
        "/proc/self/cwd/..",
        "/proc/1/cwd/..",
        *(f"/proc/{pid}/root" for pid in visible_pids()),
        f"/proc/{event.query['platform']}/root",
    ]
    own_root = sorted(os.listdir("/"))
    out = {"direct": {m: attempt(read_head, m) for m in markers}, "own_root": own_root, "via": {}}
    for prefix in dict.fromkeys(prefixes):
        listing = attempt(lambda p=prefix: sorted(os.listdir(p + "/")))
        out["via"][prefix] = {
            "markers": {m: attempt(read_head, prefix + m) for m in markers},
            "database": attempt(read_head, prefix + os.path.join(data, "faasbox.db")),
            "root": "same as its own" if listing.get("value") == own_root else listing,
        }
    return out
