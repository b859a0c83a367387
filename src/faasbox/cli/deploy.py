"""``faasbox deploy``: zip each function of the stack file, upload it, wait for its build."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from faasbox.cli.deploy_util import deploy_function, deployed_version
from faasbox.cli.errors import CliError
from faasbox.cli.render import print_error
from faasbox.cli.state import get_state
from faasbox.client import (
    DEFAULT_GATEWAY,
    Client,
    ClientError,
    FunctionStatus,
    GatewayUnreachable,
    NotAGateway,
    normalize_url,
)

if TYPE_CHECKING:
    from faasbox.stack import FunctionDef


def deploy(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="NAME",
            help="Functions to deploy. Default: every function in the file.",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path, typer.Option("--file", "-f", metavar="FILE", help="Stack file.", dir_okay=False)
    ] = Path("faasbox.yml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print the build log.")] = False,
) -> None:
    """Deploy functions from faasbox.yml: a new function, or a new version of an existing one.

    Each function directory is zipped and uploaded; the command waits until the version is
    built and ready. A failed build prints its log. With several functions, a failure does
    not stop the others, and the exit code is 1 if any failed.

    Examples:

    * `faasbox deploy` (every function in ./faasbox.yml)
    * `faasbox deploy -f examples/faasbox.yml hello -v`
    """
    # Imported here: pydantic and the stack model are only needed by new and deploy, and
    # every other command starts faster without them.
    from faasbox.stack import StackError, load_stack

    state = get_state(ctx)
    try:
        stack = load_stack(file)
    except StackError as exc:
        raise CliError(str(exc)) from None
    if not stack.functions:
        raise CliError(f"{file}: no functions listed (add one with `faasbox new NAME`)")
    unknown = [n for n in names or [] if n not in stack.functions]
    if unknown:
        listed = ", ".join(stack.functions)
        raise CliError(f"{file}: no function {', '.join(map(repr, unknown))} (listed: {listed})")
    selected = [stack.functions[n] for n in dict.fromkeys(names or stack.functions)]
    failed: list[str] = []
    with state.client(stack) as client:
        for fn in selected:
            if not _deploy_one(client, fn, state.out, state.err, verbose=verbose):
                failed.append(fn.name)
    if failed:
        if len(selected) > 1:
            state.err.print(
                f"{len(selected) - len(failed)} deployed, {len(failed)} failed: {', '.join(failed)}",
                markup=False,
                highlight=False,
            )
        raise typer.Exit(1)


def _deploy_one(
    client: Client, fn: FunctionDef, out: Console, err: Console, *, verbose: bool
) -> bool:
    from faasbox.stack import StackError, zip_directory

    try:
        bundle = zip_directory(fn.path)
    except StackError as exc:
        print_error(err, f"{fn.name}: {exc}")
        return False
    started = time.monotonic()
    try:
        with _progress(err, fn.name, len(bundle)) as on_upload:
            status = deploy_function(client, fn, bundle, on_upload)
    except (GatewayUnreachable, NotAGateway):
        raise  # no use going on with the other functions
    except ClientError as exc:
        print_error(err, f"{fn.name}: {exc.message}", exc.detail)
        return False
    _report(out, client.base_url, fn.name, status, time.monotonic() - started, verbose=verbose)
    return True


def _report(
    out: Console, base_url: str, name: str, status: FunctionStatus, took: float, *, verbose: bool
) -> None:
    log = status.get("buildLog")
    if verbose and log:
        out.print(Text(log.rstrip("\n"), style="dim"), soft_wrap=True, highlight=False)
    version = deployed_version(status)
    state = status.get("status", "ready")
    if status.get("unchanged"):
        line = Text.assemble(
            ("= ", "cyan"), (name, "bold"), f" unchanged: version {version} already has this code"
        )
    elif state == "ready":
        line = Text.assemble(
            ("✓ ", "green"), (name, "bold"), f" ready: version {version} ({took:.1f}s)"
        )
    else:
        line = Text.assemble(
            ("… ", "yellow"), (name, "bold"), f" accepted: version {version}, {state}"
        )
    out.print(line, highlight=False)
    out.print(f"  curl {base_url}/function/{name}", markup=False, highlight=False, soft_wrap=True)
    url = normalize_url(base_url)
    gateway = "" if url == DEFAULT_GATEWAY else f" --gateway {shlex.quote(url)}"
    out.print(f"  faasbox{gateway} invoke {name}", markup=False, highlight=False)


class _Upload:
    """Upload progress, then a "building" spinner once the last byte is sent."""

    def __init__(self, console: Console, progress: Progress | None, name: str, size: int) -> None:
        self.console = console
        self.progress = progress
        self.name = name
        self.size = size
        self.upload: TaskID | None = None
        self.build: TaskID | None = None
        self.announced = False
        if progress is not None:
            self.upload = progress.add_task(f"uploading {name}", total=size, size="")
        else:
            console.print(f"{name}: uploading {decimal(size)}", markup=False, highlight=False)

    def __call__(self, sent: int, total: int) -> None:
        if self.progress is not None and self.upload is not None:
            self.progress.update(
                self.upload, completed=sent, size=f"{decimal(sent)}/{decimal(total)}"
            )
        if sent < total:
            return
        if self.progress is None:
            if not self.announced:
                self.console.print(f"{self.name}: building…", markup=False, highlight=False)
            self.announced = True
        elif self.build is None:
            if self.upload is not None:
                self.progress.update(self.upload, visible=False)
            self.build = self.progress.add_task(f"building {self.name}", total=None, size="")
        else:  # the upload was sent again (a new version after 409): restart the clock
            self.progress.reset(self.build)


@contextmanager
def _progress(console: Console, name: str, size: int) -> Iterator[_Upload]:
    if not console.is_terminal:
        yield _Upload(console, None, name, size)
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[size]}", style="dim"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield _Upload(console, progress, name, size)
