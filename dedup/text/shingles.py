"""Character shingles of a text's aggressive form, as 64-bit hashes, for MinHash and containment.

A shingle is ``k`` consecutive characters of ``aggressive_form(text)`` (no spaces or
punctuation, so shingles span word breaks and survive re-spacing). A text shorter than ``k``
is one shingle. Hashes are computed with numpy over Unicode code points (polynomial rolling
hash, then the splitmix64 finaliser), so one text costs microseconds and the values are the
same on every machine: they are part of the MinHash space's definition.
"""

from __future__ import annotations

import numpy as np

SHINGLE_K = 5
_BASE = np.uint64(0x100000001B3)  # the FNV-1a 64-bit prime, as the polynomial's base


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective 64-bit mix (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shingle_hashes(aggressive: str, k: int = SHINGLE_K) -> np.ndarray:
    """Sorted unique uint64 hashes of the ``k``-character shingles of an aggressive form."""
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    cps = np.frombuffer(aggressive.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if cps.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if cps.size < k:
        k = int(cps.size)
    n = cps.size - k + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # k vector passes, wrapping mod 2**64 on purpose
            h = h * _BASE + cps[j:j + n] + np.uint64(1)
    h = splitmix64(h ^ np.uint64(k))  # k in the hash: shingles of different sizes never collide
    return np.unique(h)


def overlap(a: np.ndarray, b: np.ndarray) -> int:
    """Number of hashes two sorted unique shingle arrays share."""
    return int(np.intersect1d(a, b, assume_unique=True).size)
