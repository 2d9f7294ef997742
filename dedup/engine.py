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

from dedup.config import Config, SpaceConfig
from dedup.embed.base import Embedder
from dedup.embed import create_embedder
from dedup.embed.spaces import Space, embed, prepare, thresholds
from dedup.errors import DedupError, InvalidArgument, ModelMismatch, NotFound
from dedup.index.live import LiveIndex
from dedup.items import Prepared
from dedup.propagate import propagate
from dedup.shadow import ShadowTally, compare
from dedup.store import NewSeed, SeedStore
from dedup.types import (AddResult, EngineStats, Item, Label, LookupParams, LookupResult,
                         OpEntry, OpFilter, OpKind, RemoveResult, RemoveStatus, Seed, SeedContent,
                         SeedFilter, SpaceStats, check_labels)
from dedup.verify import Cascade

log = logging.getLogger(__name__)


class Engine:
    """Seeds in, verdicts out. Thread-safe: lookups run concurrently, writes are serialised."""

    def __init__(self, config: Config, store: SeedStore, spaces: Mapping[str, Space],
                 live: LiveIndex, roles: Mapping[str, str] | None = None):
        self.config = config
        self.store = store
        # Swapped whole (never mutated) when a space is added, promoted or retired, so a call
        # reads one consistent pair. roles: "live" spaces decide verdicts, "shadow" ones are
        # searched and compared only (dedup/shadow.py); seeds are embedded in both.
        self.spaces = dict(spaces)
        self.roles = dict(roles) if roles is not None else {
            n: s.config.role for n, s in self.spaces.items()}
        self.shadow = ShadowTally()
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
            spaces, roles = _served_spaces(config, store, embedders)
            for name, space in spaces.items():
                store.register_space(name, space.model_id, space.dim, space.dtype)
            live = LiveIndex.open(data_dir / "index", store, spaces)
            return cls(config, store, spaces, live, roles)
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
        spaces, roles = self.spaces, self.roles
        embedded = embed(spaces, prepared, query=True)
        with self.live.acquire() as indexes:
            hits = indexes.search(embedded, len(prepared), max(p.top_k for p in params))
            version = indexes.version
        # Shadow spaces' hits are set aside here: they never reach the verdict below.
        hits, shadow_hits = _split_shadow(hits, roles)
        exact_ids = [self.store.find_sha256(p.sha256) for p in prepared]
        seeds = self.store.get_many({sid for h in hits for _, sid, _ in h}
                                    | {i for i in exact_ids if i is not None})
        searched = tuple(n for n in embedded.rows if roles.get(n) != "shadow")
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
                # top_k per space (``_best_hits``): spaces' scales differ, so one cut over
                # all of them would let one space's unrelated seeds crowd out another's
                neighbors=neighbors,
                exact_match=exact.seed_id if exact is not None and not exact.removed else None,
                snapshot_version=version,
                spaces=searched,
                hashes=tuple(embedded.hashes.get(row, ())),
            ))
        if shadow_hits is not None:
            self._compare_shadow(shadow_hits, params, limits, results,
                                 sorted(n for n, r in roles.items() if r == "shadow"))
        return results

    def _compare_shadow(self, shadow_hits: list[list[tuple[str, int, float]]],
                        params: Sequence[LookupParams], limits, results: list[LookupResult],
                        names: Sequence[str]) -> None:
        """Propagate each shadow space's hits alone and count how its verdict compares with
        the live one (metrics, logs). A failure here is logged, never the caller's."""
        try:
            seeds = self.store.get_many({sid for h in shadow_hits for _, sid, _ in h})
            outcomes = []
            for p, h, limit, result in zip(params, shadow_hits, limits, results):
                for name in names:
                    mine = _best_hits([x for x in h if x[0] == name], p.top_k)
                    verdicts, _ = propagate(mine, seeds, limit, None, p.labels, {})
                    outcomes.append(compare(name, result.verdicts, verdicts))
            self.shadow.record(outcomes)
        except Exception:
            log.exception("shadow comparison failed; live verdicts unaffected")

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
        spaces = self.spaces
        embedded = embed(spaces, [p for _, p in good])
        aux = [self.cascade.seed_data(p) if self.cascade else {} for _, p in good]
        with self.live.writing():
            # Every space served when the write commits gets the seed's vector: a shadow space
            # added while the items embedded is embedded now, a retired one is left out.
            added = {n: s for n, s in self.spaces.items() if n not in spaces}
            late = embed(added, [p for _, p in good]) if added else None
            new = [NewSeed(
                labels=labels, sha256=p.sha256, modalities=p.modalities,
                embeddings={n: v for n in self.spaces
                            if (v := (late if n in added else embedded).vector(n, j)) is not None},
                source=source, note=note,
                content=p.raw_image if self.config.store.keep_content else None,
                text=p.text, actor=actor, hash_only=bool(p.hashes) and p.image is None,
                reason=reason, aux=aux[j],
            ) for j, (_, p) in enumerate(good)]
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
        elif seed.removed and set(self.spaces) - set(self.store.retired_spaces(seed.seed_id)):
            # spaces added since its removal (a new model in shadow) embed it from its content
            vectors = self._embed_stored(seed)
        with self.live.writing():
            seed, restored, kept = self.store.restore_seed(seed.seed_id, actor=actor,
                                                           reason=reason, vectors=vectors)
            if restored:
                ids = np.asarray([seed.seed_id], dtype=np.int64)
                late = {n: v for n, v in (vectors or {}).items()
                        if n not in kept and n in self.spaces}
                for name, vec in late.items():
                    self.store.put_embeddings(name, self.spaces[name].model_id, ids, vec[None])
                self.live.added({name: (ids, vec[None]) for name, vec in {**kept, **late}.items()
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

    # ------------------------------------------------------------------ spaces
    # Changing the model: a new space is added in shadow (searched, compared, never deciding),
    # filled by a re-embed (index_builder/reembed.py), then promoted in place of a live space,
    # which stays served in shadow for a rollback until it is retired. Each step is one LMDB
    # transaction with its op-log entry (actor, reason), under the lock writes take.
    def add_shadow_space(self, space_config: SpaceConfig, actor: str = "", reason: str = "",
                         ) -> Space:
        """Serve a new space in shadow from now on (seeds added from here are embedded in it
        too). Adding the same model again is a no-op, so a resumed re-embed may call it."""
        self.config.limits.check_text("reason", reason)
        name = space_config.model.split("@", 1)[0]
        current = self.spaces.get(name)
        if current is not None:
            if current.config.model != space_config.model:
                raise ModelMismatch(f"space {name} is served from {current.config.model}, "
                                    f"not {space_config.model}")
            return current
        if space_config.replaces is not None and space_config.replaces not in self.spaces:
            raise NotFound(f"space {space_config.replaces!r} (to replace) is not served")
        sc = space_config.model_copy(update={"role": "shadow"})
        space = Space(name, create_embedder(sc.model, device=self.config.device), sc)
        with self.live.writing():
            self.store.register_space(name, space.model_id, space.dim, space.dtype)
            self.store.update_spaces(
                {name: {"role": "shadow", "model": sc.model, "config": sc.model_dump(mode="json"),
                        "replaces": sc.replaces}},
                OpKind.SHADOW, space=name, replaces=sc.replaces or "", actor=actor, reason=reason)
            self.live.add_space(space)
            self._set_spaces({**self.spaces, name: space}, {**self.roles, name: "shadow"})
        log.info("space %s added in shadow", name, extra={"model_id": space.model_id})
        return space

    def write_embeddings(self, space: str, model_id: str, ids: Sequence[int],
                         vectors: np.ndarray, progress: tuple[str, Mapping] | None = None,
                         ) -> int:
        """Store and index vectors a re-embed computed (active seeds only: one removed
        meanwhile gets none), with the run's progress record; returns how many were kept."""
        if space not in self.spaces:
            raise NotFound(f"space {space!r} is not served")
        with self.live.writing():
            written = self.store.put_embeddings(space, model_id, ids, vectors, progress)
            if len(written):
                pos = {int(i): j for j, i in enumerate(ids)}
                vecs = np.asarray(vectors)[[pos[int(i)] for i in written]]
                self.live.put(space, written, vecs)
        return len(written)

    def promote(self, space: str, replaces: str | None = None, actor: str = "",
                reason: str = "") -> str | None:
        """Make a shadow space decide verdicts; the space it replaces (given, or recorded
        when the shadow space was added) goes to shadow, kept for a rollback. Refused while
        any active seed with content lacks a vector in it. Returns the replaced space."""
        self.config.limits.check_text("reason", reason)
        with self.live.writing():
            self._check_served(space)
            if self.roles[space] == "live":
                raise InvalidArgument(f"space {space} is already live")
            replaces = (replaces or self._record(space).get("replaces")
                        or self.spaces[space].config.replaces or None)
            if replaces is not None:
                self._check_served(replaces)
                if self.roles[replaces] != "live":
                    raise InvalidArgument(f"space {replaces} (to replace) is not live")
            # Every seed it can embed must be in it; those a re-embed could not read are
            # reported by that run and left out (they would not match by it anyway).
            rejected = (self.store.reembed_progress(space) or {}).get("rejected_ids", ())
            missing, _ = self.store.missing_embeddings(
                space, self.spaces[space].embedder.modalities, 0, limit=1, skip=rejected)
            if missing:
                raise InvalidArgument(
                    f"space {space} has no vector yet for seed {missing[0]} (and maybe more): "
                    "finish the re-embed first (dedup-build reembed resumes where it stopped)")
            changes = {space: {"role": "live", "replaces": replaces}}
            if replaces is not None:
                changes[replaces] = {"role": "shadow", "replaces": None}
            self.store.update_spaces(changes, OpKind.PROMOTE, space=space,
                                     replaces=replaces or "", actor=actor, reason=reason)
            self._set_spaces(self.spaces, {**self.roles, **{n: c["role"]
                                                             for n, c in changes.items()}})
        log.info("space %s promoted", space, extra={"replaces": replaces, "actor": actor})
        return replaces

    def rollback(self, space: str | None = None, actor: str = "", reason: str = "") -> str:
        """Undo the promotion of ``space`` (default: the one live space that replaced
        another still served): the replaced space is live again, ``space`` back in shadow.
        Returns the space live again."""
        self.config.limits.check_text("reason", reason)
        with self.live.writing():
            if space is None:
                promoted = [n for n, r in self.roles.items()
                            if r == "live" and self._record(n).get("replaces") in self.spaces]
                if len(promoted) != 1:
                    raise InvalidArgument("name the promoted space to roll back (candidates: "
                                          f"{', '.join(promoted) or 'none'})")
                space = promoted[0]
            self._check_served(space)
            old = self._record(space).get("replaces")
            if self.roles[space] != "live" or not old:
                raise InvalidArgument(f"space {space} was not promoted in place of another")
            if old not in self.spaces:
                raise NotFound(f"space {old} that {space} replaced was retired: nothing to "
                               "roll back to")
            self.store.update_spaces({old: {"role": "live", "replaces": None},
                                      space: {"role": "shadow", "replaces": old}},
                                     OpKind.ROLLBACK, space=old, replaces=space, actor=actor,
                                     reason=reason)
            self._set_spaces(self.spaces, {**self.roles, old: "live", space: "shadow"})
        log.info("space %s rolled back to %s", space, old, extra={"actor": actor})
        return old

    def retire(self, space: str, actor: str = "", reason: str = "") -> None:
        """Stop serving a shadow space and drop its vectors (a live one must be replaced or
        rolled back first). A config still listing it is not served it again."""
        self.config.limits.check_text("reason", reason)
        with self.live.writing():
            self._check_served(space)
            if self.roles[space] == "live":
                raise InvalidArgument(f"space {space} is live: promote its replacement (or roll "
                                      "back) before retiring it")
            self.store.retire_space(space, actor=actor, reason=reason)
            self.live.drop_space(space)
            self._set_spaces({n: s for n, s in self.spaces.items() if n != space},
                             {n: r for n, r in self.roles.items() if n != space})
        log.info("space %s retired", space, extra={"actor": actor})

    def _check_served(self, space: str) -> None:
        if space not in self.spaces:
            raise NotFound(f"space {space!r} is not served")

    def _record(self, space: str) -> dict:
        return self.store.spaces().get(space, {})

    def _set_spaces(self, spaces: Mapping[str, Space], roles: Mapping[str, str]) -> None:
        self._thresholds = thresholds(spaces)
        self.roles = dict(roles)
        self.spaces = dict(spaces)

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
                device=sp.embedder.device, plan_note=current.notes.get(name, ""),
                role=self.roles.get(name, "live"))
                for name, sp in self.spaces.items() if name in current.indexes},
        )


