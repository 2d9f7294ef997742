"""MicroBatcher: groups concurrent submits, bounds the wait and the queue, drops cancelled work.

The batch function here is a trivial recorder: the batcher itself is the thing under test.
(tests/e2e exercise it with the real Engine behind the server.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dedup.errors import Overloaded
from dedup.service.batcher import MicroBatcher, ServiceTimes


class Recorder:
    """Doubles each item; records every batch; optionally blocks until released."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, items):
        self.batches.append(list(items))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        return [x * 2 for x in items]


@pytest.fixture
def pool():
    with ThreadPoolExecutor(4) as ex:
        yield ex


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_concurrent_submits_share_batches_and_get_their_own_results(pool):
    rec = Recorder(delay_s=0.05)

    async def main():
        b = MicroBatcher(rec, pool, max_batch=8, max_wait_ms=20, max_queue=100)
        outs = await asyncio.gather(*(b.submit([i]) for i in range(24)))
        await b.close()
        return outs

    outs = run(main())
    assert outs == [[2 * i] for i in range(24)]
    assert all(len(batch) <= 8 for batch in rec.batches)
    assert sorted(x for batch in rec.batches for x in batch) == list(range(24))
    assert len(rec.batches) <= 6, f"expected grouping, got {len(rec.batches)} batches"


def test_lone_request_waits_at_most_max_wait(pool):
    waits: list[float] = []
    rec = Recorder()

    async def main():
        b = MicroBatcher(rec, pool, max_batch=32, max_wait_ms=30, max_queue=100,
                         on_batch=lambda n, w: waits.append(w))
        t0 = time.monotonic()
        out = await b.submit([5])
        elapsed = time.monotonic() - t0
        await b.close()
        return out, elapsed

    out, elapsed = run(main())
    assert out == [10]
    assert len(waits) == 1
    assert 0.025 <= waits[0] <= 0.030 + 0.05  # waited for company, but no longer than the bound
    assert elapsed < 0.5


def test_full_batch_starts_without_waiting_for_the_timer(pool):
    rec = Recorder()

    async def main():
        b = MicroBatcher(rec, pool, max_batch=4, max_wait_ms=5_000, max_queue=100)
        t0 = time.monotonic()
        outs = await asyncio.gather(*(b.submit([i]) for i in range(4)))
        elapsed = time.monotonic() - t0
        await b.close()
        return outs, elapsed

    outs, elapsed = run(main())
    assert outs == [[0], [2], [4], [6]]
    assert elapsed < 1.0


def test_queue_bound_sheds_with_overloaded(pool):
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main():
        b = MicroBatcher(rec, pool, max_batch=2, max_wait_ms=0, max_queue=4, max_inflight=1)
        running = asyncio.ensure_future(b.submit([0, 1]))
        while not rec.started.is_set():
            await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(b.submit([i])) for i in range(2, 6)]
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded, match="queue full"):
            await b.submit([99])
        gate.set()
        outs = await asyncio.gather(running, *queued)
        await b.close()
        return outs

    outs = run(main())
    assert outs == [[0, 2], [4], [6], [8], [10]]
    assert 99 not in [x for batch in rec.batches for x in batch]


def test_cancelled_submit_is_never_computed(pool):
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main():
        b = MicroBatcher(rec, pool, max_batch=1, max_wait_ms=0, max_queue=10, max_inflight=1)
        first = asyncio.ensure_future(b.submit([1]))
        while not rec.started.is_set():
            await asyncio.sleep(0.005)
        doomed = asyncio.ensure_future(b.submit([2]))
        kept = asyncio.ensure_future(b.submit([3]))
        await asyncio.sleep(0.01)
        doomed.cancel()  # e.g. the caller's deadline passed
        gate.set()
        outs = await asyncio.gather(first, kept)
        await b.close()
        return outs

    assert run(main()) == [[2], [6]]
    assert rec.batches == [[1], [3]]


def test_submit_larger_than_max_batch_runs_whole_and_alone(pool):
    rec = Recorder()

    async def main():
        b = MicroBatcher(rec, pool, max_batch=4, max_wait_ms=10, max_queue=100)
        outs = await asyncio.gather(b.submit(list(range(10))), b.submit([100]))
        await b.close()
        return outs

    outs = run(main())
    assert outs == [[2 * i for i in range(10)], [200]]
    assert list(range(10)) in rec.batches


