"""Immutable, versioned index snapshots, published atomically behind a ``CURRENT`` pointer.

Layout::

    root/CURRENT                      one line: the current version
    root/snapshots/<version>/manifest.json
    root/snapshots/<version>/<space-dir>/shard-000.faiss ...

Publishing writes into ``snapshots/.tmp-<random>/``, fsyncs every file and directory, renames it
into place, and only then replaces ``CURRENT`` (write ``CURRENT.tmp``, fsync, ``os.replace``,
fsync root). A crash at any step leaves ``CURRENT`` naming a complete snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from dedup.errors import NotFound, SnapshotError
from dedup.index.shard import fsync_dir
from dedup.index.sharded import ShardedIndex

FORMAT = 1
_SNAPSHOTS = "snapshots"
_CURRENT = "CURRENT"
_LOCK = ".publish.lock"
_SERVING = "SERVING"
_MANIFEST = "manifest.json"
_STALE_TMP_S = 3600.0


@dataclass(frozen=True)
class SpaceManifest:
    """One space inside a snapshot: which model made the vectors and how they are indexed."""

    space: str
    model_id: str
    dim: int
    metric: str
    factory: str
    n_shards: int
    ntotal: int
    files: tuple[str, ...]  # relative to the snapshot directory
    sha256: dict[str, str]  # file -> hex digest
    nprobe: int = 16

    @property
    def dirname(self) -> str:
        return space_dirname(self.space)


@dataclass(frozen=True)
class Manifest:
    """What a snapshot holds; ``op_seq`` is the last op-log entry it includes."""

    format: int
    version: str
    created_at: float
    op_seq: int
    spaces: dict[str, SpaceManifest]
    report: dict = field(default_factory=dict)  # how it was built (stage timings, recall)

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        d = asdict(self)
        for s in d["spaces"].values():
            s["files"] = list(s["files"])
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        """Parse ``to_json`` output; SnapshotError when it is not a manifest we can read."""
        try:
            d = json.loads(text)
            spaces = {
                name: SpaceManifest(**{**s, "files": tuple(s["files"])})
                for name, s in d["spaces"].items()
            }
            return cls(int(d["format"]), d["version"], float(d["created_at"]), int(d["op_seq"]),
                       spaces, dict(d.get("report") or {}))
        except (ValueError, KeyError, TypeError) as e:
            raise SnapshotError(f"unreadable manifest: {e}") from e


def space_dirname(space: str) -> str:
    """Filesystem-safe, collision-free directory name for a space (``clip:ViT-B-32/laion``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", space).strip("._") or "space"
    return f"{safe[:80]}-{hashlib.sha256(space.encode()).hexdigest()[:8]}"


def _new_version(op_seq: int) -> str:
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
    return f"v{op_seq:012d}-{stamp}-{secrets.token_hex(3)}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def publish_snapshot(root: Path, indexes: dict[str, ShardedIndex], model_ids: dict[str, str],
                     op_seq: int, report: dict | None = None) -> Manifest:
    """Write every space's shards as a new snapshot and make it CURRENT, atomically."""
    root = Path(root)
    missing = set(indexes) - set(model_ids)
    if missing:
        raise SnapshotError(f"no model id for spaces {sorted(missing)}")
    snaps = root / _SNAPSHOTS
    snaps.mkdir(parents=True, exist_ok=True)
    version = _new_version(op_seq)
    tmp = snaps / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        spaces: dict[str, SpaceManifest] = {}
        for space, index in indexes.items():
            sub = tmp / space_dirname(space)
            names = index.save(sub)  # fsyncs each file
            fsync_dir(sub)
            files = tuple(f"{sub.name}/{n}" for n in names)
            meta = index.meta()
            spaces[space] = SpaceManifest(
                space=space, model_id=model_ids[space], dim=meta["dim"], metric=meta["metric"],
                factory=meta["factory"], n_shards=meta["n_shards"], ntotal=meta["ntotal"],
                files=files, sha256={f: _sha256(tmp / f) for f in files}, nprobe=meta["nprobe"],
            )
        manifest = Manifest(FORMAT, version, time.time(), int(op_seq), spaces, dict(report or {}))
        _write_synced(tmp / _MANIFEST, manifest.to_json())
        fsync_dir(tmp)
        os.rename(tmp, snaps / version)
        fsync_dir(snaps)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with _publish_lock(root):
        # Publishers may race (a builder process beside the service): CURRENT only moves to a
        # newer version (versions sort by op-log position, then time), never back.
        current = current_version(root)
        if current is None or version > current or not (snaps / current).is_dir():
            set_current(root, version)
    return manifest


