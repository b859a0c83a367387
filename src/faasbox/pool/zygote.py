"""Zygotes (as in SOCK and OpenLambda): a function's replicas forked from one warm copy.

A function's first replica starts as without zygotes, in a sandbox of its own (the
quickest cold start, and all most functions ever have). When a function that may have
more than one replica needs another, and its import costs more than a fork (the import
time its first replica's runtime reported, against the forks' average), it gets a *zygote*: a runtime in a
sandbox of its own (prewarmed or created, like any replica) that imports the function,
runs no call, and forks a new replica each time one is needed. A function that imports
little keeps taking prewarmed sandboxes, which are then quicker (``bench/run zygote``). A fork has the function's modules, and
the heavy dependencies they import, already in memory, shared copy-on-write with the
zygote: scaling up costs a fork (~1-2 ms) instead of a sandbox and an import, and each
replica's own memory is only what it writes. Each fork gets its own cgroup (memory, CPU,
pids) from the backend before it runs a call (``sandbox/forked.py``).

The zygote lives while its function (at that version) has forked replicas, and is
destroyed with the last of them; the forks die with it (its sandbox is theirs). The
replica whose start made the zygote waits for it, so its start path is the zygote's
(prewarmed or created); later ones are ``forked``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faasbox.background import Background
from faasbox.deployment import Deployment
from faasbox.errors import FaasboxError, ReplicaFailed, SandboxDead
from faasbox.pool.replica import Replica
from faasbox.sandbox.api import Limits
from faasbox.sandbox.safety import SafeSandbox

if TYPE_CHECKING:
    from faasbox.pool.factory import ReplicaFactory

log = logging.getLogger("faasbox.zygote")

# What a fork is taken to cost until one is measured (ms; bench/run zygote: 4-8 on 2 CPUs).
FORK_MS_GUESS = 5.0


class Zygote:
    __slots__ = ("children", "forks", "key", "replica")

    def __init__(self, key: tuple[str, int], replica: Replica) -> None:
        self.key = key
        self.replica = replica
        # Forks alive or being made: the zygote is destroyed when this falls to zero.
        self.forks = 0
        # The forks' sandboxes by their pid in the zygote's namespace, for its exit reports.
        self.children: dict[int, SafeSandbox] = {}
        replica.on_report = self._report

    def _report(self, head: dict[str, Any]) -> None:
        child = self.children.pop(int(head.get("pid", 0)), None)
        if child is not None:
            child.report_exit(int(head.get("code", 0)))


class Zygotes:
    """Every function's zygote, started when a second replica is needed, destroyed with its
    last fork."""

    def __init__(self, factory: ReplicaFactory, *, always: bool = False) -> None:
        self._factory = factory
        # Fork every replica, the first too (``faasbox up --zygotes always``).
        self._always = always
        self._zygotes: dict[tuple[str, int], asyncio.Future[Zygote]] = {}
        # Replicas alive or starting per function and version, forked or not.
        self._replicas: dict[tuple[str, int], int] = {}
        # What importing each function cost its runtime (as its first replica reported), and
        # what a fork costs (a moving average over every function): a fork saves the one
        # and pays the other (``_sandbox_is_faster``).
        self._import_ms: dict[tuple[str, int], float] = {}
        self.fork_ms = FORK_MS_GUESS
        self._background = Background()

    def __len__(self) -> int:
        return sum(1 for f in self._zygotes.values() if f.done() and not f.exception())

    async def start(
        self,
        d: Deployment,
        on_slot_free: Callable[[Replica], None],
        on_death: Callable[[Replica], None],
    ) -> Replica:
        """A new replica of ``d``: the first in a sandbox of its own, as without zygotes
        (the quickest cold start); the others forked from the function's zygote, started
        the first time one is needed."""
        key = (d.name, d.version)
        factory = self._factory
        self._replicas[key] = self._replicas.get(key, 0) + 1
        first = not self._always and self._replicas[key] == 1 and key not in self._zygotes
        released = False

        def uncount() -> None:  # once per replica, whether it dies or never starts
            nonlocal released
            if not released:
                released = True
                left = self._replicas.get(key, 0) - 1
                if left > 0:
                    self._replicas[key] = left
                else:  # the next first replica measures its start again
                    self._replicas.pop(key, None)
                    self._import_ms.pop(key, None)

        def died(r: Replica) -> None:
            uncount()
            on_death(r)

        try:
            if first or (not self._always and self._sandbox_is_faster(key)):
                replica = await factory.start_sandboxed(
                    factory._new_replica(d, on_slot_free, died), d
                )
                self._import_ms[key] = replica.import_ms
                return replica
            return await self._fork(d, on_slot_free, died)
        except BaseException:
            uncount()
            raise

    def _sandbox_is_faster(self, key: tuple[str, int]) -> bool:
        """Whether a prewarmed sandbox, ready now, would start this function's next replica
        sooner than a fork (a function that imports little: the fork's own costs, a cgroup
        and three descriptors, then weigh more than the import it saves)."""
        pool = self._factory.prewarm
        import_ms = self._import_ms.get(key)
        return (
            pool is not None
            and pool.ready > 0
            and import_ms is not None
            and import_ms < self.fork_ms
        )

    async def _fork(
        self,
        d: Deployment,
        on_slot_free: Callable[[Replica], None],
        on_death: Callable[[Replica], None],
    ) -> Replica:
        factory = self._factory
        for attempt in range(2):
            t0 = time.perf_counter()
            zygote, made = await self._get(d)
            zygote.forks += 1
            replica = factory._new_replica(d, on_slot_free, self._on_fork_death(zygote, on_death))
            t1 = time.perf_counter()
            try:
                sandbox = await factory.backend.fork(
                    zygote.replica.sandbox,  # type: ignore[arg-type]
                    replica.id,
                    Limits(memory_bytes=d.memory_bytes, cpu=d.cpu),
                    factory.logs.open_stream(d.name, replica.id, replica.current_call_id),
                    factory.init_timeout,
                )
                if sandbox.ns_pid:
                    zygote.children[sandbox.ns_pid] = sandbox
                try:
                    await replica.attach(sandbox)
                except BaseException:
                    await asyncio.shield(sandbox.destroy())
                    raise
            except (FaasboxError, OSError) as exc:
                self._release(zygote)
                if zygote.replica.alive or attempt:
                    if isinstance(exc, FaasboxError):
                        exc.replica = replica.id
                        raise
                    raise ReplicaFailed(f"forking a replica of {d.name!r} failed: {exc}") from None
                continue  # its zygote ended meanwhile: start another
            except BaseException:
                self._release(zygote)
                raise
            now = time.perf_counter()
            if made:  # this cold start waited for the zygote: its path is the zygote's
                replica.start_path = zygote.replica.start_path
                replica.init_ms = zygote.replica.init_ms + (now - t1) * 1000
            else:
                replica.start_path = "forked"
                replica.init_ms = (now - t0) * 1000
                self.fork_ms += (replica.init_ms - self.fork_ms) / 8
            return replica
        raise AssertionError("unreachable")

    async def _get(self, d: Deployment) -> tuple[Zygote, bool]:
        """The function's zygote, and whether this call started it."""
        key = (d.name, d.version)
        fut = self._zygotes.get(key)
        if fut is not None:
            zygote = await asyncio.shield(fut)
            if zygote.replica.alive:
                return zygote, False
            if self._zygotes.get(key) is fut:
                del self._zygotes[key]
        fut = self._zygotes[key] = asyncio.get_running_loop().create_future()
        factory = self._factory
        zreplica = factory._new_replica(
            d, _never, lambda r: self._on_zygote_death(key, fut), kind="zygote-"
        )
        try:
            await factory.start_sandboxed(zreplica, d, zygote=True)
        except BaseException as exc:
            if self._zygotes.get(key) is fut:
                del self._zygotes[key]
            fut.set_exception(exc if isinstance(exc, Exception) else ReplicaFailed("cancelled"))
            fut.exception()  # retrieved: the waiters get it through shield
            raise
        zygote = Zygote(key, zreplica)
        fut.set_result(zygote)
        log.info("zygote started function=%s version=%s replica=%s", d.name, d.version, zreplica.id)
        return zygote, True

    def _on_fork_death(
        self, zygote: Zygote, on_death: Callable[[Replica], None]
    ) -> Callable[[Replica], None]:
        def died(r: Replica) -> None:
            on_death(r)
            self._release(zygote)

        return died

    def _release(self, zygote: Zygote) -> None:
        zygote.forks -= 1
        if zygote.forks == 0:
            fut = self._zygotes.get(zygote.key)
            if fut is not None and fut.done() and not fut.exception() and fut.result() is zygote:
                del self._zygotes[zygote.key]
            self._background.spawn(_destroy(zygote.replica, "its last replica ended"))

    def _on_zygote_death(self, key: tuple[str, int], fut: asyncio.Future[Zygote]) -> None:
        if self._zygotes.get(key) is fut:
            del self._zygotes[key]

    async def close(self) -> None:
        futs, self._zygotes = list(self._zygotes.values()), {}
        replicas = [f.result().replica for f in futs if f.done() and not f.exception()]
        await asyncio.gather(*(_destroy(r, "platform stopping") for r in replicas))
        self._background.cancel_all()


def _never(_: Replica) -> None:
    """A zygote runs no call, so it never frees a slot."""


async def _destroy(replica: Replica, reason: str) -> None:
    try:
        await replica.destroy(reason)
    except (FaasboxError, SandboxDead, OSError) as exc:
        log.warning("destroying zygote replica=%s failed: %s", replica.id, exc)
