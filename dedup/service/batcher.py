"""Micro-batcher: groups concurrent requests' items into one call of a blocking batch function.

Throughput rises with load (one model pass serves many callers) while a lone request waits at
most ``max_wait_ms`` before its batch starts. The queue is bounded: beyond ``max_queue`` waiting
items a submit fails at once with Overloaded instead of queuing without bound.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from dedup.errors import Overloaded

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Entry(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[T, R]):
    """Collect items from concurrent ``submit`` calls; run ``run_batch(items)`` in ``executor``.

    ``run_batch`` gets a list of items and returns one result per item, in order. A submit's
    items are never split across batches (a submit larger than ``max_batch`` runs alone).
    At most ``max_inflight`` batches run at once; items arriving meanwhile fill the next batch.
    """

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], executor: Executor | None,
                 max_batch: int = 32, max_wait_ms: float = 3.0, max_queue: int = 1024,
                 max_inflight: int = 1,
                 on_batch: Callable[[int, float], None] | None = None):
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch  # (batch size, seconds the oldest entry waited)
        self._pending: collections.deque[_Entry] = collections.deque()
        self._pending_items = 0
        self._slots = asyncio.Semaphore(max_inflight)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._closed = False

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue ``items`` for the next batch and wait for their results."""
        if self._closed:
            raise Overloaded("the service is shutting down")
        if not items:
            return []
        if self._pending_items + len(items) > self.max_queue:
            raise Overloaded(f"lookup queue full ({self._pending_items} items waiting)",
                             ) from None
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._dispatch(), name="micro-batcher")
        entry = _Entry(items, loop.create_future())
        self._pending.append(entry)
        self._pending_items += len(items)
        self._wakeup.set()
        return await entry.future  # cancelled by the caller's deadline: dropped before running

    async def close(self) -> None:
        """Stop taking work; let running batches finish; fail anything still queued."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(Overloaded("the service is shutting down"))
        self._pending_items = 0

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Take a slot first: while every slot is busy, arrivals pile up into a fuller batch.
            await self._slots.acquire()
            try:
                deadline = self._pending[0].enqueued + self.max_wait_s
                while self._pending_items < self.max_batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch = self._take()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Entry]:
        """Pop entries up to max_batch items (at least one entry); skip cancelled ones."""
        batch: list[_Entry] = []
        n = 0
        while self._pending:
            entry = self._pending[0]
            if batch and n + len(entry.items) > self.max_batch:
                break
            self._pending.popleft()
            self._pending_items -= len(entry.items)
            if entry.future.done():  # the caller gave up (deadline, cancel): don't compute it
                continue
            batch.append(entry)
            n += len(entry.items)
        return batch

    async def _run(self, batch: list[_Entry]) -> None:
        try:
            items = [x for e in batch for x in e.items]
            if self._on_batch is not None:
                self._on_batch(len(items), time.monotonic() - batch[0].enqueued)
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, items)
                if len(results) != len(items):
                    raise RuntimeError(f"batch function returned {len(results)} results "
                                       f"for {len(items)} items")
            except Exception as e:  # one failure fails every caller of this batch, not the loop
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(e)
                return
            start = 0
            for entry in batch:
                end = start + len(entry.items)
                if not entry.future.done():
                    entry.future.set_result(list(results[start:end]))
                start = end
        finally:
            self._slots.release()
