"""Plain value types shared by every layer. No heavy imports here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Label:
    """A policy category attached to a seed, e.g. ``violence.graphic`` with severity 1..5."""

    name: str
    severity: int = 1


@dataclass(frozen=True)
class Seed:
    """A known violating item, as the store keeps it."""

    seed_id: int
    labels: tuple[Label, ...]
    source: str
    note: str
    created_at: float  # unix seconds
    sha256: str  # hex digest of the item's canonical bytes
    modalities: tuple[str, ...]  # subset of ("image", "text")
    has_content: bool = False
    removed: bool = False
    removed_at: float | None = None
    text: str | None = None  # normalised text, kept for text seeds

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


@dataclass(frozen=True)
class Item:
    """Content to check or add: image bytes, text, or both (a post).

    ``pdq`` is a 64-hex-digit PDQ hash standing for an image that is not at hand: hashes shared
    by industry partners are added and looked up in the ``pdq`` space without their content.
    """

    image: bytes | None = None
    text: str | None = None
    pdq: str | None = None


@dataclass(frozen=True)
class Neighbor:
    """One retrieved seed in one space."""

    seed_id: int
    space: str
    score: float  # similarity in the space's own scale (cosine; 1 - hamming/bits for PDQ)
    labels: tuple[Label, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Whether an item matches one label, how strongly, and the evidence."""

    label: str
    matched: bool
    score: float  # best evidence similarity for this label
    margin: float  # best (similarity - threshold) over the evidence; >= 0 means matched
    evidence: tuple[Neighbor, ...] = ()
    severity: int = 0


class OpKind(enum.IntEnum):
    ADD = 1
    REMOVE = 2
    RELABEL = 3


@dataclass(frozen=True)
class OpEntry:
    """One op-log entry; ``seq`` is monotonic and never reused."""

    seq: int
    kind: OpKind
    seed_id: int
    ts: float
    labels: tuple[Label, ...] = ()
    actor: str = ""


@dataclass(frozen=True)
class LookupResult:
    """What one lookup of one item returns."""

    verdicts: tuple[Verdict, ...]
    neighbors: tuple[Neighbor, ...]
    exact_match: int | None  # seed id of an exact sha256 match
    snapshot_version: str = ""
    spaces: tuple[str, ...] = field(default=())
