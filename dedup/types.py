"""Plain value types shared by every layer, and the one check of label rules. No heavy imports."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, NamedTuple, get_args

from dedup.errors import InvalidArgument

# The one role table: every role in rank order (each may do what the ones before it may).
Role = Literal["reader", "analyst", "admin"]
ROLES: tuple[str, ...] = get_args(Role)

MAX_LABEL_BYTES = 200  # keeps the store's ``name\0id`` label keys far below LMDB's 511 bytes
MIN_SEVERITY, MAX_SEVERITY = 1, 5


@dataclass(frozen=True)
class Label:
    """A policy category attached to a seed, e.g. ``violence.graphic`` with severity 1..5."""

    name: str
    severity: int = 1


def check_labels(labels: Iterable[Label]) -> tuple[Label, ...]:
    """The label rules, for every writer: at least one; names printable, 1..200 UTF-8 bytes,
    no NUL, each once; severity an int in 1..5. Raises InvalidArgument naming the rule."""
    labels = tuple(labels)
    if not labels:
        raise InvalidArgument("a seed needs at least one label")
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, Label):
            raise InvalidArgument(f"label must be a Label, got {type(label).__name__}")
        name = label.name
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument("label names must be non-empty")
        if not name.isprintable() or len(name.encode()) > MAX_LABEL_BYTES:
            raise InvalidArgument(f"bad label name {name[:40]!r}: 1..{MAX_LABEL_BYTES} bytes of "
                                  "printable characters")
        sev = label.severity
        if isinstance(sev, bool) or not isinstance(sev, int) or not MIN_SEVERITY <= sev <= MAX_SEVERITY:
            raise InvalidArgument(f"label {name!r}: severity must be an int in "
                                  f"{MIN_SEVERITY}..{MAX_SEVERITY}, got {sev!r}")
        if name in seen:
            raise InvalidArgument(f"label {name!r} given twice")
        seen.add(name)
    return labels


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
    hash_only: bool = False  # added by a shared hash (a partner's PDQ), not by its content

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
class QueryHash:
    """A shareable hash (PDQ) computed from the queried item, and whether it took part.

    A hash below its space's ``min_quality`` says little about the image and is not used to
    match; ``note`` says why. An image may give several (one per decoding other
    implementations use); any of them may match.
    """

    space: str
    hash: str  # the format's text form (PDQ: 64 hex digits)
    quality: int
    used: bool
    note: str = ""


@dataclass(frozen=True)
class LookupResult:
    """What one lookup of one item returns."""

    verdicts: tuple[Verdict, ...]
    neighbors: tuple[Neighbor, ...]
    exact_match: int | None  # seed id of an exact sha256 match
    snapshot_version: str = ""
    spaces: tuple[str, ...] = field(default=())
    hashes: tuple[QueryHash, ...] = field(default=())


@dataclass(frozen=True)
class LookupParams:
    """How one item is looked up (hashable: a micro-batch may mix callers' parameters).

    ``threshold`` overrides every space's threshold for this call; ``labels`` restricts the
    verdicts to those names.
    """

    top_k: int = 10
    labels: tuple[str, ...] | None = None
    threshold: float | None = None


class AddResult(NamedTuple):
    """One added item: its seed id, and whether it is new (False: an exact duplicate's id)."""

    seed_id: int
    created: bool


@dataclass(frozen=True)
class SpaceStats:
    """One space as it serves now."""

    model_id: str
    dim: int
    metric: str
    ntotal: int
    factory: str
    n_shards: int
    threshold: float
    device: str
    # The configured plan when the serving index was built another way (a snapshot from another
    # plan, or an index waiting for dedup-build to train it); empty when they agree.
    plan_note: str = ""


@dataclass(frozen=True)
class EngineStats:
    """What an operator reads: seed counts, the op-log position, the snapshot, each space."""

    seeds_active: int
    seeds_removed: int
    labels: Mapping[str, int]
    op_seq: int
    snapshot_version: str
    snapshot_op_seq: int
    spaces: Mapping[str, SpaceStats]
