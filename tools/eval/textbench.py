"""Text near-duplicate benchmark through a real server, and the text spaces' calibration.

Protocol (``python -m tools.eval.textbench --out DIR``, or ``dedup-eval text --out DIR``):

1. Corpus: prose texts of 40-400 characters from installed man pages, Debian package
   descriptions and scam templates (``tools.eval.textsources``), deduplicated; cached as JSON.
2. Seeds (one distinct label each, ``bench.s00042``, so a wrong seed is a wrong label) are drawn
   evenly from the three length bands; negatives are other corpus texts. Every text is put on
   the calibration or the held-out side by a hash of its content: a seed's edited copies are
   on its side, and so is every negative.
3. Queries: edited copies of each seed at three levels (``tools.eval.textedits``; 2 easy, 3
   medium, 3 hard per seed, primary edit types in equal shares) and one edited copy of each
   negative, the levels taking turns (``--neg-all-levels``: one per level), with the same edit
   distribution.
4. Scores per space: a real ``dedup serve`` with that one space (so one space's neighbours never
   crowd another's out of the top k), seeds added with ``AddSeeds``, queries sent with
   ``BatchLookup``. The containment verifier (``dedup.verify.text``) re-scores the MinHash and
   MiniLM neighbours against the seeds' texts here in the harness (the seed texts are the same
   ``normalize_text`` output the server stores).
5. Calibration on the calibration side: ``text:exact`` stays at equality (1.0); the other
   spaces get thresholds at per-space false-match rates chosen (on a grid) to maximise recall
   while the verdict, the OR of all spaces, stays within the target rate.
6. Held-out report: verdicts by the service's rule (a label matches when any space has a
   neighbour with it at or above the space's threshold) on the per-space neighbours; a sample
   re-checked through one real server with every space at its calibrated threshold, and the
   agreement reported. Recall and false matches per level, per edit type and per length band,
   with 95% Wilson intervals, plus each space's threshold-free recall at the target rate.

Outputs in ``--out``: ``report.json``, ``report.md``, ``thresholds.toml`` (config format),
``scores.npz`` (every query's neighbours per space, with its tags).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dedup.config import Limits
from dedup.errors import DedupError, InvalidArgument
from dedup.items import normalize_text
from dedup.types import Item, Label
from dedup.verify import text as vtext
from tools.eval import metrics
from tools.localserver import batch_lookup_with_retries, with_retries
from tools.eval import textedits as te
from tools.eval import textsources as ts

SPACES = ("text:exact", "text:minhash", "text:minilm-l6")
CONTAINMENT = vtext.SPACE
CONTAINMENT_SHORTLISTS = ("text:minhash", "text:minilm-l6")  # the spaces containment re-scores
EXACT_THRESHOLD = 1.0
FMR_GRID = (0.0, 0.0001, 0.0002, 0.0003, 0.0005, 0.0007, 0.001)
CORPUS_VERSION = 2
LABEL_PREFIX = "bench.s"
_CHUNK = 64


@dataclass
class TextBenchSettings:
    """Everything that decides the numbers; written into the report."""

    seed: int = 0
    n_seeds: int = 1000
    n_negatives: int = 24000
    neg_all_levels: bool = False  # False: one edited copy per negative, levels taking turns
    copies: dict[str, int] = field(default_factory=lambda: {"easy": 2, "medium": 3, "hard": 3})
    k: int = 10
    target_fmr: float = 0.001
    spaces: tuple[str, ...] = SPACES
    containment: bool = True
    verdict_sample: int = 2000  # held-out lookups re-checked through one server with all spaces
    quick: bool = False
    workers: int = 3
    cache_dir: str = str(Path(os.environ.get("DEDUP_TEXTBENCH_CACHE",
                                             "~/.cache/dedup-textbench")).expanduser())


@dataclass(frozen=True)
class Query:
    """One lookup: its text, true seed (index, -1 for a negative), level, edit types, side."""

    text: str
    truth: int
    level: str
    primary: str
    edits: tuple[str, ...]
    band: str
    split: str


@dataclass
class Bench:
    seeds: list[str]
    seed_sources: list[str]
    queries: list[Query]
    n_corpus: int


@dataclass
class SpaceScores:
    """Neighbours of every query in one space: seed index (-1 empty) and score, (nq, k)."""

    I: np.ndarray
    D: np.ndarray
    model_id: str = ""
    seconds: float = 0.0


# -- building ------------------------------------------------------------------------------------

def side_of(text: str, seed: int) -> str:
    """``calib`` or ``heldout``: a fixed coin per text content."""
    return "calib" if hashlib.sha256(f"{seed}/split/{text}".encode()).digest()[0] % 2 == 0 \
        else "heldout"


def load_corpus(settings: TextBenchSettings) -> list[ts.SourceText]:
    """The deduplicated corpus, from the cache when it was built with the same version/seed."""
    cache = Path(settings.cache_dir)
    name = f"corpus-v{CORPUS_VERSION}-s{settings.seed}{'-quick' if settings.quick else ''}.json"
    path = cache / name
    if path.exists():
        return [ts.SourceText(t, s) for t, s in json.loads(path.read_text())]
    if settings.quick:
        corpus = ts.deduplicate(ts.man_texts(settings.seed, max_pages=400, per_package=60)
                                + ts.spam_texts(200, settings.seed))
    else:
        corpus = ts.collect(settings.seed)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([[t.text, t.source] for t in corpus]))
    tmp.replace(path)
    return corpus


def build_bench(settings: TextBenchSettings, corpus: list[ts.SourceText]) -> Bench:
    """Seeds (even across bands), negatives, and every edited query, all seeded."""
    rng = np.random.default_rng(settings.seed)
    order = [corpus[i] for i in rng.permutation(len(corpus))]
    per_band = math.ceil(settings.n_seeds / len(ts.BANDS))
    seeds: list[ts.SourceText] = []
    taken = set()
    for lo, hi in ts.BANDS:
        band = f"{lo}-{hi}"
        picked = [i for i, t in enumerate(order) if ts.band_of(t.text) == band][:per_band]
        seeds += [order[i] for i in picked]
        taken.update(picked)
    seeds = seeds[:settings.n_seeds]
    negatives = [t for i, t in enumerate(order) if i not in taken][:settings.n_negatives]
    if len(seeds) < 10 or len(negatives) < 10:
        raise InvalidArgument(f"corpus too small: {len(seeds)} seeds, {len(negatives)} negatives")
    queries: list[Query] = []
    for i, s in enumerate(seeds):
        for level in te.LEVELS:
            prims = te.primaries(level, settings.copies[level],
                                 te.query_rng(settings.seed, "prim", i, level))
            for c, p in enumerate(prims):
                e = te.edit_text(s.text, level, p, te.query_rng(settings.seed, "pos", i, level, c))
                queries.append(Query(e.text, i, level, p, e.edits, ts.band_of(s.text),
                                     side_of(s.text, settings.seed)))
    for j, n in enumerate(negatives):
        levels = te.LEVELS if settings.neg_all_levels else (te.LEVELS[j % len(te.LEVELS)],)
        for level in levels:
            p = te.primaries(level, 1, te.query_rng(settings.seed, "negprim", j, level))[0]
            e = te.edit_text(n.text, level, p, te.query_rng(settings.seed, "neg", j, level))
            queries.append(Query(e.text, -1, level, p, e.edits, ts.band_of(n.text),
                                 side_of(n.text, settings.seed)))
    return Bench([s.text for s in seeds], [s.source for s in seeds], queries, len(corpus))


# -- the server ----------------------------------------------------------------------------------

def config_text(thresholds: dict[str, float], containment: float | None = None,
                k: int = 10) -> str:
    """A server config enabling exactly these spaces at these thresholds; with
    ``containment``, the MinHash and MiniLM spaces verify their top ``k`` with the
    containment verifier at that threshold (as the shipped config does)."""
    lines = []
    for name, thr in thresholds.items():
        lines += [f'[spaces."{name}"]', f'model = "{name}"', f"threshold = {thr!r}"]
        if containment is not None and name in CONTAINMENT_SHORTLISTS:
            lines.append(f'verify = {{ method = "containment", band_low = -1.0, '
                         f'max_candidates = {k}, threshold = {containment!r} }}')
        lines.append("")
    return "\n".join(lines)


def label_of(i: int) -> str:
    return f"{LABEL_PREFIX}{i:05d}"


def index_of(label: str) -> int:
    return int(label[len(LABEL_PREFIX):]) if label.startswith(LABEL_PREFIX) else -2


def _add_seeds(server, seeds: list[str], workers: int) -> dict[int, int]:
    """Each seed with its own label (one AddSeeds per seed); returns seed_id -> seed index."""
    with server.client("analyst") as client:
        def add(i: int) -> tuple[int, int]:
            r = with_retries(lambda: client.add_seeds([Item(text=seeds[i])],
                                                      [Label(label_of(i), 1)],
                                                      source="textbench", timeout=120))[0]
            if isinstance(r, DedupError):
                raise r
            return r[0], i

        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(add, range(len(seeds))))


def _lookup_all(server, texts: list[str], k: int, workers: int) -> list:
    """BatchLookup every text (chunks of 64, a few calls in flight); results in order."""
    chunks = [texts[s:s + _CHUNK] for s in range(0, len(texts), _CHUNK)]
    with server.client("reader") as client:
        def call(chunk):
            return batch_lookup_with_retries(client, [Item(text=t) for t in chunk],
                                             top_k=k, timeout=600)

        with ThreadPoolExecutor(workers) as pool:
            out = []
            for i, res in enumerate(pool.map(call, chunks)):
                out.extend(res)
                if sys.stderr.isatty() and i % 50 == 0:
                    print(f"\r  lookups {len(out)}/{len(texts)}", end="", file=sys.stderr)
    for r in out:
        if isinstance(r, DedupError):
            raise r
    return out


def _start(workdir: Path, thresholds: dict[str, float], containment: float | None = None,
           k: int = 10):
    from tools.localserver import ServerProcess

    return ServerProcess(workdir / "data", config_text(thresholds, containment, k)).start()


def run_space(space: str, bench: Bench, settings: TextBenchSettings, workdir: Path) -> SpaceScores:
    """One server with ``space`` alone: every query's top-k (seed index, score) in it."""
    t0 = time.perf_counter()
    with _start(workdir / space.replace(":", "_"), {space: 1.0}) as server:
        ids = _add_seeds(server, bench.seeds, settings.workers)
        with server.client("reader") as c:
            model_id = c.stats()["spaces"].get(space, {}).get("model_id", "")
        results = _lookup_all(server, [q.text for q in bench.queries], settings.k,
                              settings.workers)
    nq = len(bench.queries)
    I = np.full((nq, settings.k), -1, dtype=np.int64)
    D = np.full((nq, settings.k), -np.inf, dtype=np.float64)
    for r, res in enumerate(results):
        hits = [n for n in res.neighbors if n.space == space][:settings.k]
        for c, n in enumerate(hits):
            I[r, c] = ids.get(n.seed_id, -1)
            D[r, c] = n.score
    return SpaceScores(I, D, model_id, time.perf_counter() - t0)


