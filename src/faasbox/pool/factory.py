"""Creates replicas: a sandbox from the backend, the runtime in it, the init handshake."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from faasbox.deployment import Deployment
from faasbox.errors import FaasboxError, ReplicaFailed
from faasbox.observability.logs import LogHub
from faasbox.pool.replica import Replica
from faasbox.runtime.protocol import BOOTSTRAP, PROTOCOL_VERSION
from faasbox.sandbox.api import SECRETS_DIR, Limits, SandboxSpec
from faasbox.sandbox.safety import SafeBackend
from faasbox.secrets import SecretNotFound, SecretStore

# Where a replica's secrets are written, inside its private working directory (which the
# backend removes when the sandbox is destroyed).
REPLICA_SECRETS = ".secrets"

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
        secrets: SecretStore | None = None,
    ) -> None:
        self.backend = backend
        self.work_root = work_root
        self.logs = logs
        self.python = python
        self.init_timeout = init_timeout
        self.secrets = secrets
        work_root.mkdir(parents=True, exist_ok=True)
        # Plaintext left by replicas of a platform that died without destroying them.
        for stale in work_root.glob(f"*/{REPLICA_SECRETS}"):
            shutil.rmtree(stale, ignore_errors=True)

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
        workdir = self.work_root / rid
        secret_files: dict[str, Path] = {}
        if d.secrets:
            try:
                secret_files = await self._write_secrets(d, workdir / REPLICA_SECRETS)
            except FaasboxError as exc:
                exc.replica = rid
                raise
            # Sandboxing backends mount each file at SECRETS_DIR/<name>; the process
            # backend cannot mount, so its replicas read them where they are.
            env["FAASBOX_SECRETS_DIR"] = (
                str(workdir / REPLICA_SECRETS)
                if "mounts" not in self.backend.capabilities
                else SECRETS_DIR
            )
        spec = SandboxSpec(
            sandbox_id=rid,
            # -I: ignore PYTHON* variables and the user site; -S: none of the platform's
            # site-packages, only the stdlib and the function's own dependency layer.
            argv=[self.python, "-I", "-S", "-B", str(BOOTSTRAP)],
            env=env,
            workdir=workdir,
            read_only=[d.code_dir, *d.layers, BOOTSTRAP.parent],
            limits=Limits(memory_bytes=d.memory_bytes, cpu=d.cpu),
            egress=d.egress,
            secrets=secret_files,
        )
        try:
            sandbox = await self.backend.create(
                spec, self.logs.open_stream(d.name, rid, replica.current_call_id)
            )
        except BaseException:
            # No sandbox owns the working directory yet: take the plaintext away here.
            if secret_files:
                await asyncio.to_thread(shutil.rmtree, workdir / REPLICA_SECRETS, True)
            raise
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
        except BaseException:
            # Cancelled mid-start (the platform is stopping): the replica is nobody's yet,
            # so it is destroyed here. Its plaintext goes first, at once: the loop may end
            # before the destroy does.
            if secret_files:
                shutil.rmtree(workdir / REPLICA_SECRETS, ignore_errors=True)
            await asyncio.shield(replica.destroy("start cancelled"))
            raise
        return replica

    async def _write_secrets(self, d: Deployment, directory: Path) -> dict[str, Path]:
        """Decrypt the secrets ``d`` lists into ``directory``, one file per secret. Errors
        name the secret, never its value."""
        if self.secrets is None:
            raise ReplicaFailed(f"cannot start {d.name!r}: this platform has no secret store")
        job = asyncio.ensure_future(
            asyncio.to_thread(_materialize, self.secrets, d.secrets, directory)
        )
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # The thread writes on regardless: remove what it wrote once it is done.
            def remove(done: asyncio.Future[dict[str, Path]]) -> None:
                if not done.cancelled():
                    done.exception()  # retrieved: its failure no longer matters
                shutil.rmtree(directory, ignore_errors=True)

            job.add_done_callback(remove)
            raise
        except SecretNotFound as exc:
            raise ReplicaFailed(
                f"cannot start a replica of {d.name!r}: it lists secret {exc.name!r}, which "
                f"does not exist (create it: faasbox secret create {exc.name})"
            ) from None
        except FaasboxError as exc:
            raise ReplicaFailed(f"cannot start a replica of {d.name!r}: {exc.message}") from None
        except OSError as exc:
            raise ReplicaFailed(
                f"cannot start a replica of {d.name!r}: writing its secrets failed: {exc.strerror}"
            ) from None


def _materialize(store: SecretStore, names: tuple[str, ...], directory: Path) -> dict[str, Path]:
    """Write each secret to ``directory/<name>``. The directory is 0700 and owned by the
    platform, so no other user of the machine can reach the files through it; the files
    are world-readable (0444) because the sandbox's user must read them through the bind
    mount: uid 65534 inside a user namespace that maps it to the platform's uid (bwrap),
    or host uid 65534 itself (runc without a user namespace)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    files: dict[str, Path] = {}
    try:
        for name in dict.fromkeys(names):
            value = store.read(name)  # checks the name first: it is a file name below
            path = directory / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o444)
                f.write(value)
            files[name] = path
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
        raise
    return files
