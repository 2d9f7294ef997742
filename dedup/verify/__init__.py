"""Verification of close calls: the cascade stage after the shortlist.

A space configured with ``verify`` re-scores its candidates that land in an uncertain band —
at least ``band_low``, below the threshold — against the seeds' own content, and reports the
re-scored value in their place:

- ``geometric`` (images, ``geometric.py``): local features and RANSAC; the fused score
  ``similarity + weight·log1p(inliers)`` (inliers >= 12) is on the space's own scale. A fit
  with fewer inliers whose aligned pixels agree with the seed's stored thumbnail counts as 12
  (as 30 when they agree strongly). Of one space's candidates, a fit explained away by one
  with three times its inliers over the same part of the upload keeps its similarity: a
  re-post of one seed does not carry the label of another that only shares some pixels.
- ``containment`` (texts, ``text.py``): exact shingle overlap of the two texts, with its own
  calibrated ``threshold``; a candidate reaching it is reported at the space's threshold plus
  the margin by which it passed, so it matches, and one below it keeps its similarity.

Unrelated uploads, most of the traffic, have no candidate in the band and pay nothing; a
verified query pays one feature extraction (shared by every space that verifies it) and one
comparison per candidate (at most ``max_candidates``). Seeds keep their verification data in
LMDB from the moment they are added (``seed_data``); a seed without it (added before
verification was configured) is described from its stored content or text, once, and cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dedup.config import Limits, VerifyConfig
from dedup.errors import DedupError, InvalidArgument
from dedup.items import Prepared, decode_image

Memo = dict  # per lookup call: what a verifier extracted from each query, shared by spaces
Hit = tuple[str, int, float]  # (space, seed id, similarity)


class Verifier(Protocol):
    """Re-scores one space's candidates against the seeds' own content."""

    name: str  # the method, recorded with every fused score

    def seed_data(self, prepared: Prepared) -> bytes | None:
        """What a seed keeps for later verification (None: nothing to keep)."""
        ...

    def seed_data_stored(self, content: bytes | None, text: str | None) -> bytes | None:
        """The same, from a seed's stored original bytes or text."""
        ...

    def rescore(self, prepared: Prepared, scores: Sequence[float],
                seeds: Sequence[bytes | None], memo: Memo) -> list[float]:
        """The verifier's scores of the query against each candidate: fused on the space's
        scale (the score unchanged when the candidate cannot be verified), or the verifier's
        own measure where its config has a ``threshold``."""
        ...


class GeometricVerifier:
    """Local features (OpenCV SIFT) and RANSAC; see ``dedup.verify.geometric``."""

    name = "geometric"

    def __init__(self, limits: Limits, mirror_mode: str = "derived", weight: float | None = None):
        import cv2

        from dedup.verify import geometric

        # OpenCV's own thread pool beside torch's and the service's workers oversubscribes a
        # small machine; one lookup's verification is a few tens of ms on one thread.
        cv2.setNumThreads(1)
        self._g = geometric
        self._limits = limits
        self._mirror_mode = mirror_mode
        self._weight = geometric.ALPHA if weight is None else weight  # None: the default

    def seed_data(self, prepared: Prepared) -> bytes | None:
        if prepared.image is None:
            return None
        return self._g.to_bytes(self._g.extract(prepared.image))

    def seed_data_stored(self, content: bytes | None, text: str | None) -> bytes | None:
        if not content:
            return None
        try:
            image = decode_image(content, self._limits)
        except DedupError:
            return None
        return self._g.to_bytes(self._g.extract(image))

    def rescore(self, prepared: Prepared, scores: Sequence[float],
                seeds: Sequence[bytes | None], memo: Memo) -> list[float]:
        if prepared.image is None:
            return list(scores)
        known = [i for i, s in enumerate(seeds) if s]
        if not known:
            return list(scores)
        key = (self.name, self._mirror_mode, id(prepared))
        if key not in memo:
            memo[key] = self._g.extract_query(prepared.image, mirror_mode=self._mirror_mode)
        query, mirrored = memo[key]
        # A seed shortlisted by two image spaces is matched once (same query, same seed data).
        todo = [i for i in known if (key, seeds[i]) not in memo]
        if todo:
            matches = self._g.verify_many(query, [self._g.from_bytes(seeds[i]) for i in todo],
                                          mirrored)
            for i, match in zip(todo, matches):
                memo[(key, seeds[i])] = match
        # A candidate explained away by a much stronger fit over the same part of the upload
        # keeps its similarity, as if unverified: the threshold sits above any similarity.
        found = [memo[(key, seeds[i])] for i in known]
        out = list(scores)
        for i, match, away in zip(known, found, self._g.explained(found)):
            out[i] = scores[i] if away else self._g.fuse(scores[i], match.counted, self._weight)
        return out


class ContainmentVerifier:
    """Exact character-shingle overlap of two texts; see ``dedup.verify.text``. A seed keeps
    its sorted shingle hashes (8 bytes each)."""

    name = "containment"

    def __init__(self) -> None:
        from dedup.verify import text

        self._t = text

    def seed_data(self, prepared: Prepared) -> bytes | None:
        return self._t.shingles(prepared.text).tobytes() if prepared.text else None

    def seed_data_stored(self, content: bytes | None, text: str | None) -> bytes | None:
        return self._t.shingles(text).tobytes() if text else None

    def rescore(self, prepared: Prepared, scores: Sequence[float],
                seeds: Sequence[bytes | None], memo: Memo) -> list[float]:
        if not prepared.text:
            return [float("-inf")] * len(scores)
        key = (self.name, id(prepared))
        if key not in memo:
            memo[key] = self._t.shingles(prepared.text)
        query = memo[key]
        return [self._t.compare_shingles(query, np.frombuffer(s, dtype=np.uint64)).score
                if s else float("-inf") for s in seeds]


