"""One FAISS shard: its index, the ids it holds, removal (native or tombstones), and its lock.

Scores are always similarities, higher is better: inner product for float spaces (vectors are
L2-normalised, so IP = cosine) and ``1 - hamming / bits`` for binary spaces.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from pathlib import Path

import faiss
import numpy as np

from dedup.locks import RWLock
from dedup.errors import InvalidArgument

METRICS = ("ip", "hamming")
_GPU_MAX_K = 2048  # FAISS GPU k-selection limit
# Over-fetch cap for tombstone filtering: past it a query may get fewer than k live results
# (never a removed one); a shard with that many tombstones is due for a rebuild.
MAX_OVERFETCH = 8192

# FAISS's switch to BLAS for exact float search of a batch (one pass over the vectors for the
# whole batch instead of one per query): FAISS 1.15 ships 128000, this is the value it long had.
# Measured (200k x 512, 2 cores): batch 32 took 544 ms at 128000 and 63 ms at 20, batch 200
# 3.6 s and 0.19 s, batch 4 69 and 45 ms; one query is unchanged (37 ms), two 35 -> 43 ms.
BLAS_FROM = 20
faiss.cvar.distance_compute_blas_threshold = BLAS_FROM


def hamming_to_similarity(d: np.ndarray, bits: int) -> np.ndarray:
    """Hamming distances -> similarity ``1 - d / bits`` (float32, 1.0 = identical)."""
    return (1.0 - np.asarray(d, dtype=np.float32) / np.float32(bits)).astype(np.float32)


def similarity_to_hamming(s: float | np.ndarray, bits: int) -> np.ndarray:
    """Similarity -> the largest Hamming distance that reaches it (floor, int)."""
    return np.floor((1.0 - np.asarray(s, dtype=np.float64)) * bits + 1e-9).astype(np.int64)


def build_cpu_index(factory: str, dim: int, metric: str) -> faiss.Index | faiss.IndexBinary:
    """FAISS index from a factory string, wrapped in IDMap2 when it has no ids of its own."""
    if metric not in METRICS:
        raise InvalidArgument(f"unknown metric {metric!r}; want one of {METRICS}")
    try:
        if metric == "hamming":
            if dim % 8:
                raise InvalidArgument(f"binary dim must be a multiple of 8 bits, got {dim}")
            index = faiss.index_binary_factory(dim, factory)
            if not isinstance(index, (faiss.IndexBinaryIVF, faiss.IndexBinaryIDMap2)):
                index = faiss.IndexBinaryIDMap2(index)
        else:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            if faiss.try_extract_index_ivf(index) is None and not isinstance(
                index, (faiss.IndexIDMap, faiss.IndexIDMap2)
            ):
                index = faiss.IndexIDMap2(index)
    except RuntimeError as e:  # FAISS parse errors come as RuntimeError
        raise InvalidArgument(f"bad index factory {factory!r}: {e}") from e
    _tune(index)
    return index


def _tune(index) -> None:
    """Search-time defaults FAISS leaves low (HNSW efSearch 16 loses recall on 512-d)."""
    if isinstance(index, faiss.IndexBinary):
        return
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = max(inner.hnsw.efSearch, 128)


def clone(index):
    """Deep copy of a CPU index (serialised where FAISS has no clone, e.g. binary IDMap2)."""
    if isinstance(index, faiss.IndexBinary):
        return faiss.deserialize_index_binary(faiss.serialize_index_binary(index))
    return faiss.clone_index(index)


def _supports_remove(index) -> bool:
    """Probe remove_ids with an id that is never used; FAISS raises where it is unsupported."""
    try:
        index.remove_ids(np.array([-(2**62)], dtype=np.int64))
        return True
    except RuntimeError:
        return False


class _Gpu:
    """One StandardGpuResources per GPU, created lazily and shared by its shards, and one lock
    per GPU: FAISS documents GPU resources as not thread-safe, so every call that uses a
    device's resources (search, add, remove, copy back) holds that device's lock."""

    _res: dict[int, object] = {}
    _locks: dict[int, threading.Lock] = {}
    _lock = threading.Lock()

    @classmethod
    def resources(cls, device: int):
        with cls._lock:
            if device not in cls._res:
                cls._res[device] = faiss.StandardGpuResources()
                cls._locks[device] = threading.Lock()
            return cls._res[device]

    @classmethod
    def lock(cls, device: int) -> threading.Lock:
        cls.resources(device)
        return cls._locks[device]


def num_gpus() -> int:
    """GPUs FAISS can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def to_gpu(index, device: int, fp16: bool = False):
    """Copy a CPU float index onto GPU ``device``; fp16 halves memory for Flat/IVF storage."""
    co = faiss.GpuClonerOptions()
    co.useFloat16 = fp16
    res = _Gpu.resources(device)
    with _Gpu.lock(device):
        return faiss.index_cpu_to_gpu(res, device, index, co)


