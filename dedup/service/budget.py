"""One memory budget shared by every request in flight: decoded pixels are bounded whatever
arrives (DESIGN invariant 8).

Each item holds its estimated peak bytes (``dedup.embed.spaces.memory_cost``: read from the image
header before a pixel is decoded) from its decode until its embedding is done. An item that does
not fit waits, in arrival order, until it does or until its deadline; then it is refused with
Overloaded (RESOURCE_EXHAUSTED). An item larger than the whole budget runs alone.
"""

from __future__ import annotations

import asyncio
import collections
from contextlib import asynccontextmanager
from typing import AsyncIterator

from dedup.errors import Overloaded


class MemoryBudget:
    """A byte budget held by async tasks of one event loop."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.used = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    def _fits(self, n: int) -> bool:
        return self.used + n <= self.limit or self.used == 0

    @asynccontextmanager
    async def hold(self, n: int, timeout: float) -> AsyncIterator[None]:
        """Hold ``n`` bytes for the block; Overloaded if they cannot be had within ``timeout``."""
        if n <= 0:
            yield
            return
        if self._waiters or not self._fits(n):
            waiter = asyncio.get_running_loop().create_future()
            entry = (n, waiter)
            self._waiters.append(entry)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), max(0.0, timeout))
            except asyncio.TimeoutError:
                if waiter.done():  # granted just as time ran out: give it back
                    self._release(n)
                else:
                    self._waiters.remove(entry)
                    self._wake()
                raise Overloaded(f"decode memory budget busy ({self.used} of {self.limit} bytes "
                                 f"held, {n} needed); retry later") from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release(n)
                elif entry in self._waiters:
                    self._waiters.remove(entry)
                    self._wake()
                raise
        else:
            self._take(n)
        try:
            yield
        finally:
            self._release(n)

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def _release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        """Grant waiters in arrival order while the first one fits."""
        while self._waiters and self._fits(self._waiters[0][0]):
            n, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._take(n)
            waiter.set_result(None)
