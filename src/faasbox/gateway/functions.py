"""/system/functions, /system/function/{name}, /system/scale-function/{name}."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from faasbox.deployment import Deployment
from faasbox.errors import BadRequest, FaasboxError, PayloadTooLarge
from faasbox.models import FunctionSpec, check_name, parse_spec
from faasbox.platform import Platform
from faasbox.registry.api import FunctionRecord
from faasbox.units import format_bytes

MAX_BUNDLE = 64 * 1024 * 1024


def _effective(p: Platform, spec: dict[str, Any], pool: Any) -> Deployment | None:
    """What actually applies: the serving deployment, or the spec with defaults filled in."""
    if pool is not None:
        d: Deployment = pool.deployment
        return d
    try:
        return p.deployer.resolve(FunctionSpec.model_validate(spec), 0, Path("."), None)
    except (FaasboxError, ValueError):
        return None


def status_json(p: Platform, rec: FunctionRecord, *, detail: bool = False) -> dict[str, Any]:
    spec = rec.latest.spec
    pool = p.deployer.pools.get(rec.name)
    d = _effective(p, spec, pool)
    limits = dict(spec.get("limits", {}))
    if d is not None:
        limits.setdefault("memory", format_bytes(d.memory_bytes))
    out: dict[str, Any] = {
        "name": rec.name,
        "namespace": "faasbox",
        "runtime": spec.get("runtime", "python3"),
        "handler": spec.get("handler", ""),
        "version": rec.current_version or rec.latest.version,
        "latestVersion": rec.latest.version,
        "status": rec.latest.status,
        "replicas": len(pool.replicas) if pool else 0,
        "availableReplicas": pool.available if pool else 0,
        "inflight": pool.inflight if pool else 0,
        "waiting": pool.waiting if pool else 0,
        "invocationCount": p.metrics.invocations(rec.name),
        "envVars": spec.get("envVars", {}),
        "labels": spec.get("labels", {}),
        "annotations": spec.get("annotations", {}),
        "limits": limits,
        "timeout": spec.get("timeout") or (f"{d.timeout:g}s" if d else None),
        "concurrency": spec.get("concurrency", 1),
        "minReplicas": d.min_replicas if d else 0,
        "maxReplicas": d.max_replicas if d else 0,
        "secrets": spec.get("secrets", []),
        "createdAt": datetime.fromtimestamp(rec.created_at, UTC).isoformat().replace("+00:00", "Z"),
        "backend": p.backend.name,
        "backendReason": p.settings.backend_reason,
    }
    if detail:
        out["buildLog"] = rec.latest.build_log
    return out


async def _read_deploy(request: Request) -> tuple[FunctionSpec, bytes]:
    ctype = request.headers.get("content-type", "")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BUNDLE * 4 // 3 + 65536:
        raise PayloadTooLarge(f"deploy body exceeds {MAX_BUNDLE // 2**20} MiB")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_part_size=MAX_BUNDLE)
        except Exception as exc:  # python-multipart raises several unrelated types
            raise BadRequest(f"malformed multipart body: {exc}") from None
        raw_spec = form.get("spec")
        code = form.get("code")
        if raw_spec is None or code is None:
            raise BadRequest("multipart deploy needs a part 'spec' (JSON) and a part 'code' (zip)")
        if isinstance(raw_spec, UploadFile):
            raw_spec = (await raw_spec.read()).decode("utf-8", "replace")
        try:
            data = json.loads(raw_spec)
        except ValueError as exc:
            raise BadRequest(f"part 'spec' is not valid JSON: {exc}") from None
        bundle = await code.read() if isinstance(code, UploadFile) else code.encode()
        await form.close()
        return parse_spec(data), bundle
    body = await request.body()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("deploy body must be a JSON object")
    code_field = data.pop("code", None)
    if not isinstance(code_field, dict) or not isinstance(code_field.get("zip"), str):
        raise BadRequest('deploy body needs "code": {"zip": "<base64 zip>"}')
    try:
        bundle = base64.b64decode(code_field["zip"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("code.zip is not valid base64") from None
    return parse_spec(data), bundle


def routes(p: Platform) -> list[Route]:
    async def deploy(request: Request) -> Response:
        update = request.method == "PUT"
        wait = request.query_params.get("wait", "").lower() in ("1", "true", "yes")
        spec, bundle = await _read_deploy(request)
        version, build_log, unchanged = await p.deployer.deploy(
            spec, bundle, update=update, wait=wait
        )
        rec = await p.deployer.get(spec.service)
        body = status_json(p, rec, detail=True)
        body["deployedVersion"] = version
        body["unchanged"] = unchanged
        if unchanged:
            body["buildLog"] = build_log
        return JSONResponse(body, status_code=200 if wait else 202)

    async def list_functions(_: Request) -> Response:
        recs = await p.store.list_functions()
        return JSONResponse([status_json(p, r) for r in recs])

    async def get_function(request: Request) -> Response:
        name = check_name(request.path_params["name"])
        return JSONResponse(status_json(p, await p.deployer.get(name), detail=True))

    async def delete_function(request: Request) -> Response:
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise BadRequest('body must be JSON: {"functionName": "..."}') from None
        name = data.get("functionName") if isinstance(data, dict) else None
        if not isinstance(name, str):
            raise BadRequest('body must be JSON: {"functionName": "..."}')
        await p.deployer.delete(check_name(name))
        p.metrics.forget(name)
        return JSONResponse({"message": f"function {name!r} removed"})

    async def scale(request: Request) -> Response:
        name = check_name(request.path_params["name"])
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise BadRequest('body must be JSON: {"serviceName": "...", "replicas": N}') from None
        if not isinstance(data, dict):
            raise BadRequest('body must be JSON: {"serviceName": "...", "replicas": N}')
        service = data.get("serviceName")
        if service is not None and service != name:
            raise BadRequest(f"serviceName {service!r} does not match the path's {name!r}")
        replicas = data.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise BadRequest('"replicas" must be a whole number ≥ 0')
        await p.deployer.scale(name, replicas)
        rec = await p.deployer.get(name)
        return JSONResponse(status_json(p, rec), status_code=202)

    return [
        Route("/system/functions", deploy, methods=["POST", "PUT"]),
        Route("/system/functions", list_functions, methods=["GET"]),
        Route("/system/functions", delete_function, methods=["DELETE"]),
        Route("/system/function/{name}", get_function, methods=["GET"]),
        Route("/system/scale-function/{name}", scale, methods=["POST"]),
    ]
