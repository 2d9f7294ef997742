"""The image near-duplicate benchmark, measured through the service's own gRPC API.

Protocol (every figure comes from a real ``dedup serve`` on loopback):

1. The cached pictures are split by family into a calibration and a held-out half, each with
   seeds and distractors (``dataset.split_pictures``).
2. A server starts with the measured spaces (a service config's ``[spaces]``, by default the
   service's own) at their configured thresholds. Every seed of both halves is added with
   ``AddSeeds``, one call per seed, each with its own label (``bench.s00042``), so any wrong seed
   is a wrong label.
3. Calibration queries (edited seeds = positives, edited distractors = negatives; each tagged
   with a level and an edit type) go through ``BatchLookup`` in chunks of at most 64. From every
   response: per space the best neighbour score, the true seed's score, the top-1 seed; and the
   verdicts (which labels matched at the configured thresholds).
4. One threshold per space is chosen at the target false-match rate on the calibration
   negatives (``metrics.threshold_at_fmr``; a Hamming radius for binary spaces).
5. The server restarts on the same data with those thresholds in its config, and the held-out
   queries go through it: recall at the calibrated thresholds, the achieved false-match rate
   with confidence intervals, threshold-free recall at the target rate, and verdict false
   matches (a lookup whose verdict matched any label but its true seed's).

The service returns each space's ``top_k`` best neighbours (verified scores where the cascade
re-scored them), so a space's best score is exact whenever it appears; a score that is missing
is below that space's lowest listed score when the space listed ``top_k``. Such a score is
*ambiguous* at a threshold only when that floor reaches the threshold; those are counted and
reported (they should be 0).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dedup.config import SpaceConfig, default_spaces, load_config
from dedup.errors import DedupError, InvalidArgument, Overloaded
from dedup.types import Item, Label
from tools.eval import metrics
from tools.eval.augment import EDIT_TYPES, LEVELS, Augmented, augment_image, query_rng
from tools.eval.dataset import HALVES, ImageBenchmark, Picture
from tools.localserver import batch_lookup_with_retries, with_retries

LABEL_PREFIX = "bench.s"
LOOKUP_TIMEOUT_S = 1800  # per BatchLookup of 64: generous, the machine may be shared
SERVER_START_TIMEOUT_S = 1800  # loading models on a busy machine can take minutes
N_FILLER_CANDIDATES = 3  # a collage has at most 4 panels
VERIFY_ALL = 10.0  # first-pass threshold of a verifying space: above any fused score


@dataclass
class ImageBenchSettings:
    """Everything that decides the numbers; written into the report."""

    seed: int = 0
    n_seeds: int = 1000
    n_negatives: int = 20000  # negative queries over both halves
    pos_per_level: int = 2  # edited copies of each held-out seed per level
    calib_pos_per_level: int = 1  # the same for calibration seeds (thresholds rest on negatives)
    top_k: int = 10  # neighbours per space
    target_fmr: float = 0.001
    batch: int = 64
    levels: tuple[str, ...] = LEVELS
    edits: tuple[str, ...] = EDIT_TYPES
    quick: bool = False


@dataclass(frozen=True)
class Query:
    """One planned query: which picture, which edit at which level, and its truth."""

    qid: int
    half: str
    pid: int  # the original picture
    truth: int  # seed number (index into ImageBenchmark.all_seeds); -1: a negative
    level: str
    edit: str
    copy: int
    fillers: tuple[int, ...] = ()  # pids a collage may draw its other panels from


@dataclass
class Record:
    """What the service answered for one query."""

    query: Query
    ops: tuple[str, ...] = ()
    error: str | None = None
    best: dict[str, float] = field(default_factory=dict)  # space -> best score (absent: missing)
    best_seed: dict[str, int] = field(default_factory=dict)
    true: dict[str, float] = field(default_factory=dict)  # space -> true seed's score
    floor: dict[str, float] = field(default_factory=dict)  # space -> a missing score is below
    matched: tuple[int, ...] = ()  # seed numbers whose label matched
    # every neighbour: (space, seed number or -2, score, search similarity if verified else
    # None) -- what the cascade's band can be studied on afterwards
    neighbors: list[tuple] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict, query: Query) -> "Record":
        """Back from a checkpoint line (``query`` is the planned query it belongs to)."""
        return cls(query, tuple(d["ops"]), d["error"], d["best"], d["best_seed"],
                   {k: float(v) for k, v in d["true"].items()},
                   {k: float(v) for k, v in d["floor"].items()}, tuple(d["matched"]),
                   [tuple(n) for n in d.get("neighbors", [])])

    def to_json(self) -> dict:
        """One line of queries.jsonl."""
        q = self.query
        return {"qid": q.qid, "half": q.half, "pid": q.pid, "truth": q.truth, "level": q.level,
                "edit": q.edit, "ops": list(self.ops), "error": self.error, "best": self.best,
                "best_seed": self.best_seed, "true": self.true, "floor": self.floor,
                "matched": list(self.matched), "neighbors": self.neighbors}


# -- planning --------------------------------------------------------------------------------

def plan_queries(bench: ImageBenchmark, s: ImageBenchSettings) -> list[Query]:
    """Positives (pos_per_level copies of every held-out seed per level, calib_pos_per_level of
    every calibration seed) and negatives (copies of the distractors, n_negatives in all), with
    levels and edit types spread evenly over both."""
    out: list[Query] = []
    seed_no = {p.pid: i for i, p in enumerate(bench.all_seeds)}
    n_dis = sum(len(v) for v in bench.distractors.values())
    n_lv, n_ed = len(s.levels), len(s.edits)
    for half in HALVES:
        pool = [p.pid for p in bench.distractors[half]]
        rng = np.random.default_rng([s.seed, 11, HALVES.index(half)])

        def fillers(pid: int) -> tuple[int, ...]:
            cands = [c for c in rng.choice(pool, min(len(pool), N_FILLER_CANDIDATES + 1),
                                           replace=False).tolist() if c != pid]
            return tuple(cands[:N_FILLER_CANDIDATES])

        per_level = s.pos_per_level if half == "heldout" else s.calib_pos_per_level
        for p in bench.seeds[half]:
            i = seed_no[p.pid]
            for c in range(per_level * n_lv):
                edit = s.edits[(i * per_level * n_lv + c) % n_ed]
                out.append(Query(len(out), half, p.pid, i, s.levels[c // per_level], edit, c,
                                 fillers(p.pid) if edit == "collage" else ()))
        # Every (level, edit) pair in turn, so each distractor's copies differ.
        per = s.n_negatives / max(n_dis, 1)
        for j, p in enumerate(bench.distractors[half]):
            n_copies = int(math.floor((j + 1) * per) - math.floor(j * per))
            for c in range(n_copies):
                k = p.pid * 7 + c
                level, edit = s.levels[k % n_lv], s.edits[(k // n_lv) % n_ed]
                out.append(Query(len(out), half, p.pid, -1, level, edit, c,
                                 fillers(p.pid) if edit == "collage" else ()))
    return out


def make_query(q: Query, pictures: dict[int, Picture], seed: int) -> Augmented:
    """The query's upload bytes (deterministic in ``seed`` and the query's identity)."""
    fillers = [pictures[f].load() for f in q.fillers]
    rng = query_rng(seed, q.level, "image", q.pid, q.copy)
    return augment_image(pictures[q.pid].load(), q.level, rng, q.edit, fillers)


# -- the server ------------------------------------------------------------------------------

def measured_spaces(config_path: Path | None = None,
                    names: tuple[str, ...] | None = None) -> dict[str, SpaceConfig]:
    """The image spaces to measure: a config file's enabled ``[spaces]`` (or the service's
    defaults), optionally only/also ``names`` (a new name gets the default SpaceConfig)."""
    spaces = dict(load_config(config_path).enabled_spaces if config_path else default_spaces())
    spaces = {n: sc for n, sc in spaces.items() if _is_image_space(n)}
    if names:
        spaces = {n: spaces.get(n) or SpaceConfig(model=n) for n in names}
    if not spaces:
        raise InvalidArgument("no image space to measure")
    return spaces


def _is_image_space(name: str) -> bool:
    return name == "pdq" or name.startswith(("image:", "clip:"))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_value(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def server_config(spaces: dict[str, SpaceConfig], thresholds: dict[str, float] | None = None) -> str:
    """A service config: the spaces (with ``thresholds`` replacing theirs; per-label overrides
    then dropped, as they were not calibrated), contents not kept, default limits."""
    lines = ["# dedup-eval image benchmark server", "[store]", "keep_content = false", ""]
    for name, sc in spaces.items():
        d = sc.model_dump(exclude_none=True)
        if thresholds is not None:
            d["threshold"] = thresholds[name]
            d.pop("label_thresholds", None)
        if not d.get("label_thresholds"):
            d.pop("label_thresholds", None)
        lines.append(f'[spaces."{name}"]')
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items()]
        lines.append("")
    return "\n".join(lines)


def space_kinds(spaces) -> dict[str, int | None]:
    """Bits per code of each binary space, None for a float space (the embedder says so)."""
    from dedup.embed import create_embedder

    out = {}
    for name, sc in spaces.items():
        emb = create_embedder(sc.model, device="cpu")
        binary = getattr(emb, "metric", None) == "hamming" or getattr(emb, "binary", False)
        out[name] = int(emb.dim) if binary else None
        del emb
    return out


def add_seeds(client, seeds: list[Picture], workers: int = 4) -> dict[int, int]:
    """Add every seed with its own label; returns service seed_id -> seed number."""
    def add(i: int):
        (res,) = with_retries(lambda: client.add_seeds(
            [Item(image=seeds[i].data())], [Label(f"{LABEL_PREFIX}{i:05d}")],
            source="dedup-eval", timeout=600))
        if isinstance(res, DedupError):
            raise res
        seed_id, created = res
        if not created:
            raise InvalidArgument(f"seed {seeds[i].name} has the same content as an earlier seed")
        return seed_id, i

    with cf.ThreadPoolExecutor(workers) as pool:
        return dict(_progress(pool.map(add, range(len(seeds))), "add seeds", len(seeds)))


def _progress(it, desc: str, total: int | None = None):
    return tqdm(it, desc=desc, total=total, file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty())


def _label_seed(name: str) -> int | None:
    return int(name[len(LABEL_PREFIX):]) if name.startswith(LABEL_PREFIX) else None


def read_result(q: Query, aug: Augmented, res, id_to_seed: dict[int, int], spaces,
                top_k: int) -> Record:
    """One BatchLookup slot -> a Record (see the module docstring for floors)."""
    rec = Record(q, aug.ops)
    if isinstance(res, DedupError):
        rec.error = f"{type(res).__name__}: {res}"
        return rec
    nbrs = res.neighbors
    for space in spaces:
        mine = [n for n in nbrs if n.space == space]
        if mine:
            top = max(mine, key=lambda n: n.score)
            rec.best[space] = top.score
            rec.best_seed[space] = id_to_seed.get(top.seed_id, -2)
            # a seed not listed scores below the space's k-th (only if the space was cut)
            rec.floor[space] = min(n.score for n in mine) if len(mine) >= top_k else -math.inf
        else:
            rec.floor[space] = -math.inf
        if q.truth >= 0:
            hit = [n.score for n in mine if id_to_seed.get(n.seed_id) == q.truth]
            if hit:
                rec.true[space] = max(hit)
    rec.neighbors = [(n.space, id_to_seed.get(n.seed_id, -2), round(float(n.score), 6),
                      None if n.similarity is None else round(float(n.similarity), 6))
                     for n in nbrs]
    rec.matched = tuple(sorted({s for v in res.verdicts if v.matched
                                for s in [_label_seed(v.label)] if s is not None}))
    return rec


def _batch_lookup(client, items: list[Item], top_k: int):
    """BatchLookup, retried (after the server's hint) while the server sheds load."""
    return batch_lookup_with_retries(client, items, top_k=top_k, timeout=LOOKUP_TIMEOUT_S)


def run_queries(client, queries: list[Query], pictures: dict[int, Picture],
                id_to_seed: dict[int, int], spaces, s: ImageBenchSettings, desc: str,
                in_flight: int = 3, on_chunk=None) -> tuple[list[Record], dict[str, float]]:
    """Make and send the queries in chunks, ``in_flight`` chunks at a time (one being made
    while others are searched), so neither this process nor the server waits on the other."""
    top_k = s.top_k  # per space
    chunks = [queries[i:i + s.batch] for i in range(0, len(queries), s.batch)]

    def one(chunk):
        t0 = time.perf_counter()
        augs = [make_query(q, pictures, s.seed) for q in chunk]
        t1 = time.perf_counter()
        results = _batch_lookup(client, [Item(image=a.data) for a in augs], top_k)
        recs = [read_result(q, a, r, id_to_seed, spaces, top_k)
                for q, a, r in zip(chunk, augs, results)]
        return recs, t1 - t0, time.perf_counter() - t1

    records: list[Record] = []
    times = {"make_s_summed": 0.0, "lookup_s_summed": 0.0}
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(in_flight) as pool:
        for recs, t_make, t_look in _progress(pool.map(one, chunks), desc, len(chunks)):
            records += recs
            if on_chunk is not None:
                on_chunk(recs)
            times["make_s_summed"] += t_make
            times["lookup_s_summed"] += t_look
    times["wall_s"] = time.perf_counter() - t0
    return records, times


# -- scoring ---------------------------------------------------------------------------------

@dataclass
class Scores:
    """Per-space score arrays of one set of records (missing = -inf), and their tags."""

    truth: np.ndarray
    pid: np.ndarray  # the original picture of each query
    level: np.ndarray
    edit: np.ndarray
    best: dict[str, np.ndarray]
    true: dict[str, np.ndarray]
    floor: dict[str, np.ndarray]
    top1: dict[str, np.ndarray]
    wrong: np.ndarray  # verdict matched a label other than the true seed's
    right: np.ndarray  # verdict matched the true seed's label
    error: np.ndarray

    @property
    def pos(self) -> np.ndarray:
        return self.truth >= 0


def scores_of(records: list[Record], spaces) -> Scores:
    """Arrays for metrics from records."""
    def arr(get):
        return np.array([get(r) for r in records], dtype=np.float64)

    truth = np.array([r.query.truth for r in records], dtype=np.int64)
    return Scores(
        truth=truth,
        pid=np.array([r.query.pid for r in records], dtype=np.int64),
        level=np.array([r.query.level for r in records]),
        edit=np.array([r.query.edit for r in records]),
        best={s: arr(lambda r: r.best.get(s, -math.inf)) for s in spaces},
        true={s: arr(lambda r: r.true.get(s, -math.inf)) for s in spaces},
        floor={s: arr(lambda r: r.floor.get(s, -math.inf)) for s in spaces},
        top1={s: np.array([r.best_seed.get(s, -1) for r in records], np.int64) for s in spaces},
        wrong=np.array([any(m != r.query.truth for m in r.matched) for r in records], bool),
        right=np.array([r.query.truth in r.matched for r in records], bool),
        error=np.array([r.error is not None for r in records], bool),
    )


def _rate(mask: np.ndarray) -> dict:
    k, n = int(mask.sum()), int(mask.size)
    return {"k": k, "n": n, "rate": k / n if n else None}


def _with_ci(mask: np.ndarray) -> dict:
    out = _rate(mask)
    if out["n"]:
        out["ci95_wilson"] = list(metrics.wilson_interval(out["k"], out["n"]))
        out["ci95_exact"] = list(metrics.exact_interval(out["k"], out["n"]))
    return out


def _pictures_hit(hit: np.ndarray, sc: Scores, sel: np.ndarray) -> dict:
    """How many distinct original pictures the hits come from: copies of one picture are not
    independent trials, so this says how concentrated the errors are."""
    pics, inv = np.unique(sc.pid[sel], return_inverse=True)
    k = np.bincount(inv, weights=hit[sel].astype(np.float64), minlength=len(pics))
    n = np.bincount(inv, minlength=len(pics)).astype(np.float64)
    out = {"pictures_with_hits": int((k > 0).sum()), "pictures": int(len(pics))}
    if len(pics) > 1:
        # Bootstrap over pictures (each resampled with all its copies): an interval that does
        # not pretend the copies of one picture are independent.
        w = np.random.default_rng(0).multinomial(len(pics), np.full(len(pics), 1 / len(pics)), 2000)
        rates = (w @ k) / np.maximum(w @ n, 1)
        out["ci95_picture_bootstrap"] = [float(np.quantile(rates, 0.025)),
                                         float(np.quantile(rates, 0.975))]
    return out


def _breakdown(hit: np.ndarray, sc: Scores, sel: np.ndarray, ci: bool = False) -> dict:
    """Rates of ``hit`` over ``sel``: all, by level, by edit type, by (edit, level)."""
    f = _with_ci if ci else _rate
    return {
        "all": f(hit[sel]),
        "by_level": {lv: f(hit[sel & (sc.level == lv)]) for lv in LEVELS if (sel & (sc.level == lv)).any()},
        "by_edit": {e: f(hit[sel & (sc.edit == e)]) for e in EDIT_TYPES if (sel & (sc.edit == e)).any()},
        "by_edit_level": {f"{e}/{lv}": _rate(hit[sel & (sc.edit == e) & (sc.level == lv)])
                          for e in EDIT_TYPES for lv in LEVELS
                          if (sel & (sc.edit == e) & (sc.level == lv)).any()},
    }


def _round_up(t: float, decimals: int = 4) -> float:
    """Round a float threshold up (never lets more negatives through), to a readable value."""
    scale = 10 ** decimals
    return math.ceil(t * scale - 1e-9) / scale


def calibrate_space(sc: Scores, space: str, target_fmr: float, bits: int | None) -> dict:
    """The space's threshold at ``target_fmr`` on these (calibration) negatives."""
    ok = ~sc.error
    neg = sc.best[space][ok & ~sc.pos]
    out = {"target_fmr": target_fmr, "n_negative": int(neg.size),
           "negatives_allowed_above": math.floor(target_fmr * neg.size + 1e-9)}
    if bits:
        d = metrics.hamming_radius_at_fmr(neg, target_fmr, bits)
        out["hamming_threshold"] = d
        t = 1.0 - d / bits
    else:
        t = _round_up(metrics.threshold_at_fmr(neg, target_fmr)[0])
    out["threshold"] = t
    out["achieved_fmr"] = float(np.mean(neg >= t)) if neg.size else None
    out["recall"] = metrics.recall_at_threshold(sc.true[space][ok & sc.pos], t)
    out["ambiguous"] = _ambiguous(sc, space, t)
    return out


def calibrate_jointly(records_path: Path, sc: Scores, spaces: dict[str, SpaceConfig],
                      kinds: dict[str, int | None], own: dict[str, dict],
                      target_fmr: float) -> dict[str, dict]:
    """Thresholds for a cascade with a verifying space: ``tools.eval.cascade``'s joint
    calibration on the calibration half, so that the spaces' OR keeps *every* wrong label (an
    edited copy matching another seed too) within ``target_fmr``, as the held-out pass and the
    shipped server will answer. Each space's own threshold (``own``, unrelated pictures only)
    stays in the report as ``own_threshold``; a threshold is rounded to one the server holds.

    Per-space calibration on unrelated pictures alone is not enough here: with verification, a
    threshold below 1 lets an unverified candidate above it match, and copies of one seed
    matching a sibling seed (not counted there) then exceed the target many times over."""
    from tools.eval.cascade import GRID, Half, calibrate

    names = list(spaces)
    bands = {sp: spaces[sp].verify.band_low if spaces[sp].verify else None for sp in names}
    joint = calibrate(Half.load(records_path), names, bands, target_fmr, GRID)
    ok = ~sc.error
    out = {}
    for sp in names:
        t = joint["thresholds"][sp]
        cal = {k: v for k, v in own[sp].items() if k not in ("threshold", "hamming_threshold")}
        cal["own_threshold"] = own[sp]["threshold"]
        if kinds[sp]:  # the largest Hamming radius whose scores all reach t
            cal["hamming_threshold"] = math.floor((1.0 - t) * kinds[sp] + 1e-9)
            cal["threshold"] = 1.0 - cal["hamming_threshold"] / kinds[sp]
        else:
            cal["threshold"] = _round_up(t)
        neg = sc.best[sp][ok & ~sc.pos]
        cal["achieved_fmr"] = float(np.mean(neg >= cal["threshold"])) if neg.size else None
        cal["recall"] = metrics.recall_at_threshold(sc.true[sp][ok & sc.pos], cal["threshold"])
        cal["joint"] = {"budget": joint["budget"][sp], "verdict_fmr": joint["fmr"],
                        "verdict_recall": joint["recall"], "lookups": joint["n_negative"]}
        out[sp] = cal
    return out


def _ambiguous(sc: Scores, space: str, t: float) -> dict:
    """Queries whose missing score might still reach ``t`` (see the module docstring)."""
    miss_neg = ~sc.pos & ~np.isfinite(sc.best[space])
    miss_pos = sc.pos & ~np.isfinite(sc.true[space])
    unsure = sc.floor[space] >= t
    return {"negatives": int((miss_neg & unsure).sum()), "positives": int((miss_pos & unsure).sum())}


def evaluate_space(sc: Scores, space: str, t: float, target_fmr: float,
                   bits: int | None) -> dict:
    """Held-out figures of one space at its calibrated threshold ``t``, and threshold-free."""
    ok = ~sc.error
    pos, neg = ok & sc.pos, ok & ~sc.pos
    above = sc.best[space] >= t
    out = {"threshold": t, "fmr": {**_with_ci(above[neg]), **_pictures_hit(above, sc, neg)},
           "recall": _breakdown(sc.true[space] >= t, sc, pos),
           "recall_at_1": _breakdown(sc.top1[space] == sc.truth, sc, pos)["all"],
           "ambiguous": _ambiguous(sc, space, t)}
    if bits:
        out["hamming_threshold"] = int(round((1 - t) * bits))
    negs = sc.best[space][neg]
    if negs.size:
        t_free = (1 - metrics.hamming_radius_at_fmr(negs, target_fmr, bits) / bits if bits
                  else metrics.threshold_at_fmr(negs, target_fmr)[0])
        out["threshold_free"] = {
            "fmr": target_fmr, "threshold": t_free, "n_negative": int(negs.size),
            "negatives_allowed_above": math.floor(target_fmr * negs.size + 1e-9),
            "recall": _breakdown(sc.true[space] >= t_free, sc, pos),
            "ambiguous": _ambiguous(sc, space, t_free)}
    return out


def evaluate_verdicts(sc: Scores, thresholds: dict[str, float]) -> dict:
    """The service's verdicts: wrong-label lookups (with CIs) and true-label recall."""
    ok = ~sc.error
    union = np.zeros(sc.truth.shape, bool)
    for space, t in thresholds.items():
        union |= sc.best[space] >= t
    return {
        "thresholds": thresholds, "lookups": int(sc.truth.size), "errors": int(sc.error.sum()),
        "wrong_label": {"all": _with_ci(sc.wrong[ok]),
                        "negatives": {**_with_ci(sc.wrong[ok & ~sc.pos]),
                                      **_pictures_hit(sc.wrong, sc, ok & ~sc.pos)},
                        "positives": _with_ci(sc.wrong[ok & sc.pos]),
                        **{k: v for k, v in _breakdown(sc.wrong, sc, ok, ci=True).items() if k != "all"}},
        "recall": _breakdown(sc.right, sc, ok & sc.pos),
        # Consistency: negatives above any space's threshold, from the neighbour scores.
        "negatives_above_any_threshold": _rate(union[ok & ~sc.pos]),
    }


# -- the run ---------------------------------------------------------------------------------

class Checkpoint:
    """What a run has done, on disk beside its server data, so an interrupted run resumes:
    the seed ids the service gave, and every answered query (one JSON line per query)."""

    def __init__(self, work_dir: Path, queries: list[Query]):
        self.dir = Path(work_dir) / "checkpoint"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.by_qid = {q.qid: q for q in queries}

    def seeds(self) -> dict[int, int] | None:
        """service seed_id -> seed number, when the seeds were added before."""
        path = self.dir / "seeds.json"
        return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else None

    def save_seeds(self, id_to_seed: dict[int, int]) -> None:
        (self.dir / "seeds.json").write_text(json.dumps(id_to_seed))

    def records(self, half: str) -> list[Record]:
        """The answered queries of a half; refuses lines that do not match the planned queries."""
        path = self.dir / f"records-{half}.jsonl"
        out = []
        if path.exists():
            for line in path.read_text().splitlines():
                d = json.loads(line)
                q = self.by_qid.get(d["qid"])
                if q is None or (q.pid, q.level, q.edit, q.half) != (d["pid"], d["level"], d["edit"], d["half"]):
                    raise InvalidArgument(f"checkpoint {path} was made with other settings; "
                                          "remove the run folder or run without --resume")
                out.append(Record.from_json(d, q))
        return out

    def appender(self, half: str):
        """A callback that appends a chunk's records to the half's file."""
        path = self.dir / f"records-{half}.jsonl"

        def append(recs: list[Record]) -> None:
            with open(path, "a") as f:
                f.write("".join(json.dumps(r.to_json()) + "\n" for r in recs))
        return append


def _send_order(todo: list[Query], seed: int, half: str) -> list[Query]:
    """A seeded shuffle: whatever prefix of a half has been answered is a random sample of it
    (the plan lists seeds first and pictures by package)."""
    rng = np.random.default_rng([seed, 13, HALVES.index(half)])
    return [todo[i] for i in rng.permutation(len(todo))]


def _run_half(client, half: str, todo: list[Query], ckpt: Checkpoint, pictures, id_to_seed,
              names, s: ImageBenchSettings, timings: dict) -> list[Record]:
    # a query the service shed (Overloaded) or failed is sent again on resume; the last
    # answer of a query wins
    done = list({r.query.qid: r for r in ckpt.records(half)}.values())
    done = [r for r in done if r.error is None]
    have = {r.query.qid for r in done}
    rest = [q for q in _send_order(todo, s.seed, half) if q.qid not in have]
    timings[f"{half}_resumed_queries"] = len(done)
    new, tm = run_queries(client, rest, pictures, id_to_seed, names, s, half,
                          on_chunk=ckpt.appender(half))
    timings.update({f"{half}_{k}": v for k, v in tm.items()})
    by_qid = {r.query.qid: r for r in done + new}
    return [by_qid[q.qid] for q in todo if q.qid in by_qid]


def _seed_ids(client, seeds: list[Picture], ckpt: Checkpoint, may_add: bool) -> dict[int, int]:
    """service seed_id -> seed number: from the checkpoint, from the labels of seeds an
    interrupted run added, or by adding them now (``may_add``)."""
    id_to_seed = ckpt.seeds()
    active = client.stats()["seeds_active"]
    if id_to_seed is None:
        if active == 0 and may_add:
            id_to_seed = add_seeds(client, seeds)
            active = client.stats()["seeds_active"]
        elif active == len(seeds):  # added by an interrupted run: the labels say which
            id_to_seed = {sd.seed_id: n for sd in client.iter_seeds(page_size=1000)
                          for n in [_label_seed(sd.labels[0].name)] if n is not None}
    if not id_to_seed or len(id_to_seed) != len(seeds) or active != len(seeds):
        raise InvalidArgument("the server data does not hold this run's seeds; "
                              "run without --resume")
    ckpt.save_seeds(id_to_seed)
    return id_to_seed


def run(bench: ImageBenchmark, spaces: dict[str, SpaceConfig], s: ImageBenchSettings,
        work_dir: Path, resume: bool = False, report_only: bool = False) -> dict:
    """Both passes through real servers; returns the image part of the report.

    With ``resume`` an interrupted run in ``work_dir`` goes on where it stopped (same settings):
    a finished calibration (``calibration.json``) is not redone, answered queries are not sent
    again. Without it, an earlier run's server data and checkpoint there are removed first.
    ``report_only`` reports what the checkpoint holds, starting no server (``complete`` says
    whether every planned query was answered)."""
    import shutil

    from tools.localserver import ServerProcess

    t_start = time.perf_counter()
    work_dir = Path(work_dir)
    timings: dict[str, float] = {}
    seeds = bench.all_seeds
    pictures = {p.pid: p for h in HALVES for p in bench.seeds[h] + bench.distractors[h]}
    queries = plan_queries(bench, s)
    by_half = {h: [q for q in queries if q.half == h] for h in HALVES}
    kinds = space_kinds(spaces)
    names = tuple(spaces)
    data_dir = work_dir / "server-data"
    cal_path = work_dir / "calibration.json"
    if not resume and not report_only:
        for old in (data_dir, work_dir / "checkpoint", cal_path):
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
    ckpt = Checkpoint(work_dir, queries)
    shipped = {sp: spaces[sp].threshold for sp in names}
    # A verifying space calibrates on verified scores: in the first pass its threshold is out
    # of reach, so every candidate from band_low up is verified. Verification only ever raises
    # a score, so at the calibrated threshold T the verdicts are the same (a candidate at T or
    # above matches either way; one below is verified either way).
    cfg1 = server_config(spaces, {sp: VERIFY_ALL if spaces[sp].verify else shipped[sp]
                                  for sp in names})
    records: dict[str, list[Record]] = {h: ckpt.records(h) for h in HALVES}
    model_ids: dict[str, str] = {}

    if cal_path.exists() and (resume or report_only):
        saved = json.loads(cal_path.read_text())
        calibration, cal_verdicts = saved["calibration"], saved["verdicts_at_shipped"]
        model_ids = saved.get("model_ids", {})
        timings.update({f"earlier_{k}": v for k, v in saved.get("timings_s", {}).items()})
    elif report_only:
        raise InvalidArgument(f"no finished calibration in {work_dir}")
    else:
        t0 = time.perf_counter()
        with ServerProcess(data_dir, cfg1) as server:
            server.start(timeout=SERVER_START_TIMEOUT_S)
            timings["server_start_s"] = time.perf_counter() - t0
            with server.client("analyst", timeout=LOOKUP_TIMEOUT_S) as client:
                t0 = time.perf_counter()
                id_to_seed = _seed_ids(client, seeds, ckpt, may_add=True)
                timings["add_seeds_s"] = time.perf_counter() - t0
                model_ids = {sp: v["model_id"] for sp, v in client.stats()["spaces"].items()}
                records["calibration"] = _run_half(client, "calibration", by_half["calibration"],
                                                   ckpt, pictures, id_to_seed, names, s, timings)
        sc_cal = scores_of(records["calibration"], names)
        calibration = {sp: calibrate_space(sc_cal, sp, s.target_fmr, kinds[sp]) for sp in names}
        if any(spaces[sp].verify for sp in names):
            calibration = calibrate_jointly(ckpt.dir / "records-calibration.jsonl", sc_cal,
                                            spaces, kinds, calibration, s.target_fmr)
        cal_verdicts = evaluate_verdicts(sc_cal, shipped)
        # Kept at once: an interrupted held-out pass does not redo the calibration.
        cal_path.write_text(json.dumps(
            {"thresholds": {sp: calibration[sp]["threshold"] for sp in names},
             "calibration": calibration, "verdicts_at_shipped": cal_verdicts,
             "model_ids": model_ids, "timings_s": timings}, indent=1, default=float))
    thresholds = {sp: calibration[sp]["threshold"] for sp in names}

    cfg2 = server_config(spaces, thresholds)
    if not report_only:
        t0 = time.perf_counter()
        with ServerProcess(data_dir, cfg2) as server:
            server.start(timeout=SERVER_START_TIMEOUT_S)
            timings["server_restart_s"] = time.perf_counter() - t0
            with server.client("reader", timeout=LOOKUP_TIMEOUT_S) as client:
                id_to_seed = _seed_ids(client, seeds, ckpt, may_add=False)
                stats2 = client.stats()
                model_ids = model_ids or {sp: v["model_id"] for sp, v in stats2["spaces"].items()}
                served = {sp: v["threshold"] for sp, v in stats2["spaces"].items() if sp in names}
                if any(abs(served[sp] - thresholds[sp]) > 1e-6 for sp in names):
                    raise InvalidArgument(f"server runs thresholds {served}, not {thresholds}")
                records["heldout"] = _run_half(client, "heldout", by_half["heldout"], ckpt,
                                               pictures, id_to_seed, names, s, timings)
    sc_ho = scores_of(records["heldout"], names)
    timings["total_s"] = time.perf_counter() - t_start
    answered = {h: len(records[h]) for h in HALVES}

    report_spaces = {}
    for sp in names:
        report_spaces[sp] = {
            "model_id": model_ids.get(sp, sp), "binary_bits": kinds[sp],
            "shipped_threshold": shipped[sp], "calibration": calibration[sp],
            "heldout": evaluate_space(sc_ho, sp, thresholds[sp], s.target_fmr, kinds[sp]),
        }
    return {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()},
        "complete": answered["heldout"] == len(by_half["heldout"]),
        "answered": {h: {"answered": answered[h], "planned": len(by_half[h])} for h in HALVES},
        "dataset": {**bench.summary(), "queries": _query_counts(queries)},
        "spaces": report_spaces,
        "verdicts": {"calibration_at_shipped": cal_verdicts,
                     "heldout_at_calibrated": evaluate_verdicts(sc_ho, thresholds)},
        "server": {"config_calibration": cfg1, "config_heldout": cfg2},
        "timings_s": timings,
        "_records": records,
        "_scores": {"heldout": sc_ho},
    }


def _query_counts(queries: list[Query]) -> dict:
    out: dict = {}
    for h in HALVES:
        qs = [q for q in queries if q.half == h]
        out[h] = {"positives": sum(q.truth >= 0 for q in qs),
                  "negatives": sum(q.truth < 0 for q in qs),
                  "by_level": {lv: sum(q.level == lv for q in qs) for lv in LEVELS},
                  "by_edit": {e: sum(q.edit == e for q in qs) for e in EDIT_TYPES}}
    return out
