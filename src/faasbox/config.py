"""Platform settings, built once in ``main``/the app factory and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".faasbox")
    # A backend name, resolved (``auto`` -> namespaces or process) by ``choose_backend``.
    backend: str = "process"
    backend_reason: str = "chosen with --backend"
    max_request_bytes: int = 6 * MiB
    max_response_bytes: int = 6 * MiB
    default_timeout: float = 30.0
    default_memory_bytes: int = 256 * MiB
    default_max_replicas: int = 5
    default_idle_seconds: float = 300.0
    init_timeout: float = 60.0
    # Prewarmed sandboxes ("stem cells") kept ready on backends that make them: at least
    # ``prewarm`` (0: none), up to ``prewarm_max`` while cold starts are frequent.
    prewarm: int = 2
    prewarm_max: int = 8
    # Fork replicas from each function's zygote (backends with the "fork" capability):
    # "scale" every replica but a function's first, "always" every one, "off" none.
    zygotes: str = "scale"
    # Asynchronous invocations (``/async-function/``): the largest body accepted, how many
    # may wait unfinished before new ones get 429, the first retry's delay (doubling, with
    # jitter), and how long an idempotency key names its first call.
    async_max_body_bytes: int = 256 * 1024
    queue_max: int = 100_000
    async_retry_base: float = 1.0
    idempotency_window: float = 24 * 3600.0
    # On shutdown, how long running asynchronous invocations may take to finish; the
    # ones still running then are stopped and run again after the restart.
    drain_timeout: float = 10.0
    # How long a client's idle keep-alive connection stays open (whole seconds, >= 1).
    keep_alive: float = 30.0
