"""Backups of a data dir: the LMDB store copied with compaction, plus the snapshot serving.

A backup is consistent: the store is copied inside one read transaction (LMDB's own
``mdb_env_copy2``), so it may run beside the live writer; the snapshot beside it is an
immutable directory, and anything the store holds beyond the snapshot's op-log position is
replayed at start, as after any restart. Restoring is copying the backup into an empty data
dir and starting the service on it.

Layout of a backup::

    BACKUP/backup.json       what was copied: op-log position, snapshot version, time
    BACKUP/store/data.mdb    the compacted store
    BACKUP/index/CURRENT     the snapshot version (if there was one)
    BACKUP/index/snapshots/<version>/...
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import lmdb

from dedup.errors import InvalidArgument, NotFound, StoreError
from dedup.index.snapshot import current_version, serving_version, set_current
from dedup.index.shard import fsync_dir, fsync_file
from dedup.store import SeedStore

MANIFEST = "backup.json"


def backup_store(store: SeedStore, out: Path) -> int:
    """Copy an open store (writer or readonly) into ``out/store``, compacted; returns the
    op-log position the copy holds."""
    target = Path(out) / "store"
    target.mkdir(parents=True, exist_ok=False)
    with store.read_view() as view:
        try:
            store._env_or_raise().copy(str(target), compact=True, txn=view._txn)
        except lmdb.Error as e:
            raise StoreError(f"copying the seed store failed: {e}") from e
        op_seq = view.last_seq
    fsync_file(target / "data.mdb")
    return op_seq


def backup(data_dir: str | Path, out: str | Path, store: SeedStore | None = None) -> dict:
    """Back up ``data_dir`` into the new directory ``out`` (refused if it exists). ``store``:
    the live writer's own store when called in its process; else it is opened read-only."""
    data_dir, out = Path(data_dir), Path(out)
    if out.exists():
        raise InvalidArgument(f"backup target {out} already exists")
    if not (data_dir / "store" / "data.mdb").is_file():
        raise NotFound(f"no seed store under {data_dir}")
    out.mkdir(parents=True)
    try:
        if store is None:
            with SeedStore(data_dir / "store", readonly=True) as ro:
                op_seq = backup_store(ro, out)
        else:
            op_seq = backup_store(store, out)
        index = data_dir / "index"
        version = serving_version(index) or current_version(index)
        if version and (index / "snapshots" / version).is_dir():
            shutil.copytree(index / "snapshots" / version, out / "index" / "snapshots" / version)
            set_current(out / "index", version)
        info = {"format": 1, "op_seq": op_seq, "snapshot": version or None,
                "created_at": time.time(), "source": str(data_dir.resolve())}
        (out / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
        fsync_file(out / MANIFEST)
        fsync_dir(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return info


def restore(backup_dir: str | Path, data_dir: str | Path) -> dict:
    """Copy a backup into an empty (or missing) ``data_dir``; the service then starts on it."""
    backup_dir, data_dir = Path(backup_dir), Path(data_dir)
    manifest = backup_dir / MANIFEST
    if not manifest.is_file():
        raise NotFound(f"{backup_dir} is not a backup (no {MANIFEST})")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise InvalidArgument(f"restore target {data_dir} is not empty; restore into a new dir")
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(backup_dir / "store", data_dir / "store")
    if (backup_dir / "index").is_dir():
        shutil.copytree(backup_dir / "index", data_dir / "index")
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            fsync_file(Path(root) / name)
    fsync_dir(data_dir)
    return json.loads(manifest.read_text())
