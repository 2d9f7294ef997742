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

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dedup.errors import ModelMismatch, NotFound, SnapshotError
from dedup.index.shard import fsync_dir
from dedup.index.sharded import ShardedIndex

FORMAT = 1
_SNAPSHOTS = "snapshots"
_CURRENT = "CURRENT"
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
                       spaces)
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
                     op_seq: int) -> Manifest:
    """Write every space's shards as a new snapshot and make it CURRENT, atomically."""
    root = Path(root)
    missing = set(indexes) - set(model_ids)
    if missing:
        raise SnapshotError(f"no model id for spaces {sorted(missing)}")
    snaps = root / _SNAPSHOTS
    snaps.mkdir(parents=True, exist_ok=True)
    version = _new_version(op_seq)
    tmp = snaps / f".tmp-{secrets.token_hex(6)}"
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
        manifest = Manifest(FORMAT, version, time.time(), int(op_seq), spaces)
        _write_synced(tmp / _MANIFEST, manifest.to_json())
        fsync_dir(tmp)
        os.rename(tmp, snaps / version)
        fsync_dir(snaps)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _set_current(root, version)
    return manifest


def _set_current(root: Path, version: str) -> None:
    tmp = root / f"{_CURRENT}.tmp"
    _write_synced(tmp, version + "\n")
    os.replace(tmp, root / _CURRENT)
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


def load_snapshot(root: Path, version: str | None = None, use_gpu: bool | None = None,
                  expect_model_ids: dict[str, str] | None = None
                  ) -> tuple[Manifest, dict[str, ShardedIndex]]:
    """Verify and load a snapshot (CURRENT by default) into one ShardedIndex per space."""
    root = Path(root)
    version = version or current_version(root)
    if version is None:
        raise NotFound(f"no snapshot published under {root}")
    manifest = read_manifest(root, version)
    if expect_model_ids is not None:
        for name, space in manifest.spaces.items():
            want = expect_model_ids.get(name)
            if want is not None and want != space.model_id:
                raise ModelMismatch(
                    f"space {name}: snapshot {version} was built with {space.model_id}, "
                    f"the service runs {want}")
    verify_snapshot(root, manifest)
    base = root / _SNAPSHOTS / version
    indexes: dict[str, ShardedIndex] = {}
    for name, space in manifest.spaces.items():
        try:
            index = ShardedIndex.load(base / space.dirname, asdict(space), use_gpu=use_gpu)
        except RuntimeError as e:  # FAISS read errors
            raise SnapshotError(f"snapshot {version}, space {name}: {e}") from e
        if index.ntotal != space.ntotal:
            raise SnapshotError(f"snapshot {version}, space {name}: {index.ntotal} vectors, "
                                f"manifest says {space.ntotal}")
        indexes[name] = index
    return manifest, indexes


def list_snapshots(root: Path) -> list[str]:
    """Complete snapshot versions, oldest first (temporary directories are not listed)."""
    snaps = Path(root) / _SNAPSHOTS
    if not snaps.is_dir():
        return []
    return sorted(p.name for p in snaps.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / _MANIFEST).exists())


def prune_snapshots(root: Path, keep: int = 3) -> list[str]:
    """Delete all but the newest ``keep`` snapshots (never CURRENT) and stale temp dirs."""
    root = Path(root)
    current = current_version(root)
    versions = list_snapshots(root)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for v in doomed:
        shutil.rmtree(root / _SNAPSHOTS / v)
    snaps = root / _SNAPSHOTS
    if snaps.is_dir():
        for p in snaps.iterdir():  # leftovers of a crashed publish, not one in progress
            if p.name.startswith(".tmp-") and time.time() - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
    return doomed
