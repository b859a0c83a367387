"""Tries to change its own code: a new module, its handler overwritten, a mode change, the
bytecode compiled at deploy replaced (what every later replica would run)."""

import os
import sys

from probe import attempt


def _append(path):
    with open(path, "a") as f:
        f.write("\n# owned\n")


def _create(path):
    with open(path, "w") as f:
        f.write("OWNED = True\n")


def handle(event, context):
    here = os.path.dirname(os.path.abspath(__file__))
    cache = os.path.join(here, "__pycache__")
    pyc = os.path.join(cache, f"handler.{sys.implementation.cache_tag}.pyc")
    return {
        "pyc_exists": os.path.exists(pyc),
        "pyc": attempt(_create, pyc),
        "pyc_new": attempt(
            _create, os.path.join(cache, f"evil.{sys.implementation.cache_tag}.pyc")
        ),
        "code_dir": here,
        "create": attempt(_create, os.path.join(here, "evil.py")),
        "append": attempt(_append, os.path.abspath(__file__)),
        "chmod": attempt(os.chmod, os.path.abspath(__file__), 0o777),
        "rename": attempt(os.rename, os.path.abspath(__file__), os.path.join(here, "moved.py")),
        "mkdir": attempt(os.mkdir, os.path.join(here, "evil")),
    }
