"""Shadow spaces: searched on live lookups and compared with the live verdicts, never deciding one.

A new model is tried on real traffic before it is trusted (DESIGN "Shadow space"): each lookup
also searches the shadow spaces, the shadow hits get their own label propagation with the shadow
space's thresholds, and the two outcomes are compared per item. Counts go to metrics
(``dedup_shadow_lookups_total{space,outcome}``, ``dedup_shadow_new_seeds_total{space}``) and
disagreements to the log; the live verdict is what the caller gets, untouched.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

from dedup.types import Verdict

log = logging.getLogger(__name__)

# agree_match: the same labels matched; agree_none: neither matched; shadow_only: only the
# shadow space matched; live_only: only the live spaces matched; differ: both, other labels.
OUTCOMES = ("agree_match", "agree_none", "shadow_only", "live_only", "differ")


@dataclass(frozen=True)
class ShadowOutcome:
    """How one shadow space's verdict on one item compares with the live verdict."""

    space: str
    outcome: str
    live_labels: tuple[str, ...]
    shadow_labels: tuple[str, ...]
    new_seeds: tuple[int, ...]  # seeds it matched that no live verdict matched


def compare(space: str, live: Sequence[Verdict], shadow: Sequence[Verdict]) -> ShadowOutcome:
    """Compare a shadow space's verdicts on one item with the live ones."""
    live_labels = sorted(v.label for v in live if v.matched)
    shadow_labels = sorted(v.label for v in shadow if v.matched)
    if live_labels == shadow_labels:
        outcome = "agree_match" if live_labels else "agree_none"
    elif not live_labels:
        outcome = "shadow_only"
    elif not shadow_labels:
        outcome = "live_only"
    else:
        outcome = "differ"
    seen = {n.seed_id for v in live if v.matched for n in v.evidence}
    new = sorted({n.seed_id for v in shadow if v.matched for n in v.evidence} - seen)
    return ShadowOutcome(space, outcome, tuple(live_labels), tuple(shadow_labels), tuple(new))


class ShadowTally:
    """Running counts per shadow space: lookups per outcome, and matched seeds only it found."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, str], int] = {}
        self._new_seeds: dict[str, int] = {}

    def record(self, outcomes: Iterable[ShadowOutcome]) -> None:
        """Count outcomes; log the disagreements (what an operator reviews before promoting)."""
        outcomes = list(outcomes)
        with self._lock:
            for o in outcomes:
                key = (o.space, o.outcome)
                self._outcomes[key] = self._outcomes.get(key, 0) + 1
                self._new_seeds[o.space] = self._new_seeds.get(o.space, 0) + len(o.new_seeds)
        for o in outcomes:
            if o.outcome not in ("agree_match", "agree_none"):
                log.info("shadow %s: %s", o.space, o.outcome, extra={
                    "shadow_space": o.space, "outcome": o.outcome,
                    "live_labels": list(o.live_labels), "shadow_labels": list(o.shadow_labels),
                    "new_seeds": list(o.new_seeds)})

    def counts(self) -> dict[str, dict[str, int]]:
        """space -> outcome -> lookups (every outcome present, zero when unseen)."""
        with self._lock:
            spaces = {s for s, _ in self._outcomes} | set(self._new_seeds)
            return {s: {o: self._outcomes.get((s, o), 0) for o in OUTCOMES} for s in spaces}

    def new_seeds(self) -> dict[str, int]:
        """space -> seeds it matched that no live verdict matched (summed over lookups)."""
        with self._lock:
            return dict(self._new_seeds)
