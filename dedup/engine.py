"""The core assembled: items in, seeds and verdicts out.

One Engine per process owns the LMDB store (the single writer, DESIGN invariant 4), one embedder
and one sharded index per enabled space, and the thresholds. Everything below it takes narrow
arguments; this is the one place that wires them together.

Live state = newest snapshot + the op log after it. Writes go to LMDB first (fsync'd commit),
then to the in-memory indexes; after a crash ``open`` rebuilds the same state (invariant 2).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from dedup.config import Config, SpaceConfig
from dedup.embed import create_embedder
from dedup.embed.base import Embedder
from dedup.embed.pdq import SPACE as PDQ_SPACE
from dedup.embed.pdq import from_hex as parse_pdq_hex
from dedup.errors import DedupError, InvalidArgument, InvalidItem, ModelMismatch, NotFound
from dedup.index import ShardedIndex
from dedup.index.snapshot import Manifest, current_version, load_snapshot, publish_snapshot
from dedup.items import decode_image, item_sha256, normalize_text
from dedup.propagate import Thresholds, propagate
from dedup.store import NewSeed, SeedStore
from dedup.types import Item, Label, LookupResult, OpEntry, OpKind, Seed

log = logging.getLogger(__name__)


@dataclass
class Space:
    """One representation space at run time: its embedder, its live index, its config."""

    name: str
    config: SpaceConfig
    embedder: Embedder
    index: ShardedIndex

    @property
    def binary(self) -> bool:
        return bool(getattr(self.embedder, "binary", False))

    def accepts(self, modalities: Sequence[str]) -> bool:
        return any(m in self.embedder.modalities for m in modalities)


@dataclass(frozen=True)
class Prepared:
    """An item decoded, validated and normalised; ready to embed."""

    image: object | None  # PIL.Image.Image, RGB
    text: str | None  # normalised text
    sha256: str
    raw_image: bytes | None
    pdq: np.ndarray | None = None  # a given PDQ hash (32 packed bytes) standing for an image

    @property
    def modalities(self) -> tuple[str, ...]:
        has_image = self.image is not None or self.pdq is not None
        return tuple(m for m, v in (("image", has_image), ("text", self.text)) if v)


@dataclass
class Embedded:
    """Per space: which prepared rows were embedded, and their vectors (row order)."""

    rows: dict[str, np.ndarray] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def vector(self, space: str, row: int) -> np.ndarray | None:
        rows = self.rows.get(space)
        if rows is None:
            return None
        hit = np.flatnonzero(rows == row)
        return self.vectors[space][hit[0]] if hit.size else None


class Engine:
    """Seeds in, verdicts out. Thread-safe: lookups run concurrently, writes are serialised."""

    def __init__(self, config: Config, store: SeedStore, spaces: dict[str, Space],
                 manifest: Manifest | None):
        self.config = config
        self.store = store
        self.spaces = spaces
        self._manifest = manifest
        self._write_lock = threading.RLock()
        self._thresholds = Thresholds(
            {n: s.config.threshold for n, s in spaces.items()},
            {n: dict(s.config.label_thresholds) for n, s in spaces.items()},
        )

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, config: Config, embedders: Mapping[str, Embedder] | None = None) -> "Engine":
        """Load models, the store, the newest snapshot, and replay the op log after it."""
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        store = SeedStore(data_dir / "store", map_size=config.store.map_size)
        try:
            spaces: dict[str, Space] = {}
            for name, sc in config.enabled_spaces.items():
                emb = (embedders or {}).get(name) or create_embedder(sc.model, device=config.device)
                binary = bool(getattr(emb, "binary", False))
                store.register_space(name, emb.model_id, emb.dim, "uint8" if binary else "float32")
                spaces[name] = Space(name, sc, emb, cls._empty_index(sc, emb, 0))
            engine = cls(config, store, spaces, None)
            engine._load_live_state()
            return engine
        except BaseException:
            store.close()
            raise

    @staticmethod
    def _empty_index(sc: SpaceConfig, emb: Embedder, expected_size: int) -> ShardedIndex:
        binary = bool(getattr(emb, "binary", False))
        return ShardedIndex(
            emb.dim,
            factory=sc.index_factory,
            n_shards=sc.n_shards,
            metric="hamming" if binary else "ip",
            nprobe=sc.nprobe,
            expected_size=expected_size,
        )

    @property
    def index_root(self) -> Path:
        return Path(self.config.data_dir) / "index"

    @property
    def snapshot_version(self) -> str:
        return self._manifest.version if self._manifest else ""

    def _load_live_state(self) -> None:
        """Newest snapshot (or a build from LMDB when there is none) + op-log replay."""
        with self._write_lock:
            manifest, indexes, _ = self._read_snapshot()
            self._install(manifest, indexes)

    def _read_snapshot(self) -> tuple[Manifest | None, dict[str, ShardedIndex], int]:
        """Indexes of the newest snapshot brought up to the op log's head, and that head."""
        head = self.store.last_seq
        manifest: Manifest | None = None
        indexes: dict[str, ShardedIndex] = {}
        if current_version(self.index_root):
            manifest, loaded = load_snapshot(self.index_root)
            for name, index in loaded.items():
                if name not in self.spaces:
                    continue
                want = self.spaces[name].embedder.model_id
                if manifest.spaces[name].model_id != want:
                    raise ModelMismatch(
                        f"snapshot {manifest.version} holds {name} from "
                        f"{manifest.spaces[name].model_id}, the configured model is {want}; "
                        "rebuild the index with dedup-build")
                if self.spaces[name].config.nprobe is not None:
                    index.nprobe = self.spaces[name].config.nprobe  # the serving config wins
                indexes[name] = index
            head = self._replay(indexes, self.store.ops_after(manifest.op_seq), manifest.op_seq)
        for name, space in self.spaces.items():
            if name not in indexes:
                # No snapshot of this space: derive it from LMDB (invariant 1). The build reads
                # after `head` was taken, so it covers at least up to head.
                indexes[name] = self._build_from_store(space)
        log.info("live state: snapshot=%s head=%s sizes=%s",
                 manifest.version if manifest else None, head,
                 {n: i.ntotal for n, i in indexes.items()})
        return manifest, indexes, head

    def _build_from_store(self, space: Space) -> ShardedIndex:
        n = self.store.spaces().get(space.name, {}).get("count", 0)
        index = self._empty_index(space.config, space.embedder, n)
        batches = list(self.store.iter_embeddings(space.name))
        if batches and not index.is_trained:
            index.train(np.concatenate([v for _, v in batches]))
        for ids, vecs in batches:
            index.add(ids, vecs)
        return index

    def _replay(self, indexes: dict[str, ShardedIndex], ops: Iterable[OpEntry], after: int) -> int:
        """Apply op-log entries after seq ``after``; returns the last sequence number applied.

        Idempotent: every touched seed is removed, then re-added from LMDB if still active,
        so replaying an entry twice (or an add that a later remove undid) is harmless.
        """
        ops = list(ops)
        if not ops:
            return after
        touched = sorted({op.seed_id for op in ops if op.kind != OpKind.RELABEL})
        if touched:
            ids = np.asarray(touched, dtype=np.int64)
            for name, index in indexes.items():
                index.remove(ids)
                # removed seeds have no vectors left in LMDB, so only active ones come back
                present, vecs = self.store.embeddings_present(name, touched)
                if present.size:
                    index.add(present, vecs)
        return ops[-1].seq

    def _install(self, manifest: Manifest | None, indexes: dict[str, ShardedIndex]) -> None:
        for name, index in indexes.items():
            self.spaces[name].index = index
        self._manifest = manifest

    def reload(self) -> str:
        """Swap in the newest published snapshot without downtime; no write is lost."""
        manifest, indexes, head = self._read_snapshot()  # slow part, outside the write lock
        with self._write_lock:
            # Writes that landed while we were loading: replay them too, then swap.
            self._replay(indexes, self.store.ops_after(head), head)
            self._install(manifest, indexes)
        return self.snapshot_version

    def publish_snapshot(self) -> str:
        """Write the live indexes as a new snapshot covering the op log up to now."""
        with self._write_lock:
            manifest = publish_snapshot(
                self.index_root,
                {n: s.index for n, s in self.spaces.items()},
                {n: s.embedder.model_id for n, s in self.spaces.items()},
                op_seq=self.store.last_seq,
            )
            self._manifest = manifest
        return manifest.version

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ items
    def prepare(self, items: Sequence[Item]) -> list[Prepared | DedupError]:
        """Decode, validate and normalise each item; a bad item yields its error, not a raise."""
        limits = self.config.limits
        out: list[Prepared | DedupError] = []
        for item in items:
            try:
                out.append(self._prepare_one(item, limits))
            except DedupError as e:
                out.append(e)
        return out

    def _prepare_one(self, item: Item, limits) -> Prepared:
        if item.image is None and item.text is None and item.pdq is None:
            raise InvalidItem("item has neither image nor text nor pdq hash")
        if item.pdq is not None and item.image is not None:
            raise InvalidItem("give an image or its pdq hash, not both")
        image = decode_image(item.image, limits) if item.image is not None else None
        text = normalize_text(item.text, limits) if item.text is not None else None
        pdq = None
        if item.pdq is not None:
            if PDQ_SPACE not in self.spaces:
                raise InvalidItem("a pdq hash was given but the pdq space is not enabled")
            pdq = parse_pdq_hex([item.pdq.strip()])[0]
        if pdq is None:
            sha = item_sha256(item.image, text)
        else:  # a hash-only item: its identity is the hash (with the text, for a post)
            text_sha = item_sha256(None, text) if text is not None else ""
            sha = hashlib.sha256(b"pdq:" + pdq.tobytes() + text_sha.encode()).hexdigest()
        p = Prepared(image, text, sha, item.image, pdq)
        if not any(s.accepts(p.modalities) for s in self.spaces.values()):
            raise InvalidItem(f"no enabled space accepts {'+'.join(p.modalities)} items")
        return p

    def embed(self, prepared: Sequence[Prepared]) -> Embedded:
        """One batched model pass per space over the rows it accepts.

        A space with both modalities (CLIP) embeds an item's image when it has one, else its
        text: one vector per item per space, the same rule for seeds and queries.
        """
        result = Embedded()
        for name, space in self.spaces.items():
            mods = space.embedder.modalities
            img_rows = [i for i, p in enumerate(prepared) if p.image is not None and "image" in mods]
            given = [i for i, p in enumerate(prepared) if p.pdq is not None] if name == PDQ_SPACE else []
            taken = set(img_rows) | set(given)
            txt_rows = [i for i, p in enumerate(prepared)
                        if p.text is not None and "text" in mods and i not in taken]
            parts, rows = [], []
            if img_rows:
                parts.append(space.embedder.embed_images([prepared[i].image for i in img_rows]))
                rows += img_rows
            if given:
                parts.append(np.stack([prepared[i].pdq for i in given]))
                rows += given
            if txt_rows:
                parts.append(space.embedder.embed_texts([prepared[i].text for i in txt_rows]))
                rows += txt_rows
            if rows:
                result.rows[name] = np.asarray(rows, dtype=np.int64)
                result.vectors[name] = np.ascontiguousarray(np.concatenate(parts))
        return result

    def search(self, prepared: Sequence[Prepared], embedded: Embedded, top_k: int = 10,
               labels: Sequence[str] | None = None,
               threshold: float | Mapping[str, float] | None = None) -> list[LookupResult]:
        """Index search in every space + label propagation, for a batch of prepared items."""
        self.config.limits.check_top_k(top_k)
        thresholds = self._thresholds.with_override(threshold)
        hits: list[list[tuple[str, int, float]]] = [[] for _ in prepared]
        for name, rows in embedded.rows.items():
            scores, ids = self.spaces[name].index.search(embedded.vectors[name], top_k)
            for r, row in enumerate(rows):
                hits[row].extend((name, int(i), float(s))
                                 for s, i in zip(scores[r], ids[r]) if i >= 0)
        all_ids = {sid for h in hits for _, sid, _ in h}
        exact_ids = {p.sha256: self.store.find_sha256(p.sha256) for p in prepared}
        all_ids |= {i for i in exact_ids.values() if i is not None}
        seeds = self.store.get_many(all_ids)
        version = self.snapshot_version
        results = []
        for p, h in zip(prepared, hits):
            exact = seeds.get(exact_ids[p.sha256]) if exact_ids[p.sha256] is not None else None
            verdicts, neighbors = propagate(h, seeds, thresholds, exact, labels)
            results.append(LookupResult(
                verdicts=verdicts,
                neighbors=neighbors[:top_k] if exact is None else neighbors[: top_k + 1],
                exact_match=exact.seed_id if exact is not None and not exact.removed else None,
                snapshot_version=version,
                spaces=tuple(n for n, rows in embedded.rows.items()),
            ))
        return results

    def lookup(self, items: Sequence[Item], top_k: int = 10, labels: Sequence[str] | None = None,
               threshold: float | Mapping[str, float] | None = None,
               ) -> list[LookupResult | DedupError]:
        """Prepare, embed and search a batch; bad items get their error in place."""
        self.config.limits.check_batch(len(items))
        self.config.limits.check_top_k(top_k)
        prepared = self.prepare(items)
        good = [p for p in prepared if isinstance(p, Prepared)]
        results = iter(self.search(good, self.embed(good), top_k, labels, threshold)) if good else iter(())
        return [next(results) if isinstance(p, Prepared) else p for p in prepared]

    # ------------------------------------------------------------------ writes
    def add_seeds(self, items: Sequence[Item], labels: Sequence[Label], source: str = "",
                  note: str = "", actor: str = "") -> list[tuple[int, bool] | DedupError]:
        """Add items as seeds; durable in LMDB before return, then searchable at once."""
        self.config.limits.check_batch(len(items))
        labels = _check_labels(labels)
        prepared = self.prepare(items)
        good = [(i, p) for i, p in enumerate(prepared) if isinstance(p, Prepared)]
        out: list[tuple[int, bool] | DedupError] = list(prepared)  # errors stay in place
        if not good:
            return out
        embedded = self.embed([p for _, p in good])
        new = []
        for j, (_, p) in enumerate(good):
            vecs = {name: v for name in self.spaces if (v := embedded.vector(name, j)) is not None}
            new.append(NewSeed(
                labels=labels, sha256=p.sha256, modalities=p.modalities, embeddings=vecs,
                source=source, note=note,
                content=p.raw_image if self.config.store.keep_content else None,
                text=p.text, actor=actor,
            ))
        with self._write_lock:
            ids = self.store.add_seeds(new)  # commit + fsync: from here the write is acknowledged
            for name, space in self.spaces.items():
                sel = [j for j, (sid, created) in enumerate(ids) if created and name in new[j].embeddings]
                if sel:
                    space.index.add(np.asarray([ids[j][0] for j in sel], dtype=np.int64),
                                    np.stack([new[j].embeddings[name] for j in sel]))
        for (i, _), r in zip(good, ids):
            out[i] = r
        return out

    def remove_seeds(self, ids: Sequence[int], actor: str = "") -> list[int]:
        """Retire seeds: gone from LMDB's active set and from every index at once."""
        if not ids:
            raise InvalidArgument("no seed ids given")
        with self._write_lock:
            removed = self.store.remove_seeds([int(i) for i in ids], actor=actor)
            if removed:
                arr = np.asarray(removed, dtype=np.int64)
                for space in self.spaces.values():
                    space.index.remove(arr)
        return removed

    def relabel(self, seed_id: int, labels: Sequence[Label], actor: str = "") -> Seed:
        """Replace a seed's labels; verdicts follow at once (labels are read from LMDB)."""
        labels = _check_labels(labels)
        with self._write_lock:
            return self.store.relabel(int(seed_id), labels, actor=actor)

    # ------------------------------------------------------------------ reads
    def get_seed(self, seed_id: int) -> Seed:
        seed = self.store.get(int(seed_id))
        if seed is None:
            raise NotFound(f"seed {seed_id} does not exist")
        return seed

    def list_seeds(self, label: str | None = None, after: int = 0, limit: int = 100,
                   include_removed: bool = False) -> tuple[list[Seed], int | None]:
        if not 1 <= limit <= 1000:
            raise InvalidArgument(f"limit must be in 1..1000, got {limit}")
        return self.store.list_seeds(label=label, after=after, limit=limit,
                                     include_removed=include_removed)

    def ops_after(self, seq: int) -> list[OpEntry]:
        return list(self.store.ops_after(seq))

    def stats(self) -> dict:
        s = self.store.stats()
        return {
            "seeds_active": s["seeds_active"],
            "seeds_removed": s["seeds_removed"],
            "labels": dict(s["labels"]),
            "op_seq": self.store.last_seq,
            "snapshot_version": self.snapshot_version,
            "snapshot_op_seq": self._manifest.op_seq if self._manifest else -1,
            "spaces": {
                name: {
                    "model_id": sp.embedder.model_id,
                    "dim": sp.embedder.dim,
                    "ntotal": sp.index.ntotal,
                    "factory": sp.index.factory,
                    "n_shards": sp.index.n_shards,
                    "threshold": sp.config.threshold,
                    "device": sp.embedder.device,
                }
                for name, sp in self.spaces.items()
            },
        }



def _check_labels(labels: Sequence[Label]) -> tuple[Label, ...]:
    if not labels:
        raise InvalidArgument("a seed needs at least one label")
    out = []
    for label in labels:
        if not label.name or len(label.name) > 128 or not label.name.isprintable():
            raise InvalidArgument(f"bad label name {label.name!r}: 1..128 printable characters")
        if not 1 <= label.severity <= 5:
            raise InvalidArgument(f"label {label.name!r}: severity must be in 1..5")
        out.append(label)
    return tuple(out)
