"""The ASGI app factory: one Platform, the invoke fast path, the management routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from faasbox.config import Settings
from faasbox.errors import FaasboxError
from faasbox.gateway import asynchronous, errors, functions, observe, secrets
from faasbox.gateway.invoke import PREFIX, InvokeHandler
from faasbox.platform import Platform


class Gateway:
    """Routes ``/function/...`` straight to the invoke handler; everything else, including
    the lifespan that starts and stops the platform, goes through Starlette."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.invoke = InvokeHandler(platform)
        self.invoke_async = asynchronous.AsyncInvokeHandler(platform)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await platform.start()
            try:
                yield
            finally:
                await platform.stop()

        self.system = Starlette(
            routes=[
                *functions.routes(platform),
                *observe.routes(platform),
                *secrets.routes(platform),
                *asynchronous.routes(platform),
            ],
            exception_handlers={
                FaasboxError: errors.handle,
                HTTPException: errors.handle,
                Exception: errors.handle,
            },
            lifespan=lifespan,
        )

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # A plain function returning the handler's coroutine: one coroutine per request,
        # not two. (Servers must be told the interface is ASGI 3; see faasbox.server.)
        if scope["type"] == "http":
            if scope["path"].startswith(PREFIX):
                return self.invoke(scope, receive, send)
            if scope["path"].startswith(asynchronous.PREFIX):
                return self.invoke_async(scope, receive, send)
        return self.system(scope, receive, send)


def create_app(settings: Settings) -> Gateway:
    return Gateway(Platform(settings))