def containment_scores(bench: Bench, candidates: list[SpaceScores]) -> SpaceScores:
    """The text verifier on the union of the shortlists: (nq, k') seed index and score."""
    t0 = time.perf_counter()
    limits = Limits()
    seed_sh = [vtext.shingles(normalize_text(s, limits)) for s in bench.seeds]
    cand = np.concatenate([c.I for c in candidates], axis=1)
    I = np.full(cand.shape, -1, dtype=np.int64)
    D = np.full(cand.shape, -np.inf, dtype=np.float64)
    for r, q in enumerate(bench.queries):
        ids = list(dict.fromkeys(int(i) for i in cand[r] if i >= 0))
        qs = vtext.shingles(normalize_text(q.text, limits))
        for c, i in enumerate(ids):
            I[r, c] = i
            D[r, c] = vtext.compare_shingles(qs, seed_sh[i]).score
    return SpaceScores(I, D, f"{CONTAINMENT}@k{vtext.SHINGLE_K}-min{vtext.MIN_SHINGLES}"
                       f"-r{vtext.MIN_RATIO}", time.perf_counter() - t0)


# -- scores -> calibration ------------------------------------------------------------------------

@dataclass
class Scored:
    """Per space and query: the true seed's score (-inf if absent; positives) and the best
    score of any other seed (every query)."""

    true: dict[str, np.ndarray]
    wrong: dict[str, np.ndarray]


