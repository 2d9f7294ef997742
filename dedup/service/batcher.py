"""Micro-batcher with admission control: groups concurrent requests' items into one call of a
blocking batch function, and refuses at once the work it could not finish in time.

Throughput rises with load (one model pass serves many callers) while a lone request waits at
most ``max_wait_ms`` before its batch starts. Admission is by time, not by count: the batcher
learns what a batch costs (``ServiceTimes``: seconds per item, an EWMA per batch size) and
estimates, for each arrival, how long the work already admitted will keep the workers busy.
An arrival is refused with Overloaded at once, carrying a retry hint, when that wait exceeds
the queue-delay budget (``max_queue_delay_ms``; by default the request's own service time) or
when its result could not be ready before its deadline. Queueing therefore never grows beyond what
the measured capacity drains within the budget: under overload, admitted requests keep their
latency and the excess is shed, instead of every request waiting seconds. ``max_queue`` stays
as a hard bound on queued items.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from dedup.errors import Overloaded

T = TypeVar("T")
R = TypeVar("R")

_MIN_RETRY_S = 0.005  # a retry hint shorter than this is noise
# Hints are spread over [t, (1 + _JITTER) t]: callers refused at the same moment would
# otherwise all come back at the same moment and be refused together again.
_JITTER = 0.5


def _hint(seconds: float) -> float:
    """The retry hint for a refusal whose queue drains in about ``seconds``."""
    return max(_MIN_RETRY_S, seconds) * (1.0 + _JITTER * random.random())


class ServiceTimes:
    """Seconds per item of a batch function, learnt online per batch-size bucket (1, 2, 4,
    ...): an exponentially weighted moving average, so it follows the machine's real speed
    (contention, thermal limits, a GPU coming and going) rather than a configured guess.

    An unmeasured size is interpolated between the nearest measured buckets; above the largest
    measured bucket a batch is assumed to cost what that bucket's batches cost (optimistic, as
    on a GPU, where a bigger batch is nearly free): the first batch of that size measures it.
    """

    def __init__(self, alpha: float = 0.2):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._per_item: dict[int, float] = {}  # bucket -> EWMA seconds per item

    @staticmethod
    def bucket(n: int) -> int:
        """The power of two at or above ``n``."""
        return 1 << max(0, int(n) - 1).bit_length()

    @property
    def known(self) -> bool:
        return bool(self._per_item)

    def observe(self, n: int, seconds: float) -> None:
        """Record that a batch of ``n`` items took ``seconds``."""
        if n < 1 or seconds < 0 or not math.isfinite(seconds):
            return
        b = self.bucket(n)
        value = seconds / n
        prev = self._per_item.get(b)
        self._per_item[b] = value if prev is None else prev + self.alpha * (value - prev)

    def batch_seconds(self, n: int) -> float:
        """Estimated seconds of one batch of ``n`` items (0 before any batch was measured)."""
        if n <= 0 or not self._per_item:
            return 0.0
        b = self.bucket(n)
        if b in self._per_item:
            return n * self._per_item[b]
        below = [k for k in self._per_item if k < b]
        above = [k for k in self._per_item if k > b]
        if below and above:
            lo, hi = max(below), min(above)
            f = (math.log2(b) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
            return n * (self._per_item[lo] + f * (self._per_item[hi] - self._per_item[lo]))
        if below:
            lo = max(below)
            return lo * self._per_item[lo]
        return n * self._per_item[min(above)]

    def drain_seconds(self, n: int, max_batch: int, slots: int = 1) -> float:
        """Estimated seconds to run ``n`` queued items in batches of at most ``max_batch``
        on ``slots`` batches at once."""
        if n <= 0:
            return 0.0
        full, rest = divmod(n, max_batch)
        total = full * self.batch_seconds(max_batch) + self.batch_seconds(rest)
        return total / max(1, slots)

    def snapshot(self) -> dict[int, float]:
        """bucket -> seconds per item, as learnt so far."""
        return dict(sorted(self._per_item.items()))


class Reservation:
    """Room in the queue held for an admitted request between admission and submit (while its
    items are decoded), so later arrivals see the work already promised."""

    def __init__(self, batcher: "MicroBatcher", n: int, deadline: float | None):
        self._batcher = batcher
        self.n = n
        self.deadline = deadline

    def take(self, n: int) -> None:
        """``n`` of the reserved items are being submitted now (they count as queued)."""
        n = min(n, self.n)
        self.n -= n
        self._batcher._reserved -= n

    def release(self) -> None:
        """Give back what was not submitted (items that failed to decode, a cancelled call)."""
        self.take(self.n)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class _Entry(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future
    deadline: float | None = None  # time.monotonic() by which the caller needs the result
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[T, R]):
    """Collect items from concurrent ``submit`` calls; run ``run_batch(items)`` in ``executor``.

    ``run_batch`` gets a list of items and returns one result per item, in order. A submit's
    items are never split across batches (a submit larger than ``max_batch`` runs alone).
    At most ``max_inflight`` batches run at once; items arriving meanwhile fill the next batch.
    ``admit`` (or ``submit`` itself) refuses work that would wait longer than the queue-delay
    budget or finish after its deadline (see the module docstring).
    """

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], executor: Executor | None,
                 max_batch: int = 32, max_wait_ms: float = 3.0, max_queue: int = 1024,
                 max_inflight: int = 1,
                 on_batch: Callable[[int, float], None] | None = None,
                 max_queue_delay_ms: float | None = None,
                 times: ServiceTimes | None = None):
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.max_inflight = max_inflight
        # None: the request's own service time, learnt (see ``queue_budget``)
        self.max_queue_delay_s = None if max_queue_delay_ms is None else max_queue_delay_ms / 1e3
        self.times = times or ServiceTimes()
        self._on_batch = on_batch  # (batch size, seconds the oldest entry waited)
        self._pending: collections.deque[_Entry] = collections.deque()
        self._pending_items = 0
        self._reserved = 0  # admitted, not yet submitted
        self._busy: dict[int, tuple[float, float]] = {}  # running batch -> (start, est. end)
        self._slots = asyncio.Semaphore(max_inflight)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._closed = False
        self.refused = 0  # arrivals refused by admission (queue bound, delay or deadline)

    # -- admission ---------------------------------------------------------------------------
    @property
    def queued_items(self) -> int:
        """Items admitted and not yet started (queued, or reserved while being prepared)."""
        return self._pending_items + self._reserved

    def estimate(self, n: int, now: float | None = None) -> tuple[float, float]:
        """(seconds until ``n`` more items would be answered, seconds of that spent waiting
        for the work ahead), from the measured service times: the running batches' remaining
        time, then the admitted queue and the ``n`` items draining in batches. (0, 0) before
        any batch was measured."""
        times = self.times
        if not times.known:
            return 0.0, 0.0
        now = time.monotonic() if now is None else now
        head = 0.0
        if len(self._busy) >= self.max_inflight:  # every slot taken: wait for the first to free
            head = min(max(0.0, end - now) for _, end in self._busy.values())
        done = head + times.drain_seconds(self.queued_items + n, self.max_batch,
                                          self.max_inflight)
        alone = times.drain_seconds(n, self.max_batch, self.max_inflight)
        return done, max(0.0, done - alone)

    def queue_budget(self, n: int = 1) -> float:
        """Seconds an admitted request of ``n`` items may be expected to wait for the work
        ahead of it: ``max_queue_delay_ms``, or by default as long as its own items take to
        serve, so an admitted request's latency stays within about twice the unloaded one --
        and never less than the batching window (``max_wait_ms``), a wait the configuration
        accepts by design so that concurrent callers share a batch."""
        if self.max_queue_delay_s is not None:
            return self.max_queue_delay_s
        return max(self.max_wait_s, self.times.drain_seconds(n, self.max_batch, self.max_inflight))

    def admit(self, n: int, timeout: float | None = None) -> "Reservation":
        """Admit ``n`` items now or raise Overloaded at once, with ``retry_after_s``.

        ``timeout``: seconds left before the caller's deadline (None: none). The reservation
        holds queue room until ``submit`` takes it or it is released (use it in ``with``).
        """
        if self._closed:
            raise Overloaded("the service is shutting down")
        now = time.monotonic()
        done, waiting = self.estimate(n, now)
        budget = self.queue_budget(n)
        if self.queued_items + n > self.max_queue:
            self.refused += 1
            raise Overloaded(f"lookup queue full ({self.queued_items} items waiting)",
                             retry_after_s=_hint(waiting - budget))
        if timeout is not None and done > timeout:
            self.refused += 1
            raise Overloaded(
                f"cannot answer within the deadline: {timeout * 1e3:.0f} ms left, about "
                f"{done * 1e3:.0f} ms needed at the current load",
                retry_after_s=_hint(done - timeout))
        if waiting > budget:
            self.refused += 1
            raise Overloaded(
                f"at capacity: about {waiting * 1e3:.0f} ms of work queued ahead, the budget "
                f"is {budget * 1e3:.0f} ms; retry later",
                retry_after_s=_hint(waiting - budget))
        self._reserved += n
        return Reservation(self, n, None if timeout is None else now + timeout)

    # -- queueing ----------------------------------------------------------------------------
    async def submit(self, items: Sequence[T], reservation: Reservation | None = None,
                     timeout: float | None = None) -> list[R]:
        """Queue ``items`` for the next batch and wait for their results. Without a
        reservation from ``admit`` the items are admitted here (``timeout`` as in ``admit``)."""
        if self._closed:
            raise Overloaded("the service is shutting down")
        if not items:
            return []
        if reservation is None:
            reservation = self.admit(len(items), timeout)
        deadline = reservation.deadline
        reservation.take(len(items))
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._dispatch(), name="micro-batcher")
        entry = _Entry(items, loop.create_future(), deadline)
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
        """Pop entries up to max_batch items (at least one entry); skip cancelled ones and
        fail at once those whose deadline this batch could no longer meet."""
        batch: list[_Entry] = []
        n = 0
        now = time.monotonic()
        while self._pending:
            entry = self._pending[0]
            if batch and n + len(entry.items) > self.max_batch:
                break
            self._pending.popleft()
            self._pending_items -= len(entry.items)
            if entry.future.done():  # the caller gave up (deadline, cancel): don't compute it
                continue
            if entry.deadline is not None and self.times.known and \
                    now + self.times.batch_seconds(n + len(entry.items)) > entry.deadline:
                self.refused += 1
                entry.future.set_exception(Overloaded(
                    "cannot answer within the deadline at the current load; retry later",
                    retry_after_s=_hint(self.estimate(0, now)[0])))
                continue
            batch.append(entry)
            n += len(entry.items)
        return batch

    async def _run(self, batch: list[_Entry]) -> None:
        key = id(batch)
        try:
            items = [x for e in batch for x in e.items]
            start = time.monotonic()
            if self._on_batch is not None:
                self._on_batch(len(items), start - batch[0].enqueued)
            self._busy[key] = (start, start + self.times.batch_seconds(len(items)))
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
            self.times.observe(len(items), time.monotonic() - start)
            offset = 0
            for entry in batch:
                end = offset + len(entry.items)
                if not entry.future.done():
                    entry.future.set_result(list(results[offset:end]))
                offset = end
        finally:
            self._busy.pop(key, None)
            self._slots.release()
