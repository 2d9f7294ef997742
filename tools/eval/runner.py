"""The in-process text protocol: seed index per space, edited queries, search, metrics, calibration.

(Images are measured through the service: ``tools.eval.imagebench``.) Seeds are indexed once per
space (their embeddings are computed once per run). Queries are made once per level and embedded
in every space, in chunks, so every space is measured on exactly the same pairs and memory stays
flat.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from dedup.config import Limits
from dedup.errors import InvalidArgument
from dedup.index.sharded import ShardedIndex
from dedup.items import normalize_text
from tools.eval import metrics
from tools.eval.augment import LEVELS, augment_text, query_rng
from tools.eval.dataset import TextBenchmark

TEXT_SPACES = ("text:minilm-l6", "clip:dedup-tiny/none")
# Random-init test model: measured so the clip code path is exercised, never calibrated.
SMOKE_SPACES = frozenset({"clip:dedup-tiny/none"})
_CHUNK = 64


@dataclass
class EvalSettings:
    """Everything that decides the numbers; written into the report."""

    seed: int = 0
    levels: tuple[str, ...] = LEVELS
    text_spaces: tuple[str, ...] = TEXT_SPACES
    text_pos_copies: int = 2
    text_neg_copies: int = 1
    k: int = 5
    fmrs: tuple[float, ...] = (0.01, 0.001)
    target_fmr: float = 0.001
    calib_levels: tuple[str, ...] = ("easy", "medium")
    quick: bool = False


@dataclass
class SpaceRun:
    """Search results of one space on one level's queries."""

    D: np.ndarray
    I: np.ndarray
    truth: np.ndarray


@dataclass
class ModalityResult:
    """All spaces x levels of one modality."""

    modality: str
    runs: dict[tuple[str, str], SpaceRun] = field(default_factory=dict)
    model_ids: dict[str, str] = field(default_factory=dict)
    binary_bits: dict[str, int] = field(default_factory=dict)  # binary spaces: bits per code
    timings: dict[str, float] = field(default_factory=dict)
    n_seeds: int = 0


def _progress(it, desc: str, total: int | None = None):
    return tqdm(it, desc=desc, total=total, file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty())


def _index(emb, vectors: np.ndarray) -> ShardedIndex:
    binary = bool(getattr(emb, "binary", False))
    index = ShardedIndex(emb.dim, "auto", 1, metric="hamming" if binary else "ip", use_gpu=False)
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    return index


def _embed(emb, modality: str, batch: list) -> np.ndarray:
    return emb.embed_images(batch) if modality == "image" else emb.embed_texts(batch)


def _run(modality: str, seeds: list, make_queries, spaces: tuple[str, ...],
         settings: EvalSettings) -> ModalityResult:
    """Index ``seeds`` in each space; for each level embed the queries and search."""
    from dedup.embed import create_embedder

    res = ModalityResult(modality, n_seeds=len(seeds))
    embedders, indexes = {}, {}
    for spec in spaces:
        t0 = time.perf_counter()
        emb = create_embedder(spec)
        vecs = np.concatenate([_embed(emb, modality, seeds[i:i + _CHUNK])
                               for i in range(0, len(seeds), _CHUNK)])
        embedders[spec], indexes[spec] = emb, _index(emb, vecs)
        res.model_ids[spec] = getattr(emb, "model_id", spec)
        if getattr(emb, "binary", False):
            res.binary_bits[spec] = int(emb.dim)
        res.timings[f"{spec}/seeds"] = time.perf_counter() - t0
    k = min(settings.k, len(seeds))
    for level in settings.levels:
        truth, chunks = make_queries(level)
        parts: dict[str, list] = {s: [] for s in spaces}
        t_aug = 0.0
        for chunk in _progress(chunks, f"{modality} {level}"):
            t0 = time.perf_counter()
            items = chunk()  # augment + decode this chunk now, not all at once
            t_aug += time.perf_counter() - t0
            for spec in spaces:
                t0 = time.perf_counter()
                parts[spec].append(_embed(embedders[spec], modality, items))
                res.timings[f"{spec}/{level}"] = res.timings.get(f"{spec}/{level}", 0.0) + \
                    time.perf_counter() - t0
        res.timings[f"augment/{level}"] = t_aug
        for spec in spaces:
            D, I = indexes[spec].search(np.concatenate(parts[spec]), k)
            res.runs[(spec, level)] = SpaceRun(D.astype(np.float64), I, truth)
    for index in indexes.values():
        index.close()
    return res


