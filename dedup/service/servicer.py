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
import contextlib
import contextvars
import functools
import logging
from concurrent.futures import Executor

import grpc

from dedup.errors import DedupError, NotFound, Overloaded
from dedup.items import Prepared
from dedup.service import convert
from dedup.service.auth import current_principal
from dedup.embed.spaces import memory_cost
from dedup.service.batcher import MicroBatcher
from dedup.service.budget import MemoryBudget
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
            code, message = convert.status_for(e, rid)
            kind = convert.error_kind(e)
            trailing = ((convert.ERROR_KIND_KEY, kind),) if kind else ()
            trailing += convert.retry_metadata(e, code, message)  # refused: when to retry
            trailing += ((convert.REQUEST_ID_KEY, rid),) if rid else ()
            if trailing:
                context.set_trailing_metadata(trailing)
            await context.abort(code, message)

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
        self._budget = MemoryBudget(limits.max_decode_bytes)

    def attach(self, engine) -> None:
        """Start serving from ``engine`` (called once models and index are loaded)."""
        cfg = self._batcher_config
        if cfg is not None and cfg.enabled:
            self._batcher = MicroBatcher(
                self._lookup_batch, self._executor, max_batch=cfg.max_batch,
                max_wait_ms=cfg.max_wait_ms, max_queue=cfg.max_queue,
                max_inflight=cfg.max_inflight,
                on_batch=self._metrics.observe_batch if self._metrics else None,
                max_queue_delay_ms=cfg.max_queue_delay_ms)
        self.engine = engine

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    def _admit(self, n: int, remaining: float | None):
        """Admit a lookup's ``n`` items before any work is done on them, or refuse the call at
        once (Overloaded with a retry hint) when the measured capacity cannot serve them within
        the batcher's queue-delay budget or before the deadline (``remaining`` seconds)."""
        if self._batcher is None:
            return contextlib.nullcontext()
        return self._batcher.admit(n, remaining)

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

    async def _lookup_items(self, items, params: LookupParams,
                            context=None) -> list[LookupResult | Exception]:
        """Each item is decoded and embedded while it holds its share of the memory budget,
        so a batch of large images is decoded as room frees up, never all at once."""
        if self._metrics is not None:
            self._metrics.items.inc(len(items))
        costs = [memory_cost(self.engine.spaces, item, self.limits) for item in items]
        wait = self.limits.max_decode_wait_s
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None:
            wait = min(wait, max(0.0, remaining))

        async def one(item, cost) -> LookupResult | Exception:
            try:
                async with self._budget.hold(cost, wait):
                    (p,) = await self._call(self.engine.prepare, [item])
                    if not isinstance(p, Prepared):
                        return p
                    if self._batcher is None:
                        (result,) = await self._call(self._lookup_batch, [(p, params)])
                    else:
                        (result,) = await self._batcher.submit([(p, params)], admitted)
                    return result
            except DedupError as e:  # this item's own: budget wait, queue full
                return e

        admitted = self._admit(len(items), remaining)
        with admitted:
            return list(await asyncio.gather(*(one(item, cost)
                                               for item, cost in zip(items, costs))))

    @_rpc
    async def Lookup(self, request: pb.LookupRequest, context) -> pb.LookupResponse:
        params = convert.lookup_params(request, self.limits)
        (result,) = await self._lookup_items([convert.item_from_proto(request.item)], params,
                                             context)
        if isinstance(result, Exception):
            raise result
        return convert.lookup_result_to_proto(result)

    @_rpc
    async def BatchLookup(self, request: pb.BatchLookupRequest, context) -> pb.BatchLookupResponse:
        self.limits.check_batch(len(request.items))
        params = convert.lookup_params(request, self.limits)
        items = [convert.item_from_proto(x) for x in request.items]
        results = await self._lookup_items(items, params, context)
        return convert.batch_results_to_proto(results, self.engine.snapshot_version,
                                              current_request_id.get())

    # ------------------------------------------------------------------ writes
    # Each write records the caller's name (auth) and the request's reason in the op log.
    @_rpc
    async def AddSeeds(self, request: pb.AddSeedsRequest, context) -> pb.AddSeedsResponse:
        self.limits.check_batch(len(request.items))
        items = [convert.item_from_proto(x) for x in request.items]
        labels = [convert.label_from_proto(x) for x in request.labels]
        remaining = context.time_remaining() if context is not None else None
        wait = self.limits.max_decode_wait_s if remaining is None else \
            min(self.limits.max_decode_wait_s, max(0.0, remaining))
        results = []
        # A write decodes its items together: it holds the memory budget for all of them, in
        # consecutive chunks that fit it (each chunk one commit; a retried call is idempotent,
        # an item already added keeps its seed). Returns only after the last LMDB commit: the
        # response is the acknowledgement.
        for chunk in _chunks_within(items, [memory_cost(self.engine.spaces, it, self.limits)
                                            for it in items], self._budget.limit):
            async with self._budget.hold(sum(cost for _, cost in chunk), wait):
                results += await self._call(
                    self.engine.add_seeds, [it for it, _ in chunk], labels,
                    source=request.source, note=request.note, actor=_actor(),
                    reason=request.reason, merge_labels=request.merge_labels)
        return convert.add_results_to_proto(results, current_request_id.get())

    @_rpc
    async def RemoveSeeds(self, request: pb.RemoveSeedsRequest, context) -> pb.RemoveSeedsResponse:
        self.limits.check_batch(len(request.seed_ids))
        results = await self._call(self.engine.remove_seeds, list(request.seed_ids),
                                   actor=_actor(), reason=request.reason)
        return convert.remove_results_to_proto(results)

    @_rpc
    async def RelabelSeed(self, request: pb.RelabelSeedRequest, context) -> pb.RelabelSeedResponse:
        labels = [convert.label_from_proto(x) for x in request.labels]
        seed = await self._call(self.engine.relabel, request.seed_id, labels, actor=_actor(),
                                reason=request.reason)
        return pb.RelabelSeedResponse(seed=convert.seed_to_proto(seed))

    @_rpc
    async def RestoreSeed(self, request: pb.RestoreSeedRequest, context) -> pb.RestoreSeedResponse:
        seed, restored = await self._call(self.engine.restore_seed, request.seed_id,
                                          actor=_actor(), reason=request.reason)
        return pb.RestoreSeedResponse(seed=convert.seed_to_proto(seed), restored=restored)

    # ------------------------------------------------------------------ reads
    @_rpc
    async def GetSeed(self, request: pb.GetSeedRequest, context) -> pb.GetSeedResponse:
        seed = await self._call(self.engine.get_seed, request.seed_id)
        return pb.GetSeedResponse(seed=convert.seed_to_proto(seed))

    @_rpc
    async def ListSeeds(self, request: pb.ListSeedsRequest, context) -> pb.ListSeedsResponse:
        seeds, next_after = await self._call(
            self.engine.list_seeds, after=convert.page_token_to_after(request.page_token),
            limit=request.page_size or convert.DEFAULT_PAGE_SIZE,
            where=convert.seed_filter(request))
        return pb.ListSeedsResponse(
            seeds=[convert.seed_to_proto(s) for s in seeds],
            next_page_token=str(next_after) if next_after is not None else "")

    @_rpc
    async def GetSeedHistory(self, request: pb.GetSeedHistoryRequest, context,
                             ) -> pb.GetSeedHistoryResponse:
        seed, ops = await self._call(self.engine.history, request.seed_id)
        return pb.GetSeedHistoryResponse(seed=convert.seed_to_proto(seed),
                                         ops=[convert.op_to_proto(op) for op in ops])

    @_rpc
    async def ListOps(self, request: pb.ListOpsRequest, context) -> pb.ListOpsResponse:
        before = convert.page_token_to_after(request.page_token) or None
        ops, next_before = await self._call(
            self.engine.ops, convert.op_filter(request), before=before,
            limit=request.page_size or convert.DEFAULT_PAGE_SIZE)
        return pb.ListOpsResponse(ops=[convert.op_to_proto(op) for op in ops],
                                  next_page_token=str(next_before) if next_before else "")

    @_rpc
    async def GetSeedContent(self, request: pb.GetSeedContentRequest, context,
                             ) -> pb.GetSeedContentResponse:
        return convert.content_to_proto(await self._call(self.engine.content, request.seed_id))

    @_rpc
    async def WhoAmI(self, request: pb.WhoAmIRequest, context) -> pb.WhoAmIResponse:
        principal = current_principal.get()
        return pb.WhoAmIResponse(name=principal.actor if principal else "",
                                 role=principal.role if principal else "")

    @_rpc
    async def Stats(self, request: pb.StatsRequest, context) -> pb.StatsResponse:
        return convert.stats_to_proto(await self._call(self.engine.stats), self.limits,
                                      self.engine.shadow)

    # ------------------------------------------------------------------ admin
    @_rpc
    async def Reload(self, request: pb.ReloadRequest, context) -> pb.ReloadResponse:
        return pb.ReloadResponse(snapshot_version=await self._call(self.engine.reload))

    @_rpc
    async def PublishSnapshot(self, request, context) -> pb.PublishSnapshotResponse:
        return pb.PublishSnapshotResponse(
            snapshot_version=await self._call(self.engine.publish_snapshot))


    # ------------------------------------------------------------------ changing the model
    # Admin only (auth.py); each change is one LMDB transaction with its op-log entry.
    @_rpc
    async def AddShadowSpace(self, request: pb.AddShadowSpaceRequest, context,
                             ) -> pb.AddShadowSpaceResponse:
        sc = convert.shadow_space_config(request, self.engine.config)
        space = await self._call(self.engine.add_shadow_space, sc, actor=_actor(),
                                 reason=request.reason)
        return pb.AddShadowSpaceResponse(space=space.name, model_id=space.model_id,
                                         dim=space.dim, dtype=space.dtype)

    @_rpc
    async def WriteEmbeddings(self, request: pb.WriteEmbeddingsRequest, context,
                              ) -> pb.WriteEmbeddingsResponse:
        space = self.engine.spaces.get(request.space)
        if space is None:
            raise NotFound(f"space {request.space!r} is not served")
        width = space.dim // 8 if space.dtype == "uint8" else space.dim
        ids, vecs, progress = convert.embeddings_from_proto(request, space.dtype, width)
        written = await self._call(self.engine.write_embeddings, request.space,
                                   request.model_id, ids, vecs,
                                   (request.space, progress) if progress is not None else None)
        return pb.WriteEmbeddingsResponse(written=written)

    @_rpc
    async def PromoteSpace(self, request: pb.PromoteSpaceRequest, context,
                           ) -> pb.PromoteSpaceResponse:
        replaced = await self._call(self.engine.promote, request.space,
                                    replaces=request.replaces or None, actor=_actor(),
                                    reason=request.reason)
        return pb.PromoteSpaceResponse(replaced=replaced or "")

    @_rpc
    async def RollbackSpace(self, request: pb.RollbackSpaceRequest, context,
                            ) -> pb.RollbackSpaceResponse:
        live = await self._call(self.engine.rollback, request.space or None, actor=_actor(),
                                reason=request.reason)
        return pb.RollbackSpaceResponse(live_space=live)

    @_rpc
    async def RetireSpace(self, request: pb.RetireSpaceRequest, context,
                          ) -> pb.RetireSpaceResponse:
        await self._call(self.engine.retire, request.space, actor=_actor(),
                         reason=request.reason)
        return pb.RetireSpaceResponse()


def _chunks_within(items: list, costs: list[int], limit: int) -> list[list[tuple]]:
    """Consecutive (item, cost) chunks whose costs sum to at most ``limit`` (an item costing
    more than ``limit`` alone is a chunk of its own)."""
    chunks: list[list[tuple]] = []
    total = 0
    for item, cost in zip(items, costs):
        if not chunks or (total + cost > limit and chunks[-1]):
            chunks.append([])
            total = 0
        chunks[-1].append((item, cost))
        total += cost
    return chunks

