"""Activation records, buffered in memory and written to the store in batches, off the
request path. A crash may lose the last fraction of a second of records."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faasbox.registry.api import ActivationRow, FunctionStore

log = logging.getLogger("faasbox.activations")


class ActivationLog:
    def __init__(self, store: FunctionStore, *, delay: float = 0.25) -> None:
        self.store = store
        self.delay = delay
        self._pending: list[ActivationRow] = []
        self._handle: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[Any]] = set()

    def add(self, row: ActivationRow) -> None:
        self._pending.append(row)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._write_batch)

    def _write_batch(self) -> None:
        self._handle = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._store(batch))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _store(self, batch: list[ActivationRow]) -> None:
        try:
            await self.store.add_activations(batch)
        except Exception:
            log.exception("could not store %d activation record(s)", len(batch))

    async def flush(self) -> None:
        """Write everything buffered; reads call this so they see their own writes."""
        if self._handle is not None:
            self._handle.cancel()
        self._write_batch()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
