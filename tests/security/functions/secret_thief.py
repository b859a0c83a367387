"""Lists no secret, and looks for another function's everywhere it can."""

import os

from probe import SYSTEM_TREES, attempt, cmdlines, grep, read_head, visible_pids, walk_files


def handle(event, context):
    name = event.query["name"]
    data = event.query["data"]
    needle = event.query["value"].encode()
    environs = [f"/proc/{pid}/environ" for pid in visible_pids()]
    files = walk_files(["/"], skip=SYSTEM_TREES, budget_s=8.0)
    return {
        "read": attempt(read_head, f"/var/openfaas/secrets/{name}"),
        "listing": attempt(lambda: sorted(os.listdir("/var/openfaas/secrets"))),
        "env": [k for k, v in os.environ.items() if needle.decode() in v],
        "found_in": grep([*files, *environs], needle),
        "cmdline": [pid for pid, line in cmdlines().items() if needle.decode() in line],
        "searched": len(files),
        # Where the platform keeps secrets: encrypted, with their key, and per replica.
        "store": attempt(lambda: sorted(os.listdir(os.path.join(data, "secrets")))),
        "key": attempt(read_head, os.path.join(data, "secret.key")),
        "replicas": attempt(lambda: sorted(os.listdir(os.path.join(data, "run")))),
    }
