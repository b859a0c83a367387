"""HTTP semantics of the warm path's fast lane (gateway/fastlane.py), over raw sockets:
what uvicorn guaranteed before must hold for calls that skip its ASGI cycle."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support import Server, deploy, wait_for

ECHO = """
import time

def handle(event, context):
    time.sleep(float(event.query.get("sleep", 0)))
    return f"{event.method} {event.path} {event.query.get('i', '')} {len(event.body)}"
"""


def _connect(server: Server) -> socket.socket:
    u = urlsplit(server.url)
    assert u.hostname is not None and u.port is not None
    return socket.create_connection((u.hostname, u.port), timeout=10)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """``count`` responses (status line, headers, body by content-length) from ``sock``."""
    buf = b""
    out: list[tuple[str, dict[str, str], bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {len(out)} responses: {buf!r}")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            buf += sock.recv(65536)
        out.append((lines[0], headers, buf[:length]))
        buf = buf[length:]
    return out


def test_pipelined_requests_answer_in_order(client: httpx.Client, server: Server) -> None:
    deploy(client, "fl-echo", ECHO)
    assert client.get("/function/fl-echo").status_code == 200  # warm
    with _connect(server) as sock:
        sock.sendall(
            b"GET /function/fl-echo/a?i=1&sleep=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /function/fl-echo/b?i=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /system/functions HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /function/fl-echo/c?i=3 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        responses = _read_responses(sock, 4)
    assert [r[0].split()[1] for r in responses] == ["200"] * 4, responses
    assert responses[0][2] == b"GET /a 1 0"
    assert responses[1][2] == b"POST /b 2 5"
    assert b"fl-echo" in responses[2][2]  # a management route between two fast calls
    assert responses[3][2] == b"GET /c 3 0"
    assert all("x-call-id" in r[1] for r in (responses[0], responses[1], responses[3]))


def test_http_10_gets_its_answer_and_the_connection_closes(
    client: httpx.Client, server: Server
) -> None:
    deploy(client, "fl-old", ECHO)
    client.get("/function/fl-old")
    with _connect(server) as sock:
        sock.sendall(b"GET /function/fl-old?i=7 HTTP/1.0\r\n\r\n")
        [(status, headers, body)] = _read_responses(sock, 1)
        assert status.split()[1] == "200" and body == b"GET / 7 0"
        assert headers.get("connection") == "close"
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the server closes an HTTP/1.0 connection"


def test_requests_outside_the_lane_still_work(client: httpx.Client, server: Server) -> None:
    deploy(client, "fl-other", ECHO)
    client.get("/function/fl-other")
    # HEAD, a chunked body and Expect: 100-continue go through uvicorn's own cycle.
    head = client.head("/function/fl-other")
    assert head.status_code == 200 and head.content == b""
    chunked = client.post("/function/fl-other", content=iter([b"ab", b"cde"]))
    assert chunked.text == "POST /  5"
    with _connect(server) as sock:
        sock.sendall(
            b"POST /function/fl-other HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"xyz")
        [(status, _, body)] = _read_responses(sock, 1)
        assert status.split()[1] == "200" and body == b"POST /  3"
    # Unknown function and a body over the limit: the usual JSON errors.
    assert client.get("/function/fl-nobody").status_code == 404
    big = client.post("/function/fl-other", content=b"x" * (7 * 1024 * 1024))
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"


def test_a_client_that_hangs_up_mid_call_leaves_the_lane_usable(
    client: httpx.Client, server: Server
) -> None:
    deploy(client, "fl-gone", ECHO)
    client.get("/function/fl-gone")

    def inflight() -> int:
        n: int = client.get("/system/function/fl-gone").json()["inflight"]
        return n

    with _connect(server) as sock:
        sock.sendall(b"GET /function/fl-gone?sleep=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: inflight() == 1)  # the call runs; then the client hangs up
    wait_for(lambda: inflight() == 0)  # it finishes with nobody to answer
    for i in range(5):
        assert client.get(f"/function/fl-gone?i={i}").text == f"GET / {i} 0"


def test_idle_connections_close_after_keep_alive_and_busy_ones_stay(tmp_path: Path) -> None:
    """``--keep-alive``: the server closes a connection idle that long after its last
    response, counted again after every response (fast lane and ASGI alike), and never
    one that is in use."""
    server = Server(tmp_path / "data", "--keep-alive", "1s").start()
    try:
        with server.client() as client:
            deploy(client, "fl-idle", ECHO)
            client.get("/function/fl-idle")
        with _connect(server) as busy, _connect(server) as idle:
            idle.sendall(b"GET /function/fl-idle?i=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_responses(idle, 1)[0][2] == b"GET / 0 0"
            started = time.monotonic()
            # Requests every 0.4 s for 2.4 s: more than twice the timeout in all.
            for i in range(6):
                path = b"/system/functions" if i == 3 else b"/function/fl-idle?i=%d" % i
                busy.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                [(status, _, _)] = _read_responses(busy, 1)
                assert status.split()[1] == "200"
                time.sleep(0.4)
            # A call that runs longer than the timeout is not cut off either.
            busy.sendall(b"GET /function/fl-idle?i=9&sleep=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_responses(busy, 1)[0][2] == b"GET / 9 0"
            # The idle one was closed about 1 s after its response, the busy one not.
            idle.settimeout(5)
            assert idle.recv(1) == b""
            assert time.monotonic() - started < 4.5
            busy.sendall(b"GET /function/fl-idle?i=10 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_responses(busy, 1)[0][2] == b"GET / 10 0"
            busy.settimeout(5)
            t0 = time.monotonic()
            assert busy.recv(1) == b""  # and once idle, it goes too
            assert 0.5 < time.monotonic() - t0 < 3
    finally:
        server.stop()
