"""The Dedup servicer: a thin adapter from proto requests to Engine calls.

Engine calls block (model inference, LMDB fsync), so every one runs in the worker pool, never on
the event loop. Lookups are prepared, then go through ``Engine.lookup_prepared`` — via the
micro-batcher when it is enabled, directly otherwise: one lookup path either way. Typed errors
become status codes in convert.status_for, the one mapping; any other exception is logged with
the request id and answered INTERNAL with that id and nothing else, and within a batch it fails
only the item that raised it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from concurrent.futures import Executor

import grpc

from dedup.errors import DedupError, Overloaded
from dedup.items import Prepared
from dedup.service import convert
from dedup.service.auth import current_principal
from dedup.service.batcher import MicroBatcher
from dedup.service.metrics import current_request_id
from dedup.types import LookupParams, LookupResult
from dedup.v1 import dedup_pb2 as pb
from dedup.v1 import dedup_pb2_grpc

log = logging.getLogger("dedup.servicer")


def _rpc(method):
    """Map errors to a status (convert.status_for); refuse calls before the engine loads."""

    @functools.wraps(method)
    async def wrapper(self: "DedupServicer", request, context: grpc.aio.ServicerContext):
        if self.engine is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are loading; retry shortly")
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before start")
        try:
            return await method(self, request, context)
        except Exception as e:
            rid = current_request_id.get()
            if not isinstance(e, DedupError):
                log.exception("unexpected error", extra={"request_id": rid,
                                                         "method": method.__name__})
            kind = convert.error_kind(e)
            if kind:
                context.set_trailing_metadata(((convert.ERROR_KIND_KEY, kind),))
            await context.abort(*convert.status_for(e, rid))

    return wrapper


def _actor() -> str:
    principal = current_principal.get()
    return principal.actor if principal is not None else ""


class DedupServicer(dedup_pb2_grpc.DedupServicer):
    """Serves the dedup.v1.Dedup RPCs from an Engine (``engine`` is None while it loads)."""

    def __init__(self, limits, executor: Executor, batcher_config=None, metrics=None):
        self.engine = None
        self.limits = limits
        self._executor = executor
        self._batcher_config = batcher_config
        self._metrics = metrics
        self._batcher: MicroBatcher | None = None
        # Unbatched path: bound the calls waiting for a worker the same way the batcher does.
        self._max_waiting = batcher_config.max_queue if batcher_config is not None else 1024
        self._waiting = 0

    def attach(self, engine) -> None:
        """Start serving from ``engine`` (called once models and index are loaded)."""
        cfg = self._batcher_config
        if cfg is not None and cfg.enabled:
            self._batcher = MicroBatcher(
                self._lookup_batch, self._executor, max_batch=cfg.max_batch,
                max_wait_ms=cfg.max_wait_ms, max_queue=cfg.max_queue,
                max_inflight=cfg.max_inflight,
                on_batch=self._metrics.observe_batch if self._metrics else None)
        self.engine = engine

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    async def _call(self, fn, *args, **kwargs):
        """Run a blocking engine call in the worker pool, shedding load past the queue bound."""
        if self._waiting >= self._max_waiting:
            raise Overloaded(f"too many calls waiting for a worker ({self._waiting})")
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
            return await loop.run_in_executor(self._executor, call)
        finally:
            self._waiting -= 1

    # ------------------------------------------------------------------ lookups
    def _lookup_batch(self, entries: list[tuple[Prepared, LookupParams]],
                      ) -> list[LookupResult | Exception]:
        """Batch worker (in a pool thread). If the batch fails, each item is retried alone so
        only the item that fails gets the error."""
        prepared, params = [p for p, _ in entries], [q for _, q in entries]
        try:
            return self.engine.lookup_prepared(prepared, params)
        except Exception:
            if len(entries) == 1:
                raise
        out: list[LookupResult | Exception] = []
        for p, q in entries:
            try:
                out.extend(self.engine.lookup_prepared([p], [q]))
            except Exception as e:  # reported to this item's caller alone
                if not isinstance(e, DedupError):
                    log.exception("lookup of one item failed",
                                  extra={"request_id": current_request_id.get()})
                out.append(e)
        return out

    async def _lookup_items(self, items, params: LookupParams) -> list[LookupResult | Exception]:
        if self._metrics is not None:
            self._metrics.items.inc(len(items))
        prepared = await self._call(self.engine.prepare, items)
        entries = [(p, params) for p in prepared if isinstance(p, Prepared)]
        if not entries:
            results = iter(())
        elif self._batcher is None:
            results = iter(await self._call(self._lookup_batch, entries))
        else:
            results = iter(await self._batcher.submit(entries))
        return [next(results) if isinstance(p, Prepared) else p for p in prepared]

    @_rpc
    async def Lookup(self, request: pb.LookupRequest, context) -> pb.LookupResponse:
        params = convert.lookup_params(request, self.limits)
        (result,) = await self._lookup_items([convert.item_from_proto(request.item)], params)
        if isinstance(result, Exception):
            raise result
        return convert.lookup_result_to_proto(result)

    @_rpc
    async def BatchLookup(self, request: pb.BatchLookupRequest, context) -> pb.BatchLookupResponse:
        self.limits.check_batch(len(request.items))
        params = convert.lookup_params(request, self.limits)
        items = [convert.item_from_proto(x) for x in request.items]
        results = await self._lookup_items(items, params)
        return convert.batch_results_to_proto(results, self.engine.snapshot_version,
                                              current_request_id.get())

    # ------------------------------------------------------------------ writes
    @_rpc
    async def AddSeeds(self, request: pb.AddSeedsRequest, context) -> pb.AddSeedsResponse:
        self.limits.check_batch(len(request.items))
        items = [convert.item_from_proto(x) for x in request.items]
        labels = [convert.label_from_proto(x) for x in request.labels]
        # Returns only after the LMDB commit: the response is the acknowledgement.
        results = await self._call(self.engine.add_seeds, items, labels, source=request.source,
                                   note=request.note, actor=_actor())
        return convert.add_results_to_proto(results, current_request_id.get())

    @_rpc
    async def RemoveSeeds(self, request: pb.RemoveSeedsRequest, context) -> pb.RemoveSeedsResponse:
        self.limits.check_batch(len(request.seed_ids))
        removed = await self._call(self.engine.remove_seeds, list(request.seed_ids), actor=_actor())
        return pb.RemoveSeedsResponse(removed_ids=removed)

    @_rpc
    async def RelabelSeed(self, request: pb.RelabelSeedRequest, context) -> pb.RelabelSeedResponse:
        labels = [convert.label_from_proto(x) for x in request.labels]
        seed = await self._call(self.engine.relabel, request.seed_id, labels, actor=_actor())
        return pb.RelabelSeedResponse(seed=convert.seed_to_proto(seed))

    # ------------------------------------------------------------------ reads
    @_rpc
    async def GetSeed(self, request: pb.GetSeedRequest, context) -> pb.GetSeedResponse:
        seed = await self._call(self.engine.get_seed, request.seed_id)
        return pb.GetSeedResponse(seed=convert.seed_to_proto(seed))

    @_rpc
    async def ListSeeds(self, request: pb.ListSeedsRequest, context) -> pb.ListSeedsResponse:
        seeds, next_after = await self._call(
            self.engine.list_seeds, label=request.label or None,
            after=convert.page_token_to_after(request.page_token),
            limit=request.page_size or convert.DEFAULT_PAGE_SIZE,
            include_removed=request.include_removed)
        return pb.ListSeedsResponse(
            seeds=[convert.seed_to_proto(s) for s in seeds],
            next_page_token=str(next_after) if next_after is not None else "")

    @_rpc
    async def Stats(self, request: pb.StatsRequest, context) -> pb.StatsResponse:
        return convert.stats_to_proto(await self._call(self.engine.stats))

    # ------------------------------------------------------------------ admin
    @_rpc
    async def Reload(self, request: pb.ReloadRequest, context) -> pb.ReloadResponse:
        return pb.ReloadResponse(snapshot_version=await self._call(self.engine.reload))

    @_rpc
    async def PublishSnapshot(self, request, context) -> pb.PublishSnapshotResponse:
        return pb.PublishSnapshotResponse(
            snapshot_version=await self._call(self.engine.publish_snapshot))

