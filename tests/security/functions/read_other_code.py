"""Tries to read another function's code (its directory comes in the query)."""

import os

from probe import attempt, grep, read_head, walk_files


def handle(event, context):
    other = event.query["other"]
    code_root = os.path.dirname(other)
    visible = walk_files([code_root])
    return {
        "own_code": os.path.dirname(os.path.abspath(__file__)),
        "handler": attempt(read_head, os.path.join(other, "handler.py")),
        "listing": attempt(lambda: sorted(os.listdir(other))),
        "code_root": attempt(lambda: sorted(os.listdir(code_root))),
        "token_found_in": grep(visible, event.query["token"].encode()),
    }
