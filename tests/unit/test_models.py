from __future__ import annotations

import pytest

from faasbox.errors import BadRequest, InvalidName
from faasbox.models import check_name, parse_spec


@pytest.mark.parametrize("name", ["a", "hello", "a-b-c", "x1", "9" * 63])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a.b", "a" * 64, "ä", "abc\n"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        check_name(name)


def test_spec_defaults_and_errors() -> None:
    spec = parse_spec({"service": "fn"})
    assert (spec.runtime, spec.handler, spec.concurrency) == ("python3", "handler.handle", 1)
    for bad, needle in [
        ({"service": "fn", "handler": "nodot"}, "handler"),
        ({"service": "fn", "handler": "mod.1bad"}, "handler"),
        ({"service": "fn", "envVars": {"FAASBOX_X": "1"}}, "environment"),
        ({"service": "fn", "unknown": 1}, "unknown"),
        ({"service": "fn", "concurrency": 0}, "concurrency"),
        ({}, "service"),
    ]:
        with pytest.raises(BadRequest, match=needle):
            parse_spec(bad)
    with pytest.raises(BadRequest):
        parse_spec(["not", "a", "dict"])


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ({"service": "fn", "environment": {}}, "did you mean 'envVars'"),
        ({"service": "fn", "timout": "1s"}, "did you mean 'timeout'"),
        ({"service": "fn", "limits": {"memroy": "1Gi"}}, "did you mean 'memory'"),
    ],
)
def test_unknown_fields_suggest(spec: dict, hint: str) -> None:
    with pytest.raises(BadRequest, match=hint):
        parse_spec(spec)
