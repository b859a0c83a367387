from __future__ import annotations

import pytest

from faasbox.errors import BadRequest
from faasbox.units import format_bytes, parse_cpu, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128Mi", 128 * 2**20),
        ("1Gi", 2**30),
        ("512M", 512 * 10**6),
        ("100", 100),
        ("64Ki", 65536),
        ("2G", 2 * 10**9),
        (4096, 4096),
    ],
)
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "12Qi", "-5Mi", "Mi"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_memory(text)


def test_parse_cpu_and_duration() -> None:
    assert parse_cpu("500m") == 0.5 and parse_cpu("2") == 2.0 and parse_cpu(1) == 1.0
    assert parse_duration("30s") == 30 and parse_duration("500ms") == 0.5
    assert parse_duration("5m") == 300 and parse_duration("1h") == 3600 and parse_duration(7) == 7
    with pytest.raises(BadRequest):
        parse_cpu("fast")
    with pytest.raises(BadRequest):
        parse_duration("soon")


def test_format_bytes() -> None:
    assert format_bytes(128 * 2**20) == "128Mi" and format_bytes(2**30) == "1Gi"
    assert format_bytes(1000) == "1000B"
