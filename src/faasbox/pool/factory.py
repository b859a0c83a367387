"""Creates replicas: a sandbox from the backend, the runtime in it, the init handshake.

Two paths (``Replica.start_path``): a sandbox *created* for the replica, or a
*prewarmed* one taken from the stem-cell pool (``pool/prewarm.py``), into which only the
function is injected. A function takes the prewarmed path when the backend prewarms and
nothing of it must be known when its sandbox starts: no egress (its network is set up at
creation), the pool's runtime, code and layers in the stores the stem cells show, and no
environment variable that only takes effect at a process's start (the dynamic loader's,
the locale's); the others, and every cold start that finds the pool empty, are created.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faasbox.deployment import Deployment
from faasbox.errors import FaasboxError, ReplicaFailed
from faasbox.observability.logs import LogHub
from faasbox.pool.prewarm import ForwardingSink, PrewarmPool, StemCell
from faasbox.pool.replica import Replica, check_hello
from faasbox.pool.zygote import Zygotes
from faasbox.runtime.protocol import PROTOCOL_VERSION, FrameDecoder, compiled_bootstrap
from faasbox.sandbox.api import SECRETS_DIR, Injection, Limits, Prewarm, SandboxSpec
from faasbox.sandbox.safety import SafeBackend, SafeSandbox
from faasbox.secrets import SecretNotFound, SecretStore

log = logging.getLogger("faasbox.factory")

# Where a replica's secrets are written, inside its private working directory (which the
# backend removes when the sandbox is destroyed).
REPLICA_SECRETS = ".secrets"
# The compiled runtime, under the factory's working root.
RUNTIME_DIR = "runtime"
# Stem cells' slots (see sandbox/api.py, Prewarm), under the factory's working root.
SLOTS = "slots"
# The runtime stem cells run, and the memory they may use until a function's limit
# replaces it (an idle runtime uses ~10 MiB; a function's limit is at least 32 MiB).
PREWARM_RUNTIME = "python3"
STEM_MEMORY = 256 * 1024 * 1024
# A stem cell starts with a small share of contended CPU (the default is 100), so that a
# refill yields to the replicas serving calls; its function's share is the default.
STEM_CPU_WEIGHT = 10
STEM_LIMITS = Limits(memory_bytes=STEM_MEMORY, cpu_weight=STEM_CPU_WEIGHT)
# Once its runtime waits, a stem cell uses no CPU: it gets the default share then, off the
# cold path, so that giving it a function with the default limits writes no cgroup file.
STEM_WAITING = Limits(memory_bytes=STEM_MEMORY)
# Variables read only when a process starts: a function that sets one is not prewarmed.
STARTUP_ENV = ("LD_", "LC_", "LANG", "MALLOC_", "GLIBC_TUNABLES")

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
        prewarm: int = 0,
        prewarm_max: int = 0,
        inject_roots: tuple[Path, ...] = (),
        zygotes: str = "scale",
    ) -> None:
        self.backend = backend
        self.work_root = work_root
        self.logs = logs
        self.python = python
        self.init_timeout = init_timeout
        self.secrets = secrets
        self.inject_roots = inject_roots
        # Stem cells, when the backend makes them and prewarm > 0 (``open`` starts it).
        self.prewarm: PrewarmPool | None = None
        # Zygotes, when the backend forks replicas (see pool/zygote.py).
        self.zygotes: Zygotes | None = (
            Zygotes(self, always=zygotes == "always")
            if zygotes != "off" and "fork" in backend.capabilities
            else None
        )
        if prewarm > 0 and inject_roots and "prewarm" in backend.capabilities:
            self.prewarm = PrewarmPool(self._stem_cell, size=prewarm, max_size=prewarm_max)
        work_root.mkdir(parents=True, exist_ok=True)
        self.bootstrap = compiled_bootstrap(work_root / RUNTIME_DIR)
        # Plaintext left by replicas of a platform that died without destroying them.
        for stale in work_root.glob(f"*/{REPLICA_SECRETS}"):
            shutil.rmtree(stale, ignore_errors=True)

    def open(self) -> None:
        """Start filling the stem-cell pool (in the background)."""
        if self.prewarm is not None:
            self.prewarm.start()

    async def close(self) -> None:
        if self.zygotes is not None:
            await self.zygotes.close()
        if self.prewarm is not None:
            await self.prewarm.close()

    def _argv(self) -> list[str]:
        # -I: ignore PYTHON* variables and the user site; -S: none of the platform's
        # site-packages, only the stdlib and the function's own dependency layer.
        return [self.python, "-I", "-S", "-B", str(self.bootstrap)]

    @staticmethod
    def _init(d: Deployment, zygote: bool = False) -> dict[str, Any]:
        return {
            "zygote": zygote,
            "t": "init",
            "v": PROTOCOL_VERSION,
            "code": str(d.code_dir),
            "layers": [str(p) for p in d.layers],
            "handler": d.handler,
            "function": d.name,
            "concurrency": d.concurrency,
            "max_response": d.max_response,
        }

    def _new_replica(
        self,
        d: Deployment,
        on_slot_free: Callable[[Replica], None],
        on_death: Callable[[Replica], None],
        kind: str = "",
    ) -> Replica:
        return Replica(
            replica_id=f"{d.name}-{d.version}-{kind}{secrets.token_hex(4)}",
            function=d.name,
            version=d.version,
            concurrency=d.concurrency,
            prefetch=d.prefetch,
            memory_bytes=d.memory_bytes,
            max_response=d.max_response,
            on_slot_free=on_slot_free,
            on_death=on_death,
        )

    async def start(
        self,
        d: Deployment,
        on_slot_free: Callable[[Replica], None],
        on_death: Callable[[Replica], None],
    ) -> Replica:
        if self.zygotes is not None and d.max_replicas > 1:
            return await self.zygotes.start(d, on_slot_free, on_death)
        return await self.start_sandboxed(self._new_replica(d, on_slot_free, on_death), d)

    async def start_sandboxed(
        self, replica: Replica, d: Deployment, *, zygote: bool = False
    ) -> Replica:
        """Start ``replica`` in a sandbox of its own (prewarmed or created); with
        ``zygote``, as its function's zygote (see ``pool/zygote.py``)."""
        rid = replica.id
        env = dict(BASE_ENV)
        env.update(d.env)
        env["FAASBOX_FUNCTION"] = d.name
        env["FAASBOX_VERSION"] = str(d.version)
        pool = self.prewarm
        if (
            pool is not None
            and self._prewarmable(d)
            and await self._start_prewarmed(pool, d, replica, dict(env), zygote)
        ):
            return replica
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
            argv=self._argv(),
            env=env,
            workdir=workdir,
            read_only=[d.code_dir, *d.layers, self.bootstrap.parent],
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
        try:
            await replica.start(sandbox, self._init(d, zygote), self.init_timeout)
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

    # -- prewarmed sandboxes ---------------------------------------------------------------
    def _prewarmable(self, d: Deployment) -> bool:
        roots = self.inject_roots
        return (
            not d.egress
            and d.runtime == PREWARM_RUNTIME
            and d.code_dir.parent in roots
            and all(p.parent in roots for p in d.layers)
            and not any(k.startswith(STARTUP_ENV) for k in d.env)
        )

    async def _start_prewarmed(
        self, pool: PrewarmPool, d: Deployment, replica: Replica, env: dict[str, str], zygote: bool
    ) -> bool:
        """Start ``replica`` in a stem cell; False when none is ready or it cannot take the
        function (the caller then creates a sandbox)."""
        t0 = time.perf_counter()
        values: dict[str, bytes] = {}
        if d.secrets:
            try:
                values = await self._read_secrets(d)
            except FaasboxError as exc:
                exc.replica = replica.id
                raise
            env["FAASBOX_SECRETS_DIR"] = SECRETS_DIR
        cell = pool.take()
        if cell is None:
            return False
        sandbox = cell.sandbox
        limits = Limits(memory_bytes=d.memory_bytes, cpu=d.cpu)
        injection = Injection(read_only=(d.code_dir, *d.layers), secrets=values, limits=limits)
        try:
            await self.backend.inject(sandbox, injection)
        except (FaasboxError, OSError) as exc:
            log.warning(
                "prewarmed sandbox could not take function=%s sandbox=%s: %s",
                d.name,
                sandbox.id,
                exc,
            )
            await asyncio.shield(sandbox.destroy())
            return False
        cell.sink.target = self.logs.open_stream(d.name, replica.id, replica.current_call_id)
        replica.start_path = "prewarmed"
        try:
            init = {**self._init(d, zygote), "env": env}
            if rlimits := limits.rlimits_from(STEM_LIMITS):
                init["rlimits"] = rlimits
            await replica.start(sandbox, init, self.init_timeout, greeted=True)
        except FaasboxError as exc:
            exc.replica = replica.id
            raise
        except BaseException:
            await asyncio.shield(replica.destroy("start cancelled"))
            raise
        replica.init_ms = (time.perf_counter() - t0) * 1000
        log.debug(
            "replica started function=%s replica=%s sandbox=%s path=prewarmed",
            d.name,
            replica.id,
            sandbox.id,
        )
        return True

    async def _stem_cell(self) -> StemCell:
        """A new stem cell, its runtime started and greeted."""
        sid = f"prewarm-{secrets.token_hex(4)}"
        sink = ForwardingSink()
        spec = SandboxSpec(
            sandbox_id=sid,
            argv=self._argv(),
            # The runtime takes its first-use costs while it waits (bootstrap._warm_up).
            env={**BASE_ENV, "FAASBOX_PREWARMED": "1"},
            workdir=self.work_root / sid,
            read_only=[self.bootstrap.parent],
            limits=STEM_LIMITS,
            prewarm=Prewarm(
                slot=self.work_root / SLOTS / sid,
                roots=self.inject_roots,
                secrets=self.work_root / sid / REPLICA_SECRETS,
            ),
        )
        sandbox = await self.backend.create(spec, sink)
        try:
            await asyncio.wait_for(_hello(sandbox), self.init_timeout)
            await self.backend.relimit(sandbox, STEM_WAITING)
        except BaseException as exc:
            await asyncio.shield(sandbox.destroy())
            if isinstance(exc, Exception):
                output = bytes(sink.early).decode(errors="replace").strip()
                raise ReplicaFailed(
                    f"prewarmed sandbox {sid} did not start: {exc!s}"
                    + (f" (output: {output[:500]})" if output else "")
                ) from None
            raise
        return StemCell(sandbox, sink)

    async def _read_secrets(self, d: Deployment) -> dict[str, bytes]:
        """The values of the secrets ``d`` lists (decrypted in a worker thread)."""
        store = self.secrets
        if store is None:
            raise ReplicaFailed(f"cannot start {d.name!r}: this platform has no secret store")
        names = list(dict.fromkeys(d.secrets))
        try:
            return await asyncio.to_thread(lambda: {n: store.read(n) for n in names})
        except FaasboxError as exc:
            raise _secrets_failed(d, exc) from None

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
        except FaasboxError as exc:
            raise _secrets_failed(d, exc) from None
        except OSError as exc:
            raise ReplicaFailed(
                f"cannot start a replica of {d.name!r}: writing its secrets failed: {exc.strerror}"
            ) from None