def _served_spaces(config: Config, store: SeedStore,
                   embedders: Mapping[str, Embedder] | None,
                   ) -> tuple[dict[str, Space], dict[str, str]]:
    """The spaces to serve and their roles: the config's enabled spaces less those an admin
    retired, plus spaces added at run time (in shadow, then maybe promoted) recorded in the
    store; a role the store records (promote, rollback) wins over the config's."""
    registered, retired = store.spaces(), store.retired_space_names()
    chosen: dict[str, SpaceConfig] = {}
    for name, sc in config.enabled_spaces.items():
        if name in retired:
            log.warning("space %s was retired; not serving it (remove it from the config, or "
                        "re-embed it to bring it back)", name)
        else:
            chosen[name] = sc
    for name, info in registered.items():
        if name not in chosen and info.get("role") in ("live", "shadow") and info.get("config"):
            chosen[name] = SpaceConfig.model_validate(info["config"])
    spaces = {name: Space(name, (embedders or {}).get(name)
                          or create_embedder(sc.model, device=config.device), sc)
              for name, sc in chosen.items()}
    roles = {name: registered.get(name, {}).get("role") or sc.role for name, sc in chosen.items()}
    if spaces and not any(r == "live" for r in roles.values()):
        raise InvalidArgument("no live space: every served space is in shadow")
    return spaces, roles


def _split_shadow(hits: list[list[tuple[str, int, float]]], roles: Mapping[str, str],
                  ) -> tuple[list[list[tuple[str, int, float]]], list[list] | None]:
    """(live hits, shadow hits) per row; shadow hits are None when no space is in shadow."""
    if not any(r == "shadow" for r in roles.values()):
        return hits, None
    live = [[h for h in row if roles.get(h[0]) != "shadow"] for row in hits]
    shadow = [[h for h in row if roles.get(h[0]) == "shadow"] for row in hits]
    return live, shadow


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
