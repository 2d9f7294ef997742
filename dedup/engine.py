"""The core assembled: items in, seeds and verdicts out. A thin façade over named parts.

How a lookup flows: ``prepare`` (dedup/embed/spaces.py -> dedup/items.py: decode, validate,
normalise, sha256) -> ``lookup_prepared``: ``embed`` (one model pass per space,
dedup/embed/spaces.py) -> ``IndexSet.search`` (one consistent set of sharded FAISS indexes,
dedup/index/live.py -> sharded.py -> shard.py) -> seed records and exact match from LMDB
(dedup/store.py) -> ``propagate`` (dedup/propagate.py: neighbours -> verdicts). The service's
micro-batcher calls ``lookup_prepared`` too: there is one lookup path.

One Engine per process owns the LMDB store (the single writer, DESIGN invariant 4). A write is
committed (fsync) to LMDB before it is acknowledged and before the indexes see it (invariant 2);
the live index applies it under the same lock a reload swaps under, and repairs itself from LMDB
if applying fails, so an acknowledged seed is always searchable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dedup.config import Config
from dedup.embed.base import Embedder
from dedup.embed.spaces import Space, embed, open_spaces, prepare, thresholds
from dedup.errors import DedupError, InvalidArgument, NotFound
from dedup.index.live import LiveIndex
from dedup.items import Prepared
from dedup.propagate import propagate
from dedup.store import NewSeed, SeedStore
from dedup.types import (AddResult, EngineStats, Item, Label, LookupParams, LookupResult,
                         OpEntry, OpFilter, RemoveResult, RemoveStatus, Seed, SeedContent,
                         SeedFilter, SpaceStats, check_labels)
from dedup.verify import Cascade

log = logging.getLogger(__name__)


class Engine:
    """Seeds in, verdicts out. Thread-safe: lookups run concurrently, writes are serialised."""

    def __init__(self, config: Config, store: SeedStore, spaces: Mapping[str, Space],
                 live: LiveIndex):
        self.config = config
        self.store = store
        self.spaces = dict(spaces)
        self.live = live
        self._thresholds = thresholds(self.spaces)
        self.cascade = Cascade({n: s.config.verify for n, s in self.spaces.items()
                                if s.config.verify is not None}, config.limits, store)

    @classmethod
    def open(cls, config: Config, embedders: Mapping[str, Embedder] | None = None) -> "Engine":
        """Load models and the store, then the newest intact snapshot plus the op log after it."""
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        store = SeedStore(data_dir / "store", map_size=config.store.map_size)
        try:
            spaces = open_spaces(config, embedders)
            for name, space in spaces.items():
                store.register_space(name, space.model_id, space.dim, space.dtype)
            live = LiveIndex.open(data_dir / "index", store, spaces)
            return cls(config, store, spaces, live)
        except BaseException:
            store.close()
            raise

    @property
    def snapshot_version(self) -> str:
        return self.live.current.version

    def reload(self) -> str:
        """Swap in the newest published snapshot without downtime; no write is lost."""
        return self.live.reload()

    def publish_snapshot(self) -> str:
        """Write the live indexes as a new snapshot covering the op log up to now."""
        return self.live.publish().version

    def close(self) -> None:
        self.live.close()
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ lookups
    def prepare(self, items: Sequence[Item]) -> list[Prepared | DedupError]:
        """Decode, validate and normalise each item; a bad item yields its error in place."""
        return prepare(self.spaces, items, self.config.limits)

    def lookup(self, items: Sequence[Item], top_k: int = 10, labels: Sequence[str] | None = None,
               threshold: float | Mapping[str, float] | None = None,
               ) -> list[LookupResult | DedupError]:
        """Prepare, embed and search a batch; bad items get their error in place."""
        self.config.limits.check_batch(len(items))
        params = LookupParams(top_k, tuple(labels) if labels else None, threshold)
        prepared = self.prepare(items)
        good = [p for p in prepared if isinstance(p, Prepared)]
        results = iter(self.lookup_prepared(good, params) if good else ())
        return [next(results) if isinstance(p, Prepared) else p for p in prepared]

    def lookup_prepared(self, prepared: Sequence[Prepared],
                        params: LookupParams | Sequence[LookupParams]) -> list[LookupResult]:
        """Verdicts for prepared items: one embedding pass, one search of one index set, then
        label propagation with each item's own parameters (``params``: one for all, or one
        per item)."""
        if isinstance(params, LookupParams):
            params = [params] * len(prepared)
        if len(params) != len(prepared):
            raise InvalidArgument(f"{len(params)} parameter sets for {len(prepared)} items")
        for p in params:
            self.config.limits.check_top_k(p.top_k)
        if not prepared:
            return []
        embedded = embed(self.spaces, prepared, query=True)
        with self.live.acquire() as indexes:
            hits = indexes.search(embedded, len(prepared), max(p.top_k for p in params))
            version = indexes.version
        exact_ids = [self.store.find_sha256(p.sha256) for p in prepared]
        seeds = self.store.get_many({sid for h in hits for _, sid, _ in h}
                                    | {i for i in exact_ids if i is not None})
        searched = tuple(embedded.rows)
        hits = [_best_hits(h, p.top_k) for p, h in zip(params, hits)]
        limits = [self._thresholds.with_override(p.threshold) for p in params]
        verified = (self.cascade.apply(prepared, hits, [t.per_space for t in limits])
                    if self.cascade else [{}] * len(prepared))
        results = []
        for row, (p, h, exact_id, limit) in enumerate(zip(params, hits, exact_ids, limits)):
            exact = seeds.get(exact_id) if exact_id is not None else None
            verdicts, neighbors = propagate(h, seeds, limit, exact, p.labels, verified[row])
            results.append(LookupResult(
                verdicts=verdicts,
                neighbors=neighbors[:p.top_k] if exact is None else neighbors[:p.top_k + 1],
                exact_match=exact.seed_id if exact is not None and not exact.removed else None,
                snapshot_version=version,
                spaces=searched,
                hashes=tuple(embedded.hashes.get(row, ())),
            ))
        return results

    # ------------------------------------------------------------------ writes
    # Every write names its actor and may give a reason; both go into the op log, the audit
    # trail (GetSeedHistory, ListOps). Free-text fields are bounded by Limits, checked here.
    def add_seeds(self, items: Sequence[Item], labels: Sequence[Label], source: str = "",
                  note: str = "", actor: str = "", reason: str = "",
                  merge_labels: bool = False) -> list[AddResult | DedupError]:
        """Add items as seeds; durable in LMDB before return, then searchable at once. An item
        already in the bank (same content) keeps its seed; ``merge_labels`` adds the labels
        given to that seed, otherwise its labels stay as they are (AddResult says which)."""
        limits = self.config.limits
        limits.check_batch(len(items))
        for field, value in (("source", source), ("note", note), ("reason", reason)):
            limits.check_text(field, value)
        labels = check_labels(labels)
        prepared = self.prepare(items)
        good = [(i, p) for i, p in enumerate(prepared) if isinstance(p, Prepared)]
        out: list[AddResult | DedupError] = list(prepared)  # errors stay in place
        if not good:
            return out
        embedded = embed(self.spaces, [p for _, p in good])
        new = [NewSeed(
            labels=labels, sha256=p.sha256, modalities=p.modalities,
            embeddings={n: v for n in self.spaces if (v := embedded.vector(n, j)) is not None},
            source=source, note=note,
            content=p.raw_image if self.config.store.keep_content else None,
            text=p.text, actor=actor, hash_only=bool(p.hashes) and p.image is None,
            reason=reason, aux=self.cascade.seed_data(p) if self.cascade else {},
        ) for j, (_, p) in enumerate(good)]
        with self.live.writing():
            # commit + fsync: from here the write is acknowledged
            results = self.store.add_seeds(new, merge_labels=merge_labels)
            self.live.added(_vectors_by_space(results, new))
        for (i, _), result in zip(good, results):
            out[i] = result
        return out

    def remove_seeds(self, ids: Sequence[int], actor: str = "", reason: str = "",
                     ) -> list[RemoveResult]:
        """Retire seeds: gone from LMDB's active set and from every index at once. One result
        per id (removed now, already removed, not found): an unknown id fails only itself."""
        if not ids:
            raise InvalidArgument("no seed ids given")
        self.config.limits.check_text("reason", reason)
        with self.live.writing():
            results = self.store.remove_seeds([int(i) for i in ids], actor=actor, reason=reason)
            self.live.removed(np.asarray([r.seed_id for r in results
                                         if r.status is RemoveStatus.REMOVED], dtype=np.int64))
        return results

    def relabel(self, seed_id: int, labels: Sequence[Label], actor: str = "",
                reason: str = "") -> Seed:
        """Replace a seed's labels; verdicts follow at once (labels are read from LMDB)."""
        labels = check_labels(labels)
        self.config.limits.check_text("reason", reason)
        with self.live.writing():
            return self.store.relabel(int(seed_id), labels, actor=actor, reason=reason)

    def restore_seed(self, seed_id: int, actor: str = "", reason: str = "") -> tuple[Seed, bool]:
        """Undo a removal: the seed is active again under its own id and searchable at once
        (its vectors were kept aside at removal; a seed removed before that is embedded again
        from its stored content). Returns (seed, restored now); an active seed is unchanged."""
        self.config.limits.check_text("reason", reason)
        seed = self.get_seed(seed_id)
        vectors = None
        if seed.removed and not self.store.kept_on_removal(seed.seed_id):
            vectors = self._embed_stored(seed)
        with self.live.writing():
            seed, restored, kept = self.store.restore_seed(seed.seed_id, actor=actor,
                                                           reason=reason, vectors=vectors)
            if restored:
                ids = np.asarray([seed.seed_id], dtype=np.int64)
                self.live.added({name: (ids, vec[None]) for name, vec in kept.items()
                                 if name in self.spaces})
        return seed, restored

    def _embed_stored(self, seed: Seed) -> dict[str, np.ndarray] | None:
        """A seed's vectors computed again from its stored content (None when it has none)."""
        image = self.store.content(seed.seed_id) if seed.has_content else None
        if image is None and seed.text is None:
            return None
        (p,) = self.prepare([Item(image=image, text=seed.text)])
        if not isinstance(p, Prepared):
            raise p
        embedded = embed(self.spaces, [p])
        return {n: v for n in self.spaces if (v := embedded.vector(n, 0)) is not None}

    # ------------------------------------------------------------------ reads
    def get_seed(self, seed_id: int) -> Seed:
        seed = self.store.get(int(seed_id))
        if seed is None:
            raise NotFound(f"seed {seed_id} does not exist")
        return seed

    def list_seeds(self, label: str | None = None, after: int = 0, limit: int = 100,
                   include_removed: bool = False, where: SeedFilter | None = None,
                   ) -> tuple[list[Seed], int | None]:
        """A page of seeds in id order after ``after``, and the next page's cursor; ``where``
        filters by label, source, actor and date (a filtered page may come back short)."""
        self.config.limits.check_page_size(limit)
        return self.store.list_seeds(label=label, after=after, limit=limit,
                                     include_removed=include_removed, where=where,
                                     max_bytes=self.config.limits.max_page_bytes)

    def history(self, seed_id: int) -> tuple[Seed, list[OpEntry]]:
        """A seed and every op-log entry about it, oldest first: who did what, when, why."""
        seed = self.get_seed(seed_id)
        return seed, self.store.history(seed.seed_id)

    def ops(self, where: OpFilter | None = None, before: int | None = None, limit: int = 100,
            ) -> tuple[list[OpEntry], int | None]:
        """A page of the audit trail, newest first, and the cursor of the next page."""
        self.config.limits.check_page_size(limit)
        if before is not None and before < 1:
            raise InvalidArgument(f"before must be >= 1, got {before}")
        return self.store.ops(where, before=before, limit=limit)

    def content(self, seed_id: int) -> SeedContent:
        """A seed's stored content: its original image bytes, else its (normalised) text."""
        seed = self.get_seed(seed_id)
        data = self.store.content(seed.seed_id) if seed.has_content else None
        if data is not None:
            return SeedContent(seed.seed_id, bytes(data), media_type(data))
        if seed.text is not None:
            return SeedContent(seed.seed_id, seed.text.encode(), "text/plain; charset=utf-8")
        why = "it was added by hash only" if seed.hash_only else "its content was not kept"
        raise NotFound(f"seed {seed.seed_id} has no stored content: {why}")

    def stats(self) -> EngineStats:
        """Seed counts, op-log position, snapshot, and each space as it serves now."""
        s = self.store.stats()
        current = self.live.current
        return EngineStats(
            seeds_active=s["seeds_active"], seeds_removed=s["seeds_removed"],
            labels=dict(s["labels"]), op_seq=s["last_seq"], snapshot_version=current.version,
            snapshot_op_seq=current.manifest.op_seq if current.manifest else -1,
            spaces={name: SpaceStats(
                model_id=sp.model_id, dim=sp.dim, metric=sp.metric,
                ntotal=current.indexes[name].ntotal, factory=current.indexes[name].factory,
                n_shards=current.indexes[name].n_shards, threshold=sp.config.threshold,
                device=sp.embedder.device, plan_note=current.notes.get(name, ""))
                for name, sp in self.spaces.items()},
        )


