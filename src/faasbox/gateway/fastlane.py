"""uvicorn's httptools protocol with a fast lane for ``/function/...``.

A call to a function with a free warm replica is the hot path of the platform. Through
ASGI it costs a task, a receive coroutine, message dicts and two socket writes on top of
the work itself; here the protocol hands the parsed request straight to
``InvokeHandler.fast``, which sends it to the replica, and the replica's answer is written
back from the future's callback in one write. Everything else, and any call the fast lane
cannot finish alone (cold start, waiting for a replica, unknown function), takes the usual
ASGI path or ``InvokeHandler.serve`` (as a task), so HTTP semantics stay uvicorn's:
keep-alive, pipelining (a request waits in uvicorn's queue until the one before it has
answered), flow control, shutdown.

The lane takes a request only when it is plain: no ``Expect: 100-continue``, no upgrade,
no chunked body, a declared body of at most ``MAX_FAST_BODY`` bytes, not ``HEAD``.
"""

from __future__ import annotations

import asyncio
import http
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from faasbox.gateway.invoke import PREFIX, InvokeHandler

_PREFIX = PREFIX.encode()
MAX_FAST_BODY = 1024 * 1024


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {s: _status_line(s) for s in range(100, 600)}


class FastCycle:
    """Stands in for uvicorn's RequestResponseCycle while a request is in the fast lane:
    the protocol fills ``body``, sets ``more_body`` and ``disconnected`` and calls
    ``message_event.set()``, as it would for a cycle of its own."""

    __slots__ = (
        "body",
        "disconnected",
        "dispatched",
        "headers",
        "keep_alive",
        "method",
        "more_body",
        "path",
        "protocol",
        "query",
        "response_complete",
        "started",
    )

    def __init__(
        self,
        protocol: FastLaneProtocol,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.more_body = True
        self.disconnected = False
        self.response_complete = False
        self.started = False
        self.dispatched = False

    @property
    def message_event(self) -> FastCycle:
        return self

    def set(self) -> None:
        if self.started and not self.more_body and not self.dispatched:
            self.dispatch()

    def start(self) -> None:
        self.started = True
        self.set()

    def dispatch(self) -> None:
        self.dispatched = True
        if self.disconnected:
            self.response_complete = True
            return
        body = bytes(self.body)
        invoke = self.protocol.invoke
        if not invoke.fast(self.path, self.method, self.query, self.headers, body, self.respond):
            task = asyncio.ensure_future(
                invoke.serve(self.path, self.method, self.query, self.headers, body)
            )
            task.add_done_callback(self._served)
            self.protocol.tasks.add(task)  # type: ignore[arg-type]  # awaited at shutdown
            task.add_done_callback(self.protocol.tasks.discard)

    def _served(self, task: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]]) -> None:
        if task.cancelled():
            self.protocol.transport.close()
            return
        self.respond(*task.result())

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        protocol = self.protocol
        transport = protocol.transport
        self.response_complete = True
        if self.disconnected or transport.is_closing():
            return
        parts = [STATUS_LINES.get(status) or _status_line(status)]
        for name, value in protocol.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        transport.write(b"".join(parts))
        if self.keep_alive:
            protocol.on_response_complete()
        else:
            transport.close()


class FastLaneProtocol(HttpToolsProtocol):
    """uvicorn's protocol, with three changes for the calls of the fast lane: the request is
    handed to ``InvokeHandler.fast``; the ASGI scope is built only for a request that goes
    to the ASGI app; and the keep-alive timeout is one timer per idle period, checked when
    it fires, instead of a timer armed after every response and cancelled by the next
    request."""

    invoke: InvokeHandler  # set by ``protocol_for``
    # Loop time of the last response, or None while a request is being read or served.
    _idle_since: float | None = None

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]  # built by _asgi_headers_complete

    def _asgi_headers_complete(self) -> None:
        """What uvicorn's ``on_message_begin`` would have built, then its
        ``on_headers_complete``: the request goes to the ASGI app."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        super().on_headers_complete()

    def on_headers_complete(self) -> None:
        url: bytes = self.url
        parser = self.parser
        if not url.startswith(_PREFIX) or self.expect_100_continue or parser.should_upgrade():
            return self._asgi_headers_complete()
        method = parser.get_method().decode("ascii")
        if method == "HEAD" or self.limit_concurrency is not None or self.root_path:
            return self._asgi_headers_complete()
        for name, value in self.headers:
            if name == b"transfer-encoding" or (
                name == b"content-length" and (not value.isdigit() or int(value) > MAX_FAST_BODY)
            ):
                return self._asgi_headers_complete()
        if b"?" in url or b"#" in url:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        else:
            raw_path, query = url, b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        version = parser.get_http_version()
        cycle = FastCycle(
            self,
            method,
            path,
            query,
            self.headers,
            keep_alive=version != "1.0" and parser.should_keep_alive(),
        )
        existing = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            cycle.start()
        else:  # pipelined: it waits in uvicorn's queue for the one before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, None))  # type: ignore[arg-type]

    # -- keep-alive: uvicorn's behaviour, one timer per idle period ------------------
    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_check
            )

    def _keep_alive_check(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:
            return  # busy: the next response arms it again
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_check)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if isinstance(cycle, FastCycle):
            cycle.start()
        else:
            super()._start_asgi_task(cycle, app)


def protocol_for(invoke: InvokeHandler) -> type[FastLaneProtocol]:
    """The protocol class for uvicorn's ``http=`` setting, bound to ``invoke``."""
    return type("FaasboxHttpProtocol", (FastLaneProtocol,), {"invoke": invoke})
