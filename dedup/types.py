"""Plain value types shared by every layer, and the one check of label rules. No heavy imports."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, NamedTuple, get_args

from dedup.errors import InvalidArgument

# The one role table: every role in rank order (each may do what the ones before it may).
Role = Literal["reader", "analyst", "admin"]
ROLES: tuple[str, ...] = get_args(Role)

# The label name rule: lower-case ASCII letters and digits, then up to 127 of those or ``._-``
# (``violence.graphic``, ``spam.scam``, ``partner.csam_hash``). No whitespace, no upper case, no
# ``:`` (the CLI's ``name:severity`` separator) or ``,``/``;`` (manifest list separators); the
# store's ``name\0id`` label keys stay far below LMDB's 511-byte key limit.
LABEL_RULE = r"^[a-z0-9][a-z0-9._-]{0,127}$"
_LABEL_RE = re.compile(LABEL_RULE)
MIN_SEVERITY, MAX_SEVERITY = 1, 5
MAX_LABELS = 32  # labels on one seed


@dataclass(frozen=True)
class Label:
    """A policy category attached to a seed, e.g. ``violence.graphic`` with severity 1..5."""

    name: str
    severity: int = 1


def check_label_name(name: object) -> str:
    """A label name that follows LABEL_RULE; InvalidArgument naming the rule otherwise."""
    if not isinstance(name, str) or not _LABEL_RE.match(name):
        raise InvalidArgument(
            f"bad label name {str(name)[:40]!r}: a label is 1..128 characters of a-z, 0-9, "
            "'.', '_' or '-', starting with a letter or digit (lower case, no spaces; rule "
            f"{LABEL_RULE})")
    return name


def check_labels(labels: Iterable[Label]) -> tuple[Label, ...]:
    """The label rules, for every writer: 1..MAX_LABELS labels, each name following LABEL_RULE
    and given once, severity an int in 1..5. Raises InvalidArgument naming the rule."""
    labels = tuple(labels)
    if not labels:
        raise InvalidArgument("a seed needs at least one label")
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"{len(labels)} labels: a seed has at most {MAX_LABELS}")
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, Label):
            raise InvalidArgument(f"label must be a Label, got {type(label).__name__}")
        name = check_label_name(label.name)
        sev = label.severity
        if (isinstance(sev, bool) or not isinstance(sev, int)
                or not MIN_SEVERITY <= sev <= MAX_SEVERITY):
            raise InvalidArgument(f"label {name!r}: severity must be an int in "
                                  f"{MIN_SEVERITY}..{MAX_SEVERITY}, got {sev!r}")
        if name in seen:
            raise InvalidArgument(f"label {name!r} given twice")
        seen.add(name)
    return labels


def merge_labels(old: Iterable[Label], new: Iterable[Label]) -> tuple[Label, ...]:
    """``old`` with ``new`` added: a name on both keeps the higher severity (the stricter
    judgement wins); order is old's, then new names in their order."""
    merged = {lb.name: lb for lb in old}
    for lb in new:
        if lb.name not in merged or lb.severity > merged[lb.name].severity:
            merged[lb.name] = lb
    return tuple(merged.values())


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
    added_by: str = ""  # the actor who added it ("" for seeds added before actors were kept)

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
    # Set when the cascade's verification re-scored this neighbour (``score`` is then the
    # verified score): the method ("geometric", "containment") and the search's similarity.
    verified: str = ""
    similarity: float | None = None


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
    RESTORE = 4  # a removed seed made active again, same id
    # Space changes (seed_id 0, ``space`` names it): a space added in shadow, made live,
    # rolled back, retired.
    SHADOW = 5
    PROMOTE = 6
    ROLLBACK = 7
    RETIRE = 8


SPACE_OPS = frozenset((OpKind.SHADOW, OpKind.PROMOTE, OpKind.ROLLBACK, OpKind.RETIRE))