def score(bench: Bench, runs: dict[str, SpaceScores]) -> Scored:
    truth = np.array([q.truth for q in bench.queries], dtype=np.int64)
    true, wrong = {}, {}
    for space, s in runs.items():
        valid = s.I >= 0
        is_true = valid & (s.I == truth[:, None])
        true[space] = np.where(is_true, s.D, -np.inf).max(axis=1)
        wrong[space] = np.where(valid & ~is_true, s.D, -np.inf).max(axis=1)
    return Scored(true, wrong)


def _space_threshold(space: str, neg: np.ndarray, fmr: float, bits: int | None) -> float:
    """The threshold at ``fmr`` on negative best scores; binary spaces between two distances."""
    if bits:
        r = metrics.hamming_radius_at_fmr(neg, fmr, bits)
        return 1.0 - (r + 0.5) / bits
    return metrics.threshold_at_fmr(neg, fmr)[0]


def calibrate(bench: Bench, sc: Scored, settings: TextBenchSettings,
              bits: dict[str, int]) -> dict:
    """Per-space thresholds whose OR keeps calibration-side false matches within the target."""
    calib = np.array([q.split == "calib" for q in bench.queries])
    pos = np.array([q.truth >= 0 for q in bench.queries])
    neg_c, pos_c = calib & ~pos, calib & pos
    tuned = [s for s in sc.true if s != "text:exact"]
    options: dict[str, list[tuple[float, float]]] = {}
    for s in tuned:
        negs = sc.wrong[s][neg_c]
        options[s] = [(f, _space_threshold(s, negs, f, bits.get(s))) for f in FMR_GRID]
    exact_hit = sc.true.get("text:exact", np.full(len(pos), -np.inf)) >= EXACT_THRESHOLD
    exact_false = sc.wrong.get("text:exact", np.full(len(pos), -np.inf)) >= EXACT_THRESHOLD
    best = None
    for combo in itertools.product(*(options[s] for s in tuned)):
        hit, false = exact_hit.copy(), exact_false.copy()
        for s, (_, t) in zip(tuned, combo):
            hit |= sc.true[s] >= t
            false |= sc.wrong[s] >= t
        fmr_neg = float(false[neg_c].mean())
        false_rate = float(false[calib].mean())
        if fmr_neg > settings.target_fmr or false_rate > settings.target_fmr:
            continue
        recall = float(hit[pos_c].mean())
        key = (recall, -fmr_neg)
        if best is None or key > best[0]:
            best = (key, combo, fmr_neg, false_rate)
    if best is None:
        raise InvalidArgument("no threshold combination meets the target on the calibration side")
    (recall, _), combo, fmr_neg, false_rate = best
    spaces = {"text:exact": {"threshold": EXACT_THRESHOLD, "space_fmr": None}} \
        if "text:exact" in sc.true else {}
    for s, (f, t) in zip(tuned, combo):
        spaces[s] = {"threshold": t, "space_fmr": f}
        if bits.get(s):
            spaces[s]["hamming_max"] = int(round((1.0 - t) * bits[s] - 0.5))
    return {"spaces": spaces, "calib_recall": recall, "calib_fmr_negatives": fmr_neg,
            "calib_false_rate": false_rate, "n_calib_negatives": int(neg_c.sum()),
            "n_calib_positives": int(pos_c.sum()), "target_fmr": settings.target_fmr}


