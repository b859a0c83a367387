"""``faasbox invoke``: call a function and write its answer to stdout."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.text import Text

from faasbox.cli.params import NameArg
from faasbox.cli.render import print_error
from faasbox.cli.state import CliState, get_state
from faasbox.client import INVOKE_TIMEOUT, CallTimeout, ClientError, error_from_response

_HIGHLIGHT = {"x-faasbox-cold-start", "x-call-id", "x-duration-seconds"}


def invoke(
    ctx: typer.Context,
    name: NameArg,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", metavar="TEXT", help="Request body (text).", show_default=False
        ),
    ] = None,
    data_file: Annotated[
        str | None,
        typer.Option(
            "--data-file",
            "-D",
            metavar="FILE",
            help="Read the request body from FILE ('-' for stdin).",
            show_default=False,
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", metavar="KEY=VALUE", help="Request header; repeatable."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            "-X",
            metavar="METHOD",
            help="HTTP method. Default: POST with a body, else GET.",
        ),
    ] = None,
    path: Annotated[
        str,
        typer.Option(
            "--path",
            "-p",
            metavar="PATH",
            help="Sub-path after /function/NAME, e.g. /users/1.",
            show_default=False,
        ),
    ] = "",
    query: Annotated[
        list[str] | None,
        typer.Option("--query", "-q", metavar="KEY=VALUE", help="Query parameter; repeatable."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            metavar="SECONDS",
            help="How long to wait for the answer (at least 0.1). The function's own timeout "
            "(30s unless set) still applies on the server.",
        ),
    ] = INVOKE_TIMEOUT,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Print the status line and headers to stderr first."),
    ] = False,
    run_async: Annotated[
        bool,
        typer.Option(
            "--async",
            help="Queue the call (POST /async-function/NAME) instead of waiting for it: prints "
            "its call id; failed runs are retried, then kept as dead letters (faasbox queue).",
        ),
    ] = False,
    callback: Annotated[
        str | None,
        typer.Option(
            "--callback",
            metavar="URL",
            help="With --async: POST the function's answer to URL when the call finishes.",
            show_default=False,
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="With --async: the same KEY sent again within the gateway's idempotency "
            "window (a day by default) queues nothing new and gives back the first call's id.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Call a function: POST /function/NAME, or GET without a body.

    The body comes from --data, --data-file, or stdin when it is piped. The answer's body is
    written to stdout as is; the exit code is 1 when its status is 400 or more.

    With --async the call is queued and runs later (always as a POST): the call id is
    written to stdout, and `faasbox activation CALL_ID` shows its state and attempts.

    Examples:

    * `faasbox invoke hello --data world -v`
    * `echo '{"a": 1}' | faasbox invoke hello -H content-type=application/json`
    * `faasbox invoke api -X DELETE --path /items/3 --query force=true`
    * `faasbox invoke report --async --data '{"day": 3}' --idempotency-key report-3`
    """
    state = get_state(ctx)
    if not run_async:
        for given, option, what in (
            (callback, "--callback", "a callback"),
            (idempotency_key, "--idempotency-key", "an idempotency key"),
        ):
            if given is not None:
                raise typer.BadParameter(
                    f"only asynchronous calls take {what}: add --async", param_hint=option
                )
    elif method is not None and method.upper() != "POST":
        raise typer.BadParameter(
            f"asynchronous calls are always POSTed, not {method.upper()}: drop --method or --async",
            param_hint="--method",
        )
    if callback is not None and not callback.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"{callback!r} is not an http:// or https:// URL", param_hint="--callback"
        )
    body = _body(data, data_file)
    headers = [_pair(h, "--header", header=True) for h in header or []]
    params = [_pair(q, "--query") for q in query or []]
    if run_async:
        _invoke_async(state, name, body, path, params, headers, callback, idempotency_key, verbose)
        return
    with state.client() as client:
        try:
            response = client.invoke(
                name,
                data=body,
                method=method.upper() if method else None,
                path=path,
                query=params,
                headers=headers,
                timeout=timeout,
            )
        except CallTimeout:
            # Not "faasbox is down": the gateway took the call, the function is slow.
            example = " (e.g. --timeout 30)" if timeout < 30 else ""
            print_error(
                state.err,
                f"the call to {name!r} took longer than --timeout {timeout:g}s (it may still "
                f"be running on the server); give it more time with --timeout SECONDS{example}",
            )
            raise typer.Exit(1) from None
    if verbose:
        _print_head(state.err, response)
    if response.status_code >= 400:
        error = error_from_response(response)
        if error.code is None:
            # Not faasbox's error shape: the function's own answer, which the caller may want.
            _write_body(response.content)
        print_error(state.err, error.message, error.detail)
        raise typer.Exit(1)
    _write_body(response.content)


