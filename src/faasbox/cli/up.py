"""``faasbox up``: the whole platform in one process."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import sys
from pathlib import Path
from typing import Annotated

import typer


class ZygoteMode(enum.StrEnum):
    off = "off"
    scale = "scale"
    always = "always"


def up(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            metavar="PORT", min=0, max=65535, help="Port to listen on; 0 picks a free one."
        ),
    ] = 8080,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", metavar="DIR", help="Where state lives (SQLite, code, layers, logs)."
        ),
    ] = Path(".faasbox"),
    backend: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="Sandbox backend: auto (namespaces where the machine allows, else process), "
            "namespaces (bubblewrap + cgroups), oci (runc), or process (no isolation).",
        ),
    ] = "auto",
    deploy: Annotated[
        list[Path] | None,
        typer.Option(
            "--deploy",
            "-f",
            metavar="FILE",
            help="Stack file(s) to deploy once the platform is up.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="Log level: debug, info, warning, error.")
    ] = "warning",
    prewarm: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=0,
            max=1000,
            help="Prewarmed sandboxes kept ready for cold starts (namespaces backend); "
            "0 turns prewarming off.",
        ),
    ] = 2,
    prewarm_max: Annotated[
        int,
        typer.Option(
            metavar="M",
            min=0,
            max=1000,
            help="At most this many prewarmed sandboxes while cold starts are frequent "
            "(the pool follows the cold starts of the last 10s, between N and M).",
        ),
    ] = 8,
    zygotes: Annotated[
        ZygoteMode,
        typer.Option(
            metavar="off|scale|always",
            help="Fork replicas from a warm copy of their function, its zygote (namespaces "
            "backend; functions with max replicas > 1): scale = every replica but the "
            "first, always = every replica, off = never.",
        ),
    ] = ZygoteMode.scale,
    async_max_body: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help="Largest request body /async-function accepts (e.g. 256Ki, 1Mi); larger: 413.",
        ),
    ] = "256Ki",
    queue_max: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            help="Asynchronous invocations that may wait unfinished; beyond it: 429.",
        ),
    ] = 100_000,
    async_retry_delay: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Delay before an asynchronous invocation's first retry (e.g. 1s, 200ms); "
            "each further retry waits about twice as long (with jitter, at most 5m).",
        ),
    ] = "1s",
    idempotency_window: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="How long an X-Idempotency-Key names its first asynchronous call (e.g. 24h).",
        ),
    ] = "24h",
    drain_timeout: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="On shutdown, how long running asynchronous invocations may take to finish; "
            "those still running then run again after the restart (0: stop them at once).",
        ),
    ] = "10s",
    keep_alive: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="How long an idle keep-alive connection from a client stays open (e.g. 30s).",
        ),
    ] = "30s",
) -> None:
    """Run the platform: gateway, registry, pools and sandboxes in one process."""
    # Imported here, not at the top: the server stack is heavy, and every other CLI
    # command would pay for it at start-up.
    from faasbox.config import Settings
    from faasbox.errors import FaasboxError
    from faasbox.sandbox.backends import choose_backend
    from faasbox.server import bind, run
    from faasbox.units import parse_duration, parse_memory

    try:
        choice = choose_backend(backend)
    except FaasboxError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    print(f"sandbox backend: {choice.name} ({choice.reason})", flush=True)
    if choice.name == "process":
        print(
            "warning: the process backend does not isolate functions from each other or "
            "from this machine; use it for development only",
            file=sys.stderr,
            flush=True,
        )
    try:
        max_body = parse_memory(async_max_body)
        retry_base = parse_duration(async_retry_delay)
        window = parse_duration(idempotency_window)
        idle = parse_duration(keep_alive)
        drain = parse_duration(drain_timeout)
        if idle < 1:
            raise FaasboxError(f"--keep-alive {keep_alive}: use at least 1s")
    except FaasboxError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        typer.echo(
            f"error: cannot use data directory {data_dir}: {exc.strerror}; "
            "pick a writable one with --data-dir",
            err=True,
        )
        raise typer.Exit(2) from None
    try:
        sock = bind(host, port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    settings = Settings(
        data_dir=data_dir,
        backend=choice.name,
        backend_reason=choice.reason,
        prewarm=prewarm,
        prewarm_max=max(prewarm, prewarm_max),
        zygotes=zygotes.value,
        async_max_body_bytes=max_body,
        queue_max=queue_max,
        async_retry_base=retry_base,
        idempotency_window=window,
        keep_alive=idle,
        drain_timeout=drain,
    )

    async def ready(url: str) -> None:
        print(f"faasbox listening on {url}", flush=True)
        for stack in deploy or []:
            await asyncio.to_thread(_deploy_stack, url, stack)

    with contextlib.suppress(KeyboardInterrupt):
        run(settings, sock, ready, log_level=log_level)


def _deploy_stack(url: str, path: Path) -> None:
    from faasbox.cli.deploy_util import deploy_stack_quiet
    from faasbox.stack import StackError, load_stack

    print(f"deploying the functions in {path} ...", flush=True)
    ok = deploy_stack_quiet(url, path)
    if not ok:
        print(f"warning: some functions in {path} failed to deploy", file=sys.stderr, flush=True)
    try:
        functions = load_stack(path).functions
    except StackError:
        return
    # A stack may show how to call a function: annotation faasbox.example, a curl
    # argument list in which {url} stands for the function's URL.
    lines = []
    for name, fn in functions.items():
        fn_url = f"{url}/function/{name}"
        example = fn.annotations.get("faasbox.example", "{url}")
        lines.append("  curl " + example.replace("{url}", fn_url))
    gateway = "" if url == "http://127.0.0.1:8080" else f" --gateway {url}"
    print("\nfaasbox is up. Call the functions:", *lines, sep="\n", flush=True)
    if functions:
        first = next(iter(functions))
        print(
            "\nOr queue a call, to run later with retries (202 and its X-Call-Id; "
            f"`faasbox activation CALL_ID` follows it):\n  curl -i -X POST {url}/async-function/{first}",
            flush=True,
        )
    print(
        f"\nOr use the CLI (in another shell): .venv/bin/faasbox{gateway} list | invoke NAME "
        "[--async] | logs NAME -f | describe NAME | queue status\nStop with Ctrl-C.",
        flush=True,
    )
