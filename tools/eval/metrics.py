"""Retrieval metrics over search results: recall@1, micro-AP (ISC2021), recall at a false-match rate.

Inputs everywhere are the search output of one space on one query set: ``D`` (nq, k) similarity
scores (higher is closer), ``I`` (nq, k) seed ids (-1 for an empty slot), and ``truth`` (nq,)
the true seed id of each query, -1 for a negative query (its original is not a seed).
A query counts as matched at threshold t when a score >= t; this is the service's rule
(``margin = score - threshold >= 0``).
"""

from __future__ import annotations

import math

import numpy as np

from dedup.errors import InvalidArgument


def _check(D: np.ndarray, I: np.ndarray, truth: np.ndarray) -> None:
    if D.shape != I.shape or D.ndim != 2 or truth.shape != (D.shape[0],):
        raise InvalidArgument(f"shapes disagree: D {D.shape}, I {I.shape}, truth {truth.shape}")


def recall_at_1(D: np.ndarray, I: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of positive queries whose best-scoring seed is their true seed."""
    _check(D, I, truth)
    pos = truth >= 0
    if not pos.any():
        return float("nan")
    top = I[np.arange(len(I)), np.argmax(np.where(I >= 0, D, -np.inf), axis=1)]
    return float(np.mean(top[pos] == truth[pos]))


def true_seed_scores(D: np.ndarray, I: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Score of each positive query's true seed (-inf when it is not in the top k)."""
    _check(D, I, truth)
    pos = truth >= 0
    hit = (I[pos] == truth[pos, None])
    return np.where(hit, D[pos], -np.inf).max(axis=1) if hit.size else np.zeros(0)


def best_scores(D: np.ndarray, I: np.ndarray) -> np.ndarray:
    """Each query's best score over its valid results (-inf when none)."""
    return np.where(I >= 0, D, -np.inf).max(axis=1)


def pr_curve(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> tuple[np.ndarray, ...]:
    """Precision and recall at each distinct score threshold, highest first; ties form one step.

    Returns (precision, recall, thresholds)."""
    scores = np.asarray(scores, dtype=np.float64)
    is_tp = np.asarray(is_tp, dtype=bool)
    if n_gt <= 0:
        raise InvalidArgument("precision/recall needs at least one ground-truth pair")
    order = np.argsort(-scores, kind="stable")
    s, tp = scores[order], is_tp[order]
    ctp = np.cumsum(tp)
    # The last index of each run of equal scores: a threshold admits all tied pairs or none.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, int)
    precision = ctp[last] / (last + 1)
    recall = ctp[last] / n_gt
    return precision, recall, s[last]


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Sum of precision times recall gained at each step (no interpolation, as ISC2021)."""
    gained = np.diff(np.r_[0.0, recall])
    return float(np.sum(gained * precision))


def micro_ap(D: np.ndarray, I: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Micro average precision over all (query, seed, score) predictions pooled, as ISC2021.

    Every positive query has exactly one true pair; a true pair missing from the top k lowers
    recall; every other prediction is a false one. Returns (ap, precision, recall, thresholds)."""
    _check(D, I, truth)
    valid = I >= 0
    is_tp = (I == truth[:, None]) & (truth[:, None] >= 0) & valid
    n_gt = int(np.sum(truth >= 0))
    p, r, t = pr_curve(D[valid], is_tp[valid], n_gt)
    return average_precision(p, r), p, r, t


def threshold_at_fmr(neg_scores: np.ndarray, fmr: float) -> tuple[float, float]:
    """The lowest threshold at which at most a fraction ``fmr`` of negatives match.

    ``neg_scores`` are the negative queries' best scores. Returns (threshold, achieved fmr); the
    threshold lies just above the (m+1)-th highest negative score, m = floor(fmr * n)."""
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    if len(neg) == 0:
        raise InvalidArgument("a false-match rate needs at least one negative query")
    if not 0 <= fmr < 1:
        raise InvalidArgument(f"fmr must be in [0, 1), got {fmr}")
    m = math.floor(fmr * len(neg) + 1e-9)  # < len(neg) since fmr < 1
    t = float(np.nextafter(neg[m], np.inf))
    return t, float(np.mean(neg >= t))


def hamming_radius_at_fmr(neg_scores: np.ndarray, fmr: float, bits: int) -> int:
    """For a binary space (score = 1 - d/bits): the largest Hamming radius at which at most a
    fraction ``fmr`` of negatives match. Computed on integer distances, not float thresholds."""
    d = np.sort(np.rint((1.0 - np.asarray(neg_scores, dtype=np.float64)) * bits))
    if len(d) == 0:
        raise InvalidArgument("a false-match rate needs at least one negative query")
    m = math.floor(fmr * len(d) + 1e-9)
    return int(d[m]) - 1  # strictly closer than the (m+1)-th closest negative


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% for z=1.96) of a rate of ``k`` events in ``n`` trials.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at k = 0, which is
    where a false-match rate usually is: 0 of 10,000 still allows up to about 0.04%."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def exact_interval(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of ``k`` events in ``n`` trials: conservative,
    it covers the true rate at least ``conf`` of the time whatever n and k are."""
    from scipy.stats import beta

    if n <= 0:
        return float("nan"), float("nan")
    a = (1 - conf) / 2
    lo = float(beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def recall_at_threshold(pos_scores: np.ndarray, threshold: float) -> float:
    """Fraction of positive queries whose true-seed score reaches the threshold."""
    pos_scores = np.asarray(pos_scores, dtype=np.float64)
    return float(np.mean(pos_scores >= threshold)) if len(pos_scores) else float("nan")


def evaluate(D: np.ndarray, I: np.ndarray, truth: np.ndarray,
             fmrs: tuple[float, ...] = (0.01, 0.001)) -> dict:
    """All metrics of one space on one query set, plus the score arrays the plots need."""
    truth = np.asarray(truth, dtype=np.int64)
    ap, p, r, _ = micro_ap(D, I, truth)
    pos = true_seed_scores(D, I, truth)
    neg = best_scores(D[truth < 0], I[truth < 0])
    out = {
        "n_positive": int(len(pos)),
        "n_negative": int(len(neg)),
        "recall_at_1": recall_at_1(D, I, truth),
        "micro_ap": ap,
        "at_fmr": {},
        "_pr": (p, r),
        "_pos_scores": pos,
        "_neg_scores": neg,
    }
    for fmr in fmrs:
        t, achieved = threshold_at_fmr(neg, fmr)
        out["at_fmr"][f"{fmr:g}"] = {
            "threshold": t,
            "recall": recall_at_threshold(pos, t),
            "achieved_fmr": achieved,
            # How many negatives may score above the threshold: 0 means the estimate only
            # says "none of n", a weak bound; at 0.1% it needs >= 1000 negatives to be >= 1.
            "negatives_allowed_above": math.floor(fmr * len(neg) + 1e-9),
            "n_negative": int(len(neg)),
        }
    return out
