"""The registry seam. The embedded default is ``sqlite.SqliteStore``.

Behaviour: versions are immutable once built; numbers grow by one per deploy and are never
reused for a name while it exists; ``create_function`` is atomic with respect to the name
(two concurrent creates: one wins, the other gets ``Conflict``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import count
from typing import Any, Protocol


@dataclass(frozen=True)
class VersionRecord:
    function: str
    version: int
    spec: dict[str, Any]
    bundle_sha: str
    status: str  # building | ready | failed
    build_log: str
    created_at: float


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    created_at: float
    current_version: int | None  # the ready version that serves calls
    latest: VersionRecord  # the newest deploy, whatever its status


_MIX = 0x9E3779B97F4A7C15  # odd: multiplying by it is a bijection on 64 bits
_UNMIX = pow(_MIX, -1, 1 << 64)
_MASK64 = (1 << 64) - 1


class CallIds:
    """Call ids that name their activation's row: the row's sequence number (counted on
    from where the store left off) through an odd multiplier, then a random suffix per
    start. The store appends rows in sequence order (an append to its B-tree, not an
    insert at a random place in a unique index: ~3x cheaper per call), finds a row from
    its call id with no index, and people still see the ids differ in their first
    characters. No system call per id."""

    __slots__ = ("_next", "suffix")

    def __init__(self, first: int) -> None:
        self._next = count(first).__next__
        self.suffix = os.urandom(8).hex()

    def new(self) -> str:
        return f"{self._next() * _MIX & _MASK64:016x}{self.suffix}"

    @staticmethod
    def seq(call_id: str) -> int | None:
        """The sequence number a call id names (None for a malformed id)."""
        try:
            seq = int(call_id[:16], 16) * _UNMIX & _MASK64
        except ValueError:
            return None
        return seq if len(call_id) == 32 and 0 < seq < 1 << 63 else None


# What the invoke path records per call, as a plain tuple (cheap to build):
# (call_id, function, version, start_ns, duration_s, status, cold, init_ms, replica, error,
#  start_path)
ActivationRow = tuple[str, str, int, int, float, int, bool, float, str, str, str]


@dataclass(frozen=True)
class ActivationRecord:
    call_id: str
    function: str
    version: int
    start_ns: int
    duration_s: float
    status: int
    cold: bool
    init_ms: float
    replica: str
    error: str
    # For a cold call: "prewarmed" or "created" (how its replica's sandbox came to be).
    start_path: str = ""

    def to_api(self) -> dict[str, Any]:
        return {
            "callId": self.call_id,
            "function": self.function,
            "version": self.version,
            "start": self.start_ns,
            "durationSeconds": round(self.duration_s, 6),
            "statusCode": self.status,
            "coldStart": self.cold,
            "initMs": round(self.init_ms, 3),
            "startPath": self.start_path or None,
            "replica": self.replica,
            "error": self.error or None,
        }


class FunctionStore(Protocol):
    async def create_function(self, name: str, spec: dict[str, Any], bundle_sha: str) -> int: ...
    async def add_version(self, name: str, spec: dict[str, Any], bundle_sha: str) -> int: ...
    async def finish_version(
        self, name: str, version: int, *, status: str, build_log: str
    ) -> None: ...
    async def get_function(self, name: str) -> FunctionRecord | None: ...
    async def get_version(self, name: str, version: int) -> VersionRecord | None: ...
    async def list_functions(self) -> list[FunctionRecord]: ...
    async def delete_function(self, name: str) -> bool: ...

    # Where new call ids come from: the store keys activations by them (``CallIds``).
    call_ids: CallIds

    async def add_activations(self, rows: list[ActivationRow]) -> None: ...
    async def list_activations(self, name: str | None, limit: int) -> list[ActivationRecord]: ...
    async def get_activation(self, call_id: str) -> ActivationRecord | None: ...
