"""Allocates (and touches) memory until something stops it, or it holds 1 GiB: far past
any limit the suite sets, short of hurting a machine whose sandbox sets none."""


def handle(event, context):
    if event.path == "/ping":
        return {"pong": True}
    hoard = []
    while len(hoard) < 256:
        hoard.append(b"\x01" * (4 << 20))
    return {"allocated": sum(map(len, hoard))}
