"""Parsing of the quantities users write in specs: memory, CPU and durations."""

from __future__ import annotations

import re

from faasbox.errors import BadRequest

_MEMORY_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?)?b?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_memory(text: str | int) -> int:
    """``"128Mi"`` → bytes. Kubernetes quantities (Ki, Mi, Gi, k, M, G) and plain bytes."""
    if isinstance(text, int):
        return text
    m = _MEMORY_RE.match(text)
    if not m:
        raise BadRequest(f"invalid memory quantity {text!r}: use e.g. 128Mi, 1Gi or 512M")
    unit = (m.group(2) or "").lower()
    return int(float(m.group(1)) * _MEMORY_UNITS[unit])


def parse_cpu(text: str | int | float) -> float:
    """``"500m"`` → 0.5 cores; ``"2"`` → 2 cores."""
    if isinstance(text, int | float):
        return float(text)
    t = text.strip()
    try:
        return float(t[:-1]) / 1000 if t.endswith("m") else float(t)
    except ValueError:
        raise BadRequest(f"invalid cpu quantity {text!r}: use e.g. 500m or 1") from None


def parse_duration(text: str | int | float) -> float:
    """``"30s"``, ``"500ms"``, ``"5m"`` or a number of seconds → seconds."""
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION_RE.match(text)
    if not m:
        raise BadRequest(f"invalid duration {text!r}: use e.g. 30s, 500ms or 5m")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def format_bytes(n: int) -> str:
    for unit, size in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"
