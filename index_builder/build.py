"""Rebuild every space's sharded index from LMDB and publish it as a snapshot.

Stages, each timed, each a small function a test can call alone:
read (one consistent read view: its op-log position is the snapshot's ``op_seq``)
-> train (factories that need it; too few vectors: exact search, noted) -> add
-> validate (recall@10 against exact search on a sample) -> publish (atomic, with the report in
the manifest). Each space is built by the same ``IndexPlan`` the service reads from the config.
The live service keeps serving and writing meanwhile; its ``Reload`` swaps the snapshot in and
replays the op log after ``op_seq``, so no write is lost.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from dedup.config import IndexPlan
from dedup.errors import InvalidArgument, SnapshotError
from dedup.index import ShardedIndex
from dedup.index.sharded import exact_factory, trained_index
from dedup.index.snapshot import (Manifest, current_version, list_snapshots, prune_snapshots,
                                  publish_snapshot, read_manifest, serving_version, set_current)
from dedup.store import ReadView, SeedStore

log = logging.getLogger(__name__)

STAGES = ("read", "train", "add", "validate", "publish")


@dataclass
class BuildReport:
    """What a build did: per-stage seconds, recall, sizes, and how a space departs from its plan."""

    manifest: Manifest | None = None
    timings: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The report as stored in the snapshot manifest (without the manifest itself)."""
        out = asdict(self)
        out.pop("manifest")
        out["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return out


@contextmanager
def _timed(report: BuildReport, stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        report.timings[stage] = report.timings.get(stage, 0.0) + time.perf_counter() - t0


def read_space(view: ReadView, space: str, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """All active (ids, vectors) of one space from one consistent read view."""
    ids, vecs = [], []
    for batch_ids, batch_vecs in view.iter_embeddings(space):
        ids.append(batch_ids)
        vecs.append(batch_vecs)
    if not ids:
        return np.empty(0, np.int64), np.empty((0, width), dtype)
    return np.concatenate(ids), np.ascontiguousarray(np.concatenate(vecs))


def validate(index: ShardedIndex, ids: np.ndarray, vecs: np.ndarray, metric: str,
             k: int = 10, sample: int = 500, seed: int = 0) -> float:
    """Recall@k of the built index against exact search over the same vectors."""
    if len(ids) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    q = vecs[rng.choice(len(ids), size=min(sample, len(ids)), replace=False)]
    exact = ShardedIndex(index.dim, exact_factory(metric), n_shards=1, metric=metric, use_gpu=False)
    try:
        exact.add(ids, vecs)
        k = min(k, len(ids))
        _, want = exact.search(q, k)
    finally:
        exact.close()
    _, got = index.search(q, k)
    hits = sum(len(set(a[a >= 0]) & set(b[b >= 0])) for a, b in zip(want, got))
    return hits / max(1, int((want >= 0).sum()))


def build_space(view: ReadView, space: str, meta: dict, plan: IndexPlan, report: BuildReport,
                min_recall: float) -> ShardedIndex:
    """read -> train -> add -> validate one space; SnapshotError below ``min_recall``."""
    metric = "hamming" if meta["dtype"] == "uint8" else "ip"
    width, dtype = (meta["dim"] // 8, np.uint8) if metric == "hamming" else (meta["dim"], np.float32)
    with _timed(report, f"{space}:read"):
        ids, vecs = read_space(view, space, width, dtype)
    with _timed(report, f"{space}:train"):
        index, note = trained_index(meta["dim"], metric, plan, vecs)
    try:
        with _timed(report, f"{space}:add"):
            index.add(ids, vecs)
        with _timed(report, f"{space}:validate"):
            recall = validate(index, ids, vecs, metric)
    except BaseException:
        index.close()
        raise
    if note:
        report.notes[space] = note
        log.warning("%s: %s", space, note)
    report.recall[space] = recall
    report.sizes[space] = index.ntotal
    if recall < min_recall:
        index.close()
        raise SnapshotError(
            f"{space}: recall@10 {recall:.3f} < {min_recall} with {index.factory}; "
            "not publishing (raise nprobe or change the factory)")
    return index


def rebuild(store: SeedStore, index_root: str | Path, plans: Mapping[str, IndexPlan] | None = None,
            min_recall: float = 0.9, keep_snapshots: int = 3,
            extra_report: Mapping | None = None) -> BuildReport:
    """Rebuild every registered space from one read view of ``store``; publish under index_root.

    ``store`` may be the live writer's own store (same process) or a readonly one opened beside
    it: only a read view is used, and it never holds up the writer. ``plans`` gives each space's
    IndexPlan (default: ``IndexPlan()``, i.e. ``auto``).
    """
    report = BuildReport()
    plans = plans or {}
    indexes: dict[str, ShardedIndex] = {}
    model_ids: dict[str, str] = {}
    try:
        with store.read_view() as view:
            op_seq = view.last_seq
            for space, meta in view.spaces().items():
                indexes[space] = build_space(view, space, meta, plans.get(space, IndexPlan()),
                                             report, min_recall)
                model_ids[space] = meta["model_id"]
        if not indexes:
            raise InvalidArgument("no spaces registered in the store")
        with _timed(report, "publish"):
            report.manifest = publish_snapshot(Path(index_root), indexes, model_ids, op_seq,
                                               report={**report.to_dict(), **(extra_report or {})})
        prune_snapshots(Path(index_root), keep_snapshots)
    finally:
        for index in indexes.values():
            index.close()
    return report


def rebuild_data_dir(data_dir: str | Path, plans: Mapping[str, IndexPlan] | None = None,
                     min_recall: float = 0.9, keep_snapshots: int = 3) -> BuildReport:
    """Open the store under a service's data dir read-only (beside the live writer) and rebuild."""
    data_dir = Path(data_dir)
    with SeedStore(data_dir / "store", readonly=True) as store:
        return rebuild(store, data_dir / "index", plans, min_recall, keep_snapshots)


def list_builds(index_root: str | Path) -> list[dict]:
    """Every complete snapshot, newest first: version, op_seq, spaces (model id, vectors),
    whether it is CURRENT or serving, and the build report stored in its manifest."""
    root = Path(index_root)
    current, serving = current_version(root), serving_version(root)
    out = []
    for version in reversed(list_snapshots(root)):
        try:
            m = read_manifest(root, version)
        except (SnapshotError, OSError) as e:
            out.append({"version": version, "error": str(e)})
            continue
        out.append({"version": version, "op_seq": m.op_seq, "created_at": m.created_at,
                    "current": version == current, "serving": version == serving,
                    "spaces": {n: {"model_id": sp.model_id, "ntotal": sp.ntotal}
                               for n, sp in m.spaces.items()},
                    "report": m.report})
    return out


def rollback_to(index_root: str | Path, version: str) -> None:
    """Make an older snapshot CURRENT (the service's Reload then serves it and replays the op
    log after it, so no write is lost)."""
    set_current(Path(index_root), version)
