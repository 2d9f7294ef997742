"""The decode-memory budget shared by every request in flight (dedup/service/budget.py), and
how a write's items are cut into chunks that fit it (AddSeeds)."""

from __future__ import annotations

import asyncio

import pytest

from dedup.errors import Overloaded
from dedup.service.budget import MemoryBudget
from dedup.service.servicer import _chunks_within


def test_holders_never_exceed_the_limit_and_late_ones_wait_their_turn():
    async def run():
        budget = MemoryBudget(100)
        order, peak = [], []

        async def job(name: str, n: int, secs: float):
            async with budget.hold(n, timeout=5):
                order.append(name)
                peak.append(budget.used)
                await asyncio.sleep(secs)

        await asyncio.gather(job("a", 60, 0.05), job("b", 60, 0.01), job("c", 30, 0.01))
        return order, peak, budget.used

    order, peak, used = asyncio.run(run())
    assert order == ["a", "b", "c"]  # arrival order: c does not overtake b
    assert max(peak) <= 100 and used == 0


def test_an_item_that_cannot_get_room_in_time_is_refused_and_releases_nothing():
    async def run():
        budget = MemoryBudget(100)
        async with budget.hold(90, timeout=1):
            with pytest.raises(Overloaded, match="budget busy"):
                async with budget.hold(20, timeout=0.05):
                    pass
            assert budget.used == 90
        # larger than the whole budget: runs alone once nothing else holds it
        async with budget.hold(500, timeout=1):
            assert budget.used == 500
        return budget.used

    assert asyncio.run(run()) == 0


def test_a_write_is_cut_into_consecutive_chunks_that_fit_the_budget():
    items = list("abcdef")
    chunks = _chunks_within(items, [40, 40, 40, 250, 10, 0], 100)
    assert [[x for x, _ in c] for c in chunks] == [["a", "b"], ["c"], ["d"], ["e", "f"]]
    assert all(sum(c for _, c in ch) <= 100 or len(ch) == 1 for ch in chunks)
    assert [x for ch in chunks for x, _ in ch] == items  # order kept, nothing dropped
