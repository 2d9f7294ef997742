"""The live indexes: every space's sharded index as one set, kept equal to LMDB.

Invariants held here (DESIGN 1-3):
- LMDB is the source of truth. Live state = the newest intact snapshot + the op log after it;
  a space with no snapshot (or a damaged one) is built from the vectors stored in LMDB.
- Replay is idempotent: a touched seed is removed from every index, then re-added from LMDB
  when still active, so an entry applied twice, or an add a later remove undid, is harmless.
- Lookups see one consistent set of spaces: ``acquire`` hands out the current ``IndexSet``;
  a reload or repair builds a new set and swaps it in whole. A replaced set is closed (threads,
  GPU memory) once the last lookup using it lets go.
- Writes hold ``writing()``: the LMDB commit and the index update happen under one lock that a
  swap also takes, so no acknowledged write falls between an old set and a new one. An index
  update that fails after the commit is repaired from LMDB, never left for the next start.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from dedup.embed.spaces import Embedded, Space
from dedup.errors import ModelMismatch, NotFound, SnapshotError
from dedup.index.sharded import ShardedIndex, resolve_factory, trained_index
from dedup.index.snapshot import (Manifest, current_version, list_snapshots, load_snapshot,
                                  mark_serving, prune_snapshots, publish_snapshot)
from dedup.store import SeedStore
from dedup.types import SPACE_OPS, OpEntry, OpKind

log = logging.getLogger(__name__)

Hit = tuple[str, int, float]  # (space, seed id, similarity)
_MAX_SCANS = 5  # snapshot scans restarted because a version was pruned while being read


class _Holders:
    """How many open sets hold each index: sets share indexes (a publish or a repair makes a
    new set with most of the old one's), so an index is closed when the last set holding it
    is done, never while an older set still being searched holds it too."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def hold(self, indexes: Iterable[ShardedIndex]) -> None:
        with self._lock:
            for index in indexes:
                self._counts[id(index)] = self._counts.get(id(index), 0) + 1

    def drop(self, indexes: Iterable[ShardedIndex]) -> None:
        unheld = []
        with self._lock:
            for index in indexes:
                n = self._counts[id(index)] - 1
                if n:
                    self._counts[id(index)] = n
                else:
                    del self._counts[id(index)]
                    unheld.append(index)
        for index in unheld:
            index.close()


class IndexSet:
    """Every space's index at one moment, with the snapshot it came from; used whole."""

    def __init__(self, indexes: Mapping[str, ShardedIndex], manifest: Manifest | None,
                 notes: Mapping[str, str], holders: _Holders | None = None):
        self.indexes = dict(indexes)
        self.manifest = manifest
        self.notes = dict(notes)  # space -> how its index departs from the configured plan
        self._holders = holders or _Holders()
        self._holders.hold(self.indexes.values())
        self._users = 0
        self._retired = False
        self._closed = False
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest else ""

    def search(self, embedded: Embedded, n_rows: int, k: int) -> list[list[Hit]]:
        """Top-k hits of every embedded row in every space, grouped by prepared row."""
        hits: list[list[Hit]] = [[] for _ in range(n_rows)]
        for name, rows in embedded.rows.items():
            if name not in self.indexes:  # a space added or retired while the item embedded
                continue
            scores, ids = self.indexes[name].search(embedded.vectors[name], k)
            for r, row in enumerate(rows):
                hits[row].extend((name, int(i), float(s)) for s, i in zip(scores[r], ids[r])
                                 if i >= 0)
        return hits

    def _enter(self) -> None:
        with self._lock:
            self._users += 1

    def _exit(self) -> None:
        with self._lock:
            self._users -= 1
            done = self._users == 0 and self._retired
        if done:
            self.close()

    def _retire(self) -> None:
        with self._lock:
            self._retired = True
            idle = self._users == 0
        if idle:
            self.close()

    def close(self) -> None:
        """Let go of the indexes; each is closed once no other open set holds it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._holders.drop(self.indexes.values())


class LiveIndex:
    """Open, replay, reload, publish, prune, repair and close the live index set."""

    def __init__(self, root: Path, store: SeedStore, spaces: Mapping[str, Space],
                 keep_snapshots: int = 3):
        self.root = Path(root)
        self.store = store
        self.spaces = dict(spaces)
        self.keep_snapshots = keep_snapshots
        self._write = threading.RLock()  # writes, swaps and publishes, one at a time
        self._swap = threading.Lock()  # the ``_current`` pointer
        self._current: IndexSet | None = None
        self._holders = _Holders()

    @classmethod
    def open(cls, root: Path, store: SeedStore, spaces: Mapping[str, Space],
             keep_snapshots: int = 3) -> "LiveIndex":
        """The newest intact snapshot brought up to the op log's head (or built from LMDB)."""
        live = cls(root, store, spaces, keep_snapshots)
        with live._write:
            indexes, covered = live._load()
            live._replay(indexes.indexes, covered)
            live._heal(indexes)
            live._install(indexes)
        live._log_state("opened")
        live.prune()  # leftovers of killed publishes and builds, and snapshots past retention
        return live

    # ------------------------------------------------------------------ reading
    @contextmanager
    def acquire(self) -> Iterator[IndexSet]:
        """The current set, held (not closed by a swap) until the block ends."""
        with self._swap:
            current = self._current
            current._enter()
        try:
            yield current
        finally:
            current._exit()

    @property
    def current(self) -> IndexSet:
        """The current set, unheld: for counts and versions, not for searching."""
        return self._current

    # ------------------------------------------------------------------ writing
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while committing a write to LMDB and applying it (``added`` / ``removed``)."""
        with self._write:
            yield

    def added(self, vectors: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Apply committed adds (space -> (ids, vectors)); repair a space whose update fails."""
        for name, (ids, vecs) in vectors.items():
            if len(ids):
                self._apply(name, lambda index: index.add(ids, vecs))

    def put(self, name: str, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Apply committed vectors of one space that may replace ones it holds (a re-embed)."""
        if len(ids):
            self._apply(name, lambda index: (index.remove(ids), index.add(ids, vecs)))

    def removed(self, ids: np.ndarray) -> None:
        """Apply committed removals to every space; repair a space whose update fails."""
        if len(ids):
            for name in list(self._current.indexes):
                self._apply(name, lambda index: index.remove(ids))

    def _apply(self, name: str, update) -> None:
        try:
            update(self._current.indexes[name])
        except Exception:  # the write is committed: LMDB has it, so rebuild the space from it
            log.exception("index update of %s failed after the LMDB commit; rebuilding it "
                          "from the store", name)
            self.repair([name])

    def repair(self, names: Iterable[str]) -> None:
        """Rebuild the given spaces from LMDB and swap them in (holds the write lock)."""
        with self._write:
            current = self._current
            indexes, notes = dict(current.indexes), dict(current.notes)
            for name in names:
                indexes[name], notes[name] = self._build_from_store(name)
            self._install(IndexSet(indexes, current.manifest, notes, self._holders))

    def add_space(self, space: Space) -> None:
        """Serve one more space (a shadow space registered at run time): its index is built
        from the vectors LMDB holds, then swapped in with the rest of the set. Call it holding
        ``writing()`` after the store knows the space, so no add falls between the two."""
        with self._write:
            current = self._current
            self.spaces = {**self.spaces, space.name: space}
            indexes, notes = dict(current.indexes), dict(current.notes)
            old = indexes.get(space.name)
            indexes[space.name], notes[space.name] = self._build_from_store(space.name)
            self._install(IndexSet(indexes, current.manifest, notes, self._holders))
            if old is not None:
                log.info("space %s rebuilt from the store", space.name)

    def drop_space(self, name: str) -> None:
        """Stop serving a space (retired); its index closes once no lookup uses it."""
        with self._write:
            current = self._current
            self.spaces = {n: s for n, s in self.spaces.items() if n != name}
            indexes = {n: i for n, i in current.indexes.items() if n != name}
            notes = {n: t for n, t in current.notes.items() if n != name}
            self._install(IndexSet(indexes, current.manifest, notes, self._holders))

    # ------------------------------------------------------------------ snapshots
    def reload(self) -> str:
        """Swap in the newest intact snapshot without downtime; no write is lost."""
        fresh, covered = self._load()  # the slow part, while lookups and writes go on
        try:
            covered = self._replay(fresh.indexes, covered)
            with self._write:
                # Writes that landed while it loaded: replay them too, then swap.
                self._replay(fresh.indexes, covered)
                self._heal(fresh)
                self._install(fresh)
        except BaseException:
            fresh.close()
            raise
        self._log_state("reloaded")
        return fresh.version

    def publish(self) -> Manifest:
        """Write the live set as a new snapshot covering the op log up to now, then prune."""
        with self._write:
            current = self._current
            manifest = publish_snapshot(
                self.root, current.indexes,
                {n: self.spaces[n].model_id for n in current.indexes}, op_seq=self.store.last_seq)
            self._install(IndexSet(current.indexes, manifest, current.notes, self._holders))
        self.prune()
        return manifest

    def prune(self) -> list[str]:
        """Keep the newest ``keep_snapshots`` snapshots and the one serving; drop the rest."""
        doomed = prune_snapshots(self.root, self.keep_snapshots)
        if doomed:
            log.info("pruned snapshots", extra={"versions": doomed})
        return doomed

    def close(self) -> None:
        """Retire the current set (closed once the last lookup using it lets go)."""
        with self._write:
            if self._current is not None:
                self._current._retire()
                self._current = None

    # ------------------------------------------------------------------ internals
    def _install(self, fresh: IndexSet) -> None:
        with self._swap:
            old, self._current = self._current, fresh
        if old is not None and old is not fresh:
            old._retire()
        if fresh.version and (old is None or old.version != fresh.version):
            mark_serving(self.root, fresh.version)

    def _load(self) -> tuple[IndexSet, int]:
        """The newest intact snapshot's indexes (the rest built from LMDB), and the op-log
        position they cover. A damaged snapshot is logged and the next older one is tried."""
        covered = self.store.last_seq
        manifest, indexes = self._newest_intact()
        notes: dict[str, str] = {}
        try:
            if manifest is not None:
                covered = manifest.op_seq
                for name, index in indexes.items():
                    self._check_model(manifest, name)
                    notes[name] = self._plan_note(name, index)
            for name in self.spaces:
                if name not in indexes:
                    # No snapshot of this space: derive it from LMDB (invariant 1). The build
                    # reads after ``covered`` was taken, so it covers at least that far.
                    indexes[name], notes[name] = self._build_from_store(name)
        except BaseException:
            for index in indexes.values():
                index.close()
            raise
        return IndexSet(indexes, manifest, notes, self._holders), covered

    def _newest_intact(self) -> tuple[Manifest | None, dict[str, ShardedIndex]]:
        """Load the snapshot CURRENT names, or when it is damaged or missing the newest older
        one that verifies (any snapshot plus the op log after it gives the same seeds). A
        version pruned away while we read it (another process published) restarts the scan."""
        for _ in range(_MAX_SCANS):
            vanished = False
            current = current_version(self.root)
            versions = [v for v in reversed(list_snapshots(self.root)) if v != current]
            for version in ([current] if current else []) + versions:
                try:
                    return load_snapshot(self.root, version, self._placement(), spaces=self.spaces)
                except (SnapshotError, NotFound, OSError) as e:
                    if not (self.root / "snapshots" / version).exists():
                        vanished = True  # pruned meanwhile: look again at what is newest now
                        break
                    log.error("snapshot %s is damaged, trying an older one: %s", version, e)
            if not vanished:
                break
        return None, {}

    def _placement(self) -> dict[str, tuple[bool | None, bool]]:
        return {n: (s.config.index.use_gpu, s.config.index.fp16) for n, s in self.spaces.items()}

    def _check_model(self, manifest: Manifest, name: str) -> None:
        want, got = self.spaces[name].model_id, manifest.spaces[name].model_id
        if got != want:
            raise ModelMismatch(f"snapshot {manifest.version} holds {name} from {got}, the "
                                f"configured model is {want}; rebuild the index with dedup-build")

    def _plan_note(self, name: str, index: ShardedIndex) -> str:
        """How a loaded index departs from the configured plan ("" when it does not). The
        serving config's nprobe wins; factory and shards change only with a rebuild."""
        plan = self.spaces[name].config.index
        if plan.nprobe is not None:
            index.nprobe = plan.nprobe
        want = resolve_factory(plan.factory, index.ntotal, plan.n_shards, index.metric)
        if (want, plan.n_shards) == (index.factory, index.n_shards):
            return ""
        note = (f"snapshot has {index.factory} x{index.n_shards}, the config plans {want} "
                f"x{plan.n_shards}; run dedup-build to apply the plan")
        log.warning("%s: %s", name, note)
        return note

    def _build_from_store(self, name: str) -> tuple[ShardedIndex, str]:
        space = self.spaces[name]
        ids, vecs = [], []
        for batch_ids, batch_vecs in self.store.iter_embeddings(name):
            ids.append(batch_ids)
            vecs.append(batch_vecs)
        width = space.dim // 8 if space.metric == "hamming" else space.dim
        dtype = np.uint8 if space.metric == "hamming" else np.float32
        all_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
        all_vecs = np.concatenate(vecs) if vecs else np.empty((0, width), dtype)
        index, note = trained_index(space.dim, space.metric, space.config.index, all_vecs)
        index.add(all_ids, all_vecs)
        if note:
            log.warning("%s: %s", name, note)
        return index, note

    def _replay(self, indexes: Mapping[str, ShardedIndex], after: int) -> int:
        """Apply op-log entries after seq ``after`` to ``indexes``; returns the last seq seen."""
        ops: list[OpEntry] = list(self.store.ops_after(after))
        touched = sorted({op.seed_id for op in ops
                          if op.kind != OpKind.RELABEL and op.kind not in SPACE_OPS})
        if touched:
            ids = np.asarray(touched, dtype=np.int64)
            for name, index in indexes.items():
                index.remove(ids)
                # removed seeds have no vectors left in LMDB, so only active ones come back
                present, vecs = self.store.embeddings_present(name, touched)
                if len(present):
                    index.add(present, vecs)
        return ops[-1].seq if ops else after

    def _heal(self, fresh: IndexSet) -> None:
        """Rebuild from LMDB any space whose index does not hold exactly the vectors LMDB
        holds: vectors a re-embed wrote are not in the op log (millions of entries for one
        run), so a snapshot taken before they landed cannot replay them."""
        counts = {name: info["count"] for name, info in self.store.spaces().items()}
        for name, index in list(fresh.indexes.items()):
            if name in counts and index.ntotal != counts[name]:
                log.warning("%s: index holds %d vectors, the store %d; rebuilding it from the "
                            "store", name, index.ntotal, counts[name])
                rebuilt, fresh.notes[name] = self._build_from_store(name)
                fresh._holders.drop([index])
                fresh._holders.hold([rebuilt])
                fresh.indexes[name] = rebuilt

    def _log_state(self, what: str) -> None:
        current = self._current
        log.info("live index %s", what, extra={
            "snapshot": current.version or None, "op_seq": self.store.last_seq,
            "sizes": {n: i.ntotal for n, i in current.indexes.items()},
            "plan_notes": {n: t for n, t in current.notes.items() if t}})
