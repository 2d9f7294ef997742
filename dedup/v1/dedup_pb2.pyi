from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RemoveStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REMOVE_STATUS_UNSPECIFIED: _ClassVar[RemoveStatus]
    REMOVE_STATUS_REMOVED: _ClassVar[RemoveStatus]
    REMOVE_STATUS_ALREADY_REMOVED: _ClassVar[RemoveStatus]
    REMOVE_STATUS_NOT_FOUND: _ClassVar[RemoveStatus]

class OpKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_KIND_UNSPECIFIED: _ClassVar[OpKind]
    OP_KIND_ADD: _ClassVar[OpKind]
    OP_KIND_REMOVE: _ClassVar[OpKind]
    OP_KIND_RELABEL: _ClassVar[OpKind]
    OP_KIND_RESTORE: _ClassVar[OpKind]
    OP_KIND_SHADOW: _ClassVar[OpKind]
    OP_KIND_PROMOTE: _ClassVar[OpKind]
    OP_KIND_ROLLBACK: _ClassVar[OpKind]
    OP_KIND_RETIRE: _ClassVar[OpKind]
REMOVE_STATUS_UNSPECIFIED: RemoveStatus
REMOVE_STATUS_REMOVED: RemoveStatus
REMOVE_STATUS_ALREADY_REMOVED: RemoveStatus
REMOVE_STATUS_NOT_FOUND: RemoveStatus
OP_KIND_UNSPECIFIED: OpKind
OP_KIND_ADD: OpKind
OP_KIND_REMOVE: OpKind
OP_KIND_RELABEL: OpKind
OP_KIND_RESTORE: OpKind
OP_KIND_SHADOW: OpKind
OP_KIND_PROMOTE: OpKind
OP_KIND_ROLLBACK: OpKind
OP_KIND_RETIRE: OpKind

class Item(_message.Message):
    __slots__ = ("image", "text", "pdq")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PDQ_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    text: str
    pdq: str
    def __init__(self, image: _Optional[bytes] = ..., text: _Optional[str] = ..., pdq: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("name", "severity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    severity: int
    def __init__(self, name: _Optional[str] = ..., severity: _Optional[int] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("seed_id", "space", "score", "labels", "verified", "similarity")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    space: str
    score: float
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    verified: str
    similarity: float
    def __init__(self, seed_id: _Optional[int] = ..., space: _Optional[str] = ..., score: _Optional[float] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., verified: _Optional[str] = ..., similarity: _Optional[float] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("label", "matched", "score", "margin", "evidence_seed_ids", "severity", "evidence")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_SEED_IDS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    label: str
    matched: bool
    score: float
    margin: float
    evidence_seed_ids: _containers.RepeatedScalarFieldContainer[int]
    severity: int
    evidence: _containers.RepeatedCompositeFieldContainer[Neighbor]
    def __init__(self, label: _Optional[str] = ..., matched: _Optional[bool] = ..., score: _Optional[float] = ..., margin: _Optional[float] = ..., evidence_seed_ids: _Optional[_Iterable[int]] = ..., severity: _Optional[int] = ..., evidence: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("item", "top_k", "labels", "threshold")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    item: Item
    top_k: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., top_k: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("verdicts", "neighbors", "exact_match", "snapshot_version", "spaces", "hashes")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPACES_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    exact_match: int
    snapshot_version: str
    spaces: _containers.RepeatedScalarFieldContainer[str]
    hashes: _containers.RepeatedCompositeFieldContainer[QueryHash]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ..., neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., exact_match: _Optional[int] = ..., snapshot_version: _Optional[str] = ..., spaces: _Optional[_Iterable[str]] = ..., hashes: _Optional[_Iterable[_Union[QueryHash, _Mapping]]] = ...) -> None: ...

class QueryHash(_message.Message):
    __slots__ = ("space", "hash", "quality", "used", "note")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    space: str
    hash: str
    quality: int
    used: bool
    note: str
    def __init__(self, space: _Optional[str] = ..., hash: _Optional[str] = ..., quality: _Optional[int] = ..., used: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class BatchLookupRequest(_message.Message):
    __slots__ = ("items", "top_k", "labels", "threshold")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    top_k: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., top_k: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "limit")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    limit: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., limit: _Optional[str] = ...) -> None: ...

class BatchLookupResult(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: LookupResponse
    error: ItemError
    def __init__(self, result: _Optional[_Union[LookupResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class BatchLookupResponse(_message.Message):
    __slots__ = ("results", "snapshot_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchLookupResult]
    snapshot_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[BatchLookupResult, _Mapping]]] = ..., snapshot_version: _Optional[str] = ...) -> None: ...

class AddSeedsRequest(_message.Message):
    __slots__ = ("items", "labels", "source", "note", "reason", "merge_labels")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MERGE_LABELS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    source: str
    note: str
    reason: str
    merge_labels: bool
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., source: _Optional[str] = ..., note: _Optional[str] = ..., reason: _Optional[str] = ..., merge_labels: _Optional[bool] = ...) -> None: ...

class AddSeedResult(_message.Message):
    __slots__ = ("seed_id", "error", "created", "labels_merged", "labels")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LABELS_MERGED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    error: ItemError
    created: bool
    labels_merged: bool
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, seed_id: _Optional[int] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., created: _Optional[bool] = ..., labels_merged: _Optional[bool] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class AddSeedsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddSeedResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AddSeedResult, _Mapping]]] = ...) -> None: ...

