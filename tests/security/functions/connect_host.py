"""Tries to reach TCP servers on the host (targets ``host:port,...`` in the query)."""

import socket

from probe import attempt


def _talk(host, port):
    with socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(2)
        return s.recv(100).decode("utf-8", "replace")


def handle(event, context):
    results = {}
    for target in event.query["targets"].split(","):
        host, _, port = target.rpartition(":")
        results[target] = attempt(_talk, host, int(port))
    return {"results": results, "interfaces": [name for _, name in socket.if_nameindex()]}
