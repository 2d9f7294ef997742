from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("seed_id", "space", "score", "labels")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    space: str
    score: float
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, seed_id: _Optional[int] = ..., space: _Optional[str] = ..., score: _Optional[float] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("items", "labels", "source", "note")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    source: str
    note: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., source: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class AddSeedResult(_message.Message):
    __slots__ = ("seed_id", "error", "created")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    error: ItemError
    created: bool
    def __init__(self, seed_id: _Optional[int] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class AddSeedsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddSeedResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AddSeedResult, _Mapping]]] = ...) -> None: ...

class RemoveSeedsRequest(_message.Message):
    __slots__ = ("seed_ids",)
    SEED_IDS_FIELD_NUMBER: _ClassVar[int]
    seed_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seed_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RemoveSeedsResponse(_message.Message):
    __slots__ = ("removed_ids",)
    REMOVED_IDS_FIELD_NUMBER: _ClassVar[int]
    removed_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, removed_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RelabelSeedRequest(_message.Message):
    __slots__ = ("seed_id", "labels")
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    seed_id: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, seed_id: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class RelabelSeedResponse(_message.Message):
    __slots__ = ("seed",)
    SEED_FIELD_NUMBER: _ClassVar[int]
    seed: Seed
    def __init__(self, seed: _Optional[_Union[Seed, _Mapping]] = ...) -> None: ...

class Seed(_message.Message):
    __slots__ = ("seed_id", "labels", "source", "note", "created_at", "sha256", "modalities", "has_content", "removed", "removed_at", "text", "hash_only")
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
    def __init__(self, seed_id: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., source: _Optional[str] = ..., note: _Optional[str] = ..., created_at: _Optional[float] = ..., sha256: _Optional[str] = ..., modalities: _Optional[_Iterable[str]] = ..., has_content: _Optional[bool] = ..., removed: _Optional[bool] = ..., removed_at: _Optional[float] = ..., text: _Optional[str] = ..., hash_only: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("label", "page_token", "page_size", "include_removed")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REMOVED_FIELD_NUMBER: _ClassVar[int]
    label: str
    page_token: str
    page_size: int
    include_removed: bool
    def __init__(self, label: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ..., include_removed: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("space", "model_id", "ntotal", "threshold")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NTOTAL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    space: str
    model_id: str
    ntotal: int
    threshold: float
    def __init__(self, space: _Optional[str] = ..., model_id: _Optional[str] = ..., ntotal: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("seeds_active", "seeds_removed", "labels", "spaces", "op_seq", "snapshot_version")
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
    seeds_active: int
    seeds_removed: int
    labels: _containers.ScalarMap[str, int]
    spaces: _containers.RepeatedCompositeFieldContainer[SpaceStats]
    op_seq: int
    snapshot_version: str
    def __init__(self, seeds_active: _Optional[int] = ..., seeds_removed: _Optional[int] = ..., labels: _Optional[_Mapping[str, int]] = ..., spaces: _Optional[_Iterable[_Union[SpaceStats, _Mapping]]] = ..., op_seq: _Optional[int] = ..., snapshot_version: _Optional[str] = ...) -> None: ...

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
