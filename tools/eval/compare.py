"""Compare spaces measured by different image benchmark runs on the queries they share.

Two runs with the same seed and settings make the same queries (``query_rng`` per query), so a
space measured in one run can be compared with a space of another on the common query ids,
threshold-free: recall at the target false-match rate, two-fold (threshold from one half of the
negatives by query-id parity, recall and FMR on the other half's lookups), per level. A verified
space (records with search similarity and fused score) can be scored as the search alone
(``raw``) or as the cascade at a verification weight (``cascade``).

    python -m tools.eval.compare RUN_A:image:effnet-lite0:raw \\
        RUN_B:image:copydet-lite0:raw RUN_B:image:copydet-lite0:cascade RUN_B:pdq:raw
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from tools.eval.cascade import refuse

LEVELS = ("easy", "medium", "hard")


def load(run: Path) -> dict[int, dict]:
    """A run's calibration answers by query id (the last answer of a query wins)."""
    path = Path(run) / "checkpoint" / "records-calibration.jsonl"
    return {d["qid"]: d for d in map(json.loads, path.read_text().splitlines())}


def best(d: dict, space: str, mode: str, weight: float, run_weight: float) -> tuple[float, float]:
    """(true seed's score, best wrong seed's score) of one answer in one space."""
    true = wrong = -math.inf
    for s, seed, score, sim in d["neighbors"]:
        if s != space:
            continue
        v = score if sim is None else sim
        if mode == "cascade" and sim is not None and score > sim + 1e-6:
            v = refuse(score, sim, run_weight, weight)
        if seed == d["truth"]:
            true = max(true, v)
        else:
            wrong = max(wrong, v)
    return true, wrong


def two_fold(true: np.ndarray, wrong: np.ndarray, truth: np.ndarray, level: np.ndarray,
             qids: np.ndarray, fmr: float) -> dict:
    """Recall per level and FMR, each half's threshold applied to the other half."""
    neg, pos = truth < 0, truth >= 0
    out = []
    for f in (0, 1):
        cal, held = qids % 2 == f, qids % 2 != f
        negs = np.sort(wrong[cal & neg])
        t = negs[-int(fmr * negs.size) - 1] + 1e-6
        out.append([float(np.mean(true[held & pos & (level == lv)] >= t)) for lv in LEVELS]
                   + [float(np.mean(true[held & pos] >= t)), float(np.mean(wrong[held & neg] >= t))])
    m = np.mean(out, axis=0)
    return {**dict(zip(LEVELS, m[:3])), "all": m[3], "fmr": m[4], "negatives": int(neg.sum())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.eval.compare", description=__doc__.splitlines()[0])
    p.add_argument("entries", nargs="+", help="RUN:SPACE:raw|cascade")
    p.add_argument("--weight", type=float, default=0.3, help="verification weight for cascade")
    p.add_argument("--run-weight", type=float, default=0.1, help="the weight the runs used")
    p.add_argument("--fmr", type=float, default=0.001)
    a = p.parse_args(argv)
    specs = []
    for e in a.entries:
        run, rest = e.split(":", 1)
        space, mode = rest.rsplit(":", 1)
        specs.append((Path(run), space, mode))
    runs = {run: load(run) for run, _, _ in specs}
    qids = sorted(set.intersection(*(set(r) for r in runs.values())))
    first = runs[specs[0][0]]
    truth = np.array([first[q]["truth"] for q in qids])
    level = np.array([first[q]["level"] for q in qids])
    q = np.array(qids)
    print(f"{len(qids)} common queries, {int((truth < 0).sum())} unrelated")
    for run, space, mode in specs:
        pairs = [best(runs[run][i], space, mode, a.weight, a.run_weight) for i in qids]
        r = two_fold(np.array([x[0] for x in pairs]), np.array([x[1] for x in pairs]),
                     truth, level, q, a.fmr)
        print(f"{space} ({mode}): " + " ".join(f"{k} {r[k]:.3f}" for k in (*LEVELS, "all"))
              + f"  other-half FMR {r['fmr']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
