"""A space's index split into shards by ``id % n_shards``, searched together, merged top-k.

Scores are similarities for every space (higher is better): cosine via inner product on
L2-normalised float vectors, ``1 - hamming / bits`` on binary spaces.

Sharding costs no speed (FAISS wiki, "Threads and asynchronous calls": shard threads x OpenMP
threads <= cores). CPU shards share the cores FAISS's OpenMP already uses: a batch large enough
to occupy every thread inside one shard searches the shards one after another, each with all
threads; a small batch (FAISS parallelises over queries, so one query is one thread) spreads
the shards over single-threaded workers instead. GPU shards sit one per device and are searched
in parallel, each under its device's lock.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar
from pathlib import Path

import faiss
import numpy as np

from dedup.config import IndexPlan
from dedup.errors import InvalidArgument
from dedup.index.shard import (
    Shard,
    build_cpu_index,
    clone,
    hamming_to_similarity,
    num_gpus,
    similarity_to_hamming,
)

__all__ = ["ShardedIndex", "trained_index", "resolve_factory", "resolve_shards",
           "hamming_to_similarity", "similarity_to_hamming"]

_T = TypeVar("_T")

# Below these sizes ``auto`` searches exactly (fast enough, no training, no recall lost).
# Binary codes stay exact ten times longer: a scan of 100k 2048-bit MinHash codes took 1.7 ms
# (of 100k 384-d floats 21 ms), and a binary IVF clusters such codes poorly -- at 100k text
# seeds, BIVF1024 (nprobe 64) missed the top match of 6 of 118 lookups over the MinHash
# threshold, IVF1024 on MiniLM none of 93 (tools/bench_text --answers, auto against exact).
AUTO_IVF_MIN = {"ip": 100_000, "hamming": 1_000_000}
_MAX_TRAIN = 256  # training points per centroid (FAISS's own cap)


def auto_nprobe(factory: str) -> int:
    """Probe 1/16 of the IVF lists, at least 16: moderation wants recall before speed.

    tools/bench_core on 512-d clustered vectors, 1M in IVF4096: nprobe 16 found the source of
    55% of near-duplicate queries, nprobe 64 74%; at 100k in IVF1024 nprobe 16 found 91%.
    ``dedup-build`` still checks recall before it publishes.
    """
    m = re.match(r"(?:IDMap2?,)?B?IVF(\d+)", factory)
    return max(16, int(m.group(1)) // 16) if m else 16


def resolve_factory(factory: str, expected_size: int, n_shards: int, metric: str) -> str:
    """``auto`` -> exact search for small spaces (``AUTO_IVF_MIN``), IVF with nlist ~
    4 sqrt(n per shard) above."""
    if factory != "auto":
        return factory
    if expected_size < AUTO_IVF_MIN[metric]:
        return exact_factory(metric)
    per_shard = max(1, expected_size // n_shards)
    nlist = 1 << max(4, round(math.log2(4 * math.sqrt(per_shard))))
    return f"BIVF{nlist}" if metric == "hamming" else f"IVF{nlist},Flat"


def resolve_shards(n_shards: int | str, use_gpu: bool | None = None,
                   metric: str = "ip") -> int:
    """``auto`` -> one shard per GPU FAISS may use for this space, else one (a CPU gains
    nothing from more: its cores already search one shard together)."""
    if n_shards != "auto":
        if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
            raise InvalidArgument(f"n_shards must be an integer >= 1 or 'auto', got {n_shards!r}")
        return n_shards
    if use_gpu is False or metric == "hamming":  # binary indexes stay on CPU
        return 1
    return max(1, num_gpus())


def _single_omp_thread() -> None:
    # OpenMP's thread count is per calling thread: this worker's FAISS calls use one thread,
    # other threads keep theirs.
    faiss.omp_set_num_threads(1)


class ShardedIndex:
    """Shards of one space; thread-safe: concurrent searches, exclusive per-shard writes."""

    def __init__(self, dim: int, factory: str = "auto", n_shards: int | str = 1,
                 metric: str = "ip", nprobe: int | None = None, use_gpu: bool | None = None,
                 expected_size: int = 0, fp16: bool = False, _shards: list[Shard] | None = None):
        n_shards = resolve_shards(n_shards, use_gpu, metric)
        if dim < 1:
            raise InvalidArgument(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.metric = metric
        self.n_shards = n_shards
        self.factory = resolve_factory(factory, expected_size, n_shards, metric)
        self.fp16 = fp16
        ngpu = num_gpus() if use_gpu is not False else 0
        if use_gpu and ngpu == 0:
            raise InvalidArgument("use_gpu=True but FAISS sees no GPU")
        self._ngpu = 0 if metric == "hamming" else ngpu  # binary indexes stay on CPU
        if _shards is None:
            template = build_cpu_index(self.factory, dim, metric)
            _shards = [self._make_shard(clone(template), i) for i in range(n_shards)]
        self.shards = _shards
        self._pool: ThreadPoolExecutor | None = None
        self._threads = max(1, faiss.omp_get_max_threads())  # the cores FAISS searches with
        if n_shards > 1 and self.on_gpu:
            # one thread per shard: devices work in parallel, each shard under its device lock
            self._pool = ThreadPoolExecutor(n_shards, thread_name_prefix="shard")
        elif n_shards > 1 and self._threads > 1:
            self._pool = ThreadPoolExecutor(min(n_shards, self._threads),
                                            thread_name_prefix="shard",
                                            initializer=_single_omp_thread)
        self.nprobe = nprobe

    def _make_shard(self, cpu_index, i: int) -> Shard:
        gpu = i % self._ngpu if self._ngpu else None
        return Shard.create(cpu_index, self.dim, self.metric, gpu, self.fp16)

    # -- properties --------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Active (not removed) vectors over all shards."""
        return sum(s.ntotal for s in self.shards)

    @property
    def is_trained(self) -> bool:
        return all(bool(s.index.is_trained) for s in self.shards)

    @property
    def on_gpu(self) -> bool:
        return any(s.gpu_device is not None for s in self.shards)

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        """IVF lists visited per query (ignored by non-IVF shards); None: ``auto_nprobe``."""
        if value is not None and value < 1:
            raise InvalidArgument(f"nprobe must be >= 1, got {value}")
        self._nprobe = auto_nprobe(self.factory) if value is None else int(value)
        for s in self.shards:
            with s.lock.exclusive():
                _set_nprobe(s.index, self._nprobe)

    # -- writes ------------------------------------------------------------------------------
    def train(self, x: np.ndarray) -> None:
        """Train the coarse quantizer once on (a sample of) x; every shard gets a copy."""
        if self.is_trained:
            return
        x = self._vectors(x)
        cpu = build_cpu_index(self.factory, self.dim, self.metric)
        nlist = getattr(faiss.try_extract_index_ivf(cpu) if self.metric == "ip" else cpu,
                        "nlist", 0)
        if nlist and len(x) > nlist * _MAX_TRAIN:
            rng = np.random.default_rng(0)
            x = x[np.sort(rng.choice(len(x), nlist * _MAX_TRAIN, replace=False))]
        if nlist and len(x) < nlist:
            raise InvalidArgument(f"need at least {nlist} training vectors, got {len(x)}")
        cpu.train(x)
        self.shards = [self._make_shard(clone(cpu), i) for i in range(self.n_shards)]
        self.nprobe = self._nprobe

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add vectors under int64 ids (routed by id % n_shards); an existing id is replaced.

        A factory that needs training must be trained first (``train``): adding never trains,
        so a write can never fail for want of training data.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        x = self._vectors(x)
        if len(ids) != len(x):
            raise InvalidArgument(f"{len(ids)} ids for {len(x)} vectors")
        if len(ids) == 0:
            return
        if (ids < 0).any():
            raise InvalidArgument("ids must be non-negative")
        if not self.is_trained:
            raise InvalidArgument(f"{self.factory} is not trained; train it before adding")
        # Within one batch the last occurrence of an id wins, as sequential adds would.
        _, last = np.unique(ids[::-1], return_index=True)
        if len(last) != len(ids):
            keep = np.sort(len(ids) - 1 - last)
            ids, x = ids[keep], x[keep]
        shard_of = ids % self.n_shards
        for i, shard in enumerate(self.shards):
            sel = np.flatnonzero(shard_of == i)
            if len(sel):
                shard.add(ids[sel], np.ascontiguousarray(x[sel]))

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids from their shards; returns the number actually removed."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        shard_of = ids % self.n_shards
        return sum(
            shard.remove(ids[shard_of == i]) for i, shard in enumerate(self.shards)
            if (shard_of == i).any()
        )

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Bool mask: which ids are currently searchable."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros(len(ids), dtype=bool)
        shard_of = ids % self.n_shards
        for i, shard in enumerate(self.shards):
            sel = np.flatnonzero(shard_of == i)
            if len(sel):
                out[sel] = shard.contains(ids[sel])
        return out

    # -- search ------------------------------------------------------------------------------
    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over all shards: (similarities float32 (nq,k), ids int64), -inf / -1 padding."""
        if k < 1:
            raise InvalidArgument(f"k must be >= 1, got {k}")
        x = self._vectors(x)
        nq = len(x)
        if len(self.shards) == 1:
            return self.shards[0].search(x, k)
        parts = self._each_shard(lambda s: s.search(x, k), nq)
        # Similarity scores: keep the maximum (a min-heap of size k), see STYLE.md section 1.
        heap = faiss.ResultHeap(nq, k, keep_max=True)
        for D, I in parts:
            heap.add_result(D, I)  # shard padding is already (-inf, -1)
        heap.finalize()
        D, I = heap.D, heap.I
        D[I < 0] = -np.inf
        return D, I

    def _each_shard(self, fn: Callable[[Shard], _T], nq: int) -> list[_T]:
        """``fn`` of every shard, in shard order, on as many threads as the hardware can use.

        CPU: FAISS parallelises a search over its queries (flat, IVF and HNSW alike; large flat
        batches go to BLAS, threaded the same way), so ``nq`` queries keep ``min(nq, threads)``
        threads busy inside one shard, while single-threaded shard workers keep
        ``min(n_shards, threads)`` busy. Whichever is more wins; never both at once.
        """
        pool = self._pool
        if pool is None:
            return [fn(s) for s in self.shards]
        if not self.on_gpu and min(nq, self._threads) >= min(len(self.shards), self._threads):
            return [fn(s) for s in self.shards]
        return list(pool.map(fn, self.shards))

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> list[str]:
        """Write CPU copies of every shard into directory (fsynced); returns the file names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names: list[str] = []
        for i, shard in enumerate(self.shards):
            names += [p.name for p in shard.save(directory / f"shard-{i:03d}.faiss")]
        return names

    def meta(self) -> dict:
        """What ``load`` needs besides the files (stored in a snapshot manifest)."""
        return {"dim": self.dim, "metric": self.metric, "factory": self.factory,
                "n_shards": self.n_shards, "ntotal": self.ntotal, "nprobe": self.nprobe}

    @classmethod
    def load(cls, directory: Path, meta: dict, use_gpu: bool | None = None,
             fp16: bool = False) -> "ShardedIndex":
        """Read shards saved by ``save``; ``meta`` holds dim, metric, factory, n_shards."""
        directory = Path(directory)
        dim, metric, n = int(meta["dim"]), meta["metric"], int(meta["n_shards"])
        ngpu = 0 if use_gpu is False or metric == "hamming" else num_gpus()
        shards = [
            Shard.load(directory / f"shard-{i:03d}.faiss", dim, metric,
                       i % ngpu if ngpu else None, fp16)
            for i in range(n)
        ]
        return cls(dim, meta["factory"], n, metric, meta.get("nprobe"), use_gpu,
                   fp16=fp16, _shards=shards)

    # -- helpers -----------------------------------------------------------------------------
    def _vectors(self, x: np.ndarray) -> np.ndarray:
        """Validate shape/dtype: float32 (n, dim) or, for binary spaces, uint8 (n, dim/8)."""
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if self.metric == "hamming":
            want, dtype = self.dim // 8, np.uint8
        else:
            want, dtype = self.dim, np.float32
        if x.ndim != 2 or x.shape[1] != want:
            raise InvalidArgument(f"vectors must have shape (n, {want}), got {x.shape}")
        return np.ascontiguousarray(x, dtype=dtype)

    def close(self) -> None:
        """Stop the search threads and let go of the shards (GPU memory included)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        self.shards = []

    def __repr__(self) -> str:
        return (f"ShardedIndex(dim={self.dim}, factory={self.factory!r}, metric={self.metric!r}, "
                f"n_shards={self.n_shards}, ntotal={self.ntotal}, gpu={self.on_gpu})")


def _set_nprobe(index, nprobe: int) -> None:
    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = nprobe
        return
    if isinstance(index, faiss.IndexBinary):
        return
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe
    elif hasattr(index, "nprobe"):  # GPU IVF indexes are not IndexIVF
        index.nprobe = nprobe
    elif hasattr(index, "index") and hasattr(faiss.downcast_index(index.index), "nprobe"):
        faiss.downcast_index(index.index).nprobe = nprobe


def exact_factory(metric: str) -> str:
    """The exact-search factory of a metric (needs no training)."""
    return "BFlat" if metric == "hamming" else "IDMap2,Flat"


def trained_index(dim: int, metric: str, plan: IndexPlan, vectors: np.ndarray,
                  ) -> tuple[ShardedIndex, str]:
    """An empty sharded index per ``plan``, trained on ``vectors`` when its factory needs it,
    and a note when it departs from the plan.

    With too few vectors to train on (an empty or young bank) the index is exact search instead
    and the note says so: ``dedup-build`` trains the planned factory once the bank is big enough.
    """
    index = ShardedIndex(dim, plan.factory, plan.n_shards, metric, plan.nprobe, plan.use_gpu,
                         expected_size=len(vectors), fp16=plan.fp16)
    if index.is_trained:
        return index, ""
    try:
        if len(vectors) == 0:
            raise InvalidArgument("no vectors to train on")
        index.train(vectors)
        return index, ""
    except (InvalidArgument, RuntimeError) as e:  # FAISS training errors are RuntimeError
        planned = index.factory
        index.close()
        exact = ShardedIndex(dim, exact_factory(metric), plan.n_shards, metric, plan.nprobe,
                             plan.use_gpu, fp16=plan.fp16)
        return exact, (f"{planned} needs training ({e}); serving exact search until "
                       "dedup-build trains it")