class Shard:
    """One index over a disjoint part of a space's ids, safe for concurrent search + writes.

    When the index supports ``remove_ids`` FAISS holds the external ids and removal is native.
    Otherwise (HNSW, most GPU indexes) FAISS holds internal sequence numbers; ``_int2ext`` maps
    them back, removed or replaced vectors become tombstones, and search over-fetches by the
    number of tombstones (at most ``MAX_OVERFETCH`` extra) and filters them out, so a removed id
    can never be returned.
    """

    def __init__(self, index, dim: int, metric: str, gpu_device: int | None = None):
        self.index = index
        self.dim = dim
        self.metric = metric
        self.gpu_device = gpu_device
        self.lock = RWLock()
        # GPU indexes do not implement remove_ids (and probing them is not worth the risk).
        self.native_remove = gpu_device is None and _supports_remove(index)
        self._live: set[int] = set()  # external ids (native path)
        self._ext2int: dict[int, int] = {}  # live external -> internal (tombstone path)
        self._int2ext = np.empty(0, dtype=np.int64)  # internal -> external, -1 once dead
        self._n_dead = 0

    @classmethod
    def create(cls, cpu_index, dim: int, metric: str, gpu_device: int | None = None,
               fp16: bool = False) -> "Shard":
        """A shard over an empty (possibly trained) CPU index, moved to a GPU when asked."""
        index = cpu_index
        if gpu_device is not None and metric != "hamming":
            index = to_gpu(cpu_index, gpu_device, fp16)
        else:
            gpu_device = None
        return cls(index, dim, metric, gpu_device)

    # -- state -------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return len(self._live) if self.native_remove else len(self._ext2int)

    @property
    def n_tombstones(self) -> int:
        return self._n_dead

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Bool mask: which ids are live in this shard."""
        live = self._live if self.native_remove else self._ext2int
        return np.fromiter((i in live for i in ids.tolist()), dtype=bool, count=len(ids))

    # -- writes ------------------------------------------------------------------------------
    def _device(self):
        """The GPU's lock for a GPU shard; nothing for a CPU one."""
        return _Gpu.lock(self.gpu_device) if self.gpu_device is not None else nullcontext()

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add vectors; an id already present is replaced. Caller holds no lock."""
        with self.lock.exclusive(), self._device():
            self._remove_locked(ids)
            if self.native_remove:
                self.index.add_with_ids(x, ids)
                self._live.update(ids.tolist())
            else:
                start = len(self._int2ext)
                internal = np.arange(start, start + len(ids), dtype=np.int64)
                self.index.add_with_ids(x, internal)
                self._int2ext = np.concatenate([self._int2ext, ids])
                self._ext2int.update(zip(ids.tolist(), internal.tolist()))

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; returns how many were present."""
        with self.lock.exclusive(), self._device():
            return self._remove_locked(ids)

    def _remove_locked(self, ids: np.ndarray) -> int:
        present = ids[self.contains(ids)]
        if len(present) == 0:
            return 0
        if self.native_remove:
            self.index.remove_ids(present)
            self._live.difference_update(present.tolist())
        else:
            internal = np.fromiter(
                (self._ext2int.pop(i) for i in present.tolist()), dtype=np.int64, count=len(present)
            )
            self._int2ext[internal] = -1
            self._n_dead += len(internal)
        return len(present)

    # -- search ------------------------------------------------------------------------------
    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarity float32, external id int64), padded with (-inf, -1)."""
        with self.lock.shared(), self._device():
            nq = x.shape[0]
            stored = int(self.index.ntotal)
            kk = k if self.native_remove else k + min(self._n_dead, MAX_OVERFETCH)
            kk = min(kk, stored)
            if self.gpu_device is not None:
                kk = min(kk, _GPU_MAX_K)
            if kk <= 0:
                return _empty(nq, k)
            D, I = self.index.search(x, kk)
            if not self.native_remove:
                ext = np.where(I >= 0, self._int2ext[np.maximum(I, 0)], -1)
                I = ext
        D = D.astype(np.float32, copy=False)
        if self.metric == "hamming":
            D = hamming_to_similarity(D, self.dim)
        D = np.where(I >= 0, D, -np.inf).astype(np.float32)
        if not self.native_remove or kk != k:
            D, I = _topk(D, I, k)
        return D, I

    # -- persistence -------------------------------------------------------------------------
    def cpu_index(self):
        """A CPU copy (or the index itself when already on CPU) for writing to disk."""
        if self.gpu_device is None:
            return self.index
        return faiss.index_gpu_to_cpu(self.index)

    def save(self, path: Path) -> list[Path]:
        """Write the shard (and the id map on the tombstone path), fsynced; returns the paths."""
        with self.lock.shared(), self._device():
            cpu = self.cpu_index()
            if self.metric == "hamming":
                faiss.write_index_binary(cpu, str(path))
            else:
                faiss.write_index(cpu, str(path))
            written = [path]
            if not self.native_remove:
                ids_path = path.with_suffix(".ids.npy")
                np.save(ids_path, self._int2ext)
                written.append(ids_path)
        for p in written:
            fsync_file(p)
        return written

    @classmethod
    def load(cls, path: Path, dim: int, metric: str, gpu_device: int | None = None,
             fp16: bool = False) -> "Shard":
        """Read a shard written by ``save`` (optionally onto a GPU)."""
        if metric == "hamming":
            index = faiss.read_index_binary(str(path))
            gpu_device = None
        else:
            index = faiss.read_index(str(path))
        _tune(index)
        ids_path = path.with_suffix(".ids.npy")
        # FAISS labels are internal numbers when an id map was saved, external ids otherwise.
        int2ext = np.load(ids_path).astype(np.int64) if ids_path.exists() else None
        if int2ext is None and (gpu_device is not None or not _supports_remove(index)):
            int2ext = relabel_internal(index)
        if gpu_device is not None:
            index = to_gpu(index, gpu_device, fp16)
        shard = cls(index, dim, metric, gpu_device)
        if int2ext is not None:
            shard.native_remove = False
            shard._int2ext = int2ext
            alive = np.flatnonzero(int2ext >= 0)
            shard._ext2int = dict(zip(int2ext[alive].tolist(), alive.tolist()))
            shard._n_dead = int(len(int2ext) - len(alive))
        else:
            shard._live = set(ids_of(index).tolist())
        return shard


def relabel_internal(index) -> np.ndarray:
    """Rewrite a CPU index's labels to 0..n-1 in place; returns internal -> external."""
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexBinaryIDMap,
                          faiss.IndexBinaryIDMap2)):
        ext = faiss.vector_to_array(index.id_map).astype(np.int64)
        faiss.copy_array_to_vector(np.arange(len(ext), dtype=np.int64), index.id_map)
        if hasattr(index, "construct_rev_map"):
            index.construct_rev_map()
        return ext
    ivf = _ivf_of(index)
    invlists, parts, start = ivf.invlists, [], 0
    for lst in range(ivf.nlist):  # once per list, at load time only
        n = invlists.list_size(lst)
        if not n:
            continue
        parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), n).copy())
        codes = faiss.rev_swig_ptr(invlists.get_codes(lst), n * invlists.code_size).copy()
        new = np.arange(start, start + n, dtype=np.int64)
        invlists.update_entries(lst, 0, n, faiss.swig_ptr(new), faiss.swig_ptr(codes))
        start += n
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _ivf_of(index):
    ivf = index if isinstance(index, faiss.IndexBinaryIVF) else None
    if ivf is None and not isinstance(index, faiss.IndexBinary):
        ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise InvalidArgument(f"cannot read ids of {type(index).__name__}")
    return ivf


def ids_of(index) -> np.ndarray:
    """External ids stored in a CPU index (IDMap2 id_map or the IVF inverted lists)."""
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexBinaryIDMap,
                          faiss.IndexBinaryIDMap2)):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = _ivf_of(index)
    invlists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
        for lst in range(ivf.nlist)
        if invlists.list_size(lst)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def _topk(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row by similarity (filtered ids already at -1/-inf), padded to width k."""
    D = np.where(I >= 0, D, -np.inf).astype(np.float32)
    nq, width = D.shape
    if width < k:
        D = np.hstack([D, np.full((nq, k - width), -np.inf, dtype=np.float32)])
        I = np.hstack([I, np.full((nq, k - width), -1, dtype=np.int64)])
        width = k
    if width > k:
        part = np.argpartition(-D, k - 1, axis=1)[:, :k]
        D = np.take_along_axis(D, part, axis=1)
        I = np.take_along_axis(I, part, axis=1)
    order = np.argsort(-D, axis=1, kind="stable")
    D = np.take_along_axis(D, order, axis=1)
    I = np.take_along_axis(I, order, axis=1)
    I = np.where(np.isfinite(D), I, -1)
    return np.ascontiguousarray(D), np.ascontiguousarray(I)


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry table (renames and new files) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