class RemoveSeedsRequest(_message.Message):
    __slots__ = ("seed_ids", "reason")
    SEED_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seed_ids: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, seed_ids: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...

class RemoveSeedResult(_message.Message):
    __slots__ = ("seed_id", "status")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    status: RemoveStatus
    def __init__(self, seed_id: _Optional[int] = ..., status: _Optional[_Union[RemoveStatus, str]] = ...) -> None: ...

class RemoveSeedsResponse(_message.Message):
    __slots__ = ("removed_ids", "results")
    REMOVED_IDS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    removed_ids: _containers.RepeatedScalarFieldContainer[int]
    results: _containers.RepeatedCompositeFieldContainer[RemoveSeedResult]
    def __init__(self, removed_ids: _Optional[_Iterable[int]] = ..., results: _Optional[_Iterable[_Union[RemoveSeedResult, _Mapping]]] = ...) -> None: ...

class RelabelSeedRequest(_message.Message):
    __slots__ = ("seed_id", "labels", "reason")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    reason: str
    def __init__(self, seed_id: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class RelabelSeedResponse(_message.Message):
    __slots__ = ("seed",)
    SEED_FIELD_NUMBER: _ClassVar[int]
    seed: Seed
    def __init__(self, seed: _Optional[_Union[Seed, _Mapping]] = ...) -> None: ...

class Seed(_message.Message):
    __slots__ = ("seed_id", "labels", "source", "note", "created_at", "sha256", "modalities", "has_content", "removed", "removed_at", "text", "hash_only", "added_by")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    HAS_CONTENT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_AT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    HASH_ONLY_FIELD_NUMBER: _ClassVar[int]
    ADDED_BY_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    source: str
    note: str
    created_at: float
    sha256: str
    modalities: _containers.RepeatedScalarFieldContainer[str]
    has_content: bool
    removed: bool
    removed_at: float
    text: str
    hash_only: bool
    added_by: str
    def __init__(self, seed_id: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., source: _Optional[str] = ..., note: _Optional[str] = ..., created_at: _Optional[float] = ..., sha256: _Optional[str] = ..., modalities: _Optional[_Iterable[str]] = ..., has_content: _Optional[bool] = ..., removed: _Optional[bool] = ..., removed_at: _Optional[float] = ..., text: _Optional[str] = ..., hash_only: _Optional[bool] = ..., added_by: _Optional[str] = ...) -> None: ...

class GetSeedRequest(_message.Message):
    __slots__ = ("seed_id",)
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    def __init__(self, seed_id: _Optional[int] = ...) -> None: ...

class GetSeedResponse(_message.Message):
    __slots__ = ("seed",)
    SEED_FIELD_NUMBER: _ClassVar[int]
    seed: Seed
    def __init__(self, seed: _Optional[_Union[Seed, _Mapping]] = ...) -> None: ...

class ListSeedsRequest(_message.Message):
    __slots__ = ("label", "page_token", "page_size", "include_removed", "source", "added_by", "created_after", "created_before")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REMOVED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ADDED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    page_token: str
    page_size: int
    include_removed: bool
    source: str
    added_by: str
    created_after: float
    created_before: float
    def __init__(self, label: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ..., include_removed: _Optional[bool] = ..., source: _Optional[str] = ..., added_by: _Optional[str] = ..., created_after: _Optional[float] = ..., created_before: _Optional[float] = ...) -> None: ...

class ListSeedsResponse(_message.Message):
    __slots__ = ("seeds", "next_page_token")
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    seeds: _containers.RepeatedCompositeFieldContainer[Seed]
    next_page_token: str
    def __init__(self, seeds: _Optional[_Iterable[_Union[Seed, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SpaceStats(_message.Message):
    __slots__ = ("space", "model_id", "ntotal", "threshold", "role", "shadow_outcomes", "shadow_new_seeds")
    class ShadowOutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SPACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NTOTAL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_NEW_SEEDS_FIELD_NUMBER: _ClassVar[int]
    space: str
    model_id: str
    ntotal: int
    threshold: float
    role: str
    shadow_outcomes: _containers.ScalarMap[str, int]
    shadow_new_seeds: int
    def __init__(self, space: _Optional[str] = ..., model_id: _Optional[str] = ..., ntotal: _Optional[int] = ..., threshold: _Optional[float] = ..., role: _Optional[str] = ..., shadow_outcomes: _Optional[_Mapping[str, int]] = ..., shadow_new_seeds: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("seeds_active", "seeds_removed", "labels", "spaces", "op_seq", "snapshot_version", "limits")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SEEDS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SEEDS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SPACES_FIELD_NUMBER: _ClassVar[int]
    OP_SEQ_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    seeds_active: int
    seeds_removed: int
    labels: _containers.ScalarMap[str, int]
    spaces: _containers.RepeatedCompositeFieldContainer[SpaceStats]
    op_seq: int
    snapshot_version: str
    limits: ServerLimits
    def __init__(self, seeds_active: _Optional[int] = ..., seeds_removed: _Optional[int] = ..., labels: _Optional[_Mapping[str, int]] = ..., spaces: _Optional[_Iterable[_Union[SpaceStats, _Mapping]]] = ..., op_seq: _Optional[int] = ..., snapshot_version: _Optional[str] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_batch_items", "max_message_bytes", "max_image_bytes", "max_text_chars", "max_top_k", "max_page_size", "max_reason_chars", "max_note_chars", "max_source_chars")
    MAX_BATCH_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_REASON_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_NOTE_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_SOURCE_CHARS_FIELD_NUMBER: _ClassVar[int]
    max_batch_items: int
    max_message_bytes: int
    max_image_bytes: int
    max_text_chars: int
    max_top_k: int
    max_page_size: int
    max_reason_chars: int
    max_note_chars: int
    max_source_chars: int
    def __init__(self, max_batch_items: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_top_k: _Optional[int] = ..., max_page_size: _Optional[int] = ..., max_reason_chars: _Optional[int] = ..., max_note_chars: _Optional[int] = ..., max_source_chars: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("snapshot_version",)
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    snapshot_version: str
    def __init__(self, snapshot_version: _Optional[str] = ...) -> None: ...

class PublishSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishSnapshotResponse(_message.Message):
    __slots__ = ("snapshot_version",)
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    snapshot_version: str
    def __init__(self, snapshot_version: _Optional[str] = ...) -> None: ...

class RestoreSeedRequest(_message.Message):
    __slots__ = ("seed_id", "reason")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    reason: str
    def __init__(self, seed_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RestoreSeedResponse(_message.Message):
    __slots__ = ("seed", "restored")
    SEED_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    seed: Seed
    restored: bool
    def __init__(self, seed: _Optional[_Union[Seed, _Mapping]] = ..., restored: _Optional[bool] = ...) -> None: ...

class OpEntry(_message.Message):
    __slots__ = ("seq", "kind", "seed_id", "ts", "labels", "actor", "reason", "previous_labels", "space", "replaces")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_LABELS_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    REPLACES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: OpKind
    seed_id: int
    ts: float
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    actor: str
    reason: str
    previous_labels: _containers.RepeatedCompositeFieldContainer[Label]
    space: str
    replaces: str
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[_Union[OpKind, str]] = ..., seed_id: _Optional[int] = ..., ts: _Optional[float] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., previous_labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., space: _Optional[str] = ..., replaces: _Optional[str] = ...) -> None: ...

class GetSeedHistoryRequest(_message.Message):
    __slots__ = ("seed_id",)
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    def __init__(self, seed_id: _Optional[int] = ...) -> None: ...

class GetSeedHistoryResponse(_message.Message):
    __slots__ = ("seed", "ops")
    SEED_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    seed: Seed
    ops: _containers.RepeatedCompositeFieldContainer[OpEntry]
    def __init__(self, seed: _Optional[_Union[Seed, _Mapping]] = ..., ops: _Optional[_Iterable[_Union[OpEntry, _Mapping]]] = ...) -> None: ...

class ListOpsRequest(_message.Message):
    __slots__ = ("actor", "kinds", "since", "until", "label", "seed_id", "page_token", "page_size")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    actor: str
    kinds: _containers.RepeatedScalarFieldContainer[OpKind]
    since: float
    until: float
    label: str
    seed_id: int
    page_token: str
    page_size: int
    def __init__(self, actor: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[OpKind, str]]] = ..., since: _Optional[float] = ..., until: _Optional[float] = ..., label: _Optional[str] = ..., seed_id: _Optional[int] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListOpsResponse(_message.Message):
    __slots__ = ("ops", "next_page_token")
    OPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpEntry]
    next_page_token: str
    def __init__(self, ops: _Optional[_Iterable[_Union[OpEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetSeedContentRequest(_message.Message):
    __slots__ = ("seed_id",)
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    def __init__(self, seed_id: _Optional[int] = ...) -> None: ...

class GetSeedContentResponse(_message.Message):
    __slots__ = ("seed_id", "content", "media_type")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    content: bytes
    media_type: str
    def __init__(self, seed_id: _Optional[int] = ..., content: _Optional[bytes] = ..., media_type: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class AddShadowSpaceRequest(_message.Message):
    __slots__ = ("model", "replaces", "threshold", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLACES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    replaces: str
    threshold: float
    reason: str
    def __init__(self, model: _Optional[str] = ..., replaces: _Optional[str] = ..., threshold: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class AddShadowSpaceResponse(_message.Message):
    __slots__ = ("space", "model_id", "dim", "dtype")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    space: str
    model_id: str
    dim: int
    dtype: str
    def __init__(self, space: _Optional[str] = ..., model_id: _Optional[str] = ..., dim: _Optional[int] = ..., dtype: _Optional[str] = ...) -> None: ...

class WriteEmbeddingsRequest(_message.Message):
    __slots__ = ("space", "model_id", "seed_ids", "vectors", "progress_json")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_JSON_FIELD_NUMBER: _ClassVar[int]
    space: str
    model_id: str
    seed_ids: _containers.RepeatedScalarFieldContainer[int]
    vectors: bytes
    progress_json: str
    def __init__(self, space: _Optional[str] = ..., model_id: _Optional[str] = ..., seed_ids: _Optional[_Iterable[int]] = ..., vectors: _Optional[bytes] = ..., progress_json: _Optional[str] = ...) -> None: ...

class WriteEmbeddingsResponse(_message.Message):
    __slots__ = ("written",)
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    written: int
    def __init__(self, written: _Optional[int] = ...) -> None: ...

class PromoteSpaceRequest(_message.Message):
    __slots__ = ("space", "replaces", "reason")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    REPLACES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    space: str
    replaces: str
    reason: str
    def __init__(self, space: _Optional[str] = ..., replaces: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PromoteSpaceResponse(_message.Message):
    __slots__ = ("replaced",)
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    replaced: str
    def __init__(self, replaced: _Optional[str] = ...) -> None: ...

class RollbackSpaceRequest(_message.Message):
    __slots__ = ("space", "reason")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    space: str
    reason: str
    def __init__(self, space: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackSpaceResponse(_message.Message):
    __slots__ = ("live_space",)
    LIVE_SPACE_FIELD_NUMBER: _ClassVar[int]
    live_space: str
    def __init__(self, live_space: _Optional[str] = ...) -> None: ...

class RetireSpaceRequest(_message.Message):
    __slots__ = ("space", "reason")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    space: str
    reason: str
    def __init__(self, space: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RetireSpaceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