@contextmanager
def _publish_lock(root: Path):
    """An exclusive lock on the snapshot root, across processes (flock)."""
    with open(Path(root) / _LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def set_current(root: Path, version: str) -> None:
    """Point CURRENT at ``version`` atomically (write a temp file, fsync, rename, fsync dir).
    Rolling back to an older snapshot is this call with the older version."""
    root = Path(root)
    if not (root / _SNAPSHOTS / version / _MANIFEST).is_file():
        raise NotFound(f"no snapshot {version!r} under {root / _SNAPSHOTS}")
    tmp = root / f"{_CURRENT}.tmp-{secrets.token_hex(4)}"
    try:
        _write_synced(tmp, version + "\n")
        os.replace(tmp, root / _CURRENT)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(root)


def current_version(root: Path) -> str | None:
    """The version CURRENT names, or None before the first publish."""
    try:
        text = (Path(root) / _CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def read_manifest(root: Path, version: str) -> Manifest:
    """The manifest of one snapshot (NotFound / SnapshotError)."""
    path = Path(root) / _SNAPSHOTS / version / _MANIFEST
    if not path.exists():
        raise NotFound(f"snapshot {version!r} has no manifest under {Path(root) / _SNAPSHOTS}")
    manifest = Manifest.from_json(path.read_text(encoding="utf-8"))
    if manifest.format != FORMAT:
        raise SnapshotError(f"snapshot {version}: format {manifest.format}, expected {FORMAT}")
    if manifest.version != version:
        raise SnapshotError(f"snapshot dir {version} holds manifest of {manifest.version}")
    return manifest


def verify_snapshot(root: Path, manifest: Manifest) -> None:
    """Check every listed file exists and matches its sha256 (SnapshotError otherwise)."""
    base = Path(root) / _SNAPSHOTS / manifest.version
    for space in manifest.spaces.values():
        for f in space.files:
            path = base / f
            if not path.is_file():
                raise SnapshotError(f"snapshot {manifest.version}: missing {f}")
            if _sha256(path) != space.sha256.get(f):
                raise SnapshotError(f"snapshot {manifest.version}: checksum mismatch on {f}")


def load_snapshot(root: Path, version: str | None = None,
                  placement: Mapping[str, tuple[bool | None, bool]] | None = None,
                  spaces: Iterable[str] | None = None,
                  ) -> tuple[Manifest, dict[str, ShardedIndex]]:
    """Verify and load a snapshot (CURRENT by default) into one ShardedIndex per space.

    ``placement`` maps a space to (use_gpu, fp16), the serving config's choice; ``spaces``
    limits which spaces are loaded (default: all). SnapshotError when any file is damaged.
    """
    root = Path(root)
    version = version or current_version(root)
    if version is None:
        raise NotFound(f"no snapshot published under {root}")
    manifest = read_manifest(root, version)
    wanted = set(manifest.spaces) if spaces is None else set(spaces) & set(manifest.spaces)
    verify_snapshot(root, manifest)
    base = root / _SNAPSHOTS / version
    indexes: dict[str, ShardedIndex] = {}
    try:
        for name in sorted(wanted):
            space = manifest.spaces[name]
            use_gpu, fp16 = (placement or {}).get(name, (None, False))
            try:
                index = ShardedIndex.load(base / space.dirname, asdict(space), use_gpu=use_gpu,
                                          fp16=fp16)
            except RuntimeError as e:  # FAISS read errors
                raise SnapshotError(f"snapshot {version}, space {name}: {e}") from e
            indexes[name] = index
            if index.ntotal != space.ntotal:
                raise SnapshotError(f"snapshot {version}, space {name}: {index.ntotal} vectors, "
                                    f"manifest says {space.ntotal}")
    except BaseException:
        for index in indexes.values():
            index.close()
        raise
    return manifest, indexes


def list_snapshots(root: Path) -> list[str]:
    """Complete snapshot versions, oldest first (temporary directories are not listed)."""
    snaps = Path(root) / _SNAPSHOTS
    if not snaps.is_dir():
        return []
    return sorted(p.name for p in snaps.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / _MANIFEST).exists())


def prune_snapshots(root: Path, keep: int = 3, protect: Iterable[str] = ()) -> list[str]:
    """Delete all but the newest ``keep`` snapshots, never CURRENT, the one a service says it
    serves (``SERVING``) nor ``protect``; returns the versions deleted. Each is renamed aside
    first (atomic: a reader sees it whole or not at all), under the publish lock."""
    root = Path(root)
    snaps = root / _SNAPSHOTS
    if not snaps.is_dir():
        return []
    with _publish_lock(root):
        spared = {current_version(root), serving_version(root), *protect}
        versions = list_snapshots(root)
        doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in spared]
        for v in doomed:
            trash = snaps / f".trash-{secrets.token_hex(6)}"
            os.rename(snaps / v, trash)
            shutil.rmtree(trash, ignore_errors=True)
        for p in snaps.iterdir():  # leftovers of a killed publish or prune
            if p.name.startswith(".trash-") or (p.name.startswith(".tmp-") and _abandoned(p)):
                shutil.rmtree(p, ignore_errors=True)
    return doomed


def _abandoned(tmp: Path) -> bool:
    """A publish's temp dir whose process is gone (``.tmp-<pid>-<random>``), or an old one
    (a publish writes finished shards: it takes minutes, not an hour)."""
    parts = tmp.name.split("-")
    if len(parts) == 3 and parts[1].isdigit():
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's process
            pass
    try:
        return time.time() - tmp.stat().st_mtime > _STALE_TMP_S
    except FileNotFoundError:
        return False


def mark_serving(root: Path, version: str) -> None:
    """Record which snapshot a service serves, so a builder process's prune spares it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{_SERVING}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, root / _SERVING)
    finally:
        tmp.unlink(missing_ok=True)


def serving_version(root: Path) -> str | None:
    """The version a service last said it serves, or None."""
    try:
        return (Path(root) / _SERVING).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
