"""Rebuild every space's sharded index from LMDB and publish it as a snapshot.

Stages, each timed, each a small function a test can call alone:
read (one consistent read transaction: its op-log position is the snapshot's ``op_seq``)
-> train (for IVF-style factories) -> add -> validate (recall against exact search on a sample)
-> publish (atomic, with a manifest). The live service keeps serving and writing meanwhile; its
``Reload`` swaps the snapshot in and replays the op log after ``op_seq``, so no write is lost.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dedup.errors import InvalidArgument, SnapshotError
from dedup.index import ShardedIndex
from dedup.index.snapshot import Manifest, publish_snapshot
from dedup.store import SeedStore

log = logging.getLogger(__name__)


@dataclass
class SpacePlan:
    """How to build one space: the factory string and shard count (``auto`` sizes itself)."""

    factory: str = "auto"
    n_shards: int = 1
    nprobe: int | None = None  # None: the index's auto_nprobe


@dataclass
class BuildReport:
    manifest: Manifest | None = None
    timings: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


@contextmanager
def _timed(report: BuildReport, stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        report.timings[stage] = report.timings.get(stage, 0.0) + time.perf_counter() - t0


def read_space(view, space: str) -> tuple[np.ndarray, np.ndarray]:
    """All active (ids, vectors) of one space from one consistent read view."""
    ids, vecs = [], []
    for batch_ids, batch_vecs in view.iter_embeddings(space):
        ids.append(batch_ids)
        vecs.append(batch_vecs)
    if not ids:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    return np.concatenate(ids), np.ascontiguousarray(np.concatenate(vecs))


def build_index(ids: np.ndarray, vecs: np.ndarray, dim: int, metric: str, plan: SpacePlan,
                report: BuildReport, space: str) -> ShardedIndex:
    """Train (when the factory needs it) and fill one sharded index."""
    index = ShardedIndex(dim, factory=plan.factory, n_shards=plan.n_shards, metric=metric,
                         nprobe=plan.nprobe, expected_size=len(ids), use_gpu=None)
    if len(ids) and not index.is_trained:
        with _timed(report, f"{space}:train"):
            index.train(vecs)
    with _timed(report, f"{space}:add"):
        if len(ids):
            index.add(ids, vecs)
    return index


def validate(index: ShardedIndex, ids: np.ndarray, vecs: np.ndarray, metric: str,
             k: int = 10, sample: int = 500, seed: int = 0) -> float:
    """Recall@k of the built index against exact search over the same vectors."""
    if len(ids) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    q = vecs[rng.choice(len(ids), size=min(sample, len(ids)), replace=False)]
    exact = ShardedIndex(index.dim, factory="auto", n_shards=1, metric=metric, use_gpu=False)  # auto at size 0: exact
    exact.add(ids, vecs)
    k = min(k, len(ids))
    _, want = exact.search(q, k)
    _, got = index.search(q, k)
    hits = sum(len(set(a[a >= 0]) & set(b[b >= 0])) for a, b in zip(want, got))
    return hits / max(1, int((want >= 0).sum()))


def rebuild(store: SeedStore, index_root: str | Path, plans: dict[str, SpacePlan] | None = None,
            min_recall: float = 0.9) -> BuildReport:
    """Rebuild every registered space from one read view of ``store``; publish under index_root.

    ``store`` may be the live writer's own store (same process) or a readonly one opened
    beside it: only a read transaction is used.
    """
    report = BuildReport()
    plans = plans or {}
    indexes: dict[str, ShardedIndex] = {}
    model_ids: dict[str, str] = {}
    with store.read_view() as view:
        op_seq = view.last_seq
        for space, meta in view.spaces().items():
            plan = plans.get(space, SpacePlan())
            metric = "hamming" if meta["dtype"] == "uint8" else "ip"
            with _timed(report, f"{space}:read"):
                ids, vecs = read_space(view, space)
            index = build_index(ids, vecs, meta["dim"], metric, plan, report, space)
            with _timed(report, f"{space}:validate"):
                recall = validate(index, ids, vecs, metric)
            report.recall[space] = recall
            report.sizes[space] = index.ntotal
            if recall < min_recall:
                raise SnapshotError(
                    f"{space}: recall@10 {recall:.3f} < {min_recall} with {index.factory}; "
                    "not publishing (raise nprobe or change the factory)")
            indexes[space] = index
            model_ids[space] = meta["model_id"]
    if not indexes:
        raise InvalidArgument("no spaces registered in the store")
    with _timed(report, "publish"):
        report.manifest = publish_snapshot(Path(index_root), indexes, model_ids, op_seq)
    return report


def rebuild_data_dir(data_dir: str | Path, plans: dict[str, SpacePlan] | None = None,
                     min_recall: float = 0.9) -> BuildReport:
    """Open the store under a service's data dir read-only (beside the live writer) and rebuild."""
    data_dir = Path(data_dir)
    with SeedStore(data_dir / "store", readonly=True) as store:
        return rebuild(store, data_dir / "index", plans, min_recall)
