"""Exact shingle overlap between a query text and a candidate seed's stored text.

The MinHash and sentence-embedding spaces shortlist candidates; this stage re-scores each one
from the two texts themselves, with exact sets of character shingles of their aggressive forms
(``dedup.text.shingles``, ``SHINGLE_K`` characters), so it sees what the sketches blur:

- ``jaccard``: |Q ∩ S| / |Q ∪ S|, the MinHash space's own quantity, computed exactly;
- ``seed_in_query``: |Q ∩ S| / |S|, how much of the seed the query repeats (the seed with a
  sentence added before or after it, hashtags, a URL);
- ``query_in_seed``: |Q ∩ S| / |Q|, how much of the query comes from the seed (a partial copy).

A containment only counts when the contained text is long enough to mean something: at least
``MIN_SHINGLES`` shingles, and at least ``MIN_RATIO`` of the other text's size; below that ratio
the containment is scaled down in proportion (``_guard``). So "click here" inside a long seed,
or a two-word seed inside a long query, does not make a match. ``score`` is the largest of the
three after the guard; the service compares it with its own calibrated threshold
(``thresholds.toml``, space ``text:containment``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dedup.text.normalize import aggressive_form
from dedup.text.shingles import shingle_hashes

SPACE = "text:containment"
# Chosen on the text benchmark's calibration side (tools/eval/textbench.py; recall at 0.1% FMR,
# easy/medium/hard): 4-shingles, 15, 0.6 gave 0.999/0.967/0.974 (partial copies 0.95), against
# 5-shingles, 20, 0.5: 1.000/0.958/0.958 (partial copies 0.92).
SHINGLE_K = 4  # shorter than MinHash's 5: exact sets lose nothing to estimation noise
MIN_SHINGLES = 15  # about 18 letters of aggressive form: a short sentence
MIN_RATIO = 0.6  # a containment counts in full when the contained text is >= 60% of the other
SEED_CACHE = 32768  # seed shingle sets kept (about 1 KB each with the key text: ~32 MB)


@dataclass(frozen=True)
class TextMatch:
    """Exact shingle overlap of one (query, seed) pair and the guarded score."""

    jaccard: float
    seed_in_query: float
    query_in_seed: float
    n_query: int
    n_seed: int
    score: float


def shingles(text: str, k: int = SHINGLE_K) -> np.ndarray:
    """Sorted unique shingle hashes of a (normalised) text's aggressive form."""
    return shingle_hashes(aggressive_form(text), k)


def _guard(containment: float, n_inner: int, n_outer: int) -> float:
    """A containment of an ``n_inner``-shingle text in an ``n_outer`` one, short texts damped."""
    if n_inner < MIN_SHINGLES or n_outer == 0:
        return 0.0
    return containment * min(1.0, n_inner / (MIN_RATIO * n_outer))


def compare_shingles(q: np.ndarray, s: np.ndarray) -> TextMatch:
    """Overlap of two shingle sets (from ``shingles``)."""
    nq, ns = int(q.size), int(s.size)
    inter = int(np.intersect1d(q, s, assume_unique=True).size) if nq and ns else 0
    union = nq + ns - inter
    jac = inter / union if union else 0.0
    siq = inter / ns if ns else 0.0
    qis = inter / nq if nq else 0.0
    score = max(jac, _guard(siq, ns, nq), _guard(qis, nq, ns))
    return TextMatch(jac, siq, qis, nq, ns, score)


def compare(query: str, seed: str) -> TextMatch:
    """Overlap of a query text and a seed text (both as ``normalize_text`` gives them)."""
    return compare_shingles(shingles(query), shingles(seed))


@functools.lru_cache(maxsize=SEED_CACHE)
def _seed_shingles(text: str) -> np.ndarray:
    return shingles(text)


def rescore(query: str, seeds: Sequence[str]) -> list[TextMatch]:
    """Overlap of one query with each candidate seed text.

    The query is shingled once; seeds' shingle sets are kept in an LRU cache keyed by text:
    shingling costs about 0.5 ms a text (the normalisation is Python), comparing two cached sets
    microseconds, and a shortlist of 20 seeds would otherwise cost ~10 ms per lookup."""
    q = shingles(query)
    return [compare_shingles(q, _seed_shingles(s)) for s in seeds]
