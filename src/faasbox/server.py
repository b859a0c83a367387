"""Runs the gateway under uvicorn (uvloop + httptools) on a socket we bind ourselves, so
``--port 0`` works and the real port is known."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import uvicorn

from faasbox.config import Settings
from faasbox.gateway.app import create_app
from faasbox.gateway.fastlane import protocol_for


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(
    settings: Settings,
    sock: socket.socket,
    on_ready: Callable[[str], Awaitable[None]] | None = None,
    *,
    log_level: str = "warning",
) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        loop="none",
        interface="asgi3",
        # uvicorn's httptools protocol, with a fast lane for warm /function/ calls.
        http=protocol_for(app.invoke),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=max(1, round(settings.keep_alive)),
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)  # uvicorn offers no start-up event to wait on
    if on_ready is not None:
        await on_ready(url)
    await task


def run(
    settings: Settings,
    sock: socket.socket,
    on_ready: Callable[[str], Awaitable[None]] | None = None,
    *,
    log_level: str = "warning",
) -> None:
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The deploy client's per-request lines are noise in the platform's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        import uvloop

        uvloop.run(serve(settings, sock, on_ready, log_level=log_level))
    except ImportError:
        asyncio.run(serve(settings, sock, on_ready, log_level=log_level))