# -- verdicts ---------------------------------------------------------------------------------------

def simulated_verdicts(sc: Scored, thresholds: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The service's rule on the per-space neighbours: a label matches when any space has a
    neighbour with it at or above that space's threshold. Returns (true label matched, another
    label matched) per query."""
    n = len(next(iter(sc.true.values())))
    ok, wrong = np.zeros(n, bool), np.zeros(n, bool)
    for s, t in thresholds.items():
        ok |= sc.true[s] >= t
        wrong |= sc.wrong[s] >= t
    return ok, wrong


def verdict_pass(bench: Bench, thresholds: dict[str, float], settings: TextBenchSettings,
                 workdir: Path, rows: np.ndarray, containment: float | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """Lookups through one server with every space at its threshold (and the containment
    verifier in the server's cascade when given): its own verdicts.

    Returns per row: verdict matched the true label; verdict matched a wrong label; seconds."""
    t0 = time.perf_counter()
    texts = [bench.queries[r].text for r in rows]
    with _start(workdir / "verdicts", thresholds, containment, settings.k) as server:
        _add_seeds(server, bench.seeds, settings.workers)
        results = _lookup_all(server, texts, settings.k, settings.workers)
    ok = np.zeros(len(rows), bool)
    wrong = np.zeros(len(rows), bool)
    for n, (r, res) in enumerate(zip(rows, results)):
        matched = {index_of(v.label) for v in res.verdicts if v.matched}
        truth = bench.queries[r].truth
        ok[n] = truth >= 0 and truth in matched
        wrong[n] = bool(matched - {truth})
    return ok, wrong, time.perf_counter() - t0


def containment_verdict(sc: Scored, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Containment's own verdict per query: (true seed matched, a wrong seed matched)."""
    return sc.true[CONTAINMENT] >= t, sc.wrong[CONTAINMENT] >= t


# -- report ------------------------------------------------------------------------------------

def _rate(mask: np.ndarray) -> dict:
    k, n = int(mask.sum()), int(mask.size)
    lo, hi = metrics.wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "k": k, "n": n, "ci95": [lo, hi]}


