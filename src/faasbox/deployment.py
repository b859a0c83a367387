"""What the pool needs to run one version of a function, resolved from its spec once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Deployment:
    name: str
    version: int
    runtime: str
    handler: str
    code_dir: Path
    layers: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    timeout: float = 30.0
    memory_bytes: int = 256 * 1024 * 1024
    cpu: float | None = None
    concurrency: int = 1
    prefetch: int = 3
    egress: bool = False
    min_replicas: int = 0
    max_replicas: int = 5
    idle_timeout: float = 300.0
    max_queue: int = 100
    max_response: int = 6 * 1024 * 1024
    max_request: int = 6 * 1024 * 1024
    # Asynchronous invocations: retries after the first run (as Lambda's default), and the
    # age after which a queued one is dead-lettered instead of run (Lambda's 6 h).
    async_retries: int = 2
    async_max_age: float = 6 * 3600.0
