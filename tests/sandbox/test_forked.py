"""Forked replicas beyond the contract (which ``test_contract.py`` runs on them too): what
one fork does ends with it while its zygote and its siblings live on."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasbox.sandbox.api import Limits, SandboxSpec
from faasbox.sandbox.backends import load_backend
from faasbox.sandbox.safety import SafeBackend
from tests.sandbox.replicas import Zygote
from tests.support import running_with

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def zygote(tmp_path: Path) -> AsyncIterator[Zygote]:
    if not os.environ.get("CI") and (shutil.which("bwrap") is None or os.geteuid() != 0):
        pytest.skip("forked replicas need bubblewrap and root")
    z = await Zygote(SafeBackend(load_backend("namespaces"))).start(_spec(tmp_path, "zygote", ""))
    yield z
    await z.destroy()


def _spec(tmp_path: Path, name: str, code: str) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=f"{name}-{os.urandom(3).hex()}",
        argv=[sys.executable, "-I", "-S", "-c", textwrap.dedent(code)],
        env={"PATH": "/usr/bin:/bin"},
        workdir=tmp_path / "work",
        limits=Limits(),
    )


async def test_destroying_a_fork_kills_what_it_started_and_only_that(
    zygote: Zygote, tmp_path: Path
) -> None:
    # The zygote's PID namespace outlives the fork: an orphan would live on in it, reparented,
    # unless the fork's cgroup takes it down with the fork.
    marker = "faasbox-fork-orphan-" + os.urandom(4).hex()
    code = f"""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}])
    print("started", flush=True)
    time.sleep(60)
    """
    out: dict[str, bytes] = {"stdout": b""}
    doomed = await zygote.fork(
        _spec(tmp_path, "doomed", code), lambda s, d: out.__setitem__(s, out.get(s, b"") + d)
    )
    sibling = await zygote.fork(_spec(tmp_path, "sibling", "import time; time.sleep(60)"), print)
    for _ in range(200):
        if b"started" in out["stdout"] and running_with(marker):
            break
        await asyncio.sleep(0.02)
    assert running_with(marker), "the child never started"
    await doomed.destroy()
    assert not running_with(marker), "a destroyed fork's child lives on in its zygote's sandbox"
    assert not sibling.exited.done() and zygote.sandbox is not None
    assert not zygote.sandbox.exited.done()
    await sibling.destroy()


async def test_forks_made_at_once_hold_only_their_own_descriptors(
    zygote: Zygote, tmp_path: Path
) -> None:
    # Fork requests that reach the zygote together bring every fork's descriptors in one
    # read: each fork must close its siblings' (their channels, their output pipes).
    code = """
    import os
    print(sorted(int(fd) for fd in os.listdir("/proc/self/fd")), flush=True)
    """
    outs: list[dict[str, bytes]] = [{"stdout": b""} for _ in range(6)]

    def sink(i: int):  # type: ignore[no-untyped-def]
        return lambda s, d: outs[i].__setitem__(s, outs[i].get(s, b"") + d)

    forks = await asyncio.gather(
        *(zygote.fork(_spec(tmp_path, f"f{i}", code), sink(i)) for i in range(6))
    )
    for fork in forks:
        await asyncio.wait_for(fork.exited, 10)
    for fork in forks:
        await fork.destroy()
    for out in outs:
        # stdin, stdout, stderr, the channel, and the listing's own descriptor
        assert len(json.loads(out["stdout"])) <= 5, outs