def report(bench: Bench, sc: Scored, cal: dict, verdict_ok: np.ndarray, verdict_wrong: np.ndarray,
           rows: np.ndarray, settings: TextBenchSettings, bits: dict[str, int]) -> dict:
    """Held-out figures: per level, edit type and band, per space and for the verdicts."""
    qs = [bench.queries[r] for r in rows]
    pos = np.array([q.truth >= 0 for q in qs])
    level = np.array([q.level for q in qs])
    prim = np.array([q.primary for q in qs])
    band = np.array([q.band for q in qs])
    thr = {s: v["threshold"] for s, v in cal["spaces"].items()}
    true = {s: v[rows] for s, v in sc.true.items()}
    wrong = {s: v[rows] for s, v in sc.wrong.items()}
    ok_c, wrong_c = verdict_ok.copy(), verdict_wrong.copy()
    if CONTAINMENT in thr:
        ok_c |= true[CONTAINMENT] >= thr[CONTAINMENT]
        wrong_c |= wrong[CONTAINMENT] >= thr[CONTAINMENT]

    def block(sel: np.ndarray) -> dict:
        p, n = sel & pos, sel & ~pos
        out = {"n_positive": int(p.sum()), "n_negative": int(n.sum()),
               "verdict": {"recall": _rate(verdict_ok[p]), "false_match": _rate(verdict_wrong[sel]),
                           "fmr_negatives": _rate(verdict_wrong[n])},
               "spaces": {}}
        if CONTAINMENT in thr:
            out["verdict_with_containment"] = {"recall": _rate(ok_c[p]),
                                               "false_match": _rate(wrong_c[sel]),
                                               "fmr_negatives": _rate(wrong_c[n])}
        for s in true:
            row = {"threshold": thr.get(s), "recall": _rate(true[s][p] >= thr[s]) if s in thr
                   else None, "fmr": _rate(wrong[s][n] >= thr[s]) if s in thr else None}
            if n.sum() and p.sum() and s != "text:exact":
                t_free = _space_threshold(s, wrong[s][n], settings.target_fmr, bits.get(s))
                row[f"recall_at_fmr_{settings.target_fmr:g}"] = float(np.mean(true[s][p] >= t_free))
                row[f"threshold_at_fmr_{settings.target_fmr:g}"] = t_free
            out["spaces"][s] = row
        return out

    everything = np.ones(len(qs), bool)
    rep = {"all": block(everything),
           "levels": {lv: block(level == lv) for lv in te.LEVELS},
           "edit_types": {t: block(pos & (prim == t)) for lv in te.LEVELS for t in te.TYPES[lv]},
           "bands": {f"{lo}-{hi}": {lv: block((band == f"{lo}-{hi}") & (level == lv))
                                    for lv in te.LEVELS} for lo, hi in ts.BANDS}}
    return rep


