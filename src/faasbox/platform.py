"""Builds every piece once and wires them together; the gateway gets the result."""

from __future__ import annotations

import gc
import logging
import platform as _platform
import subprocess
import sys
from pathlib import Path

from faasbox import __version__
from faasbox.build.layers import LayerBuilder
from faasbox.config import Settings
from faasbox.deployer import Deployer
from faasbox.observability.activations import ActivationLog
from faasbox.observability.logs import LogHub
from faasbox.observability.metrics import Metrics, PrewarmState
from faasbox.pool.factory import PREWARM_RUNTIME, ReplicaFactory
from faasbox.queue.dispatcher import Dispatcher
from faasbox.queue.sqlite import SqliteQueue
from faasbox.registry.api import CallIds
from faasbox.registry.sqlite import SqliteStore
from faasbox.sandbox.backends import load_backend
from faasbox.sandbox.safety import SafeBackend
from faasbox.secrets import SecretStore

log = logging.getLogger("faasbox")


def _source_sha() -> str:
    """The git commit faasbox runs from, when it runs from a checkout; else ""."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data = settings.data_dir.resolve()
        self.data_dir = data
        self.store = SqliteStore(data / "faasbox.db")
        self.queue = SqliteQueue(data / "queue.db", idempotency_window=settings.idempotency_window)
        # Call ids name rows of both: never one that either has used.
        self.store.call_ids = CallIds(max(self.store.last_seq, self.queue.last_seq) + 1)
        self.logs = LogHub(data / "logs")
        # Batches go to the store's writer process (registry/activation_writer.py) ten
        # times a second: small batches keep each burst of its work short.
        self.activations = ActivationLog(self.store, delay=0.1)
        self.backend = SafeBackend(load_backend(settings.backend))
        self.secrets = SecretStore(data)
        self.factory = ReplicaFactory(
            self.backend,
            data / "run",
            self.logs,
            init_timeout=settings.init_timeout,
            secrets=self.secrets,
            prewarm=settings.prewarm,
            prewarm_max=settings.prewarm_max,
            zygotes=settings.zygotes,
            # Where functions' code and dependency layers live (the deployer's stores).
            inject_roots=(data / "code", data / "layers"),
        )
        self.deployer = Deployer(
            self.store,
            LayerBuilder(data / "layers"),
            self.factory,
            self.logs,
            data / "code",
            default_memory=settings.default_memory_bytes,
            default_timeout=settings.default_timeout,
            max_request=settings.max_request_bytes,
            max_response=settings.max_response_bytes,
            default_max_replicas=settings.default_max_replicas,
            default_idle=settings.default_idle_seconds,
            secrets=self.secrets,
        )
        self.sha = _source_sha()
        self.metrics = Metrics(
            lambda: {n: len(p.replicas) for n, p in self.deployer.pools.items()},
            self._prewarm_state,
        )
        self.dispatcher = Dispatcher(
            self.queue,
            self.deployer.pools,
            self.activations,
            self.metrics,
            retry_base=settings.async_retry_base,
            exists=self._function_exists,
            drain=settings.drain_timeout,
        )

    async def start(self) -> None:
        await self.deployer.restore()
        self.factory.open()
        await self.dispatcher.start()
        # Everything built so far lives as long as the platform: keep it out of the cyclic
        # garbage collector's full passes, which otherwise stall the loop for milliseconds.
        gc.collect()
        gc.freeze()
        log.info(
            "faasbox %s started data_dir=%s backend=%s",
            __version__,
            self.data_dir,
            self.backend.name,
        )

    async def stop(self) -> None:
        await self.dispatcher.close()
        await self.deployer.close()
        await self.factory.close()
        await self.activations.flush()
        await self.logs.flush()
        await self.queue.close()
        await self.store.aclose()

    def info(self) -> dict[str, object]:
        return {
            "provider": {
                "provider": "faasbox",
                "orchestration": "embedded",
                "version": {"release": __version__, "sha": self.sha},
                "sandbox": {
                    "backend": self.backend.name,
                    "reason": self.settings.backend_reason,
                    "capabilities": sorted(self.backend.capabilities),
                    "prewarm": self._prewarm_state(),
                    # Zygotes alive now (one per function with replicas that may scale
                    # past one), or null when the backend does not fork replicas.
                    "zygotes": None if self.factory.zygotes is None else len(self.factory.zygotes),
                },
            },
            "version": {"release": __version__, "sha": self.sha},
            "arch": _platform.machine(),
            "python": sys.version.split()[0],
        }

    async def _function_exists(self, name: str) -> bool:
        return await self.store.get_function(name) is not None

    def _prewarm_state(self) -> PrewarmState | None:
        pool = self.factory.prewarm
        if pool is None:
            return None
        return {
            "runtime": PREWARM_RUNTIME,
            "min": pool.size,
            "max": pool.max_size,
            "target": pool.target,
            "ready": pool.ready,
            "starting": pool.starting,
        }
