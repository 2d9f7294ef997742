"""The one module that touches *_pb2 messages (with the client): proto <-> dedup.types, and
typed errors <-> gRPC status codes."""

from __future__ import annotations

import json
import math
from typing import Mapping, Sequence

import grpc
import numpy as np

from dedup import errors
from dedup.config import Limits, SpaceConfig
from dedup.errors import (DedupError, InvalidArgument, InvalidItem, LimitExceeded, ModelMismatch,
                          NotFound, Overloaded, PermissionDenied, SnapshotError, StorageFull,
                          StoreError,
                          Unauthenticated)
from dedup.types import (AddResult, EngineStats, Item, Label, LookupParams, LookupResult,
                         Neighbor, OpEntry, OpFilter, OpKind, QueryHash, RemoveResult,
                         RemoveStatus, Seed, SeedContent, SeedFilter, Verdict)
from dedup.shadow import ShadowTally
from dedup.v1 import dedup_pb2 as pb

DEFAULT_TOP_K = 10
DEFAULT_PAGE_SIZE = 100

# ------------------------------------------------------------------ errors <-> status codes
# Order matters: subclasses before their bases (LimitExceeded is an InvalidItem).
_ERROR_CODES: tuple[tuple[type[DedupError], grpc.StatusCode], ...] = (
    (LimitExceeded, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidItem, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (ModelMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (SnapshotError, grpc.StatusCode.FAILED_PRECONDITION),
    (StorageFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreError, grpc.StatusCode.INTERNAL),
)

# Client side: the typed error a status code stands for (the inverse of the table above).
_CODE_ERRORS: dict[grpc.StatusCode, type[DedupError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: Overloaded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: SnapshotError,
    grpc.StatusCode.INTERNAL: StoreError,
}


# Trailing metadata naming the error class, so a client rebuilds the exact typed error where
# several classes share one status code (ModelMismatch and SnapshotError: FAILED_PRECONDITION).
ERROR_KIND_KEY = "dedup-error"
# A caller's request id (or one made up), echoed in the response's headers on success and in its
# trailers on failure, and logged with the call.
REQUEST_ID_KEY = "x-request-id"


def status_for(error: BaseException, request_id: str = "") -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message for an error raised by the core. An error the core did
    not raise on purpose is INTERNAL, with the request id and none of its own text (which may
    hold paths or internals); the server logs it in full under that id."""
    for cls, code in _ERROR_CODES:
        if isinstance(error, cls):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error (request id {request_id or 'unknown'})"


def error_kind(error: BaseException) -> str | None:
    """The class name a client can rebuild, for errors of dedup.errors; None for others."""
    return type(error).__name__ if isinstance(error, DedupError) else None


RETRY_AFTER_KEY = "retry-after-ms"
# gRPC's own pushback (gRFC A6): a client whose retry policy covers the status waits this long
# before its next attempt, in any language, with no code of the caller's
PUSHBACK_KEY = "grpc-retry-pushback-ms"
STATUS_DETAILS_KEY = "grpc-status-details-bin"  # the rich status: google.rpc.Status


def retry_metadata(error: BaseException, code: grpc.StatusCode, message: str,
                   ) -> tuple[tuple[str, str | bytes], ...]:
    """Trailing metadata telling a refused caller when to come back: ``retry-after-ms``, gRPC's
    retry pushback and the standard ``google.rpc.RetryInfo`` in the rich status; empty when
    the error has no hint."""
    seconds = getattr(error, "retry_after_s", None)
    if seconds is None:
        return ()
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    ms = max(1, math.ceil(seconds * 1000))
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromMilliseconds(ms)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return ((RETRY_AFTER_KEY, str(ms)), (PUSHBACK_KEY, str(ms)),
            (STATUS_DETAILS_KEY, status.SerializeToString()))


def error_from_status(code: grpc.StatusCode, details: str, kind: str | None = None) -> DedupError:
    """The typed error for a status a server returned (client side)."""
    cls = _CODE_ERRORS.get(code, DedupError)
    named = getattr(errors, kind, None) if kind else None
    if isinstance(named, type) and issubclass(named, DedupError) and named is not LimitExceeded:
        cls = named
    if code == grpc.StatusCode.INVALID_ARGUMENT and "(limit: " in details:
        reason, _, limit = details.rpartition(" (limit: ")
        err: DedupError = LimitExceeded(reason, limit.rstrip(")"))
    else:
        err = cls(details)
    err.grpc_code = code  # type: ignore[attr-defined]  # kept for callers that branch on it
    return err


def item_error_to_proto(error: BaseException, request_id: str = "") -> pb.ItemError:
    code, message = status_for(error, request_id)
    return pb.ItemError(code=code.value[0], message=message,
                        limit=getattr(error, "limit", None) or "")


def item_error_from_proto(msg: pb.ItemError) -> DedupError:
    code = next((c for c in grpc.StatusCode if c.value[0] == msg.code), grpc.StatusCode.UNKNOWN)
    return error_from_status(code, msg.message)


# ------------------------------------------------------------------ requests
def item_from_proto(msg: pb.Item) -> Item:
    """Empty bytes / empty text mean absent (proto3 has no presence for them)."""
    return Item(image=bytes(msg.image) or None, text=msg.text or None, pdq=msg.pdq or None)


def item_to_proto(item: Item) -> pb.Item:
    return pb.Item(image=item.image or b"", text=item.text or "", pdq=item.pdq or "")


def label_from_proto(msg: pb.Label) -> Label:
    """An absent severity is 1; a given one, 0 included, is checked by check_labels."""
    return Label(msg.name, msg.severity if msg.HasField("severity") else 1)


def label_to_proto(label: Label) -> pb.Label:
    return pb.Label(name=label.name, severity=label.severity)


MAX_SCORE = 10.0  # above any score a space reports, verified ones included


def lookup_params(request: pb.LookupRequest | pb.BatchLookupRequest, limits: Limits) -> LookupParams:
    """Validate top_k / threshold against the limits; 0 means the default k."""
    top_k = request.top_k or DEFAULT_TOP_K
    limits.check_top_k(top_k)
    threshold = request.threshold if request.HasField("threshold") else None
    # similarities are in [-1, 1]; a geometrically verified score adds weight * log1p(inliers)
    if threshold is not None and not -1.0 <= threshold <= MAX_SCORE:
        raise InvalidArgument(f"threshold must be in [-1, {MAX_SCORE:g}], got {threshold}")
    labels = tuple(request.labels) or None
    return LookupParams(top_k, labels, threshold)


def page_token_to_after(token: str) -> int:
    """A page token is the last seed id of the previous page: ASCII digits, a seed id (below
    2**63). Anything else (``²`` is a Unicode digit; ``18446744073709551615`` is no seed id) is
    INVALID_ARGUMENT."""
    if not token:
        return 0
    if not (token.isascii() and token.isdigit()) or len(token) > 19 or int(token) >= 2**63:
        raise InvalidArgument(f"bad page_token {token[:40]!r}: use the next_page_token returned")
    return int(token)


def seed_filter(request: pb.ListSeedsRequest) -> SeedFilter:
    """The listing's filters; empty fields match everything."""
    return SeedFilter(
        label=request.label or None, source=request.source or None,
        added_by=request.added_by or None,
        created_after=request.created_after if request.HasField("created_after") else None,
        created_before=request.created_before if request.HasField("created_before") else None,
        include_removed=request.include_removed)


def op_filter(request: pb.ListOpsRequest) -> OpFilter:
    """The audit query's filters; empty fields match everything."""
    kinds = []
    for k in request.kinds:
        if k not in _OP_KINDS:
            raise InvalidArgument(f"unknown op kind {k}")
        kinds.append(_OP_KINDS[k])
    return OpFilter(
        actor=request.actor or None, kinds=tuple(kinds),
        since=request.since if request.HasField("since") else None,
        until=request.until if request.HasField("until") else None,
        label=request.label or None,
        seed_id=request.seed_id if request.HasField("seed_id") else None)


def op_filter_to_proto(where: OpFilter, page_token: str = "", page_size: int = 0,
                       ) -> pb.ListOpsRequest:
    msg = pb.ListOpsRequest(actor=where.actor or "", label=where.label or "",
                            kinds=[int(k) for k in where.kinds], page_token=page_token,
                            page_size=page_size)
    if where.since is not None:
        msg.since = where.since
    if where.until is not None:
        msg.until = where.until
    if where.seed_id is not None:
        msg.seed_id = where.seed_id
    return msg


def seed_filter_to_proto(where: SeedFilter, page_token: str = "", page_size: int = 0,
                         ) -> pb.ListSeedsRequest:
    msg = pb.ListSeedsRequest(label=where.label or "", source=where.source or "",
                              added_by=where.added_by or "", page_token=page_token,
                              page_size=page_size, include_removed=where.include_removed)
    if where.created_after is not None:
        msg.created_after = where.created_after
    if where.created_before is not None:
        msg.created_before = where.created_before
    return msg


# OpKind values are the proto's OP_KIND_* numbers.
_OP_KINDS = {int(k): k for k in OpKind}


# ------------------------------------------------------------------ results
def neighbor_to_proto(n: Neighbor) -> pb.Neighbor:
    return pb.Neighbor(seed_id=n.seed_id, space=n.space, score=n.score, verified=n.verified,
                       **({"similarity": n.similarity} if n.similarity is not None else {}),
                       labels=[label_to_proto(x) for x in n.labels])


def neighbor_from_proto(msg: pb.Neighbor) -> Neighbor:
    return Neighbor(msg.seed_id, msg.space, msg.score, tuple(label_from_proto(x) for x in msg.labels),
                    msg.verified, msg.similarity if msg.HasField("similarity") else None)


def verdict_to_proto(v: Verdict) -> pb.Verdict:
    return pb.Verdict(
        label=v.label, matched=v.matched, score=v.score, margin=v.margin, severity=v.severity,
        evidence_seed_ids=[n.seed_id for n in v.evidence],
        evidence=[neighbor_to_proto(n) for n in v.evidence],
    )


def verdict_from_proto(msg: pb.Verdict) -> Verdict:
    return Verdict(msg.label, msg.matched, msg.score, msg.margin,
                   tuple(neighbor_from_proto(n) for n in msg.evidence), msg.severity)


def lookup_result_to_proto(r: LookupResult) -> pb.LookupResponse:
    msg = pb.LookupResponse(
        verdicts=[verdict_to_proto(v) for v in r.verdicts],
        neighbors=[neighbor_to_proto(n) for n in r.neighbors],
        snapshot_version=r.snapshot_version,
        spaces=list(r.spaces),
        hashes=[pb.QueryHash(space=h.space, hash=h.hash, quality=h.quality, used=h.used,
                             note=h.note) for h in r.hashes],
    )
    if r.exact_match is not None:
        msg.exact_match = r.exact_match
    return msg


def lookup_result_from_proto(msg: pb.LookupResponse) -> LookupResult:
    return LookupResult(
        verdicts=tuple(verdict_from_proto(v) for v in msg.verdicts),
        neighbors=tuple(neighbor_from_proto(n) for n in msg.neighbors),
        exact_match=msg.exact_match if msg.HasField("exact_match") else None,
        snapshot_version=msg.snapshot_version,
        spaces=tuple(msg.spaces),
        hashes=tuple(QueryHash(h.space, h.hash, h.quality, h.used, h.note) for h in msg.hashes),
    )


def batch_results_to_proto(results: Sequence[LookupResult | BaseException], version: str,
                           request_id: str = "") -> pb.BatchLookupResponse:
    out = pb.BatchLookupResponse(snapshot_version=version)
    for r in results:
        if isinstance(r, BaseException):
            out.results.add(error=item_error_to_proto(r, request_id))
        else:
            out.results.add(result=lookup_result_to_proto(r))
    return out


def batch_results_from_proto(msg: pb.BatchLookupResponse) -> list[LookupResult | DedupError]:
    return [lookup_result_from_proto(r.result) if r.WhichOneof("outcome") == "result"
            else item_error_from_proto(r.error) for r in msg.results]


def add_results_to_proto(results: Sequence[AddResult | BaseException], request_id: str = "",
                         ) -> pb.AddSeedsResponse:
    out = pb.AddSeedsResponse()
    for r in results:
        if isinstance(r, BaseException):
            out.results.add(error=item_error_to_proto(r, request_id))
        else:
            out.results.add(seed_id=r.seed_id, created=r.created,
                             labels_merged=r.labels_merged,
                             labels=[label_to_proto(x) for x in r.labels])
    return out


def add_results_from_proto(msg: pb.AddSeedsResponse) -> list[AddResult | DedupError]:
    return [AddResult(r.seed_id, r.created, r.labels_merged,
                      tuple(label_from_proto(x) for x in r.labels))
            if r.WhichOneof("outcome") == "seed_id" else item_error_from_proto(r.error)
            for r in msg.results]


_REMOVE_STATUS = {RemoveStatus.REMOVED: pb.REMOVE_STATUS_REMOVED,
                  RemoveStatus.ALREADY_REMOVED: pb.REMOVE_STATUS_ALREADY_REMOVED,
                  RemoveStatus.NOT_FOUND: pb.REMOVE_STATUS_NOT_FOUND}
_REMOVE_STATUS_BACK = {v: k for k, v in _REMOVE_STATUS.items()}


def remove_results_to_proto(results: Sequence[RemoveResult]) -> pb.RemoveSeedsResponse:
    return pb.RemoveSeedsResponse(
        removed_ids=[r.seed_id for r in results if r.status is RemoveStatus.REMOVED],
        results=[pb.RemoveSeedResult(seed_id=r.seed_id, status=_REMOVE_STATUS[r.status])
                 for r in results])


def remove_results_from_proto(msg: pb.RemoveSeedsResponse) -> list[RemoveResult]:
    return [RemoveResult(r.seed_id, _REMOVE_STATUS_BACK[r.status]) for r in msg.results]


def op_to_proto(op: OpEntry) -> pb.OpEntry:
    return pb.OpEntry(seq=op.seq, kind=int(op.kind), seed_id=op.seed_id, ts=op.ts,
                      labels=[label_to_proto(x) for x in op.labels], actor=op.actor,
                      reason=op.reason,
                      previous_labels=[label_to_proto(x) for x in op.previous_labels],
                      space=op.space, replaces=op.replaces)


def op_from_proto(msg: pb.OpEntry) -> OpEntry:
    return OpEntry(seq=msg.seq, kind=OpKind(msg.kind), seed_id=msg.seed_id, ts=msg.ts,
                   labels=tuple(label_from_proto(x) for x in msg.labels), actor=msg.actor,
                   reason=msg.reason,
                   previous_labels=tuple(label_from_proto(x) for x in msg.previous_labels),
                   space=msg.space, replaces=msg.replaces)


def content_to_proto(c: SeedContent) -> pb.GetSeedContentResponse:
    return pb.GetSeedContentResponse(seed_id=c.seed_id, content=c.data, media_type=c.media_type)


def content_from_proto(msg: pb.GetSeedContentResponse) -> SeedContent:
    return SeedContent(msg.seed_id, bytes(msg.content), msg.media_type)


def seed_to_proto(s: Seed) -> pb.Seed:
    msg = pb.Seed(
        seed_id=s.seed_id, labels=[label_to_proto(x) for x in s.labels], source=s.source,
        note=s.note, created_at=s.created_at, sha256=s.sha256, modalities=list(s.modalities),
        has_content=s.has_content, removed=s.removed, hash_only=s.hash_only,
        added_by=s.added_by,
    )
    if s.removed_at is not None:
        msg.removed_at = s.removed_at
    if s.text is not None:
        msg.text = s.text
    return msg


def seed_from_proto(msg: pb.Seed) -> Seed:
    return Seed(
        seed_id=msg.seed_id, labels=tuple(label_from_proto(x) for x in msg.labels),
        source=msg.source, note=msg.note, created_at=msg.created_at, sha256=msg.sha256,
        modalities=tuple(msg.modalities), has_content=msg.has_content, removed=msg.removed,
        removed_at=msg.removed_at if msg.HasField("removed_at") else None,
        text=msg.text if msg.HasField("text") else None,
        hash_only=msg.hash_only, added_by=msg.added_by,
    )


_LIMIT_FIELDS = tuple(f.name for f in pb.ServerLimits.DESCRIPTOR.fields)


def stats_to_proto(stats: EngineStats, limits: Limits | None = None,
                   shadow: ShadowTally | None = None) -> pb.StatsResponse:
    outcomes = shadow.counts() if shadow is not None else {}
    new_seeds = shadow.new_seeds() if shadow is not None else {}
    return pb.StatsResponse(
        limits=pb.ServerLimits(**{f: getattr(limits, f) for f in _LIMIT_FIELDS})
        if limits is not None else None,
        seeds_active=stats.seeds_active, seeds_removed=stats.seeds_removed,
        labels={k: int(v) for k, v in stats.labels.items()},
        spaces=[pb.SpaceStats(space=name, model_id=s.model_id, ntotal=int(s.ntotal),
                              threshold=float(s.threshold), role=s.role,
                              shadow_outcomes=outcomes.get(name, {}),
                              shadow_new_seeds=new_seeds.get(name, 0))
                for name, s in stats.spaces.items()],
        op_seq=max(int(stats.op_seq), 0), snapshot_version=stats.snapshot_version,
    )


def stats_from_proto(msg: pb.StatsResponse) -> dict:
    """Counts, op-log position, snapshot, and per space its model id, size and threshold."""
    return {
        "seeds_active": msg.seeds_active, "seeds_removed": msg.seeds_removed,
        "labels": dict(msg.labels), "op_seq": msg.op_seq, "snapshot_version": msg.snapshot_version,
        "spaces": {s.space: {"model_id": s.model_id, "ntotal": s.ntotal, "threshold": s.threshold,
                             "role": s.role or "live",
                             **({"shadow_outcomes": dict(s.shadow_outcomes),
                                 "shadow_new_seeds": s.shadow_new_seeds}
                                if s.shadow_outcomes else {})}
                   for s in msg.spaces},
        "limits": {f: getattr(msg.limits, f) for f in _LIMIT_FIELDS}
        if msg.HasField("limits") else {},
    }


# ------------------------------------------------------------------ changing the model
def shadow_space_config(request: pb.AddShadowSpaceRequest, config) -> SpaceConfig:
    """The new space's config: the service config's entry for that model when it has one,
    with the request's replaces / threshold on top."""
    if not request.model:
        raise InvalidArgument("model is required")
    name = request.model.split("@", 1)[0]
    base = config.spaces.get(name) or SpaceConfig(model=request.model)
    update = {"model": request.model}
    if request.replaces:
        update["replaces"] = request.replaces
    if request.HasField("threshold"):
        update["threshold"] = float(request.threshold)
    return base.model_copy(update=update)


def embeddings_to_proto(space: str, model_id: str, ids, vectors, progress: Mapping | None,
                        ) -> pb.WriteEmbeddingsRequest:
    """Vectors as one row-major little-endian buffer (float32, or packed bits)."""
    arr = np.asarray(vectors)
    arr = arr.astype("<f4" if arr.dtype.kind == "f" else "u1", copy=False)
    return pb.WriteEmbeddingsRequest(
        space=space, model_id=model_id, seed_ids=[int(i) for i in ids],
        vectors=np.ascontiguousarray(arr).tobytes(),
        progress_json=json.dumps(dict(progress)) if progress is not None else "")


def embeddings_from_proto(msg: pb.WriteEmbeddingsRequest, dtype: str, width: int,
                          ) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(ids, vectors, progress) of a WriteEmbeddings request; InvalidArgument when the buffer
    does not hold one row of ``width`` per id."""
    item = 1 if dtype == "uint8" else 4
    n = len(msg.seed_ids)
    if len(msg.vectors) != n * width * item:
        raise InvalidArgument(f"{len(msg.vectors)} vector bytes for {n} ids of {width} "
                              f"{dtype} each")
    vecs = np.frombuffer(msg.vectors, dtype="u1" if dtype == "uint8" else "<f4")
    vecs = vecs.reshape(n, width).astype(np.uint8 if dtype == "uint8" else np.float32)
    try:
        progress = json.loads(msg.progress_json) if msg.progress_json else None
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"progress_json is not JSON: {e}") from e
    if progress is not None and not isinstance(progress, dict):
        raise InvalidArgument("progress_json must be a JSON object")
    return np.asarray(msg.seed_ids, dtype=np.int64), vecs, progress
