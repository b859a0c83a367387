"""Formatting helpers of the CLI: times, durations, log lines, --since."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer

from faasbox.cli.logs import format_line, parse_since
from faasbox.cli.render import fmt_seconds, fmt_time, fmt_value

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", "2024-05-01T11:59:30.000Z"),
        ("5m", "2024-05-01T11:55:00.000Z"),
        ("2h", "2024-05-01T10:00:00.000Z"),
        ("1d", "2024-04-30T12:00:00.000Z"),
        ("1.5m", "2024-05-01T11:58:30.000Z"),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000Z"),
        ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00.000Z"),
    ],
)
def test_since_becomes_rfc3339_utc(text: str, expected: str) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "5 minutes", "-5m", "2024-13-01"])
def test_bad_since_is_a_usage_error(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="RFC 3339"):
        parse_since(text, now=NOW)


def test_log_line_format() -> None:
    line = format_line(
        {
            "timestamp": "2024-05-01T12:00:00Z",
            "instance": "hello-1-ab",
            "call_id": "0123456789abcdef",
            "text": "hi\n",
        }
    )
    assert line.plain == "2024-05-01T12:00:00Z hello-1-ab [01234567] hi"
    assert format_line({"text": "bare"}).plain == "bare"
    assert format_line({"text": "oops", "stream": "stderr"}).spans[0].style == "red"


def test_times_in_any_unit_agree() -> None:
    seconds = 1_714_564_800  # 2024-05-01T12:00:00Z
    expected = fmt_time("2024-05-01T12:00:00Z")
    for value in (
        seconds,
        seconds * 1000,
        seconds * 1_000_000,
        seconds * 1_000_000_000,
        float(seconds),
    ):
        assert fmt_time(value) == expected
    assert fmt_time(None) == "-"
    assert fmt_time("not a time") == "not a time"


def test_values_and_durations() -> None:
    assert fmt_seconds(0.0123) == "12.3ms"
    assert fmt_seconds(2) == "2.00s"
    assert fmt_seconds(None) == "-"
    assert fmt_value({"a": "1", "b": "2"}) == "a=1\nb=2"
    assert fmt_value([]) == "-"
    assert fmt_value(True) == "yes"
