"""Calibrate the image cascade jointly from a finished ``dedup-eval --modality image`` run.

The benchmark's first pass runs every verifying space with its threshold out of reach, so each
returned neighbour carries both the search's similarity and the verified score
(``Neighbor.similarity`` / ``score``). From those records this tool recomputes, for any band
(``verify.band_low`` at or above the one the run used), what the service would answer:

- a neighbour's score is its verified score when its similarity is in the band, else its
  similarity (verification never lowers a score, so at threshold T a candidate at T or above
  matches either way);
- the verdict is the OR of the spaces: a label matches when any space has a neighbour with it at
  or above that space's threshold.

Thresholds are chosen on the calibration half *jointly*: per-space false-match budgets on a
grid, keeping the verdict's false-match rate (any wrong label matched, over all lookups: an
edited copy of one seed matching another seed counts too) within the target while maximising
recall; each space then gets the threshold at its budget.
The held-out half is reported at those thresholds: recall per level and edit type, verdict
false matches with 95% Wilson intervals, how many unrelated lookups pay for verification. The
rule is checked against the server's own verdicts of the second pass (same band, the
benchmark's per-space thresholds): the agreement is reported.

    python -m tools.eval.cascade RUN_DIR --space image:copydet-lite0 --bands 0.3,0.4,0.5
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.eval import metrics


def refuse(score: float, similarity: float, run_weight: float, weight: float) -> float:
    """A geometric score fused again at ``weight``: the inliers are recovered exactly from the
    score the run fused at ``run_weight`` (``similarity + run_weight * log1p(inliers)``)."""
    inliers = math.expm1((score - similarity) / run_weight)
    return similarity + weight * math.log1p(inliers)


@dataclass
class Half:
    """One half's lookups: tags, and per space the neighbours (seed, score, similarity)."""

    truth: np.ndarray
    level: np.ndarray
    edit: np.ndarray
    nbrs: list[dict[str, list[tuple[int, float, float | None]]]]
    matched: list[set[int]]
    error: np.ndarray

    @classmethod
    def load(cls, path: Path, run_weight: float = 0.1, weight: float | None = None) -> "Half":
        """A half's records; with ``weight``, geometric scores are fused again at that weight
        (the inliers are recovered exactly from the run's fused score and ``run_weight``)."""
        recs = {}
        for line in path.read_text().splitlines():
            d = json.loads(line)
            recs[d["qid"]] = d  # the last answer of a query wins (a resumed run)
        rows = [d for d in recs.values()]
        nbrs = []
        for d in rows:
            per: dict[str, list] = {}
            for space, seed, score, sim in d.get("neighbors", []):
                if weight is not None and sim is not None and score > sim + 1e-6:
                    score = refuse(score, sim, run_weight, weight)
                per.setdefault(space, []).append((seed, score, sim))
            nbrs.append(per)
        return cls(np.array([d["truth"] for d in rows]), np.array([d["level"] for d in rows]),
                   np.array([d["edit"] for d in rows]), nbrs,
                   [set(d["matched"]) for d in rows],
                   np.array([d["error"] is not None for d in rows]))

    def scores(self, space: str, band: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per lookup: the true seed's score, the best wrong seed's score, and whether a
        candidate was verified, with verification applied from ``band`` up (None: never)."""
        n = len(self.nbrs)
        true, wrong = np.full(n, -np.inf), np.full(n, -np.inf)
        verified = np.zeros(n, bool)
        for i, per in enumerate(self.nbrs):
            for seed, score, sim in per.get(space, ()):
                raw = score if sim is None else sim
                s = score if (sim is not None and band is not None and raw >= band) else raw
                verified[i] |= sim is not None and band is not None and raw >= band
                if seed == self.truth[i]:
                    true[i] = max(true[i], s)
                else:
                    wrong[i] = max(wrong[i], s)
        return true, wrong, verified


GRID = (0.0, 0.0001, 0.0002, 0.0003, 0.0005, 0.0007, 0.001)  # per-space false-match budgets


def _threshold(neg: np.ndarray, fmr: float) -> float:
    return float(metrics.threshold_at_fmr(neg, fmr)[0]) if fmr > 0 else float(np.max(neg) + 1e-6)


def calibrate(cal: Half, spaces: list[str], bands: dict[str, float | None], target: float,
              grid: tuple[float, ...]) -> dict:
    """Per-space thresholds whose OR keeps the calibration verdict's false matches within
    ``target``: a lookup, edited copy or unrelated picture, whose verdict matched any label but
    its true seed's (the rate moderation sees)."""
    ok = ~cal.error
    neg = ok  # every lookup can match a wrong label
    pos = ok & (cal.truth >= 0)
    sc = {s: cal.scores(s, bands.get(s)) for s in spaces}
    best = None
    for budget in itertools.product(grid, repeat=len(spaces)):
        t = {s: _threshold(sc[s][1][neg], b) for s, b in zip(spaces, budget)}
        false = np.zeros(neg.sum(), bool)
        hit = np.zeros(pos.sum(), bool)
        for s in spaces:
            false |= sc[s][1][neg] >= t[s]
            hit |= sc[s][0][pos] >= t[s]
        fmr = float(false.mean())
        if fmr <= target + 1e-12:
            recall = float(hit.mean())
            if best is None or recall > best["recall"]:
                best = {"budget": dict(zip(spaces, budget)), "thresholds": t, "fmr": fmr,
                        "recall": recall, "n_negative": int(neg.sum())}
    return best


def _rate(mask: np.ndarray) -> dict:
    k, n = int(mask.sum()), int(mask.size)
    lo, hi = metrics.wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "k": k, "n": n, "ci95": [lo, hi]}