def test_failing_batch_fails_its_callers_and_the_batcher_keeps_serving(pool):
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise ValueError("boom")
        return [x + 1 for x in items]

    async def main():
        b = MicroBatcher(flaky, pool, max_batch=8, max_wait_ms=5, max_queue=100)
        first = await asyncio.gather(b.submit([1]), b.submit([2]), return_exceptions=True)
        second = await b.submit([3])
        await b.close()
        return first, second

    first, second = run(main())
    assert all(isinstance(e, ValueError) for e in first)
    assert second == [4]


def test_closed_batcher_refuses_new_work(pool):
    async def main():
        b = MicroBatcher(Recorder(), pool)
        await b.close()
        with pytest.raises(Overloaded, match="shutting down"):
            await b.submit([1])

    run(main())


# -- admission: capacity learnt online, refusals at once -------------------------------------
def test_service_times_are_learnt_per_batch_size_and_interpolated():
    t = ServiceTimes(alpha=1.0)
    assert not t.known and t.batch_seconds(4) == 0.0
    t.observe(1, 0.010)  # 10 ms alone
    t.observe(8, 0.040)  # 5 ms per item in a batch of 8
    assert t.batch_seconds(1) == pytest.approx(0.010)
    assert t.batch_seconds(8) == pytest.approx(0.040)
    # bucket 4 lies 2/3 of the way from 1 to 8 on a log scale
    assert t.batch_seconds(4) == pytest.approx(4 * (0.010 + 2 / 3 * (0.005 - 0.010)))
    assert t.batch_seconds(32) == pytest.approx(0.040)  # above: what the largest batch cost
    assert t.drain_seconds(20, max_batch=8) == pytest.approx(2 * 0.040 + t.batch_seconds(4))
    assert t.drain_seconds(16, max_batch=8, slots=2) == pytest.approx(0.040)
    t2 = ServiceTimes(alpha=0.5)
    t2.observe(1, 0.010)
    t2.observe(1, 0.030)
    assert t2.batch_seconds(1) == pytest.approx(0.020)  # EWMA follows the machine's speed


def test_arrivals_past_the_queue_budget_are_refused_at_once_with_a_retry_hint(pool):
    rec = Recorder(delay_s=0.05)

    async def main():
        b = MicroBatcher(rec, pool, max_batch=1, max_wait_ms=0, max_inflight=1)
        await b.submit([0])  # measures ~50 ms per item

        async def call(i):
            t0 = time.monotonic()
            try:
                return await b.submit([i]), time.monotonic() - t0
            except Overloaded as e:
                return e, time.monotonic() - t0

        outs = await asyncio.gather(*(call(i) for i in range(1, 11)))
        await b.close()
        return outs, b.refused

    outs, refused = run(main())
    admitted = [(r, s) for r, s in outs if not isinstance(r, Exception)]
    shed = [(e, s) for e, s in outs if isinstance(e, Overloaded)]
    # The default budget is one item's own service time: what drains within it is admitted.
    assert len(admitted) == 2 and len(shed) == 8 and refused == 8
    assert [r for r, _ in admitted] == [[2], [4]]
    assert all(s < 0.02 for _, s in shed)  # answered at once, not after queueing
    assert all(e.retry_after_s and e.retry_after_s > 0 for e, _ in shed)
    # Callers refused together are told different times, so they do not all come back at once.
    assert len({round(e.retry_after_s, 6) for e, _ in shed}) > 1
    assert all(s < 0.5 for _, s in admitted)
    computed = {x for batch in rec.batches for x in batch}
    assert computed == {0, 1, 2}  # refused work is never computed


def test_a_deadline_that_cannot_be_met_is_refused_before_any_work(pool):
    rec = Recorder(delay_s=0.05)

    async def main():
        b = MicroBatcher(rec, pool, max_batch=4, max_wait_ms=0)
        await b.submit([0])
        with pytest.raises(Overloaded, match="deadline") as info:
            b.admit(1, timeout=0.01)  # ~50 ms of work cannot finish in 10 ms
        with b.admit(1, timeout=5.0) as ok:
            out = await b.submit([1], ok)
        await b.close()
        return info.value, out

    err, out = run(main())
    assert err.retry_after_s and err.retry_after_s > 0.03
    assert out == [2] and len(rec.batches) == 2


def test_without_measurements_everything_is_admitted_up_to_the_queue_bound(pool):
    async def main():
        b = MicroBatcher(Recorder(), pool, max_batch=4, max_wait_ms=0, max_queue=8)
        r = b.admit(8, timeout=0.001)  # no service time known yet: nothing to refuse on
        with pytest.raises(Overloaded, match="queue full"):
            b.admit(1)
        r.release()
        assert b.queued_items == 0
        await b.close()

    run(main())
