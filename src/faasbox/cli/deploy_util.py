"""Deploying stack functions without the interactive display: the create-or-update step
``faasbox deploy`` is built on, and ``deploy_stack_quiet`` for ``faasbox up --deploy``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from faasbox.client import (
    Client,
    ClientError,
    FunctionStatus,
    GatewayUnreachable,
    NotAGateway,
    UploadProgress,
)

if TYPE_CHECKING:
    from faasbox.stack import FunctionDef


def deploy_function(
    client: Client, fn: FunctionDef, bundle: bytes, on_upload: UploadProgress | None = None
) -> FunctionStatus:
    """Create the function, or add a version when it exists (the POST answers 409)."""
    spec = fn.to_spec()
    try:
        return client.deploy(spec, bundle, update=False, on_upload=on_upload)
    except ClientError as exc:
        if exc.status != 409:
            raise
    return client.deploy(spec, bundle, update=True, on_upload=on_upload)


def deployed_version(status: FunctionStatus) -> object:
    # The deploy answer names the version it made; `version` is the one serving.
    return status.get("deployedVersion", status.get("version", "?"))


def deploy_stack_quiet(url: str, path: Path) -> bool:
    """Deploy every function of the stack file at ``path`` to ``url``, one line each on
    stderr; True when all are ready. Never raises for a user error."""
    from faasbox.stack import StackError, load_stack, zip_directory

    try:
        stack = load_stack(path)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return False
    ok = True
    with Client(url) as client:
        for fn in stack.functions.values():
            try:
                status = deploy_function(client, fn, zip_directory(fn.path))
            except (GatewayUnreachable, NotAGateway) as exc:
                print(f"error: {exc.message}", file=sys.stderr, flush=True)
                return False
            except (StackError, ClientError) as exc:
                message = exc.message if isinstance(exc, ClientError) else str(exc)
                detail = exc.detail if isinstance(exc, ClientError) else None
                print(f"{fn.name}: deploy failed: {message}", file=sys.stderr, flush=True)
                if detail:
                    print(detail.rstrip("\n"), file=sys.stderr, flush=True)
                ok = False
                continue
            version = deployed_version(status)
            print(f"{fn.name}: ready, version {version}", file=sys.stderr, flush=True)
    return ok
