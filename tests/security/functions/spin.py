"""Spins the CPU forever, in a process named so the host can see it die."""

from probe import set_comm


def handle(event, context):
    if event.path == "/ping":
        return {"pong": True}
    set_comm(event.query["tag"])
    n = 0
    while True:
        n += 1
