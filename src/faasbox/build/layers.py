"""Dependency layers: ``requirements.txt`` installed once per content (and Python version)
into ``layers/<hash>``, shared read-only by every function and version that asks for the
same requirements. Installs with ``uv`` when available, else pip."""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from faasbox.errors import BuildFailed

COMPLETE = ".faasbox-layer-complete"


def requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def layer_key(requirements: str, python: str = sys.version) -> str:
    tag = f"{python.split()[0]}|{platform.machine()}|{sys.implementation.cache_tag}"
    body = "\n".join(requirement_lines(requirements))
    return hashlib.sha256(f"{tag}\n{body}".encode()).hexdigest()[:32]


def find_uv() -> str | None:
    try:
        from uv import find_uv_bin  # the PyPI package ships the binary

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


class LayerBuilder:
    def __init__(self, root: Path, *, python: str = sys.executable) -> None:
        self.root = root
        self.python = python
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)

    def built(self, requirements: str) -> Path | None:
        """The finished layer for ``requirements``, or None when there is nothing to
        install; ``BuildFailed`` when it should exist and does not (data dir tampered)."""
        if not requirement_lines(requirements):
            return None
        layer = self.root / layer_key(requirements)
        if not (layer / COMPLETE).exists():
            raise BuildFailed(f"dependency layer {layer.name[:12]} is missing; deploy again")
        return layer

    async def ensure(self, requirements: str, progress: Callable[[str], None]) -> Path | None:
        """Return the layer for ``requirements`` (None when there is nothing to install),
        building it if needed. Concurrent builds of the same layer wait for the first."""
        if not requirement_lines(requirements):
            return None
        key = layer_key(requirements)
        layer = self.root / key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if (layer / COMPLETE).exists():
                progress(f"dependencies: reusing cached layer {key[:12]}")
                return layer
            await self._install(requirements, layer, key, progress)
        return layer

    async def _install(
        self, requirements: str, layer: Path, key: str, progress: Callable[[str], None]
    ) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-", dir=self.root))
        req_file = tmp / ".requirements.txt"
        req_file.write_text(requirements)
        target = tmp / "site"
        uv = find_uv()
        if uv:
            argv = [
                uv,
                "pip",
                "install",
                "--python",
                self.python,
                "--target",
                str(target),
                "--compile-bytecode",
                "--no-progress",
                "-r",
                str(req_file),
            ]
            tool = "uv"
        else:
            argv = [
                self.python,
                "-m",
                "pip",
                "install",
                "--target",
                str(target),
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-r",
                str(req_file),
            ]
            tool = "pip"
        progress(
            f"dependencies: installing {len(requirement_lines(requirements))} "
            f"requirement(s) with {tool} into layer {key[:12]}"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PIP_NO_INPUT"] = "1"
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        async for raw in proc.stdout:
            progress("  " + raw.decode(errors="replace").rstrip())
        rc = await proc.wait()
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildFailed(f"installing requirements.txt failed ({tool} exited with {rc})")
        (target / COMPLETE).write_text(requirements)
        if layer.exists():
            shutil.rmtree(layer, ignore_errors=True)  # a half-built layer from a crash
        os.rename(target, layer)
        shutil.rmtree(tmp, ignore_errors=True)
        progress(f"dependencies: layer {key[:12]} ready")
