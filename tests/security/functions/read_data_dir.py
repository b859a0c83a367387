"""Looks at the platform's data directory (its path comes in the query)."""

import os

from probe import attempt, read_head, walk_files


def handle(event, context):
    data = event.query["data"]
    return {
        "own_code": os.path.dirname(os.path.abspath(__file__)),
        "listing": attempt(lambda: sorted(os.listdir(data))),
        "database": attempt(read_head, os.path.join(data, "faasbox.db")),
        "logs": attempt(lambda: sorted(os.listdir(os.path.join(data, "logs")))),
        "run": attempt(lambda: sorted(os.listdir(os.path.join(data, "run")))),
        "visible_files": walk_files([data]),
    }
