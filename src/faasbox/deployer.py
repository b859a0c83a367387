"""Deploys, updates, removes and scales functions: the registry, the build and the pools
meet here. The invoke path only reads ``pools``."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from faasbox.background import Background
from faasbox.build.bundle import unpack
from faasbox.build.layers import LayerBuilder
from faasbox.deployment import Deployment
from faasbox.errors import BadRequest, BuildFailed, FaasboxError, FunctionNotFound
from faasbox.models import FunctionSpec
from faasbox.observability.logs import LogHub
from faasbox.pool.factory import ReplicaFactory
from faasbox.pool.pool import FunctionPool
from faasbox.registry.api import FunctionRecord, FunctionStore
from faasbox.secrets import SecretStore, check_secret_name
from faasbox.units import parse_cpu, parse_duration, parse_memory

log = logging.getLogger("faasbox.deployer")

LABEL_MIN = "com.openfaas.scale.min"
LABEL_MAX = "com.openfaas.scale.max"
LABEL_IDLE = "com.openfaas.scale.zero-duration"
LABEL_QUEUE = "faasbox.queue.max"
LABEL_PREFETCH = "faasbox.prefetch"
LABEL_NETWORK = "faasbox.network"
LABEL_ASYNC_RETRIES = "faasbox.async.retries"
LABEL_ASYNC_MAX_AGE = "faasbox.async.max-age"
# Calls a busy replica may hold queued at max replicas (see Replica.capacity); measured in
# bench/warm.py: 0 → 1 → 3 raises warm throughput at saturation by ~1.7x on 2 cores.
DEFAULT_PREFETCH = 3


def _int_label(labels: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = labels.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"label {key}={raw!r} must be a whole number") from None
    if not lo <= value <= hi:
        raise BadRequest(f"label {key}={value} must be between {lo} and {hi}")
    return value


def _requirements(code_dir: Path) -> str:
    req = code_dir / "requirements.txt"
    return req.read_text(errors="replace") if req.exists() else ""


def _max_age_label(labels: dict[str, str]) -> float:
    raw = labels.get(LABEL_ASYNC_MAX_AGE)
    if raw is None:
        return 6 * 3600.0
    value = parse_duration(raw)
    if not 1 <= value <= 6 * 3600:
        raise BadRequest(f"label {LABEL_ASYNC_MAX_AGE}={raw!r} must be between 1s and 6h")
    return value


def _network_label(labels: dict[str, str]) -> bool:
    value = labels.get(LABEL_NETWORK, "none")
    if value not in ("none", "egress"):
        raise BadRequest(f"label {LABEL_NETWORK}={value!r} must be 'none' or 'egress'")
    return value == "egress"


class Deployer:
    def __init__(
        self,
        store: FunctionStore,
        layers: LayerBuilder,
        factory: ReplicaFactory,
        logs: LogHub,
        code_root: Path,
        *,
        default_memory: int,
        default_timeout: float,
        max_request: int,
        max_response: int,
        default_max_replicas: int = 5,
        default_idle: float = 300.0,
        secrets: SecretStore | None = None,
    ) -> None:
        self.store = store
        self.layers = layers
        self.factory = factory
        self.logs = logs
        self.code_root = code_root
        self.default_memory = default_memory
        self.default_timeout = default_timeout
        self.max_request = max_request
        self.max_response = max_response
        self.default_max_replicas = default_max_replicas
        self.default_idle = default_idle
        self.secrets = secrets
        self.pools: dict[str, FunctionPool] = {}
        self._builds: set[asyncio.Future[str]] = set()
        self._background = Background()

    # -- spec → deployment --------------------------------------------------------------
    def resolve(
        self, spec: FunctionSpec, version: int, code_dir: Path, layer: Path | None
    ) -> Deployment:
        labels = spec.labels
        max_r = _int_label(labels, LABEL_MAX, self.default_max_replicas, 1, 1000)
        min_r = _int_label(labels, LABEL_MIN, 0, 0, max_r)
        idle = parse_duration(labels[LABEL_IDLE]) if LABEL_IDLE in labels else self.default_idle
        timeout = parse_duration(spec.timeout) if spec.timeout is not None else self.default_timeout
        if not 0 < timeout <= 3600:
            raise BadRequest(f"timeout must be between 0 and 1h, got {spec.timeout!r}")
        memory = parse_memory(spec.limits.memory) if spec.limits.memory else self.default_memory
        if memory < 32 * 1024 * 1024:
            raise BadRequest(f"memory limit {spec.limits.memory!r} is below the minimum of 32Mi")
        return Deployment(
            name=spec.service,
            version=version,
            runtime=spec.runtime,
            handler=spec.handler,
            code_dir=code_dir,
            layers=(layer,) if layer else (),
            env=dict(spec.envVars),
            secrets=tuple(spec.secrets),
            timeout=timeout,
            memory_bytes=memory,
            cpu=parse_cpu(spec.limits.cpu) if spec.limits.cpu else None,
            concurrency=spec.concurrency,
            min_replicas=min_r,
            max_replicas=max_r,
            idle_timeout=idle,
            max_queue=_int_label(labels, LABEL_QUEUE, 100, 0, 100_000),
            prefetch=_int_label(labels, LABEL_PREFETCH, DEFAULT_PREFETCH, 0, 16),
            egress=_network_label(labels),
            async_retries=_int_label(labels, LABEL_ASYNC_RETRIES, 2, 0, 20),
            async_max_age=_max_age_label(labels),
            max_response=self.max_response,
            max_request=self.max_request,
        )

    # -- start-up --------------------------------------------------------------------------
    async def restore(self) -> None:
        """Bring back every function that had a ready version before a restart."""
        for rec in await self.store.list_functions():
            if rec.latest.status == "building":
                await self.store.finish_version(
                    rec.name,
                    rec.latest.version,
                    status="failed",
                    build_log=rec.latest.build_log
                    + "\nbuild interrupted by a restart; deploy again",
                )
            if rec.current_version is None:
                continue
            v = await self.store.get_version(rec.name, rec.current_version)
            if v is None:
                continue
            try:
                spec = FunctionSpec.model_validate(v.spec)
                code_dir = self.code_root / v.bundle_sha
                d = self.resolve(
                    spec, v.version, code_dir, self.layers.built(_requirements(code_dir))
                )
            except FaasboxError as exc:
                log.error("cannot restore function=%s: %s", rec.name, exc.message)
                continue
            pool = self.pools[rec.name] = FunctionPool(d, self.factory)
            self._spawn(pool.ensure_min())
        log.info("restored %d function(s)", len(self.pools))

    # -- deploy ----------------------------------------------------------------------------
    async def deploy(
        self, spec: FunctionSpec, bundle: bytes, *, update: bool, wait: bool
    ) -> tuple[int, str, bool]:
        """Store a new version and build it. Returns (version, build log, unchanged) when
        ``wait``; otherwise returns at once with the build running in the background."""
        name = spec.service
        existing = await self.store.get_function(name) if update else None
        if update and existing is None:
            raise FunctionNotFound(name)
        await self._check_secrets(spec.secrets)
        sha, code_dir = await asyncio.to_thread(unpack, bundle, self.code_root)
        # Reject bad labels/limits before anything is stored.
        self.resolve(spec, 0, code_dir, None)
        spec_json = spec.model_dump(exclude_none=True)
        if (
            existing is not None
            and existing.latest.status == "ready"
            and existing.latest.bundle_sha == sha
            and existing.latest.spec == spec_json
        ):
            # Same code and spec as the serving version: nothing to build or roll.
            return (
                existing.latest.version,
                (f"unchanged: version {existing.latest.version} already has this code and spec"),
                True,
            )
        if update:
            version = await self.store.add_version(name, spec_json, sha)
        else:
            version = await self.store.create_function(name, spec_json, sha)
        build = asyncio.ensure_future(
            self._build(spec, version, code_dir, new=not update, rollback=wait)
        )
        self._builds.add(build)
        build.add_done_callback(self._builds.discard)
        if not wait:
            # The outcome is recorded in the registry; nobody awaits this one.
            build.add_done_callback(lambda t: t.cancelled() or t.exception())
            return version, "", False
        build_log = await asyncio.shield(build)
        return version, build_log, False

    async def _build(
        self, spec: FunctionSpec, version: int, code_dir: Path, *, new: bool, rollback: bool
    ) -> str:
        name = spec.service
        lines: list[str] = []
        t0 = time.monotonic()

        def progress(text: str) -> None:
            lines.append(text)
            self.logs.system(name, f"build v{version}: {text.strip()}")

        try:
            progress(f"code: bundle {code_dir.name[:12]} unpacked")
            layer = await self.layers.ensure(_requirements(code_dir), progress)
            if layer is None:
                progress("dependencies: none (requirements.txt empty or missing)")
            d = self.resolve(spec, version, code_dir, layer)
            progress(f"handler: importing {d.handler} in a sandbox")
            await self._check_handler(d, progress)
            progress(f"ready: version {version} built in {time.monotonic() - t0:.1f}s")
        except FaasboxError as exc:
            progress(f"failed: {exc.message}")
            build_log = "\n".join(lines)
            await self.store.finish_version(name, version, status="failed", build_log=build_log)
            if new and rollback:
                await self.store.delete_function(name)
            raise BuildFailed(
                f"build of {name} v{version} failed: {exc.message}", detail=build_log
            ) from None
        build_log = "\n".join(lines)
        await self.store.finish_version(name, version, status="ready", build_log=build_log)
        if await self.store.get_function(name) is None:
            return build_log  # removed while it was building: nothing to serve
        pool = self.pools.get(name)
        if pool is None:
            pool = self.pools[name] = FunctionPool(d, self.factory)
            self._spawn(pool.ensure_min())
        elif pool.deployment.version < version:
            pool.replace(d)
        return build_log

    async def _check_handler(self, d: Deployment, progress: Any) -> None:
        def ignore(_: Any) -> None:
            return None

        try:
            replica = await self.factory.start(d, ignore, ignore)
        except FaasboxError as exc:
            await self.logs.flush()
            for line in self.logs.recent(d.name):
                if line.instance == exc.replica:
                    progress("  " + line.text)
            raise BuildFailed(exc.message) from None
        progress(f"handler: imported in {replica.init_ms:.0f} ms")
        await replica.destroy("build check done")

    async def _check_secrets(self, names: list[str]) -> None:
        """Every secret a spec lists must exist (as OpenFaaS: a deploy that lists a missing
        secret is refused rather than failing each replica later)."""
        if not names:
            return
        for name in names:
            check_secret_name(name)
        store = self.secrets
        have = set(await asyncio.to_thread(store.names)) if store is not None else set()
        missing = [n for n in dict.fromkeys(names) if n not in have]
        if len(missing) == 1:
            raise BadRequest(
                f"secret {missing[0]!r} does not exist: create it first "
                f"(faasbox secret create {missing[0]}), or remove it from the function's secrets"
            )
        if missing:
            listed = ", ".join(repr(n) for n in missing)
            raise BadRequest(
                f"secrets {listed} do not exist: create them first (faasbox secret create "
                "NAME), or remove them from the function's secrets"
            )

    async def secret_users(self, secret: str) -> list[str]:
        """Functions whose serving version, or latest deploy unless it failed, lists
        ``secret``: the ones whose replicas would need it."""
        users = []
        for rec in await self.store.list_functions():
            specs = [rec.latest.spec] if rec.latest.status != "failed" else []
            if rec.current_version is not None and rec.current_version != rec.latest.version:
                serving = await self.store.get_version(rec.name, rec.current_version)
                if serving is not None:
                    specs.append(serving.spec)
            if any(secret in (s.get("secrets") or []) for s in specs):
                users.append(rec.name)
        return sorted(users)

    # -- management ------------------------------------------------------------------------
    async def get(self, name: str) -> FunctionRecord:
        rec = await self.store.get_function(name)
        if rec is None:
            raise FunctionNotFound(name)
        return rec

    async def delete(self, name: str) -> None:
        if not await self.store.delete_function(name):
            raise FunctionNotFound(name)
        pool = self.pools.pop(name, None)
        if pool is not None:
            await pool.close()
        self.logs.forget(name)

    async def scale(self, name: str, replicas: int) -> None:
        rec = await self.get(name)
        pool = self.pools.get(name)
        if pool is None:
            raise BadRequest(
                f"function {name!r} has no ready version (status: {rec.latest.status})"
            )
        await pool.scale_to(replicas)

    async def close(self) -> None:
        for t in list(self._builds):
            t.cancel()
        self._background.cancel_all()
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        self._background.spawn(coro)
