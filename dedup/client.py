"""The Python client moderation services import: typed values in and out, typed errors.

    from dedup.client import DedupClient
    with DedupClient("127.0.0.1:50051", token="...") as client:
        result = client.lookup(image=jpeg_bytes)
        if any(v.matched for v in result.verdicts): ...

Results are dedup.types values (LookupResult, Seed, ...); a non-OK status raises the typed error
from dedup.errors (InvalidItem/LimitExceeded/InvalidArgument, NotFound, Unauthenticated,
PermissionDenied, Overloaded for RESOURCE_EXHAUSTED/UNAVAILABLE/DEADLINE_EXCEEDED) with the
grpc.RpcError as its __cause__ and the status code as ``.grpc_code``. Reads are retried on
UNAVAILABLE by gRPC's own retry policy, lookups also when admission refused them, after the
server's retry hint; writes are never retried blindly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dedup.errors import DedupError, Overloaded
from dedup.service import convert
from dedup.types import (AddResult, Item, Label, LookupResult, OpEntry, OpFilter, RemoveResult,
                         RemoveStatus,
                         Seed, SeedContent, SeedFilter)
from dedup.v1 import dedup_pb2 as pb
from dedup.v1 import dedup_pb2_grpc

_READS = ("Lookup", "BatchLookup", "GetSeed", "ListSeeds", "Stats", "GetSeedHistory", "ListOps",
          "GetSeedContent", "WhoAmI")
_LOOKUPS = ("Lookup", "BatchLookup")
_RETRY_BUFFER_BYTES = 24 * 1024 * 1024  # a lookup of the largest image allowed (20 MiB)


def _read_policy(methods: Sequence[str], codes: list[str]) -> dict:
    return {"name": [{"service": "dedup.v1.Dedup", "method": m} for m in methods],
            "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                            "backoffMultiplier": 2, "retryableStatusCodes": codes}}


# Lookups refused by admission (RESOURCE_EXHAUSTED) are tried again after the server's pushback
# (``grpc-retry-pushback-ms``, the refusal's retry hint), within the call's deadline; the
# throttle stops retrying while most calls fail, so retries never multiply an overload.
_SERVICE_CONFIG = json.dumps({
    "methodConfig": [_read_policy(_LOOKUPS, ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]),
                     _read_policy([m for m in _READS if m not in _LOOKUPS], ["UNAVAILABLE"])],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
})


class DedupClient:
    """A blocking client over one channel; thread-safe, reuse it for the process's lifetime."""

    def __init__(self, target: str = "127.0.0.1:50051", token: str | None = None, *,
                 timeout: float | None = 10.0, root_cert: str | Path | None = None,
                 client_cert: str | Path | None = None, client_key: str | Path | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024):
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.enable_retries", 1), ("grpc.service_config", _SERVICE_CONFIG),
                   # gRPC retries only a call whose request it still holds: 256 KiB by default,
                   # less than many an image (the request is in memory anyway while it is sent)
                   ("grpc.per_rpc_retry_buffer_size", _RETRY_BUFFER_BYTES),
                   ("grpc.retry_buffer_size", 4 * _RETRY_BUFFER_BYTES)]
        if root_cert or client_cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(root_cert).read_bytes() if root_cert else None,
                private_key=Path(client_key).read_bytes() if client_key else None,
                certificate_chain=Path(client_cert).read_bytes() if client_cert else None)
            self._channel = grpc.secure_channel(target, creds, options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self._stub = dedup_pb2_grpc.DedupStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "DedupClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, timeout: float | None = None, request_id: str | None = None):
        md = self._metadata + (((convert.REQUEST_ID_KEY, request_id),) if request_id else ())
        try:
            return getattr(self._stub, method)(
                request, metadata=md, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as e:
            trailing = dict(e.trailing_metadata() or ())
            err = convert.error_from_status(e.code(), e.details() or "",
                                            trailing.get(convert.ERROR_KIND_KEY))
            hint = trailing.get(convert.RETRY_AFTER_KEY)
            if isinstance(err, Overloaded) and hint is not None:  # when the server said to retry
                err.retry_after_s = int(hint) / 1000
            raise err from e

    # ------------------------------------------------------------------ lookups
    def lookup(self, item: Item | None = None, *, image: bytes | None = None,
               text: str | None = None, pdq: str | None = None, top_k: int = 10,
               labels: Sequence[str] | None = None,
               threshold: float | None = None, timeout: float | None = None,
               request_id: str | None = None) -> LookupResult:
        """Check one item (or ``image=``/``text=``/``pdq=``); raises the typed error for a bad item."""
        item = item or Item(image=image, text=text, pdq=pdq)
        request = pb.LookupRequest(item=convert.item_to_proto(item), top_k=top_k,
                                   labels=list(labels or ()))
        if threshold is not None:
            request.threshold = threshold
        return convert.lookup_result_from_proto(self._call("Lookup", request, timeout, request_id))

    def batch_lookup(self, items: Sequence[Item], *, top_k: int = 10,
                     labels: Sequence[str] | None = None, threshold: float | None = None,
                     timeout: float | None = None) -> list[LookupResult | DedupError]:
        """Check many items; each slot holds its result or its own error (not raised)."""
        request = pb.BatchLookupRequest(items=[convert.item_to_proto(i) for i in items],
                                        top_k=top_k, labels=list(labels or ()))
        if threshold is not None:
            request.threshold = threshold
        return convert.batch_results_from_proto(self._call("BatchLookup", request, timeout))

    # ------------------------------------------------------------------ writes
    # ``reason`` is recorded in the op log with the name the token maps to.
    def add_seeds(self, items: Sequence[Item], labels: Sequence[Label], *, source: str = "",
                  note: str = "", reason: str = "", merge_labels: bool = False,
                  timeout: float | None = None) -> list[AddResult | DedupError]:
        """Add items as seeds; per item an AddResult (unpacks as ``(seed_id, created)``) or its
        error. Durable on return. An item already in the bank keeps its seed; ``merge_labels``
        adds these labels to it (``labels_merged`` says whether they changed anything)."""
        request = pb.AddSeedsRequest(items=[convert.item_to_proto(i) for i in items],
                                     labels=[convert.label_to_proto(x) for x in labels],
                                     source=source, note=note, reason=reason,
                                     merge_labels=merge_labels)
        return convert.add_results_from_proto(self._call("AddSeeds", request, timeout))

    def remove_seeds(self, seed_ids: Sequence[int], *, reason: str = "",
                     timeout: float | None = None) -> list[int]:
        """Remove seeds; returns the ids that were active and are now removed."""
        return [r.seed_id for r in self.remove_each(seed_ids, reason=reason, timeout=timeout)
                if r.status is RemoveStatus.REMOVED]

    def remove_each(self, seed_ids: Sequence[int], *, reason: str = "",
                    timeout: float | None = None) -> list[RemoveResult]:
        """Remove seeds; one result per id: removed now, already removed, or not found."""
        request = pb.RemoveSeedsRequest(seed_ids=list(seed_ids), reason=reason)
        return convert.remove_results_from_proto(self._call("RemoveSeeds", request, timeout))

    def relabel(self, seed_id: int, labels: Sequence[Label], *, reason: str = "",
                timeout: float | None = None) -> Seed:
        """Replace a seed's labels; returns the updated seed."""
        request = pb.RelabelSeedRequest(seed_id=seed_id, reason=reason,
                                        labels=[convert.label_to_proto(x) for x in labels])
        return convert.seed_from_proto(self._call("RelabelSeed", request, timeout).seed)

    def restore(self, seed_id: int, *, reason: str = "",
                timeout: float | None = None) -> tuple[Seed, bool]:
        """Undo a removal (same id, searchable at once); returns (seed, restored now)."""
        resp = self._call("RestoreSeed", pb.RestoreSeedRequest(seed_id=seed_id, reason=reason),
                          timeout)
        return convert.seed_from_proto(resp.seed), resp.restored

    # ------------------------------------------------------------------ reads
    def get_seed(self, seed_id: int, timeout: float | None = None) -> Seed:
        return convert.seed_from_proto(
            self._call("GetSeed", pb.GetSeedRequest(seed_id=seed_id), timeout).seed)

    def list_seeds(self, label: str | None = None, page_token: str = "", page_size: int = 100,
                   include_removed: bool = False, timeout: float | None = None, *,
                   where: SeedFilter | None = None) -> tuple[list[Seed], str]:
        """One page of seeds in id order and the next page's token ("" when done); ``where``
        filters by label, source, actor and date (a filtered page may come back short)."""
        where = where or SeedFilter(label=label, include_removed=include_removed)
        resp = self._call("ListSeeds", convert.seed_filter_to_proto(where, page_token, page_size),
                          timeout)
        return [convert.seed_from_proto(s) for s in resp.seeds], resp.next_page_token

    def iter_seeds(self, label: str | None = None, page_size: int = 100,
                   include_removed: bool = False, *,
                   where: SeedFilter | None = None) -> Iterator[Seed]:
        """Every seed (optionally with ``label``, or matching ``where``), page by page."""
        token = ""
        while True:
            seeds, token = self.list_seeds(label, token, page_size, include_removed, where=where)
            yield from seeds
            if not token:
                return

    def history(self, seed_id: int, timeout: float | None = None) -> tuple[Seed, list[OpEntry]]:
        """A seed and its op-log entries, oldest first (analyst role)."""
        resp = self._call("GetSeedHistory", pb.GetSeedHistoryRequest(seed_id=seed_id), timeout)
        return convert.seed_from_proto(resp.seed), [convert.op_from_proto(o) for o in resp.ops]

    def list_ops(self, where: OpFilter | None = None, page_token: str = "", page_size: int = 100,
                 timeout: float | None = None) -> tuple[list[OpEntry], str]:
        """One page of the audit trail, newest first, and the next page's token (analyst)."""
        request = convert.op_filter_to_proto(where or OpFilter(), page_token, page_size)
        resp = self._call("ListOps", request, timeout)
        return [convert.op_from_proto(o) for o in resp.ops], resp.next_page_token

    def iter_ops(self, where: OpFilter | None = None, page_size: int = 100) -> Iterator[OpEntry]:
        """The audit trail matching ``where``, newest first, page by page."""
        token = ""
        while True:
            ops, token = self.list_ops(where, token, page_size)
            yield from ops
            if not token:
                return

    def content(self, seed_id: int, timeout: float | None = None) -> SeedContent:
        """A seed's stored content (analyst role; never a reader's)."""
        return convert.content_from_proto(
            self._call("GetSeedContent", pb.GetSeedContentRequest(seed_id=seed_id), timeout))

    def whoami(self, timeout: float | None = None) -> tuple[str, str]:
        """(name, role) of this client's token, as the server knows it."""
        resp = self._call("WhoAmI", pb.WhoAmIRequest(), timeout)
        return resp.name, resp.role

    def stats(self, timeout: float | None = None) -> dict:
        """Counts per label and space, snapshot version, op-log position, model ids."""
        return convert.stats_from_proto(self._call("Stats", pb.StatsRequest(), timeout))

    # ------------------------------------------------------------------ admin
    def reload(self, timeout: float | None = 300.0) -> str:
        """Swap in the newest published snapshot; returns its version."""
        return self._call("Reload", pb.ReloadRequest(), timeout).snapshot_version

    def publish_snapshot(self, timeout: float | None = 300.0) -> str:
        """Publish the live index as a snapshot; returns its version."""
        return self._call("PublishSnapshot", pb.PublishSnapshotRequest(), timeout).snapshot_version

    # ------------------------------------------------------------------ changing the model
    def add_shadow_space(self, model: str, replaces: str | None = None,
                         threshold: float | None = None, reason: str = "",
                         timeout: float | None = 600.0) -> dict:
        """Serve a new model's space in shadow (loads the model: give it time); returns
        {space, model_id, dim, dtype}."""
        req = pb.AddShadowSpaceRequest(model=model, replaces=replaces or "", reason=reason)
        if threshold is not None:
            req.threshold = threshold
        r = self._call("AddShadowSpace", req, timeout)
        return {"space": r.space, "model_id": r.model_id, "dim": r.dim, "dtype": r.dtype}

    def write_embeddings(self, space: str, model_id: str, ids, vectors, progress=None,
                         max_bytes: int = 8 << 20, timeout: float | None = 300.0) -> int:
        """Store a re-embed's vectors through the service, in messages of at most about
        ``max_bytes``; the progress record (``(key, fields)``) goes with the last one.
        Returns how many were kept."""
        vectors = np.asarray(vectors)
        n = len(ids)
        row = max(1, vectors[0].nbytes if n else 1)
        step = max(1, max_bytes // row)
        written = 0
        for start in range(0, max(n, 1), step):
            last = start + step >= n
            req = convert.embeddings_to_proto(
                space, model_id, ids[start:start + step], vectors[start:start + step],
                progress[1] if (last and progress is not None) else None)
            written += self._call("WriteEmbeddings", req, timeout).written
        return written

    def promote_space(self, space: str, replaces: str | None = None, reason: str = "",
                      timeout: float | None = 300.0) -> str:
        """Make a shadow space live; returns the space it replaced (now in shadow), or ""."""
        return self._call("PromoteSpace", pb.PromoteSpaceRequest(
            space=space, replaces=replaces or "", reason=reason), timeout).replaced

    def rollback_space(self, space: str | None = None, reason: str = "",
                       timeout: float | None = 300.0) -> str:
        """Undo a promotion; returns the space live again."""
        return self._call("RollbackSpace", pb.RollbackSpaceRequest(
            space=space or "", reason=reason), timeout).live_space

    def retire_space(self, space: str, reason: str = "", timeout: float | None = 300.0) -> None:
        """Stop serving a shadow space and drop its vectors."""
        self._call("RetireSpace", pb.RetireSpaceRequest(space=space, reason=reason), timeout)

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """SERVING / NOT_SERVING / ... from the standard health service (no token needed)."""
        resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the server reports SERVING (models loaded) or ``timeout`` passes."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health(timeout=2.0) == "SERVING":
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not SERVING after {timeout:.0f} s")
            time.sleep(0.2)
