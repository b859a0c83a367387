"""Function logs: captured line by line from every replica, kept in memory for followers
and recent reads, and written to one file per function in batches, off the request path.

A replica that floods output is throttled by a token bucket: beyond the budget its bytes
are read and dropped (so the replica never blocks and the platform never stalls), and one
marker line says how much was dropped. Files are capped and rotated once, so disk use per
function is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from faasbox.background import Background

log = logging.getLogger("faasbox.logs")

MAX_LINE = 16 * 1024


@dataclass(frozen=True, slots=True)
class LogLine:
    name: str
    instance: str
    call_id: str
    timestamp: float  # unix seconds
    text: str
    stream: str

    def to_json(self) -> str:
        ts = datetime.fromtimestamp(self.timestamp, UTC).isoformat(timespec="microseconds")
        return json.dumps(
            {
                "name": self.name,
                "instance": self.instance,
                "call_id": self.call_id,
                "timestamp": ts.replace("+00:00", "Z"),
                "text": self.text,
                "stream": self.stream,
            },
            separators=(",", ":"),
        )


class _ReplicaStream:
    """Splits one replica's output into lines, tags them, and enforces the byte budget."""

    def __init__(
        self,
        hub: LogHub,
        function: str,
        instance: str,
        current_call: Callable[[], str],
    ) -> None:
        self.hub = hub
        self.function = function
        self.instance = instance
        self.current_call = current_call
        self.partial = {"stdout": b"", "stderr": b""}
        self.tokens = float(hub.burst_bytes)
        self.refilled = time.monotonic()
        self.dropped = 0

    def __call__(self, stream: str, data: bytes) -> None:
        now = time.monotonic()
        self.tokens = min(
            self.hub.burst_bytes, self.tokens + (now - self.refilled) * self.hub.rate_bytes
        )
        self.refilled = now
        if self.tokens < len(data):
            if not self.dropped:
                asyncio.get_running_loop().call_later(1.0, self._report_drops)
            self.dropped += len(data)
            self.partial[stream] = b""
            return
        self.tokens -= len(data)
        buf = self.partial[stream] + data
        *lines, rest = buf.split(b"\n")
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = b""
        self.partial[stream] = rest
        for raw in lines:
            call_id = ""
            if raw.startswith(b"\x1e"):
                tag_end = raw.find(b"\x1f", 1, 80)
                if tag_end > 0:
                    call_id = raw[1:tag_end].decode("ascii", "replace")
                    raw = raw[tag_end + 1 :]
            if len(raw) > MAX_LINE:
                raw = raw[:MAX_LINE] + b"...[truncated]"
            self._emit(stream, call_id, raw.decode("utf-8", "replace"))

    def _report_drops(self) -> None:
        if self.dropped:
            self._emit(
                "stderr",
                "",
                f"[faasbox] output over {self.hub.rate_bytes // 1024} KiB/s: "
                f"{self.dropped} bytes dropped",
            )
            self.dropped = 0

    def _emit(self, stream: str, call_id: str, text: str) -> None:
        self.hub.add(
            LogLine(
                self.function,
                self.instance,
                call_id or self.current_call(),
                time.time(),
                text,
                stream,
            )
        )


class LogHub:
    def __init__(
        self,
        directory: Path,
        *,
        rate_bytes: int = 1024 * 1024,
        burst_bytes: int = 4 * 1024 * 1024,
        max_file_bytes: int = 16 * 1024 * 1024,
        memory_lines: int = 2000,
    ) -> None:
        self.directory = directory
        self.rate_bytes = rate_bytes
        self.burst_bytes = burst_bytes
        self.max_file_bytes = max_file_bytes
        self.memory_lines = memory_lines
        self._recent: dict[str, deque[LogLine]] = {}
        self._pending: list[LogLine] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._followers: set[tuple[str | None, asyncio.Queue[LogLine]]] = set()
        self._background = Background()
        directory.mkdir(parents=True, exist_ok=True)

    def open_stream(
        self, function: str, instance: str, current_call: Callable[[], str]
    ) -> Callable[[str, bytes], None]:
        return _ReplicaStream(self, function, instance, current_call)

    def system(self, function: str, text: str, call_id: str = "") -> None:
        """A line from the platform itself about a function (build steps, crashes)."""
        self.add(LogLine(function, "faasbox", call_id, time.time(), text, "system"))

    def add(self, line: LogLine) -> None:
        recent = self._recent.get(line.name)
        if recent is None:
            recent = self._recent[line.name] = deque(maxlen=self.memory_lines)
        recent.append(line)
        self._pending.append(line)
        for name, queue in self._followers:
            if name is None or name == line.name:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(line)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(0.2, self._schedule_flush)

    def _schedule_flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending, []
        if batch:
            self._background.spawn(asyncio.to_thread(self._write, batch))

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.ndjson"

    def _write(self, batch: list[LogLine]) -> None:
        by_name: dict[str, list[str]] = {}
        for line in batch:
            by_name.setdefault(line.name, []).append(line.to_json())
        for name, lines in by_name.items():
            path = self._path(name)
            try:
                if path.exists() and path.stat().st_size > self.max_file_bytes:
                    os.replace(path, path.with_suffix(".ndjson.1"))
                with path.open("a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
            except OSError as exc:
                log.warning("cannot write logs function=%s: %s", name, exc)

    async def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(self._write, batch)

    def recent(self, name: str) -> list[LogLine]:
        return list(self._recent.get(name, ()))

    def forget(self, name: str) -> None:
        self._recent.pop(name, None)
        for p in (self._path(name), self._path(name).with_suffix(".ndjson.1")):
            p.unlink(missing_ok=True)

    async def read(self, name: str | None, since: float | None, tail: int | None) -> list[str]:
        """Stored lines (as JSON text), oldest first."""
        await self.flush()
        names = (
            [name]
            if name
            else sorted(p.name.split(".")[0] for p in self.directory.glob("*.ndjson"))
        )
        out: list[tuple[str, str]] = []
        for n in names:
            out.extend(await asyncio.to_thread(self._read_file, n, since))
        out.sort(key=lambda pair: pair[0])
        lines = [text for _, text in out]
        if tail is None:
            return lines
        return lines[-tail:] if tail else []

    def _read_file(self, name: str, since: float | None) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        since_iso = (
            datetime.fromtimestamp(since, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
            if since
            else None
        )
        for path in (self._path(name).with_suffix(".ndjson.1"), self._path(name)):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for raw in text.splitlines():
                try:
                    ts = json.loads(raw)["timestamp"]
                except (ValueError, KeyError, TypeError):
                    continue
                if since_iso is None or ts >= since_iso:
                    rows.append((ts, raw))
        return rows

    async def follow(self, name: str | None) -> AsyncGenerator[LogLine, None]:
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=10000)
        entry = (name, queue)
        self._followers.add(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            self._followers.discard(entry)