def thresholds_toml(cal: dict, rep: dict, model_ids: dict[str, str]) -> str:
    """The calibrated thresholds in config format, with the held-out rates as comments."""
    v = rep["all"].get("verdict_with_containment", rep["all"]["verdict"])
    lines = [
        f"# Text spaces calibrated by tools/eval/textbench.py: the OR of all spaces kept at <= "
        f"{cal['target_fmr']:g} false matches on the calibration side "
        f"({cal['n_calib_negatives']} negatives).",
        f"# Held-out verdicts: recall {v['recall']['rate']:.4f}, false matches "
        f"{v['false_match']['k']}/{v['false_match']['n']} = {v['false_match']['rate']:.5f} "
        f"(95% CI {v['false_match']['ci95'][0]:.5f}-{v['false_match']['ci95'][1]:.5f}).", ""]
    for s, c in cal["spaces"].items():
        held = rep["all"]["spaces"].get(s, {})
        fmr = held.get("fmr")
        rate = (f"{fmr['k']}/{fmr['n']} = {fmr['rate']:.5f} (95% CI {fmr['ci95'][0]:.5f}-"
                f"{fmr['ci95'][1]:.5f})" if fmr else "n/a")
        cal_fmr = c["space_fmr"] if c["space_fmr"] is not None else "n/a (equality)"
        lines.append(f"# {s} ({model_ids.get(s, s)}): calibration space FMR {cal_fmr}; "
                     f"held-out space FMR {rate}")
        if "hamming_max" in c:
            lines.append(f"# Hamming distance <= {c['hamming_max']}")
        body = [f'[spaces."{s}"]', f'model = "{s}"', f"threshold = {c['threshold']!r}"]
        if s == CONTAINMENT:
            # Not an embedder space: the verifier re-scores the other spaces' shortlists. Kept
            # as a comment so this file stays a loadable config until the service reads it.
            lines.append("# The text verifier (dedup.verify.text) on the minhash + minilm "
                         "shortlists, at:")
            body = ["# [verify.text]", f"# threshold = {c['threshold']!r}"]
        lines += body + [""]
    return "\n".join(lines)


def markdown(rep: dict, cal: dict, settings: TextBenchSettings) -> str:
    """The headline tables."""
    f = f"{settings.target_fmr:g}"

    def pct(r):
        return f"{r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"

    def fm(r):
        return f"{r['k']}/{r['n']} = {100 * r['rate']:.3f}% (CI ≤ {100 * r['ci95'][1]:.3f}%)"

    spaces = list(rep["all"]["spaces"])
    out = ["## Held-out verdicts at the calibrated thresholds", "",
           "| level | verdict recall (service spaces) | + containment | false matches (service "
           "spaces) | false matches + containment |", "|---|---|---|---|---|"]
    for lv, b in [*rep["levels"].items(), ("all", rep["all"])]:
        vc = b.get("verdict_with_containment", b["verdict"])
        out.append(f"| {lv} | {pct(b['verdict']['recall'])} | {pct(vc['recall'])} | "
                   f"{fm(b['verdict']['false_match'])} | {fm(vc['false_match'])} |")
    out += ["", "## Per space (held-out): recall at the calibrated threshold / threshold-free "
            f"recall at FMR {f}", "", "| level | " + " | ".join(spaces) + " |",
            "|---|" + "---|" * len(spaces)]
    for lv, b in rep["levels"].items():
        cells = []
        for s in spaces:
            r = b["spaces"][s]
            free = r.get(f"recall_at_fmr_{f}")
            cells.append(f"{r['recall']['rate']:.3f} / {free:.3f}" if free is not None
                         else f"{r['recall']['rate']:.3f}")
        out.append(f"| {lv} | " + " | ".join(cells) + " |")
    out += ["", "## Per edit type (held-out positives): verdict recall", "",
            "| type | n | service spaces | + containment |", "|---|---|---|---|"]
    for t, b in rep["edit_types"].items():
        vc = b.get("verdict_with_containment", b["verdict"])
        out.append(f"| {t} | {b['n_positive']} | {pct(b['verdict']['recall'])} | "
                   f"{pct(vc['recall'])} |")
    out += ["", "## Per length band: verdict recall + containment (false matches)", "",
            "| band | " + " | ".join(te.LEVELS) + " |", "|---|" + "---|" * len(te.LEVELS)]
    for bnd, by_level in rep["bands"].items():
        cells = []
        for lv in te.LEVELS:
            vc = by_level[lv].get("verdict_with_containment", by_level[lv]["verdict"])
            cells.append(f"{vc['recall']['rate']:.3f} ({vc['false_match']['k']}/"
                         f"{vc['false_match']['n']})")
        out.append(f"| {bnd} | " + " | ".join(cells) + " |")
    out += ["", "## Thresholds (calibration side)", "", "| space | threshold | space FMR |",
            "|---|---|---|"]
    for s, c in cal["spaces"].items():
        out.append(f"| {s} | {c['threshold']:.6g} | {c['space_fmr']} |")
    return "\n".join(out) + "\n"


