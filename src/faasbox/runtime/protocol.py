"""Host side of the runtime protocol (version 1; the message list is in
``faasbox/runtime/python/bootstrap.py``).

A frame is ``<II`` (header length, body length), a small JSON header and raw body bytes.
Bodies are never encoded: they travel as bytes from the HTTP request to the handler.
The ``init`` frame's ``env`` is optional (a runtime that starts with its function's
environment needs none); a prewarmed runtime gets its function's environment there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

PROTOCOL_VERSION = 1
HEAD = struct.Struct("<II")
MAX_HEADER = 1024 * 1024

BOOTSTRAP = Path(__file__).parent / "python" / "bootstrap.py"


def compiled_bootstrap(fallback: Path) -> Path:
    """The runtime compiled for this interpreter, as a file the sandboxed interpreter can
    run (``python bootstrap….pyc``): compiling its source costs every cold start ~15 ms,
    and a runtime run as a script never has its bytecode cached. Written once per content
    (the name holds a hash of the source and the interpreter's magic number), atomically,
    readable by the sandbox's user: in the runtime's own ``__pycache__`` (which sandboxes
    see with the source), else in ``fallback`` when the installation is read-only."""
    try:
        return _compile_into(BOOTSTRAP.parent / "__pycache__")
    except OSError:
        return _compile_into(fallback)


def _compile_into(directory: Path) -> Path:
    source = BOOTSTRAP.read_bytes()
    digest = hashlib.sha256(source + importlib.util.MAGIC_NUMBER).hexdigest()[:16]
    target = directory / f"bootstrap.{sys.implementation.cache_tag}.faasbox-{digest}.pyc"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    code = compile(source, str(BOOTSTRAP), "exec", dont_inherit=True, optimize=0)
    data = importlib.util.MAGIC_NUMBER + b"\x00" * 12 + marshal.dumps(code)
    tmp = directory / f".{target.name}.{os.getpid()}"
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(target)
    for old in directory.glob("bootstrap.*.faasbox-*.pyc"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


class ProtocolError(Exception):
    """The runtime sent something that is not a valid frame."""


class FrameTooLarge(ProtocolError):
    """A frame's body is larger than the decoder accepts (a response over the limit)."""


def encode(head: dict[str, Any], body: bytes = b"") -> bytes:
    h = orjson.dumps(head)
    return HEAD.pack(len(h), len(body)) + h + body


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, get ``on_frame(head, body)`` calls.

    ``max_body`` bounds what a runtime may send in one frame; a larger frame raises
    ``ProtocolError`` before its body is buffered, so a hostile runtime cannot make the host
    hold more than the limit in memory.
    """

    __slots__ = ("_buf", "_max_body", "_on_frame")

    def __init__(self, on_frame: Callable[[dict[str, Any], bytes], None], max_body: int) -> None:
        self._buf = bytearray()
        self._on_frame = on_frame
        self._max_body = max_body

    def feed(self, data: bytes) -> None:
        buf = self._buf
        if not buf:
            # The usual case: whole frames from the start of ``data``, decoded in place.
            pos = self._frames(data)
            if pos < len(data):
                buf += memoryview(data)[pos:]
            return
        buf += data
        pos = self._frames(buf)
        if pos == len(buf):
            buf.clear()
        elif pos:
            del buf[:pos]

    def _frames(self, data: bytes | bytearray) -> int:
        """Hand on the whole frames at the start of ``data``; how many bytes they took."""
        pos, size = 0, len(data)
        while size - pos >= 8:
            hlen, blen = HEAD.unpack_from(data, pos)
            if hlen > MAX_HEADER:
                raise ProtocolError(f"frame header of {hlen} bytes")
            if blen > self._max_body:
                raise FrameTooLarge(f"frame body of {blen} bytes exceeds {self._max_body}")
            start = pos + 8 + hlen
            end = start + blen
            if end > size:
                break
            try:
                head = orjson.loads(data[pos + 8 : start])
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"malformed frame header: {exc}") from None
            if not isinstance(head, dict):
                raise ProtocolError("frame header is not an object")
            pos = end
            self._on_frame(head, bytes(data[start:end]) if blen else b"")
        return pos