@dataclass(frozen=True)
class OpEntry:
    """One op-log entry, the audit trail's unit; ``seq`` is monotonic and never reused.

    ``labels`` are the seed's labels after the op (at removal: the labels it had);
    ``previous_labels`` are those a relabel (or a label merge) replaced.
    """

    seq: int
    kind: OpKind
    seed_id: int
    ts: float
    labels: tuple[Label, ...] = ()
    actor: str = ""
    reason: str = ""
    previous_labels: tuple[Label, ...] = ()
    space: str = ""  # space ops: the space acted on
    replaces: str = ""  # promote / rollback: the space it took the place of


@dataclass(frozen=True)
class OpFilter:
    """Which op-log entries an audit query wants; every field left empty matches all."""

    actor: str | None = None
    kinds: tuple[OpKind, ...] = ()
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive
    label: str | None = None  # the label before or after the op
    seed_id: int | None = None

    def matches(self, op: OpEntry) -> bool:
        return ((self.actor is None or op.actor == self.actor)
                and (not self.kinds or op.kind in self.kinds)
                and (self.since is None or op.ts >= self.since)
                and (self.until is None or op.ts < self.until)
                and (self.seed_id is None or op.seed_id == self.seed_id)
                and (self.label is None or any(lb.name == self.label for lb in
                                               op.labels + op.previous_labels)))


@dataclass(frozen=True)
class SeedFilter:
    """Which seeds a listing wants; every field left empty matches all."""

    label: str | None = None
    source: str | None = None  # case-insensitive substring of the seed's source
    added_by: str | None = None
    created_after: float | None = None  # unix seconds, inclusive
    created_before: float | None = None  # unix seconds, exclusive
    include_removed: bool = False

    def matches(self, seed: "Seed") -> bool:
        return ((self.include_removed or not seed.removed)
                and (self.label is None or self.label in seed.label_names)
                and (self.source is None or self.source.casefold() in seed.source.casefold())
                and (self.added_by is None or seed.added_by == self.added_by)
                and (self.created_after is None or seed.created_at >= self.created_after)
                and (self.created_before is None or seed.created_at < self.created_before))


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


class AddResult(tuple):
    """One added item. Unpacks and compares as ``(seed_id, created)``; ``created`` False means
    the item is an exact duplicate of the active seed ``seed_id``. Then ``labels_merged`` says
    whether the request's labels were merged onto it (asked for with ``merge_labels``), and
    ``labels`` is that seed's label set after the call (for a new seed: the labels given)."""

    labels_merged: bool
    labels: tuple[Label, ...]

    def __new__(cls, seed_id: int, created: bool, labels_merged: bool = False,
                labels: tuple[Label, ...] = ()) -> "AddResult":
        # The extras live beside the pair, so callers unpacking two values keep working.
        self = super().__new__(cls, (int(seed_id), bool(created)))
        object.__setattr__(self, "labels_merged", bool(labels_merged))
        object.__setattr__(self, "labels", tuple(labels))
        return self

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError("AddResult is immutable")

    def __getnewargs__(self):
        return (self[0], self[1], self.labels_merged, self.labels)

    @property
    def seed_id(self) -> int:
        return self[0]

    @property
    def created(self) -> bool:
        return self[1]

    def __repr__(self) -> str:
        return (f"AddResult(seed_id={self[0]}, created={self[1]}, "
                f"labels_merged={self.labels_merged}, labels={self.labels!r})")


class RemoveStatus(str, enum.Enum):
    REMOVED = "removed"  # was active, removed now
    ALREADY_REMOVED = "already_removed"
    NOT_FOUND = "not_found"


class RemoveResult(NamedTuple):
    """What a removal did to one given id."""

    seed_id: int
    status: RemoveStatus


@dataclass(frozen=True)
class SeedContent:
    """A seed's stored content: the original image bytes, or a text seed's (normalised) text."""

    seed_id: int
    data: bytes
    media_type: str  # image/jpeg, image/png, ..., text/plain; charset=utf-8


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
    role: str = "live"  # "live": decides verdicts; "shadow": searched and counted only


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
