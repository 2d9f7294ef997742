"""Neighbours -> verdicts. Pure functions over plain types; no gRPC, no FAISS, no LMDB.

Each space is calibrated on its own (one global similarity threshold at a target false-match
rate, see tools/eval), so spaces combine by OR: an item matches a label when any neighbour
carrying that label clears its space's threshold for that label. The false-match rate of the
union is at most the sum of the per-space rates. ``margin`` (similarity minus threshold) puts
every space on one scale, so evidence from different spaces can be ranked together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from dedup.types import Label, Neighbor, Seed, Verdict

EXACT_SPACE = "sha256"
MAX_EVIDENCE = 8


@dataclass(frozen=True)
class Thresholds:
    """Similarity thresholds: one per space, optional overrides per (space, label)."""

    per_space: Mapping[str, float]
    per_label: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    partner: Mapping[str, float] = field(default_factory=dict)  # hash-only seeds, per space

    def get(self, space: str, label: str, hash_only: bool = False) -> float:
        """The threshold for a neighbour in ``space`` carrying ``label``: the partner threshold
        for a hash-only seed where the space has one, else the label's, else the space's."""
        if hash_only and space in self.partner:
            return self.partner[space]
        overrides = self.per_label.get(space)
        if overrides and label in overrides:
            return overrides[label]
        return self.per_space[space]

    def with_override(self, threshold: float | Mapping[str, float] | None) -> "Thresholds":
        """A per-call override: one value for every space, or a value per space name."""
        if threshold is None:
            return self
        if isinstance(threshold, Mapping):
            return Thresholds({**self.per_space, **threshold}, {
                s: v for s, v in self.per_label.items() if s not in threshold},
                {s: v for s, v in self.partner.items() if s not in threshold})
        return Thresholds({s: float(threshold) for s in self.per_space}, {}, {})


def propagate(
    hits: Iterable[tuple[str, int, float]],
    seeds: Mapping[int, Seed],
    thresholds: Thresholds,
    exact_seed: Seed | None = None,
    labels: Sequence[str] | None = None,
    verified: Mapping[tuple[str, int], tuple[str, float]] | None = None,
) -> tuple[tuple[Verdict, ...], tuple[Neighbor, ...]]:
    """Turn (space, seed_id, similarity) hits of one item into verdicts and neighbours.

    Hits whose seed is unknown or removed are dropped here, so a removed seed never reaches a
    verdict even if an index still held it (DESIGN invariant 3). An exact sha256 match always
    matches all of its seed's labels. ``labels`` restricts the verdicts to those names.
    ``verified``: (space, seed_id) -> (method, search similarity) of hits the cascade re-scored.
    """
    verified = verified or {}
    wanted = set(labels) if labels else None
    neighbors: list[Neighbor] = []
    best: dict[str, tuple[float, float]] = {}  # label -> (margin, score)
    evidence: dict[str, list[tuple[float, Neighbor]]] = {}
    severity: dict[str, int] = {}

    def consider(n: Neighbor, label: Label, margin: float) -> None:
        if wanted is not None and label.name not in wanted:
            return
        severity[label.name] = max(severity.get(label.name, 0), label.severity)
        evidence.setdefault(label.name, []).append((margin, n))
        if label.name not in best or margin > best[label.name][0]:
            best[label.name] = (margin, n.score)

    if exact_seed is not None and not exact_seed.removed:
        n = Neighbor(exact_seed.seed_id, EXACT_SPACE, 1.0, exact_seed.labels)
        neighbors.append(n)
        for label in exact_seed.labels:
            consider(n, label, 1.0)

    for space, seed_id, score in hits:
        seed = seeds.get(seed_id)
        if seed is None or seed.removed:
            continue
        method, similarity = verified.get((space, seed_id), ("", None))
        n = Neighbor(seed_id, space, float(score), seed.labels, method, similarity)
        neighbors.append(n)
        for label in seed.labels:
            consider(n, label, float(score) - thresholds.get(space, label.name, seed.hash_only))

    verdicts = []
    for name, (margin, score) in best.items():
        ranked = sorted(evidence[name], key=lambda mn: -mn[0])[:MAX_EVIDENCE]
        verdicts.append(Verdict(
            label=name,
            matched=margin >= 0.0,
            score=score,
            margin=margin,
            evidence=tuple(n for _, n in ranked),
            severity=severity[name],
        ))
    verdicts.sort(key=lambda v: (not v.matched, -v.margin, v.label))
    neighbors.sort(key=lambda n: -n.score)
    return tuple(verdicts), tuple(neighbors)