def _vectors_by_space(ids: Sequence[tuple[int, bool]], seeds: Sequence[NewSeed],
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """space -> (ids, vectors) of the seeds the store created (not exact duplicates)."""
    per_space: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    for (sid, created), seed in zip(ids, seeds):
        if created:
            for name, vec in seed.embeddings.items():
                got_ids, vecs = per_space.setdefault(name, ([], []))
                got_ids.append(sid)
                vecs.append(vec)
    return {name: (np.asarray(i, dtype=np.int64), np.stack(v)) for name, (i, v) in per_space.items()}


_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp"),
          (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))


def media_type(data: bytes) -> str:
    """The media type of stored image bytes, from their signature."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((t for magic, t in _MAGIC if data.startswith(magic)), "application/octet-stream")


def _best_hits(hits: list[tuple[str, int, float]], k: int) -> list[tuple[str, int, float]]:
    """Each seed once per space at its best score (an item may search with several vectors
    per space), and at most ``k`` seeds per space, best first."""
    per_space: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    out = []
    for hit in sorted(hits, key=lambda h: -h[2]):
        key = (hit[0], hit[1])
        if key in seen or per_space.get(hit[0], 0) >= k:
            continue
        seen.add(key)
        per_space[hit[0]] = per_space.get(hit[0], 0) + 1
        out.append(hit)
    return out