def evaluate(half: Half, spaces: list[str], bands: dict[str, float | None],
             thresholds: dict[str, float]) -> dict:
    """The verdict rule at these thresholds on one half."""
    ok = ~half.error
    right = np.zeros(len(half.truth), bool)
    wrong = np.zeros(len(half.truth), bool)
    verified = np.zeros(len(half.truth), bool)
    per_space = {}
    for s in spaces:
        true, wrong_s, ver = half.scores(s, bands.get(s))
        right |= true >= thresholds[s]
        wrong |= wrong_s >= thresholds[s]
        verified |= ver
        per_space[s] = {"recall": _rate((true >= thresholds[s])[ok & (half.truth >= 0)])}
    pos, neg = ok & (half.truth >= 0), ok & (half.truth < 0)
    out = {"lookups": int(ok.sum()), "errors": int((~ok).sum()),
           "recall": {"all": _rate(right[pos]),
                      **{lv: _rate(right[pos & (half.level == lv)]) for lv in sorted(set(half.level))}},
           "recall_by_edit": {e: _rate(right[pos & (half.edit == e)])
                              for e in sorted(set(half.edit[pos]))},
           "false_matches": {"all_lookups": _rate(wrong[ok]), "negatives": _rate(wrong[neg]),
                             "positives": _rate(wrong[pos]),
                             **{lv: _rate(wrong[ok & (half.level == lv)])
                                for lv in sorted(set(half.level))}},
           "verified_share": {"negatives": _rate(verified[neg]), "positives": _rate(verified[pos])},
           "per_space": per_space}
    return out


def agreement(half: Half, spaces: list[str], bands: dict[str, float | None],
              thresholds: dict[str, float]) -> dict:
    """How often the rule on the neighbours equals the server's own verdicts."""
    ok = ~half.error
    same_right = same_wrong = 0
    for i in np.flatnonzero(ok):
        right = wrong = False
        for s in spaces:
            for seed, score, sim in half.nbrs[i].get(s, ()):
                raw = score if sim is None else sim
                v = score if (sim is not None and bands.get(s) is not None and raw >= bands[s]) else raw
                if v >= thresholds[s]:
                    right |= seed == half.truth[i]
                    wrong |= seed != half.truth[i]
        srv_right = int(half.truth[i]) in half.matched[i]
        srv_wrong = bool(half.matched[i] - {int(half.truth[i])})
        same_right += right == srv_right
        same_wrong += wrong == srv_wrong
    n = int(ok.sum())
    return {"n": n, "recall_agrees": same_right / n, "false_match_agrees": same_wrong / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.eval.cascade", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished dedup-eval image run folder")
    p.add_argument("--spaces", default="image:copydet-lite0,pdq")
    p.add_argument("--verify-space", action="append", default=[],
                   help="a space the run verified (repeatable; default: the first)")
    p.add_argument("--bands", default="0.3", help="comma list of band_low values to compare")
    p.add_argument("--target-fmr", type=float, default=0.001)
    p.add_argument("--grid", default=",".join(f"{g:g}" for g in GRID))
    p.add_argument("--run-weight", type=float, default=0.1,
                   help="verify.weight the run's first (calibration) pass used")
    p.add_argument("--heldout-run-weight", type=float, default=None,
                   help="verify.weight its held-out pass used (default: --run-weight)")
    p.add_argument("--weight", type=float, default=None,
                   help="fuse geometric scores again at this verify.weight")
    p.add_argument("--out", type=Path, default=None, help="write cascade.json here")
    a = p.parse_args(argv)
    spaces = [s for s in a.spaces.split(",") if s]
    verifying = a.verify_space or spaces[:1]
    grid = tuple(float(x) for x in a.grid.split(","))
    ck = a.run / "checkpoint"
    cal = Half.load(ck / "records-calibration.jsonl", a.run_weight, a.weight)
    held = Half.load(ck / "records-heldout.jsonl", a.heldout_run_weight or a.run_weight, a.weight)
    served = json.loads((a.run / "calibration.json").read_text())["thresholds"]
    report = {"target_fmr": a.target_fmr, "spaces": spaces, "verifying": verifying, "bands": {}}
    for band in [float(x) for x in a.bands.split(",")]:
        bands = {s: (band if s in verifying else None) for s in spaces}
        c = calibrate(cal, spaces, bands, a.target_fmr, grid)
        r = {"calibration": c, "heldout": evaluate(held, spaces, bands, c["thresholds"])}
        report["bands"][str(band)] = r
        h = r["heldout"]
        print(f"band_low {band}: thresholds {c['thresholds']} (budgets {c['budget']}; "
              f"calibration FMR {c['fmr']:.5f} over {c['n_negative']}, recall {c['recall']:.3f})")
        print("  held-out recall " + " ".join(f"{k} {v['rate']:.3f}" for k, v in h["recall"].items())
              + f" | false matches {h['false_matches']['all_lookups']['k']}/"
              f"{h['false_matches']['all_lookups']['n']} = {h['false_matches']['all_lookups']['rate']:.5f}"
              f" (CI <= {h['false_matches']['all_lookups']['ci95'][1]:.5f})"
              f" | verified: {h['verified_share']['negatives']['rate']:.3f} of negatives, "
              f"{h['verified_share']['positives']['rate']:.3f} of positives")
    low = min(float(x) for x in a.bands.split(","))
    report["server_agreement"] = agreement(
        held, spaces, {s: (low if s in verifying else None) for s in spaces}, served)
    print("server agreement (held-out, the run's own thresholds):", report["server_agreement"])
    if a.out:
        a.out.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
