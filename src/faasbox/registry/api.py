"""The registry seam. The embedded default is ``sqlite.SqliteStore``.

Behaviour: versions are immutable once built; numbers grow by one per deploy and are never
reused for a name while it exists; ``create_function`` is atomic with respect to the name
(two concurrent creates: one wins, the other gets ``Conflict``).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    async def add_activations(self, rows: list[ActivationRow]) -> None: ...
    async def list_activations(self, name: str | None, limit: int) -> list[ActivationRecord]: ...
    async def get_activation(self, call_id: str) -> ActivationRecord | None: ...