def create_verifier(config: VerifyConfig, limits: Limits) -> Verifier:
    """The verifier a space's ``verify`` config names."""
    if config.method == "geometric":
        return GeometricVerifier(limits, config.mirror_mode, config.weight)
    if config.method == "containment":
        return ContainmentVerifier()
    raise InvalidArgument(f"unknown verification method {config.method!r}")


@dataclass
class SeedDataCache:
    """Verification data of seeds that have none stored, described from their content once."""

    size: int = 4096

    def __post_init__(self) -> None:
        self._items: OrderedDict[tuple[str, int], bytes | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], make: Callable[[], bytes | None]) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def in_band(hits: Sequence[Hit], space: str, low: float, high: float, limit: int) -> list[int]:
    """Positions of ``space``'s hits scoring in [low, high), best first, at most ``limit``."""
    picked = [i for i, (s, _, score) in enumerate(hits) if s == space and low <= score < high]
    picked.sort(key=lambda i: -hits[i][2])
    return picked[:limit]


def on_space_scale(score: float, measure: float, own_threshold: float | None,
                   space_threshold: float) -> float:
    """A candidate's score after verification. A verifier with its own threshold passes a
    candidate at ``space_threshold`` plus the margin it passed by; otherwise ``measure`` is
    already on the space's scale. Never lower than the similarity the search gave."""
    if own_threshold is None:
        return max(score, measure)
    if measure >= own_threshold:
        return max(score, space_threshold + (measure - own_threshold))
    return score


def verify_hits(prepared: Sequence[Prepared], hits: list[list[Hit]], space: str,
                verifier: Verifier, config: VerifyConfig, threshold: float,
                seed_data: Callable[[Sequence[int]], Mapping[int, bytes | None]],
                memo: Memo | None = None,
                record: Sequence[dict[tuple[str, int], tuple[str, float]]] | None = None) -> int:
    """Replace, in place, the scores of ``space``'s candidates in the uncertain band by their
    verified scores, noting (method, search similarity) of each in ``record`` (one dict per
    item); returns how many candidates were verified."""
    memo = {} if memo is None else memo
    record = record if record is not None else [{} for _ in prepared]
    verified = 0
    for p, row, notes in zip(prepared, hits, record):
        picked = in_band(row, space, config.band_low, threshold, config.max_candidates)
        if not picked:
            continue
        data = seed_data([row[i][1] for i in picked])
        measured = verifier.rescore(p, [row[i][2] for i in picked],
                                    [data.get(row[i][1]) for i in picked], memo)
        for i, m in zip(picked, measured):
            score = on_space_scale(row[i][2], float(m), config.threshold, threshold)
            notes[(space, row[i][1])] = (verifier.name, row[i][2])
            row[i] = (space, row[i][1], float(score))
        verified += len(picked)
    return verified


class Cascade:
    """Every space's verification stage, and where the seeds' data for it comes from: the
    store (kept at add time, once per method: two image spaces verifying geometrically share
    one set of seed features) or, for a seed without any, its stored content."""

    def __init__(self, configs: Mapping[str, VerifyConfig], limits: Limits, store,
                 cache_size: int = 4096):
        self.configs = dict(configs)
        self.stages = {name: create_verifier(cfg, limits) for name, cfg in self.configs.items()}
        self._store = store
        self._cache = SeedDataCache(cache_size)

    def __bool__(self) -> bool:
        return bool(self.stages)

    def seed_data(self, prepared: Prepared) -> dict[str, bytes]:
        """What a new seed keeps, by verification method (the key the store files it under)."""
        out = {}
        for stage in self.stages.values():
            if stage.name not in out:
                data = stage.seed_data(prepared)
                if data:
                    out[stage.name] = data
        return out

    def _data(self, stage: Verifier, ids: Sequence[int]) -> dict[int, bytes | None]:
        stored = self._store.aux(stage.name, ids)
        out: dict[int, bytes | None] = {}
        for sid in ids:
            if stored.get(sid):
                out[sid] = stored[sid]
            else:
                out[sid] = self._cache.get((stage.name, sid), lambda sid=sid: self._from_content(
                    stage, sid))
        return out

    def _from_content(self, stage: Verifier, seed_id: int) -> bytes | None:
        seed = self._store.get(seed_id)
        if seed is None:
            return None
        content = self._store.content(seed_id) if seed.has_content else None
        return stage.seed_data_stored(bytes(content) if content else None, seed.text)

    def apply(self, prepared: Sequence[Prepared], hits: list[list[Hit]],
              thresholds: Sequence[Mapping[str, float]],
              ) -> list[dict[tuple[str, int], tuple[str, float]]]:
        """Verify, in place, every space's candidates in its band (below each item's threshold
        for that space), each item's hits then best first again; returns per item
        (space, seed_id) -> (method, search similarity) of the candidates re-scored."""
        record: list[dict[tuple[str, int], tuple[str, float]]] = [{} for _ in prepared]
        memo: Memo = {}
        for name, stage in self.stages.items():
            cfg = self.configs[name]
            for p, row, limits, notes in zip(prepared, hits, thresholds, record):
                verify_hits([p], [row], name, stage, cfg, limits[name],
                            lambda ids, st=stage: self._data(st, ids), memo, [notes])
        for row, notes in zip(hits, record):
            if notes:
                row.sort(key=lambda h: -h[2])
        return record