def _secrets_failed(d: Deployment, exc: FaasboxError) -> ReplicaFailed:
    """Why a replica cannot have its secrets, naming the secret, never its value."""
    if isinstance(exc, SecretNotFound):
        return ReplicaFailed(
            f"cannot start a replica of {d.name!r}: it lists secret {exc.name!r}, which "
            f"does not exist (create it: faasbox secret create {exc.name})"
        )
    return ReplicaFailed(f"cannot start a replica of {d.name!r}: {exc.message}")


async def _hello(sandbox: SafeSandbox) -> None:
    """Read the runtime's hello from a new sandbox's channel, and nothing more: the
    runtime then waits for its init, which only the replica that takes it sends."""
    loop = asyncio.get_running_loop()
    frames: list[dict[str, Any]] = []
    decoder = FrameDecoder(lambda head, _: frames.append(head), max_body=0)
    while not frames:
        data = await loop.sock_recv(sandbox.channel, 4096)
        if not data:
            raise ReplicaFailed("the runtime closed its channel before saying hello")
        decoder.feed(data)
    check_hello(frames[0])


def _materialize(store: SecretStore, names: tuple[str, ...], directory: Path) -> dict[str, Path]:
    """Write each secret to ``directory/<name>``. The directory is 0700 and owned by the
    platform, so no other user of the machine can reach the files through it; the files
    are world-readable (0444) because the sandbox's user, host uid 65534 on the isolating
    backends, must read them through the bind mount."""
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