def _query_jobs(seeds: list, distractors: list, pos_copies: int, neg_copies: int):
    """(query number, original, copy) for every query, and its true seed (-1: a negative)."""
    n_s = len(seeds)
    jobs = [(i, o, c) for i, o in enumerate(seeds) for c in range(pos_copies)]
    jobs += [(n_s + j, o, c) for j, o in enumerate(distractors) for c in range(neg_copies)]
    truth = np.array([i if i < n_s else -1 for i, _, _ in jobs], dtype=np.int64)
    return jobs, truth


def run_texts(bench: TextBenchmark, settings: EvalSettings) -> ModalityResult:
    """Text protocol: edited seeds (positives) and distractors (negatives), normalised as served."""
    limits = Limits()
    jobs, truth = _query_jobs(bench.seeds, bench.distractors, settings.text_pos_copies,
                              settings.text_neg_copies)
    seeds = [normalize_text(t, limits) for t in bench.seeds]

    def make_queries(level):
        def chunk_fn(part):
            return lambda: [normalize_text(augment_text(t, level, query_rng(
                settings.seed, level, "text", i, c))[0], limits) for i, t, c in part]
        return truth, [chunk_fn(jobs[s:s + 256]) for s in range(0, len(jobs), 256)]

    return _run("text", seeds, make_queries, settings.text_spaces, settings)


# -- metrics and calibration -----------------------------------------------------------------

def score_runs(res: ModalityResult, settings: EvalSettings) -> dict[tuple[str, str], dict]:
    """metrics.evaluate for every (space, level)."""
    return {key: metrics.evaluate(run.D, run.I, run.truth, settings.fmrs)
            for key, run in res.runs.items()}


def _round_up(t: float, decimals: int = 4) -> float:
    """Round a float threshold up (never lets more negatives through), to a readable value."""
    scale = 10 ** decimals
    return math.ceil(t * scale - 1e-9) / scale


def calibrate(space: str, scored: dict[tuple[str, str], dict], levels: tuple[str, ...],
              target_fmr: float, binary_bits: int | None = None) -> dict:
    """The threshold of one space at ``target_fmr`` on the union of ``levels``, and what it rests on."""
    have = [lv for lv in levels if (space, lv) in scored]
    if not have:
        raise InvalidArgument(f"no results for {space} on calibration levels {levels}")
    pos = np.concatenate([scored[(space, lv)]["_pos_scores"] for lv in have])
    neg = np.concatenate([scored[(space, lv)]["_neg_scores"] for lv in have])
    exact, _ = metrics.threshold_at_fmr(neg, target_fmr)
    out = {"space": space, "levels": have, "target_fmr": target_fmr,
           "n_positive": int(len(pos)), "n_negative": int(len(neg)),
           "negatives_allowed_above": math.floor(target_fmr * len(neg) + 1e-9)}
    if binary_bits:
        # A binary space's scores are multiples of 1/bits: the threshold is a Hamming radius.
        d = metrics.hamming_radius_at_fmr(neg, target_fmr, binary_bits)
        t = 1.0 - d / binary_bits
        out["hamming_threshold"] = d
    else:
        t = _round_up(exact)
    out["threshold"] = t
    out["achieved_fmr"] = float(np.mean(neg >= t))
    out["recall"] = metrics.recall_at_threshold(pos, t)
    out["recall_per_level"] = {lv: metrics.recall_at_threshold(scored[(space, lv)]["_pos_scores"], t)
                               for lv in sorted(scored_levels(scored, space), key=LEVELS.index)}
    return out


def scored_levels(scored: dict, space: str) -> list[str]:
    """Levels measured for a space."""
    return [lv for (s, lv) in scored if s == space]


def thresholds_toml(calibrations: list[dict], model_ids: dict[str, str]) -> str:
    """A ``[spaces."<name>"]`` TOML fragment in dedup.config's format, with its evidence as comments."""
    lines = ["# Thresholds calibrated by dedup-eval; paste into the service config or load as is.",
             "# A match is score >= threshold (cosine; 1 - hamming/256 for pdq)."]
    for cal in calibrations:
        space = cal["space"]
        lines += [
            "",
            f"# {space}: target false-match rate {cal['target_fmr']:g} on levels "
            f"{'+'.join(cal['levels'])}; achieved {cal['achieved_fmr']:.5f} over "
            f"{cal['n_negative']} negative queries ({cal['negatives_allowed_above']} allowed above); "
            f"recall {cal['recall']:.4f} over {cal['n_positive']} positives",
            f"# measured model: {model_ids.get(space, space)}",
        ]
        if "hamming_threshold" in cal:
            lines.append(f"# Hamming distance <= {cal['hamming_threshold']} of 256 bits")
        lines += [f'[spaces."{space}"]', f'model = "{space}"', f"threshold = {cal['threshold']!r}"]
    return "\n".join(lines) + "\n"