# -- the run ----------------------------------------------------------------------------------------

def run(settings: TextBenchSettings, out: Path) -> dict:
    """Build, score every space through a server, calibrate, verdict pass, write outputs."""
    from dedup.embed import create_embedder

    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    corpus = load_corpus(settings)
    bench = build_bench(settings, corpus)
    timings["build"] = time.perf_counter() - t0
    bits = {}
    for s in settings.spaces:
        emb = create_embedder(s) if s != "text:minilm-l6" else None
        if emb is not None and getattr(emb, "binary", False):
            bits[s] = int(emb.dim)
    runs: dict[str, SpaceScores] = {}
    for s in settings.spaces:
        runs[s] = run_space(s, bench, settings, work)
        timings[f"space/{s}"] = runs[s].seconds
    if settings.containment:
        shortlist = [runs[s] for s in settings.spaces if s in ("text:minhash", "text:minilm-l6")]
        if shortlist:
            runs[CONTAINMENT] = containment_scores(bench, shortlist)
            timings[f"space/{CONTAINMENT}"] = runs[CONTAINMENT].seconds
    sc = score(bench, runs)
    cal = calibrate(bench, sc, settings, bits)
    server_thr = {s: c["threshold"] for s, c in cal["spaces"].items() if s != CONTAINMENT}
    rows = np.array([i for i, q in enumerate(bench.queries) if q.split == "heldout"], dtype=np.int64)
    sim_ok, sim_wrong = simulated_verdicts(sc, server_thr)
    ok, wrong = sim_ok[rows], sim_wrong[rows]
    # The same rule through a real server with all spaces at once, on a sample: the two must agree.
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(rows, min(settings.verdict_sample, rows.size), replace=False))
    cont_t = cal["spaces"].get(CONTAINMENT, {}).get("threshold")
    if cont_t is not None:  # the server verifies with containment in its own cascade
        c_ok, c_wrong = containment_verdict(sc, cont_t)
        sim_ok, sim_wrong = sim_ok | c_ok, sim_wrong | c_wrong
    srv_ok, srv_wrong, secs = verdict_pass(bench, server_thr, settings, work, sample, cont_t)
    timings["verdicts"] = secs
    agreement = {"n": int(sample.size),
                 "recall_agrees": float(np.mean(srv_ok == sim_ok[sample])),
                 "false_match_agrees": float(np.mean(srv_wrong == sim_wrong[sample])),
                 "server_recall": float(srv_ok[[bench.queries[r].truth >= 0 for r in sample]].mean()),
                 "server_false_matches": int(srv_wrong.sum()),
                 "simulated_false_matches": int(sim_wrong[sample].sum())}
    rep = report(bench, sc, cal, ok, wrong, rows, settings, bits)
    model_ids = {s: r.model_id for s, r in runs.items()}
    n_pos = sum(q.truth >= 0 for q in bench.queries)
    result = {
        "settings": asdict(settings),
        "dataset": {"corpus_texts": bench.n_corpus, "seeds": len(bench.seeds),
                    "seed_sources": {k: sum(s.split(":")[0] == k for s in bench.seed_sources)
                                     for k in ("man", "apt", "spam")},
                    "positive_queries": n_pos, "negative_queries": len(bench.queries) - n_pos,
                    "heldout_queries": int(rows.size),
                    "heldout_negatives": int(sum(bench.queries[r].truth < 0 for r in rows))},
        "model_ids": model_ids, "calibration": cal, "heldout": rep,
        "server_verdict_check": agreement,
        "timings_s": {**timings, "total": time.perf_counter() - t0},
        "notes": [
            "verdict: the service's rule (spaces combine by OR, each at its calibrated "
            "threshold) applied to every held-out lookup's per-space neighbours, which came from "
            "a real server per space; server_verdict_check re-runs a sample through one real "
            "server with every space at its threshold and reports how often the two agree. "
            "recall = the true seed's label matched; false_match = a lookup (positive or "
            "negative) whose verdicts matched any other label.",
            "verdict_with_containment: the server's verdict OR the containment verifier "
            "(dedup.verify.text, run in this harness on the MinHash and MiniLM shortlists) at "
            "its calibrated threshold.",
            "ci95: Wilson score interval.",
        ],
    }
    (out / "report.json").write_text(json.dumps(result, indent=1, default=float))
    # Every query's per-space neighbours and its tags, for analyses the report does not make.
    np.savez_compressed(out / "scores.npz", **{f"{s}/I": r.I for s, r in runs.items()},
                        **{f"{s}/D": r.D for s, r in runs.items()},
                        truth=np.array([q.truth for q in bench.queries]),
                        level=np.array([q.level for q in bench.queries]),
                        primary=np.array([q.primary for q in bench.queries]),
                        band=np.array([q.band for q in bench.queries]),
                        split=np.array([q.split for q in bench.queries]))
    (out / "report.md").write_text(markdown(rep, cal, settings))
    (out / "thresholds.toml").write_text(thresholds_toml(cal, rep, model_ids))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dedup-eval text", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("eval-text"), help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tiny set (tests; about a minute)")
    p.add_argument("--n-seeds", type=int, default=None)
    p.add_argument("--n-negatives", type=int, default=None)
    p.add_argument("--spaces", default=",".join(SPACES), help="comma list of text spaces")
    p.add_argument("--no-containment", action="store_true")
    p.add_argument("--cache-dir", default=None, help="where the corpus JSON is cached")
    p.add_argument("--target-fmr", type=float, default=0.001)
    p.add_argument("--workers", type=int, default=3, help="calls in flight")
    p.add_argument("--neg-all-levels", action="store_true",
                   help="one edited copy of each negative per level (default: levels take turns)")
    p.add_argument("--verdict-sample", type=int, default=2000,
                   help="held-out lookups re-checked through one server with every space")
    p.add_argument("--json", action="store_true", help="print report.json")
    return p


