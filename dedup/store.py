"""LMDB seed store: seeds, embeddings, content and the op log; the single writer (DESIGN 1, 2, 4, 5).

Layout (named dbs of one LMDB environment; ids and seqs are 8-byte big-endian keys, so cursors
walk them in order):

- ``meta``     next_id, last_seq counters
- ``seeds``    id -> compact JSON record (kept after removal, with ``removed``)
- ``sha``      sha256 hex -> id, ACTIVE seeds only (exact duplicates)
- ``labels``   ``name\\0id`` -> b"", ACTIVE seeds only (filtered listing, counts)
- ``content``  id -> original bytes (so a rebuild can re-embed with a new model)
- ``oplog``    seq -> compact JSON op entry (kind, seed, labels, actor, reason), written in the
               same txn as the record: the audit trail
- ``seedops``  id ++ seq -> b"" (one seed's history without scanning the log)
- ``spaces``   space -> JSON {model_id, dim, dtype}
- ``emb:<space>`` id -> raw vector bytes, ACTIVE seeds only
- ``retired``  id ++ space -> raw vector bytes of REMOVED seeds, so a restore brings the very
               same vectors back (hash-only seeds have no content to re-embed from); id alone
               -> b"" marks a removal whose vectors (maybe none) were all kept

For float spaces ``dim`` is the vector length (float32). For binary spaces (dtype ``uint8``)
``dim`` is in bits, as FAISS binary indexes count it, and a vector is ``dim // 8`` packed bytes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping, Sequence, TypeVar

import lmdb
import numpy as np

from dedup.locks import RWLock
from dedup.errors import InvalidArgument, ModelMismatch, NotFound, StorageFull, StoreError
from dedup.types import (AddResult, Label, OpEntry, OpFilter, OpKind, RemoveResult, RemoveStatus,
                         Seed, SeedFilter, check_labels, merge_labels)

T = TypeVar("T")

_FIXED_DBS = (b"meta", b"seeds", b"sha", b"labels", b"content", b"oplog", b"spaces", b"seedops",
              b"retired", b"aux")
# Added after stores were first written: a read-only open of an older store finds none yet.
_LATER_DBS = frozenset((b"seedops", b"retired", b"aux"))
_MAX_DBS = 128  # the fixed ones + one per space
_MAX_READERS = 1024  # reader slots: many service threads plus a builder process beside us
_K_NEXT_ID = b"next_id"
_K_LAST_SEQ = b"last_seq"
_K_SEEDOPS_BUILT = b"seedops_built"  # the seedops index covers the whole log
_K_RETIRED_SPACES = b"retired_spaces"  # JSON {space: {model_id, ts}}
_K_PROGRESS = b"progress:"  # ++ key: JSON progress of a re-embed run (resumable)
_MAX_SCAN = 50_000  # records one filtered page may examine before it returns a cursor
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = {"float32": np.dtype("<f4"), "uint8": np.dtype("u1")}
_MODALITIES = frozenset(("image", "text"))
_OPS_CHUNK = 1024
_GROW_WAIT_S = 60.0


def _k(n: int) -> bytes:
    return struct.pack(">Q", n)


def _unk(b: bytes) -> int:
    return struct.unpack(">Q", b)[0]


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class NewSeed:
    """A seed to add: labels, exact-match digest, per-space vectors and optional original content."""

    labels: tuple[Label, ...]
    sha256: str
    modalities: tuple[str, ...]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    note: str = ""
    content: bytes | None = None
    text: str | None = None
    actor: str = ""
    hash_only: bool = False  # added by a shared hash, not by its content
    reason: str = ""  # why it is added (the op log keeps it)
    # verification method -> what it keeps of this seed (local features, shingles); kept with
    # the record through removal and restore, like the content
    aux: dict[str, bytes] = field(default_factory=dict)


def _check_new(seed: NewSeed) -> None:
    check_labels(seed.labels)
    if not isinstance(seed.sha256, str) or not _SHA_RE.match(seed.sha256.lower()):
        raise InvalidArgument("sha256 must be 64 hex characters")
    if not seed.modalities or not set(seed.modalities) <= _MODALITIES:
        raise InvalidArgument(f"modalities must be a non-empty subset of {sorted(_MODALITIES)}")
    if seed.content is not None and not isinstance(seed.content, (bytes, bytearray, memoryview)):
        raise InvalidArgument("content must be bytes")
    for kind, blob in seed.aux.items():
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"verification data {kind!r} must be bytes")


def _record(seed: Seed) -> bytes:
    return _dumps(
        {
            "l": [[lb.name, lb.severity] for lb in seed.labels],
            "s": seed.source,
            "n": seed.note,
            "c": seed.created_at,
            "h": seed.sha256,
            "m": list(seed.modalities),
            "hc": seed.has_content,
            "r": seed.removed,
            "ra": seed.removed_at,
            "t": seed.text,
            **({"ho": True} if seed.hash_only else {}),
            **({"a": seed.added_by} if seed.added_by else {}),
        }
    )


def _seed(seed_id: int, raw: bytes) -> Seed:
    d = json.loads(raw)
    return Seed(
        seed_id=seed_id,
        labels=tuple(Label(n, s) for n, s in d["l"]),
        source=d["s"],
        note=d["n"],
        created_at=d["c"],
        sha256=d["h"],
        modalities=tuple(d["m"]),
        has_content=d["hc"],
        removed=d["r"],
        removed_at=d["ra"],
        text=d["t"],
        hash_only=d.get("ho", False),
        added_by=d.get("a", ""),
    )


def _labels_json(labels: Iterable[Label]) -> list:
    return [[lb.name, lb.severity] for lb in labels]


def _op(seq: int, raw: bytes) -> OpEntry:
    d = json.loads(raw)
    return OpEntry(
        seq=seq,
        kind=OpKind(d["k"]),
        seed_id=d["i"],
        ts=d["t"],
        labels=tuple(Label(n, s) for n, s in d["l"]),
        actor=d["a"],
        reason=d.get("r", ""),
        previous_labels=tuple(Label(n, s) for n, s in d.get("p", ())),
        space=d.get("s", ""),
        replaces=d.get("rp", ""),
    )


class _Reads:
    """The store's read API, written once. ``_reading()`` gives the read txn of one call: a
    fresh short txn on ``SeedStore``, the view's own txn on ``ReadView``."""

    _store: "SeedStore"

    def _reading(self) -> ContextManager[lmdb.Transaction]:
        raise NotImplementedError

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest op-log entry (0 when empty)."""
        with self._reading() as txn:
            raw = txn.get(_K_LAST_SEQ, db=self._store._db[b"meta"])
            return _unk(raw) if raw else 0

    def get(self, seed_id: int) -> Seed | None:
        """One seed record (removed ones too), or None."""
        seed_id = int(seed_id)
        if seed_id < 0:
            return None
        with self._reading() as txn:
            raw = txn.get(_k(seed_id), db=self._store._db[b"seeds"])
            return _seed(seed_id, raw) if raw is not None else None

    def get_many(self, ids: Iterable[int]) -> dict[int, Seed]:
        """Seed records by id in one txn; unknown ids are left out."""
        db = self._store._db[b"seeds"]
        out: dict[int, Seed] = {}
        with self._reading() as txn:
            for i in ids:
                i = int(i)
                if i in out or i < 0:
                    continue
                raw = txn.get(_k(i), db=db)
                if raw is not None:
                    out[i] = _seed(i, raw)
        return out

    def find_sha256(self, sha256: str) -> int | None:
        """Id of the ACTIVE seed with this sha256, or None."""
        with self._reading() as txn:
            raw = txn.get(sha256.lower().encode(), db=self._store._db[b"sha"])
            return _unk(raw) if raw is not None else None

    def content(self, seed_id: int) -> bytes | None:
        """The seed's stored original bytes, or None."""
        with self._reading() as txn:
            return txn.get(_k(int(seed_id)), db=self._store._db[b"content"])

    def aux(self, kind: str, ids: Sequence[int]) -> dict[int, bytes]:
        """Verification data of method ``kind`` the given seeds keep (seeds without any are
        left out)."""
        db = self._store._db.get(b"aux")
        if db is None:
            return {}
        out: dict[int, bytes] = {}
        suffix = kind.encode()
        with self._reading() as txn:
            for i in ids:
                raw = txn.get(_k(int(i)) + suffix, db=db)
                if raw is not None:
                    out[int(i)] = bytes(raw)
        return out

    def spaces(self) -> dict[str, dict]:
        """space -> {model_id, dim, dtype, count}."""
        with self._reading() as txn:
            return self._store._spaces(txn)

    def _space_info(self, txn: lmdb.Transaction, space: str) -> dict:
        raw = txn.get(space.encode(), db=self._store._db[b"spaces"])
        if raw is None:
            raise NotFound(f"space {space!r} is not registered in {self._store.path}")
        return json.loads(raw)

    def embeddings(self, space: str, ids: Sequence[int]) -> np.ndarray:
        """(len(ids), width) vectors of the given seeds; NotFound if any has none in this space."""
        db = self._store._emb_db(space)
        raws, missing = [], []
        with self._reading() as txn:
            info = self._space_info(txn, space)
            for i in ids:
                raw = txn.get(_k(int(i)), db=db)
                if raw is None:
                    missing.append(int(i))
                else:
                    raws.append(raw)
        if missing:
            raise NotFound(f"no {space!r} embedding for seed ids {missing[:20]}")
        return _stack(raws, info)

    def embeddings_present(self, space: str, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those given seeds that have a vector in this space (active seeds)."""
        db = self._store._emb_db(space)
        with self._reading() as txn:
            info = self._space_info(txn, space)
            found = [(int(i), raw) for i in ids if (raw := txn.get(_k(int(i)), db=db)) is not None]
        if not found:
            return np.empty(0, np.int64), _stack([], info)
        return (np.fromiter((i for i, _ in found), dtype=np.int64, count=len(found)),
                _stack([raw for _, raw in found], info))

    def list_seeds(self, label: str | None = None, after: int = 0, limit: int = 100,
                   include_removed: bool = False, *, where: SeedFilter | None = None,
                   max_scan: int = _MAX_SCAN, max_bytes: int | None = None,
                   ) -> tuple[list[Seed], int | None]:
        """A page of seeds with id > after, in id order, and the cursor for the next page
        (None when done). ``label``/``include_removed`` or ``where`` (a SeedFilter) choose
        the seeds. A filtered page examines at most ``max_scan`` records, then returns what
        it found with a cursor to go on from (a page may come back short, even empty, with a
        cursor). The page size bound is the caller's (Limits), in seeds and, with
        ``max_bytes``, in stored record bytes (a page always holds at least one seed)."""
        if limit < 1:
            raise InvalidArgument(f"limit must be >= 1, got {limit}")
        if after < 0:
            raise InvalidArgument("after must be >= 0")
        if where is None:
            where = SeedFilter(label=label, include_removed=include_removed)
        seeds_db = self._store._db[b"seeds"]
        page: list[Seed] = []
        last_seen = after
        with self._reading() as txn:
            if where.label is not None and not where.include_removed:
                # the label index holds active seeds only, in id order under the name prefix
                prefix = where.label.encode() + b"\0"
                cur = txn.cursor(db=self._store._db[b"labels"])
                cur.set_range(prefix + _k(after + 1))

                def ids() -> Iterator[int]:
                    for key in cur.iternext(keys=True, values=False):
                        if not key.startswith(prefix):
                            return
                        yield _unk(key[len(prefix):])

                raws: Iterator[tuple[int, bytes]] = ((i, txn.get(_k(i), db=seeds_db))
                                                      for i in ids())
            else:
                cur = txn.cursor(db=seeds_db)
                cur.set_range(_k(after + 1))
                raws = ((_unk(k), v) for k, v in cur.iternext(keys=True, values=True))
            size = 0
            for scanned, (seed_id, raw) in enumerate(raws, 1):
                seed = _seed(seed_id, raw)
                if where.matches(seed):
                    full = len(page) == limit or (
                        max_bytes is not None and page and size + len(raw) > max_bytes)
                    if full:  # one more match: there is a next page
                        return page, page[-1].seed_id
                    page.append(seed)
                    size += len(raw)
                last_seen = seed.seed_id
                if scanned >= max_scan:  # bounded work per call: go on after this record
                    return page, last_seen
        return page, None

    # ---- the audit trail ------------------------------------------------------------------

    def history(self, seed_id: int) -> list[OpEntry]:
        """Every op-log entry of one seed, oldest first (empty for an unknown seed)."""
        seed_id = int(seed_id)
        if seed_id < 0:
            return []
        index, oplog = self._store._db[b"seedops"], self._store._db[b"oplog"]
        with self._reading() as txn:
            meta = self._store._db[b"meta"]
            if index is None or txn.get(_K_SEEDOPS_BUILT, db=meta) is None:
                # an older store nobody has opened for writing since: scan the log
                return [op for op in (_op(_unk(k), v) for k, v in
                                      txn.cursor(db=oplog).iternext())
                        if op.seed_id == seed_id]
            prefix = _k(seed_id)
            cur = txn.cursor(db=index)
            out = []
            if cur.set_range(prefix):
                for key in cur.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    seq = key[8:]
                    out.append(_op(_unk(seq), txn.get(seq, db=oplog)))
            return out

    def ops(self, where: OpFilter | None = None, before: int | None = None, limit: int = 100,
            max_scan: int = _MAX_SCAN) -> tuple[list[OpEntry], int | None]:
        """A page of op-log entries matching ``where``, newest first, with seq < ``before``
        (None: from the newest), and the cursor (a seq) for the next page, None when done.
        At most ``max_scan`` entries are examined per call; the log is in time order, so a
        ``since`` bound ends the walk as soon as it is passed."""
        if limit < 1:
            raise InvalidArgument(f"limit must be >= 1, got {limit}")
        where = where or OpFilter()
        if where.seed_id is not None:
            history = [op for op in reversed(self.history(where.seed_id))
                       if (before is None or op.seq < before) and where.matches(op)]
            page = history[:limit]
            return page, (page[-1].seq if len(history) > limit else None)
        page = []
        with self._reading() as txn:
            cur = txn.cursor(db=self._store._db[b"oplog"])
            if before is None:
                positioned = cur.last()
            elif cur.set_range(_k(before)):
                positioned = cur.prev()
            else:
                positioned = cur.last()
            if not positioned:
                return [], None
            for scanned, (key, raw) in enumerate(cur.iterprev(keys=True, values=True), 1):
                op = _op(_unk(key), raw)
                if where.since is not None and op.ts < where.since:
                    return page, None
                if where.matches(op):
                    if len(page) == limit:  # one more match: there is a next page
                        return page, page[-1].seq
                    page.append(op)
                if scanned >= max_scan:  # bounded work per call: go on below this entry
                    return page, op.seq
        return page, None

    def retired_space_names(self) -> dict[str, dict]:
        """Spaces retired by an admin: name -> {model_id, ts}; a retired space is not served
        again unless it is re-embedded."""
        with self._reading() as txn:
            raw = txn.get(_K_RETIRED_SPACES, db=self._store._db[b"meta"])
            return json.loads(raw) if raw else {}

    def reembed_progress(self, key: str) -> dict | None:
        """The progress record a re-embed run keeps under ``key`` (None before its first write)."""
        with self._reading() as txn:
            raw = txn.get(_K_PROGRESS + key.encode(), db=self._store._db[b"meta"])
            return json.loads(raw) if raw else None

    def missing_embeddings(self, space: str, modalities: Iterable[str], after: int = 0,
                           limit: int = 1024, skip: Iterable[int] = (),
                           ) -> tuple[list[int], int | None]:
        """Ids (> ``after``, in order, not in ``skip``) of active seeds whose stored content
        (an image, a text) is of one of ``modalities`` and that have no vector in ``space``,
        and the cursor to go on from (None when the walk is done)."""
        want_image, want_text = "image" in modalities, "text" in modalities
        skip = frozenset(int(i) for i in skip)
        seeds_db, emb = self._store._db[b"seeds"], self._store._emb_db(space)
        out: list[int] = []
        with self._reading() as txn:
            cur = txn.cursor(db=seeds_db)
            if not cur.set_range(_k(after + 1)):
                return out, None
            for key, raw in cur.iternext(keys=True, values=True):
                d = json.loads(raw)
                fits = (want_image and d["hc"]) or (want_text and d["t"] is not None)
                if (not d["r"] and fits and txn.get(key, db=emb) is None
                        and _unk(key) not in skip):
                    out.append(_unk(key))
                    if len(out) == limit:
                        return out, out[-1]
        return out, None

    def kept_on_removal(self, seed_id: int) -> bool:
        """Whether this removed seed's vectors were put aside at its removal (a restore needs
        no re-embedding)."""
        db = self._store._db[b"retired"]
        if db is None:
            return False
        with self._reading() as txn:
            return txn.get(_k(int(seed_id)), db=db) is not None

    def retired_spaces(self, seed_id: int) -> list[str]:
        """The spaces whose vectors were kept aside when this seed was removed."""
        db = self._store._db[b"retired"]
        if db is None:
            return []
        prefix = _k(int(seed_id))
        with self._reading() as txn:
            cur = txn.cursor(db=db)
            out = []
            if cur.set_range(prefix):
                for key in cur.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    if len(key) > 8:  # the id alone is the kept-vectors marker
                        out.append(key[8:].decode())
            return out


class ReadView(_Reads):
    """One consistent LMDB snapshot for a long read (the index builder): its txn stays open
    for the view's life, but each call holds the store's read lock only while it runs, so a
    long build never holds up a writer's abort (and the lookups queued behind it)."""

    def __init__(self, store: "SeedStore", txn: lmdb.Transaction):
        self._store = store
        self._txn = txn

    @contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction]:
        with self._store._rw.shared():
            yield self._txn

    def iter_embeddings(self, space: str, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(int64 ids, vectors) batches of ACTIVE seeds in id order, as of this view."""
        if batch < 1:
            raise InvalidArgument("batch must be >= 1")
        db = self._store._emb_db(space)
        with self._reading() as txn:
            info = self._space_info(txn, space)
            items = txn.cursor(db=db).iternext(keys=True, values=True)
        while True:
            with self._reading():
                chunk = list(islice(items, batch))
            if not chunk:
                return
            ids = np.fromiter((_unk(k) for k, _ in chunk), dtype=np.int64, count=len(chunk))
            yield ids, _stack([v for _, v in chunk], info)


def _stack(raws: list[bytes], info: dict) -> np.ndarray:
    dtype = _DTYPES[info["dtype"]]
    width = _width(info)
    if not raws:
        return np.empty((0, width), dtype=dtype)
    arr = np.frombuffer(b"".join(raws), dtype=dtype).reshape(len(raws), width)
    return np.ascontiguousarray(arr, dtype=dtype.newbyteorder("="))


def _width(info: dict) -> int:
    return info["dim"] // 8 if info["dtype"] == "uint8" else info["dim"]


class SeedStore(_Reads):
    """The LMDB seed store. Opened for writing by one process (flock), read-only by any number."""

    def __init__(self, path: str | Path, map_size: int = 1 << 30, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._wlock = threading.Lock()  # one write txn at a time in this process
        # Shared by every read call in flight, exclusive for a write-txn abort (py-lmdb 3.0
        # makes an abort wait for read calls in flight, which busy readers could postpone for
        # ever) and for map growth (LMDB: no txn may be open in the process).
        self._rw = RWLock()
        self._views = 0  # read views open; the map cannot grow under them
        self._views_cond = threading.Condition()
        self._growing = False  # new views wait while the map grows
        self._store = self
        self._dblock = threading.Lock()
        self._lockfile = None
        self._env: lmdb.Environment | None = None
        self._db: dict[bytes, object] = {}
        try:
            if readonly:
                if not (self.path / "data.mdb").is_file():
                    raise StoreError(f"no seed store at {self.path}")
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._take_writer_lock()
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=_MAX_DBS,
                max_readers=_MAX_READERS,
                readonly=readonly,
                lock=True,  # the reader table is how a builder process reads beside the writer
                sync=True,  # a write returns only after fsync: acknowledged means durable
                metasync=True,
                readahead=False,  # random lookups; readahead would only evict hot pages
                subdir=True,
                create=not readonly,
            )
            for name in _FIXED_DBS:
                try:
                    self._db[name] = self._env.open_db(name, create=not readonly)
                except lmdb.NotFoundError:
                    if not (readonly and name in _LATER_DBS):
                        raise
                    self._db[name] = None
            # open every space's db now: opening one later inside a write txn would deadlock
            with self._reading() as txn:
                known = [k.decode() for k in txn.cursor(db=self._db[b"spaces"]).iternext(values=False)]
            for space in known:
                self._emb_db(space)
            if not readonly:
                self._write(self._init_meta)
        except StoreError:
            self.close()
            raise
        except (lmdb.Error, OSError) as e:
            self.close()
            raise StoreError(f"cannot open seed store at {self.path}: {e}") from e

    # ---- lifecycle -------------------------------------------------------------------------

    def _take_writer_lock(self) -> None:
        f = open(self.path / "writer.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StoreError(
                    f"seed store at {self.path} is already open for writing (writer pid {holder}); "
                    "one writer per store — open it with readonly=True to read beside it"
                ) from e
            raise
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lockfile = f

    def close(self) -> None:
        """Close the environment and release the writer lock."""
        if self._env is not None:
            with self._wlock, self._rw.exclusive():
                self._env.close()
            self._env = None
        if self._lockfile is not None:
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)
            self._lockfile.close()
            self._lockfile = None

    def __enter__(self) -> "SeedStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- transactions ----------------------------------------------------------------------

    def _env_or_raise(self) -> lmdb.Environment:
        if self._env is None:
            raise StoreError(f"seed store at {self.path} is closed")
        return self._env

    def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one write txn; on MapFullError abort, double the map and rerun it all."""
        if self.readonly:
            raise StoreError(f"seed store at {self.path} is open read-only")
        with self._wlock:
            while True:
                env = self._env_or_raise()
                try:
                    txn = env.begin(write=True)
                except lmdb.Error as e:
                    raise StoreError(f"write to seed store at {self.path} failed: {e}") from e
                try:
                    result = fn(txn)
                    txn.commit()
                    return result
                except lmdb.MapFullError:
                    self._abort(txn)
                    if self._rw.held_by_me():
                        raise StoreError(
                            f"seed store at {self.path} is full and cannot grow while this thread holds "
                            "a read view; finish the read first"
                        ) from None
                    self._grow(env)
                except lmdb.Error as e:
                    self._abort(txn)
                    raise _write_error(self.path, e) from e
                except BaseException:
                    self._abort(txn)
                    raise

    def _grow(self, env: lmdb.Environment) -> None:
        """Double the map once no read view is open (new ones wait): LMDB grows a map only
        with no txn open in the process. Readers of single calls are paused just for the
        resize itself; a view still open after ``_GROW_WAIT_S`` fails this write instead."""
        with self._views_cond:
            self._growing = True
            try:
                if not self._views_cond.wait_for(lambda: self._views == 0, _GROW_WAIT_S):
                    raise StoreError(
                        f"seed store at {self.path} is full and cannot grow while a read view "
                        "(an index build) is open; retry when it ends")
                with self._rw.exclusive():
                    env.set_mapsize(env.info()["map_size"] * 2)
            finally:
                self._growing = False
                self._views_cond.notify_all()

    def _abort(self, txn: lmdb.Transaction) -> None:
        # py-lmdb 3.0 makes a write-txn abort wait until no read call is in flight, which busy
        # reader threads can postpone for seconds; so pause our readers while it runs.
        if self._rw.held_by_me():
            txn.abort()
            return
        with self._rw.exclusive():
            txn.abort()

    def _begin(self, own_views: int = 0) -> lmdb.Transaction:
        """A read txn; adopts a map the writer grew since we mapped it (MDB_MAP_RESIZED) first,
        which needs no other txn open here (``own_views``: views the caller counted itself)."""
        while True:
            env = self._env_or_raise()
            with self._rw.shared():
                try:
                    return env.begin(write=False)
                except lmdb.MapResizedError:
                    pass
                except lmdb.Error as e:
                    raise StoreError(f"read from seed store at {self.path} failed: {e}") from e
            if self._rw.held_by_me() or self._views > own_views:
                raise StoreError(f"seed store at {self.path} grew under a long read; retry")
            with self._wlock, self._rw.exclusive():
                env.set_mapsize(0)  # 0: take the size the writer recorded

    @contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction]:
        """One short read txn, under the read lock for its whole (short) life."""
        txn = self._begin()
        with self._rw.shared():
            try:
                yield txn
            except lmdb.Error as e:
                raise StoreError(f"read from seed store at {self.path} failed: {e}") from e
            finally:
                txn.abort()

    def _emb_db(self, space: str):
        name = b"emb:" + space.encode()
        db = self._db.get(name)
        if db is None:
            with self._dblock:
                db = self._db.get(name)
                if db is None:
                    try:
                        db = self._env_or_raise().open_db(name, create=not self.readonly)
                    except lmdb.NotFoundError as e:
                        raise NotFound(f"space {space!r} has no embeddings db in {self.path}") from e
                    except lmdb.DbsFullError as e:
                        raise StoreError(f"too many spaces in {self.path} "
                                         f"(max {_MAX_DBS - len(_FIXED_DBS)})") from e
                    self._db[name] = db
        return db

    def _init_meta(self, txn: lmdb.Transaction) -> None:
        meta = self._db[b"meta"]
        if txn.get(_K_NEXT_ID, db=meta) is None:
            txn.put(_K_NEXT_ID, _k(1), db=meta)
            txn.put(_K_LAST_SEQ, _k(0), db=meta)
        if txn.get(_K_SEEDOPS_BUILT, db=meta) is None:
            # A store written before per-seed history was indexed: index its log once.
            index = self._db[b"seedops"]
            for key, raw in txn.cursor(db=self._db[b"oplog"]).iternext():
                txn.put(_k(json.loads(raw)["i"]) + key, b"", db=index)
            txn.put(_K_SEEDOPS_BUILT, b"1", db=meta)

    def _next(self, txn: lmdb.Transaction, key: bytes, first: int) -> int:
        meta = self._db[b"meta"]
        raw = txn.get(key, db=meta)
        return _unk(raw) if raw else first

    def _log(self, txn: lmdb.Transaction, kind: OpKind, seed_id: int, labels, actor: str,
             ts: float, reason: str = "", previous: Sequence[Label] = (), space: str = "",
             replaces: str = "") -> None:
        seq = self._next(txn, _K_LAST_SEQ, 0) + 1
        txn.put(_K_LAST_SEQ, _k(seq), db=self._db[b"meta"])
        entry = {"k": int(kind), "i": seed_id, "t": ts, "l": _labels_json(labels), "a": actor,
                 **({"r": reason} if reason else {}),
                 **({"p": _labels_json(previous)} if previous else {}),
                 **({"s": space} if space else {}), **({"rp": replaces} if replaces else {})}
        txn.put(_k(seq), _dumps(entry), db=self._db[b"oplog"], append=True)
        txn.put(_k(seed_id) + _k(seq), b"", db=self._db[b"seedops"])

    def _index_labels(self, txn: lmdb.Transaction, seed_id: int, labels, add: bool) -> None:
        db = self._db[b"labels"]
        for lb in labels:
            key = lb.name.encode() + b"\0" + _k(seed_id)
            if add:
                txn.put(key, b"", db=db)
            else:
                txn.delete(key, db=db)

    def _spaces(self, txn: lmdb.Transaction) -> dict[str, dict]:
        out = {}
        for key, raw in txn.cursor(db=self._db[b"spaces"]).iternext():
            space = key.decode()
            info = json.loads(raw)
            info["count"] = txn.stat(self._emb_db(space))["entries"]
            out[space] = info
        return out

    # ---- writes ----------------------------------------------------------------------------

    def register_space(self, space: str, model_id: str, dim: int, dtype: str) -> None:
        """Record a space's model the first time; a different model for it raises ModelMismatch."""
        if not space or not model_id:
            raise InvalidArgument("space and model_id must be non-empty")
        if dtype not in _DTYPES:
            raise InvalidArgument(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if dim < 1 or (dtype == "uint8" and dim % 8):
            raise InvalidArgument(f"bad dim {dim} for dtype {dtype} (binary dims are bits, a multiple of 8)")
        with self._reading() as txn:
            raw = txn.get(space.encode(), db=self._db[b"spaces"])
        if raw is not None:
            self._check_same_model(space, json.loads(raw), model_id, dim, dtype)
            return
        with self._wlock:  # _emb_db commits its own txn; keep it off a concurrent writer
            self._emb_db(space)

        def fn(txn: lmdb.Transaction) -> None:
            raw = txn.get(space.encode(), db=self._db[b"spaces"])
            if raw is not None:
                self._check_same_model(space, json.loads(raw), model_id, dim, dtype)
                return
            txn.put(space.encode(), _dumps({"model_id": model_id, "dim": dim, "dtype": dtype}), db=self._db[b"spaces"])

        self._write(fn)

    @staticmethod
    def _check_same_model(space: str, info: dict, model_id: str, dim: int, dtype: str) -> None:
        if (info["model_id"], info["dim"], info["dtype"]) != (model_id, dim, dtype):
            raise ModelMismatch(
                f"space {space!r} holds embeddings of {info['model_id']} (dim {info['dim']}, {info['dtype']}); "
                f"refusing {model_id} (dim {dim}, {dtype}) — rebuild the space to change models"
            )

    def update_spaces(self, changes: Mapping[str, Mapping[str, Any]], kind: OpKind | None = None,
                      space: str = "", replaces: str = "", actor: str = "",
                      reason: str = "") -> None:
        """Merge fields (``role``, ``model``, ``config``, ``replaces``) into registered spaces'
        records in ONE transaction, with one op-log entry of ``kind`` naming ``space`` (the
        audit trail of shadow / promote / rollback). A space set to a role again is no longer
        retired."""

        def fn(txn: lmdb.Transaction) -> None:
            db, meta = self._db[b"spaces"], self._db[b"meta"]
            raw_retired = txn.get(_K_RETIRED_SPACES, db=meta)
            retired = json.loads(raw_retired) if raw_retired else {}
            for name, fields in changes.items():
                raw = txn.get(name.encode(), db=db)
                if raw is None:
                    raise NotFound(f"space {name!r} is not registered in {self.path}")
                txn.put(name.encode(), _dumps({**json.loads(raw), **fields}), db=db)
                retired.pop(name, None)
            txn.put(_K_RETIRED_SPACES, _dumps(retired), db=meta)
            if kind is not None:
                self._log(txn, kind, 0, (), actor, time.time(), reason, space=space,
                          replaces=replaces)

        self._write(fn)

    def put_embeddings(self, space: str, model_id: str, ids: Sequence[int], vectors: np.ndarray,
                       progress: tuple[str, Mapping[str, Any]] | None = None) -> np.ndarray:
        """Store vectors computed elsewhere (a re-embed) for seeds that are still active, in
        ONE transaction with the run's progress record (``(key, fields)``); a seed removed
        meanwhile gets none (it must not come back). Returns the ids written. ModelMismatch
        when the space holds another model's vectors."""
        ids = [int(i) for i in ids]
        vectors = np.asarray(vectors)
        if len(ids) != len(vectors):
            raise InvalidArgument(f"{len(ids)} ids for {len(vectors)} vectors")

        def fn(txn: lmdb.Transaction) -> np.ndarray:
            raw = txn.get(space.encode(), db=self._db[b"spaces"])
            if raw is None:
                raise NotFound(f"space {space!r} is not registered in {self.path}")
            info = json.loads(raw)
            if info["model_id"] != model_id:
                raise ModelMismatch(f"space {space!r} holds {info['model_id']}; refusing "
                                    f"vectors of {model_id}")
            seeds_db, emb = self._db[b"seeds"], self._emb_db(space)
            written = []
            for seed_id, vec in zip(ids, vectors):
                rec = txn.get(_k(seed_id), db=seeds_db) if seed_id > 0 else None
                if rec is None or json.loads(rec)["r"]:
                    continue
                txn.put(_k(seed_id), _encode_vector(space, vec, info), db=emb)
                written.append(seed_id)
            if progress is not None:
                key, fields = progress
                txn.put(_K_PROGRESS + key.encode(), _dumps(dict(fields)), db=self._db[b"meta"])
            return np.asarray(written, dtype=np.int64)

        return self._write(fn)

    def put_progress(self, key: str, fields: Mapping[str, Any]) -> None:
        """Write a re-embed run's progress record alone (its start, its end)."""
        self._write(lambda txn: txn.put(_K_PROGRESS + key.encode(), _dumps(dict(fields)),
                                        db=self._db[b"meta"]))

    def retire_space(self, space: str, actor: str = "", reason: str = "") -> None:
        """Drop a space: its record and every vector of it, in ONE transaction with an op-log
        entry; the name is remembered as retired so a config still listing it is not served
        with an empty index."""

        def fn(txn: lmdb.Transaction) -> None:
            db, meta = self._db[b"spaces"], self._db[b"meta"]
            raw = txn.get(space.encode(), db=db)
            if raw is None:
                raise NotFound(f"space {space!r} is not registered in {self.path}")
            txn.drop(self._emb_db(space), delete=False)  # empty it; the handle stays valid
            txn.delete(space.encode(), db=db)
            txn.delete(_K_PROGRESS + space.encode(), db=meta)
            raw_retired = txn.get(_K_RETIRED_SPACES, db=meta)
            retired = json.loads(raw_retired) if raw_retired else {}
            now = time.time()
            retired[space] = {"model_id": json.loads(raw)["model_id"], "ts": now}
            txn.put(_K_RETIRED_SPACES, _dumps(retired), db=meta)
            self._log(txn, OpKind.RETIRE, 0, (), actor, now, reason, space=space)

        self._write(fn)

    def add_seeds(self, seeds: Sequence[NewSeed], merge_labels: bool = False) -> list[AddResult]:
        """Add seeds in ONE transaction. An item whose content is an active seed's gets that
        seed's id (``created`` False); with ``merge_labels`` its labels are merged onto that
        seed (a higher severity wins), logged as a relabel."""
        for s in seeds:
            _check_new(s)

        def fn(txn: lmdb.Transaction) -> list[AddResult]:
            spaces_db, sha_db = self._db[b"spaces"], self._db[b"sha"]
            infos: dict[str, dict] = {}
            out: list[AddResult] = []
            next_id = self._next(txn, _K_NEXT_ID, 1)
            now = time.time()
            for s in seeds:
                sha = s.sha256.lower()
                existing = txn.get(sha.encode(), db=sha_db)
                if existing is not None:
                    out.append(self._existing(txn, _unk(existing), s, merge_labels, now))
                    continue
                vectors = {}
                for space, vec in s.embeddings.items():
                    if space not in infos:
                        raw = txn.get(space.encode(), db=spaces_db)
                        if raw is None:
                            raise InvalidArgument(f"space {space!r} is not registered; register_space first")
                        infos[space] = json.loads(raw)
                    vectors[space] = _encode_vector(space, vec, infos[space])
                seed_id, next_id = next_id, next_id + 1
                key = _k(seed_id)
                seed = Seed(
                    seed_id=seed_id,
                    labels=tuple(s.labels),
                    source=s.source,
                    note=s.note,
                    created_at=now,
                    sha256=sha,
                    modalities=tuple(s.modalities),
                    has_content=s.content is not None,
                    text=s.text,
                    hash_only=s.hash_only,
                    added_by=s.actor,
                )
                txn.put(key, _record(seed), db=self._db[b"seeds"], append=True)
                txn.put(sha.encode(), key, db=sha_db)
                self._index_labels(txn, seed_id, seed.labels, add=True)
                if s.content is not None:
                    txn.put(key, bytes(s.content), db=self._db[b"content"], append=True)
                for space, blob in vectors.items():
                    txn.put(key, blob, db=self._emb_db(space), append=True)
                for kind, blob in s.aux.items():
                    txn.put(key + kind.encode(), bytes(blob), db=self._db[b"aux"])
                self._log(txn, OpKind.ADD, seed_id, seed.labels, s.actor, now, s.reason)
                out.append(AddResult(seed_id, True, False, seed.labels))
            txn.put(_K_NEXT_ID, _k(next_id), db=self._db[b"meta"])
            return out

        return self._write(fn)

    def _existing(self, txn: lmdb.Transaction, seed_id: int, new: NewSeed, merge: bool,
                  now: float) -> AddResult:
        """An added item that is the active seed ``seed_id``: merge its labels when asked."""
        seed = _seed(seed_id, txn.get(_k(seed_id), db=self._db[b"seeds"]))
        if not merge:
            return AddResult(seed_id, False, False, seed.labels)
        labels = check_labels(merge_labels(seed.labels, new.labels))
        if labels == seed.labels:
            return AddResult(seed_id, False, False, seed.labels)
        txn.put(_k(seed_id), _record(replace(seed, labels=labels)), db=self._db[b"seeds"])
        self._index_labels(txn, seed_id, seed.labels, add=False)
        self._index_labels(txn, seed_id, labels, add=True)
        self._log(txn, OpKind.RELABEL, seed_id, labels, new.actor, now,
                  new.reason or "labels merged from an exact duplicate", seed.labels)
        return AddResult(seed_id, False, True, labels)

    def remove_seeds(self, ids: Sequence[int], actor: str = "", reason: str = "",
                     ) -> list[RemoveResult]:
        """Mark seeds removed (record and content kept), drop them from the active set and put
        their vectors aside for a restore; one result per given id, in order."""
        ids = [int(i) for i in ids]

        def fn(txn: lmdb.Transaction) -> list[RemoveResult]:
            seeds_db, retired = self._db[b"seeds"], self._db[b"retired"]
            spaces = [k.decode() for k in txn.cursor(db=self._db[b"spaces"]).iternext(keys=True, values=False)]
            now = time.time()
            out: list[RemoveResult] = []
            for seed_id in ids:
                raw = txn.get(_k(seed_id), db=seeds_db) if seed_id >= 0 else None
                if raw is None:
                    out.append(RemoveResult(seed_id, RemoveStatus.NOT_FOUND))
                    continue
                seed = _seed(seed_id, raw)
                if seed.removed:
                    out.append(RemoveResult(seed_id, RemoveStatus.ALREADY_REMOVED))
                    continue
                key = _k(seed_id)
                gone = replace(seed, removed=True, removed_at=now)
                txn.put(key, _record(gone), db=seeds_db)
                txn.delete(seed.sha256.encode(), db=self._db[b"sha"])
                self._index_labels(txn, seed_id, seed.labels, add=False)
                txn.put(key, b"", db=retired)
                for space in spaces:
                    emb = self._emb_db(space)
                    blob = txn.get(key, db=emb)
                    if blob is not None:
                        txn.put(key + space.encode(), blob, db=retired)
                        txn.delete(key, db=emb)
                self._log(txn, OpKind.REMOVE, seed_id, seed.labels, actor, now, reason)
                out.append(RemoveResult(seed_id, RemoveStatus.REMOVED))
            return out

        return self._write(fn)

    def relabel(self, seed_id: int, labels: Sequence[Label], actor: str = "",
                reason: str = "") -> Seed:
        """Replace an active seed's labels; NotFound for unknown or removed seeds."""
        labels = check_labels(labels)
        seed_id = int(seed_id)

        def fn(txn: lmdb.Transaction) -> Seed:
            raw = txn.get(_k(seed_id), db=self._db[b"seeds"]) if seed_id >= 0 else None
            if raw is None:
                raise NotFound(f"seed {seed_id} does not exist")
            seed = _seed(seed_id, raw)
            if seed.removed:
                raise NotFound(f"seed {seed_id} was removed")
            new = replace(seed, labels=labels)
            txn.put(_k(seed_id), _record(new), db=self._db[b"seeds"])
            self._index_labels(txn, seed_id, seed.labels, add=False)
            self._index_labels(txn, seed_id, labels, add=True)
            self._log(txn, OpKind.RELABEL, seed_id, labels, actor, time.time(), reason,
                      seed.labels)
            return new

        return self._write(fn)

    def restore_seed(self, seed_id: int, actor: str = "", reason: str = "",
                     vectors: dict[str, np.ndarray] | None = None,
                     ) -> tuple[Seed, bool, dict[str, np.ndarray]]:
        """Make a removed seed active again under its own id: the vectors kept aside at its
        removal go back (``vectors``, re-embedded by the caller, stand in for a seed removed
        before vectors were kept). Returns (seed, restored now, space -> vector restored);
        an active seed is returned as it is. NotFound for an unknown id; InvalidArgument when
        its content is active as another seed, or when it has no vectors to come back with."""
        seed_id = int(seed_id)

        def fn(txn: lmdb.Transaction) -> tuple[Seed, bool, dict[str, np.ndarray]]:
            seeds_db, retired = self._db[b"seeds"], self._db[b"retired"]
            raw = txn.get(_k(seed_id), db=seeds_db) if seed_id >= 0 else None
            if raw is None:
                raise NotFound(f"seed {seed_id} does not exist")
            seed = _seed(seed_id, raw)
            if not seed.removed:
                return seed, False, {}
            other = txn.get(seed.sha256.encode(), db=self._db[b"sha"])
            if other is not None:
                raise InvalidArgument(
                    f"seed {seed_id} cannot be restored: the same content is active as seed "
                    f"{_unk(other)}")
            key = _k(seed_id)
            kept: dict[str, bytes] = {}
            marked = txn.pop(key, db=retired) is not None
            cur = txn.cursor(db=retired)
            if cur.set_range(key):
                for k, blob in cur.iternext(keys=True, values=True):
                    if not k.startswith(key):
                        break
                    kept[k[8:].decode()] = bytes(blob)
            infos = self._spaces(txn)
            if not marked and vectors:
                kept = {sp: _encode_vector(sp, v, infos[sp]) for sp, v in vectors.items()
                        if sp in infos}
            if not marked and not kept:
                raise InvalidArgument(
                    f"seed {seed_id} cannot be restored: no vectors were kept at its removal "
                    "and it has no stored content to embed again; add the item anew")
            restored: dict[str, np.ndarray] = {}
            for space, blob in kept.items():
                txn.delete(key + space.encode(), db=retired)
                if space in infos:  # a space since dropped keeps nothing
                    txn.put(key, blob, db=self._emb_db(space))
                    restored[space] = _stack([blob], infos[space])[0]
            back = replace(seed, removed=False, removed_at=None)
            txn.put(key, _record(back), db=seeds_db)
            txn.put(seed.sha256.encode(), key, db=self._db[b"sha"])
            self._index_labels(txn, seed_id, seed.labels, add=True)
            self._log(txn, OpKind.RESTORE, seed_id, seed.labels, actor, time.time(), reason)
            return back, True, restored

        return self._write(fn)

    # ---- reads (the single-call ones are _Reads') ------------------------------------------

    def iter_embeddings(self, space: str, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(int64 ids, vectors) batches of ACTIVE seeds in id order, all from one read view."""
        with self.read_view() as view:
            yield from view.iter_embeddings(space, batch)

    def ops_after(self, seq: int) -> Iterator[OpEntry]:
        """Op-log entries with seq > ``seq``, in order (the log is append-only, so chunked txns are safe)."""
        while True:
            with self._reading() as txn:
                cur = txn.cursor(db=self._db[b"oplog"])
                if not cur.set_range(_k(seq + 1)):
                    return
                chunk = [_op(_unk(k), v) for k, v in islice(cur.iternext(), _OPS_CHUNK)]
            yield from chunk
            if len(chunk) < _OPS_CHUNK:
                return
            seq = chunk[-1].seq

    def stats(self) -> dict:
        """Counts for operators: active/removed seeds, per-label and per-space counts, map usage."""
        env = self._env_or_raise()
        with self._reading() as txn:
            n_seeds = txn.stat(self._db[b"seeds"])["entries"]
            active = txn.stat(self._db[b"sha"])["entries"]  # one sha entry per active seed
            labels: dict[str, int] = {}
            for key in txn.cursor(db=self._db[b"labels"]).iternext(keys=True, values=False):
                name = key[:-9].decode()
                labels[name] = labels.get(name, 0) + 1
            info = env.info()
            return {
                "seeds_active": active,
                "seeds_removed": n_seeds - active,
                "labels": labels,
                "spaces": {k: v["count"] for k, v in self._spaces(txn).items()},
                "last_seq": self._next(txn, _K_LAST_SEQ, 0),
                "map_size": info["map_size"],
                "used_bytes": (info["last_pgno"] + 1) * env.stat()["psize"],
            }

    @contextmanager
    def read_view(self) -> Iterator[ReadView]:
        """A consistent view over ONE read txn, for long reads (the batch index builder)."""
        with self._views_cond:
            self._views_cond.wait_for(lambda: not self._growing)
            self._views += 1
        try:
            txn = self._begin(own_views=1)
        except BaseException:
            self._view_closed()
            raise
        try:
            yield ReadView(self, txn)
        finally:
            with self._rw.shared():
                txn.abort()
            self._view_closed()

    def _view_closed(self) -> None:
        with self._views_cond:
            self._views -= 1
            self._views_cond.notify_all()


_FULL_BELOW_BYTES = 64 << 20  # an I/O error with less free disk than this is a full disk


def _write_error(path: Path, error: lmdb.Error) -> StoreError:
    """StorageFull when the disk is (nearly) full — LMDB reports ENOSPC as an I/O error on
    commit — else StoreError; either way nothing of the write was kept."""
    code = getattr(error, "errno", None) or (error.args[0] if error.args else None)
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = None
    if code in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < _FULL_BELOW_BYTES):
        return StorageFull(f"disk full under the seed store at {path} ({free} bytes free): "
                           "nothing was written; free space and retry")
    return StoreError(f"write to seed store at {path} failed: {error}")


def _encode_vector(space: str, vec, info: dict) -> bytes:
    arr = np.asarray(vec)
    width = _width(info)
    if arr.ndim != 1 or arr.shape[0] != width:
        raise InvalidArgument(
            f"space {space!r} wants a 1-d vector of {width} ({info['dtype']}), got shape {arr.shape}"
        )
    if info["dtype"] == "uint8":
        if arr.dtype != np.uint8:
            raise InvalidArgument(f"space {space!r} is binary: want packed uint8 bits, got {arr.dtype}")
    else:
        if not np.issubdtype(arr.dtype, np.floating):
            raise InvalidArgument(f"space {space!r} wants float vectors, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise InvalidArgument(f"space {space!r}: vector has NaN or inf")
    return np.ascontiguousarray(arr, dtype=_DTYPES[info["dtype"]]).tobytes()