def _invoke_async(
    state: CliState,
    name: str,
    body: bytes | None,
    path: str,
    params: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    callback: str | None,
    idempotency_key: str | None,
    verbose: bool,
) -> None:
    with state.client() as client:
        try:
            accepted = client.invoke_async(
                name,
                data=body,
                path=path,
                query=params,
                headers=headers,
                callback_url=callback,
                idempotency_key=idempotency_key,
            )
        except ClientError as exc:
            if exc.status != 413:
                raise
            raise ClientError(
                f"{exc.message}; the gateway's limit for asynchronous calls is set with "
                "`faasbox up --async-max-body SIZE`",
                status=exc.status,
                code=exc.code,
                detail=exc.detail,
            ) from None
    if verbose:
        _print_head(state.err, accepted.response)
    call_id = accepted.call_id
    if accepted.replay:
        key = f" {idempotency_key!r}" if idempotency_key is not None else ""
        note = (
            f"nothing new queued: the idempotency key{key} names an earlier call to "
            f"{name!r}, {call_id}"
        )
    else:
        note = f"queued an asynchronous call to {name!r}: {call_id}"
    follow = f"faasbox{state.gateway_args()} activation {call_id}"
    state.err.print(f"{note}\nfollow it with: {follow}", markup=False, highlight=False)
    # Only the id on stdout, for scripts: id=$(faasbox invoke fn --async)
    sys.stdout.write(call_id + "\n")
    sys.stdout.flush()


def _body(data: str | None, data_file: str | None) -> bytes | None:
    if data is not None and data_file is not None:
        raise typer.BadParameter("give either --data or --data-file, not both")
    if data is not None:
        return data.encode()
    if data_file == "-":
        return sys.stdin.buffer.read()
    if data_file is not None:
        try:
            return Path(data_file).read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {data_file}: {exc.strerror}") from None
    if _stdin_is_piped():
        piped = sys.stdin.buffer.read()
        return piped or None
    return None


def _stdin_is_piped() -> bool:
    # Read stdin only when something is piped or redirected from a file: a terminal, a
    # closed stdin or /dev/null (as under cron or CI) means "no body".
    if sys.stdin is None:
        return False
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _pair(text: str, option: str, *, header: bool = False) -> tuple[str, str]:
    # Headers may also be written curl-style, `Key: value`.
    cut = [i for i in (text.find("="), text.find(":") if header else -1) if i > 0]
    if not cut:
        raise typer.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint=option)
    i = min(cut)
    return text[:i].strip(), text[i + 1 :].strip()


def _print_head(err: Console, response: httpx.Response) -> None:
    err.print(
        Text(
            f"{response.http_version} {response.status_code} {response.reason_phrase}", style="bold"
        ),
        highlight=False,
    )
    for raw_key, raw_value in response.headers.raw:
        key = raw_key.decode("latin-1")
        value = raw_value.decode("latin-1")
        style = "bold yellow" if key.lower() in _HIGHLIGHT else ""
        err.print(Text.assemble((f"{key}: ", style or "cyan"), (value, style)), soft_wrap=True)
    err.print()


def _write_body(content: bytes) -> None:
    out = sys.stdout.buffer
    out.write(content)
    if content and not content.endswith(b"\n") and sys.stdout.isatty():
        out.write(b"\n")
    out.flush()