def settings_from(args: argparse.Namespace) -> TextBenchSettings:
    """Settings from parsed arguments (quick mode shrinks the set)."""
    s = TextBenchSettings(seed=args.seed, target_fmr=args.target_fmr, quick=args.quick,
                          spaces=tuple(x.strip() for x in args.spaces.split(",") if x.strip()),
                          containment=not args.no_containment, workers=args.workers,
                          neg_all_levels=args.neg_all_levels, verdict_sample=args.verdict_sample)
    if not 0 < s.target_fmr < 1:
        raise InvalidArgument(f"--target-fmr must be in (0, 1), got {s.target_fmr}")
    if args.cache_dir:
        s.cache_dir = args.cache_dir
    if args.quick:
        s.n_seeds, s.n_negatives, s.copies = 30, 300, {"easy": 1, "medium": 1, "hard": 1}
        s.target_fmr = max(s.target_fmr, 0.01)
    if args.n_seeds is not None:
        s.n_seeds = args.n_seeds
    if args.n_negatives is not None:
        s.n_negatives = args.n_negatives
    if s.n_seeds < 3 or s.n_negatives < 1:
        raise InvalidArgument("--n-seeds must be >= 3 and --n-negatives >= 1")
    return s


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Exit codes: 0 done, 2 bad arguments, 1 other dedup errors."""
    args = parser().parse_args(argv)
    try:
        result = run(settings_from(args), args.out)
    except InvalidArgument as e:
        print(f"dedup-eval text: {e}", file=sys.stderr)
        return 2
    except DedupError as e:
        print(f"dedup-eval text: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1, default=float))
    else:
        print((args.out / "report.md").read_text())
        print(f"wrote {args.out}/report.json, report.md, thresholds.toml in "
              f"{result['timings_s']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
