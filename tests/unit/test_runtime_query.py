"""The runtime parses query strings itself (importing urllib.parse costs a cold start's
first call ~10 ms): it must give exactly what urllib.parse would."""

from __future__ import annotations

import importlib.util
import random
from types import ModuleType
from urllib.parse import parse_qsl

import pytest

from faasbox.runtime.protocol import BOOTSTRAP


@pytest.fixture(scope="module")
def bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faasbox_bootstrap_under_test", BOOTSTRAP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(q: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in parse_qsl(q, keep_blank_values=True):
        out.setdefault(k, v)
    return out


CASES = [
    "",
    "a=1",
    "a=1&b=2&a=3",
    "name=Ada+Lovelace",
    "x=%41%42%43&y=%e2%82%ac",
    "bad=%zz&half=%4&end=%",
    "flag&empty=&=v&&&",
    "a=b=c",
    "plus=%2B&space=%20",
    "caf%C3%A9=th%C3%A9",
    "broken=%C3%28",
    "ü=ö&raw=€",
    "a;b=1&c=2",
    "%F0%9F%98%80=smile",
]


@pytest.mark.parametrize("q", CASES)
def test_matches_urllib(bootstrap: ModuleType, q: str) -> None:
    assert bootstrap._parse_query(q) == reference(q)


def test_matches_urllib_on_random_strings(bootstrap: ModuleType) -> None:
    rng = random.Random(4)
    alphabet = "ab=&%+;2Fcé€ 0x"
    for _ in range(5000):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
        assert bootstrap._parse_query(q) == reference(q), q


def test_runtime_module_imports_nothing_heavy(bootstrap: ModuleType) -> None:
    # What a replica pays for before its function: no asyncio, json, inspect or logging.
    import subprocess
    import sys

    code = (
        "import sys; sys.argv = ['x']; "
        f"exec(compile(open({str(BOOTSTRAP)!r}).read(), 'bootstrap', 'exec'), {{'__name__': 'b'}}); "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = {"asyncio", "json", "inspect", "logging", "re", "typing", "urllib.parse", "threading"}
    assert not heavy & set(out), heavy & set(out)
