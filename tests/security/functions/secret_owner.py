"""Lists a secret and reads it."""

import os

from probe import attempt, read_head


def handle(event, context):
    name = event.query["name"]
    return {
        "read": attempt(read_head, f"/var/openfaas/secrets/{name}"),
        "listing": attempt(lambda: sorted(os.listdir("/var/openfaas/secrets"))),
    }
