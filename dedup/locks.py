"""A readers-writer lock shared by the store and the index shards."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class RWLock:
    """Many shared holders or one exclusive holder.

    A waiting exclusive request blocks new shared holders, so busy readers cannot starve a
    writer, except threads already inside a shared section, which may nest without deadlock.
    Used by the LMDB store (txns shared, map resizes exclusive) and by index shards (searches
    shared, adds and removes exclusive).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._waiting = 0  # exclusive requests queued
        self._exclusive = False
        self._depth: dict[int, int] = {}  # thread ident -> nested shared sections

    @contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if not self._depth.get(me):
                while self._exclusive or self._waiting:
                    self._cond.wait()
            self._depth[me] = self._depth.get(me, 0) + 1
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._depth[me] -= 1
                if not self._depth[me]:
                    del self._depth[me]
                if not self._readers:
                    self._cond.notify_all()

    def held_by_me(self) -> bool:
        return threading.get_ident() in self._depth

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._readers or self._exclusive:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
