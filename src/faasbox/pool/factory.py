"""Creates replicas: a sandbox from the backend, the runtime in it, the init handshake."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from faasbox.deployment import Deployment
from faasbox.errors import FaasboxError
from faasbox.observability.logs import LogHub
from faasbox.pool.replica import Replica
from faasbox.runtime.protocol import BOOTSTRAP, PROTOCOL_VERSION
from faasbox.sandbox.api import Limits, SandboxSpec
from faasbox.sandbox.safety import SafeBackend

BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Numeric libraries start one thread per core by default; a replica is a small slice.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class ReplicaFactory:
    def __init__(
        self,
        backend: SafeBackend,
        work_root: Path,
        logs: LogHub,
        *,
        python: str = sys.executable,
        init_timeout: float = 60.0,
    ) -> None:
        self.backend = backend
        self.work_root = work_root
        self.logs = logs
        self.python = python
        self.init_timeout = init_timeout
        work_root.mkdir(parents=True, exist_ok=True)

    async def start(
        self,
        d: Deployment,
        on_slot_free: Callable[[Replica], None],
        on_death: Callable[[Replica], None],
    ) -> Replica:
        rid = f"{d.name}-{d.version}-{secrets.token_hex(4)}"
        replica = Replica(
            replica_id=rid,
            function=d.name,
            version=d.version,
            concurrency=d.concurrency,
            prefetch=d.prefetch,
            memory_bytes=d.memory_bytes,
            max_response=d.max_response,
            on_slot_free=on_slot_free,
            on_death=on_death,
        )
        env = dict(BASE_ENV)
        env.update(d.env)
        env["FAASBOX_FUNCTION"] = d.name
        env["FAASBOX_VERSION"] = str(d.version)
        spec = SandboxSpec(
            sandbox_id=rid,
            # -I: ignore PYTHON* variables and the user site; -S: none of the platform's
            # site-packages, only the stdlib and the function's own dependency layer.
            argv=[self.python, "-I", "-S", "-B", str(BOOTSTRAP)],
            env=env,
            workdir=self.work_root / rid,
            read_only=[d.code_dir, *d.layers, BOOTSTRAP.parent],
            limits=Limits(memory_bytes=d.memory_bytes, cpu=d.cpu),
            egress=d.egress,
        )
        sandbox = await self.backend.create(
            spec, self.logs.open_stream(d.name, rid, replica.current_call_id)
        )
        init = {
            "t": "init",
            "v": PROTOCOL_VERSION,
            "code": str(d.code_dir),
            "layers": [str(p) for p in d.layers],
            "handler": d.handler,
            "function": d.name,
            "concurrency": d.concurrency,
            "max_response": d.max_response,
        }
        try:
            await replica.start(sandbox, init, self.init_timeout)
        except FaasboxError as exc:
            exc.replica = rid
            raise
        return replica
