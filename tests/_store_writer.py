"""Child process for tests/test_store.py: a real writer the parent can kill or talk to.

Modes:
  crash PATH   add one seed per write forever; print "A <id> <i>" after each acknowledged add and
               "R <id>" after each acknowledged removal (every third step), flushed.
  hold PATH    open as the writer, print "ready", wait for stdin to close.
  serve PATH   open as the writer, print "ready"; for each stdin line "add N" add N seeds (with
               content, so the map grows) and print "ok <last_seq>".
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from dedup.store import NewSeed, SeedStore
from dedup.types import Label

DIM = 8
SPACE = "image:test"
MODEL = "image:test@0001"


def vector(i: int) -> np.ndarray:
    """The embedding the writer stores for item i (the parent recomputes it)."""
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def new_seed(i: int, content_bytes: int = 64) -> NewSeed:
    data = f"item-{i}".encode()
    return NewSeed(
        labels=(Label("spam.scam", 2),),
        sha256=hashlib.sha256(data).hexdigest(),
        modalities=("image",),
        embeddings={SPACE: vector(i)},
        content=data + b"\0" * content_bytes,
    )


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    store = SeedStore(path, map_size=64 * 1024)
    store.register_space(SPACE, MODEL, DIM, "float32")
    if mode == "crash":
        i = 0
        while True:
            i += 1
            [(seed_id, _)] = store.add_seeds([new_seed(i)])
            print(f"A {seed_id} {i}", flush=True)
            if i % 3 == 0:
                victim = seed_id - 1
                store.remove_seeds([victim])
                print(f"R {victim}", flush=True)
    elif mode == "hold":
        print("ready", flush=True)
        sys.stdin.read()
    elif mode == "serve":
        print("ready", flush=True)
        i = 0
        for line in sys.stdin:
            n = int(line.split()[1])
            store.add_seeds([new_seed(i + k, content_bytes=4096) for k in range(n)])
            i += n
            print(f"ok {store.last_seq}", flush=True)
    store.close()


if __name__ == "__main__":
    main()
