"""Core benchmark: embedder throughput and sharded-index search (QPS, latency, recall, memory),
each figure next to its bound.

    python -m tools.bench_core                      # 100k rows + embedders
    python -m tools.bench_core --sizes 1000000 --factories Flat --shards 1,2,4,8 --skip-embed
    python -m tools.bench_core --skip-search --embedders image:effnet-lite0,image:copydet-lite0
    python -m tools.bench_core --sizes 100000,1000000 --json bench.json
    python -m tools.bench_core --skip-embed --gpu   # GPU shards with fp16 storage

Bounds: search QPS is compared with one bare FAISS index of the same factory over the same
vectors, searched the same way (``vs bare``); exact search also with the FLOP limit (2 n d
FLOPs per query at the measured matrix-multiply rate). Embedding items/s is compared with the
FLOP limit: FLOPs per item (counted by torch's FlopCounterMode on a real call) over the
machine's measured fp32 matrix-multiply rate (a large torch matmul on the same threads), so
``% limit`` says how far a model is from what the cores could compute.

Figures only; nothing here asserts on timings. Vectors are synthetic, seeded, L2-normalised and
clustered (a Gaussian mixture, one component per 20 vectors, unit noise per dimension), so IVF
has structure to exploit but not so much that nprobe=16 is trivially exact.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from dedup.index import ShardedIndex
from dedup.index.shard import num_gpus

SENTENCES = (
    "Click this link to claim your free prize before midnight.",
    "The quick brown fox jumps over the lazy dog.",
    "Limited offer: send your bank details to receive the refund.",
    "A cup of coffee on a wooden table in the morning light.",
    "Our team will never ask you for your password by email.",
    "Breaking news: the river flooded the old town overnight.",
    "Congratulations, you have been selected for an exclusive reward!",
    "The astronaut floated above the Earth during the spacewalk.",
)
SKIMAGE_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "page")
EMBED_SPECS = ("image:effnet-lite0", "image:copydet-lite0", "text:minilm-l6",
               "clip:dedup-tiny/none")


# -- embedding ------------------------------------------------------------------------------
def _images():
    import skimage.data
    from PIL import Image

    out = []
    for name in SKIMAGE_NAMES:
        arr = getattr(skimage.data, name)()
        out.append(Image.fromarray(arr).convert("RGB"))
    return out


def _rate(fn, items: list, batch: int, min_s: float = 2.0, max_calls: int = 50) -> float:
    """Items per second calling ``fn`` on consecutive batches, after one warm-up call."""
    fn(items[:batch])
    done, calls, t0 = 0, 0, time.perf_counter()
    while calls < max_calls and (time.perf_counter() - t0 < min_s or calls < 3):
        start = (calls * batch) % len(items)
        chunk = (items * (batch // len(items) + 2))[start:start + batch]
        fn(chunk)
        done += len(chunk)
        calls += 1
    return done / (time.perf_counter() - t0)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matrix-multiply rate in GFLOP/s: best of ``repeats`` n x n torch
    matmuls on torch's threads (the threads the embedders use)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, BLAS kernels
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def flops_per_item(fn, items: list) -> float:
    """FLOPs one call of ``fn`` spends per item (torch's FlopCounterMode: convolutions and
    matrix products, the work that dominates)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn(items)
    return counter.get_total_flops() / len(items)


def bench_embed(specs: list[str], gflops: float) -> list[dict]:
    """Items/s at batch 1 and 32 for each embedder and modality it supports (and, for image
    spaces that embed query regions, for ``embed_regions``), with the FLOP limit."""
    import torch

    from dedup.embed import create_embedder

    images = _images()
    texts = list(SENTENCES) * 4
    rows = []
    for spec in specs:
        t0 = time.perf_counter()
        emb = create_embedder(spec)
        load_s = time.perf_counter() - t0
        calls = [(m, emb.embed_images if m == "image" else emb.embed_texts)
                 for m in sorted(emb.modalities)]
        if hasattr(emb, "embed_regions"):
            calls.append(("image regions", emb.embed_regions))
        for modality, fn in calls:
            items = texts if modality == "text" else images * 4
            flops = flops_per_item(fn, items[:len(SENTENCES)]) if emb.device == "cpu" else 0.0
            limit = gflops * 1e9 / flops if flops else math.nan
            b1 = _rate(fn, items, 1)
            b32 = _rate(fn, items, 32, min_s=3.0, max_calls=10)
            rows.append({
                "space": spec, "modality": modality, "device": emb.device, "dim": emb.dim,
                "load_s": load_s, "items_s_b1": b1, "items_s_b32": b32,
                "gflop_per_item": flops / 1e9, "limit_items_s": limit,
                "pct_limit_b1": 100 * b1 / limit, "pct_limit_b32": 100 * b32 / limit,
                "torch_threads": torch.get_num_threads(),
            })
            print(f"  embedded {spec} {modality}", file=sys.stderr)
    return rows


# -- search ---------------------------------------------------------------------------------
def clustered(n: int, dim: int, n_clusters: int, seed: int, sample_seed: int,
              noise: float = 1.0, chunk: int = 100_000) -> np.ndarray:
    """L2-normalised Gaussian-mixture vectors (mixture fixed by seed, draws by sample_seed)."""
    centers = np.random.default_rng(seed).standard_normal((n_clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(sample_seed)
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = centers[rng.integers(0, n_clusters, m)]
        x += noise * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo:lo + m] = x
    return out


@dataclass
class SearchRow:
    size: int
    factory: str  # as asked
    resolved: str  # what ShardedIndex used
    n_shards: int
    nprobe: int
    gpu: bool
    build_s: float
    n_batch_queries: int
    qps: float
    p50_ms: float
    p99_ms: float
    recall_at_10: float
    index_mb: float
    dup_recall_at_1: float = 0.0  # near-duplicate queries whose source vector ranks first
    shard_ratio_qps: float | None = None  # this row's QPS / the 1-shard QPS of the same factory
    batch: int = 0  # queries per search call
    bare_qps: float | None = None  # one bare FAISS index, same factory, vectors and batches
    vs_bare: float | None = None  # qps / bare_qps
    flop_bound_qps: float | None = None  # exact search: matmul rate / (2 n d) FLOPs per query


def index_bytes(index: ShardedIndex) -> int:
    """Serialised size of every shard, streamed (no second in-memory copy)."""
    total = 0
    for shard in index.shards:
        count = [0]

        def sink(buf: bytes, count=count) -> None:
            count[0] += len(buf)

        writer = faiss.PyCallbackIOWriter(sink)
        if index.metric == "hamming":
            faiss.write_index_binary(shard.cpu_index(), writer)
        else:
            faiss.write_index(shard.cpu_index(), writer)
        del writer
        total += count[0]
    return total


def nlist_of(factory: str) -> int:
    """IVF list count parsed from a factory string (0 when not IVF)."""
    if not factory.startswith("IVF"):
        return 0
    digits = factory[3:].split(",")[0].split("_")[0]
    return int(digits) if digits.isdigit() else 0


def _timed_qps(search, xq: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    """(queries/s, ids) searching ``xq`` in consecutive calls of ``batch`` queries, k=10."""
    search(xq[:min(batch, 10)])  # warm-up (thread pool, GPU kernels)
    out = []
    t0 = time.perf_counter()
    for lo in range(0, len(xq), batch):
        out.append(search(xq[lo:lo + batch])[1])
    return len(xq) / (time.perf_counter() - t0), np.concatenate(out)


def _training_sample(xb: np.ndarray, nlist: int, train_n: int) -> np.ndarray:
    # Training on ~30 points per list keeps k-means inside the time budget on 2 cores.
    n = len(xb)
    m = min(n, max(train_n, 30 * nlist))
    return xb[np.random.default_rng(1).choice(n, m, replace=False)]


def bare_index(xb: np.ndarray, factory: str, nprobe: int, train_n: int):
    """One bare FAISS index (the bound a ShardedIndex is held to): the same factory, trained on
    the same sample, holding the same vectors."""
    fac = "Flat" if factory in ("Flat", "IDMap2,Flat") else factory
    index = faiss.index_factory(xb.shape[1], fac, faiss.METRIC_INNER_PRODUCT)
    nlist = nlist_of(fac)
    if nlist:
        index.train(_training_sample(xb, nlist, train_n))
        faiss.extract_index_ivf(index).nprobe = nprobe
    for lo in range(0, len(xb), 200_000):
        index.add(xb[lo:lo + 200_000])
    return index


def bench_index(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, n_gt: int, factory: str,
                n_shards: int, nprobe: int, gpu: bool, n_lat: int, train_n: int,
                src: np.ndarray, batch: int = 256, bare=None, repeats: int = 1) -> SearchRow:
    """Build one ShardedIndex and measure it; with ``bare`` (a FAISS index over the same
    vectors) both are timed in turn ``repeats`` times, best of each kept, so a busy machine
    slows both alike."""
    n = len(xb)
    ids = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    index = ShardedIndex(xb.shape[1], factory, n_shards, nprobe=nprobe, use_gpu=gpu or False,
                         expected_size=n, fp16=gpu)
    nlist = nlist_of(index.factory)
    if nlist:
        index.train(_training_sample(xb, nlist, train_n))
    for lo in range(0, n, 200_000):
        index.add(ids[lo:lo + 200_000], xb[lo:lo + 200_000])
    build_s = time.perf_counter() - t0

    qps, bare_qps = 0.0, None
    for _ in range(repeats):
        if bare is not None:
            got, _ = _timed_qps(functools.partial(bare.search, k=10), xq, batch)
            bare_qps = max(bare_qps or 0.0, got)
        got, I = _timed_qps(functools.partial(index.search, k=10), xq, batch)
        qps = max(qps, got)
    hits = [len(np.intersect1d(I[i], gt[i])) for i in range(n_gt)]
    recall = float(np.sum(hits)) / (10 * n_gt)
    dup = src[: len(xq)] >= 0  # the queries that are perturbed copies of a stored vector
    dup_recall = float(np.mean(I[dup, 0] == src[: len(xq)][dup])) if dup.any() else float("nan")
    lat = []
    for i in range(n_lat):
        t = time.perf_counter()
        index.search(xq[i:i + 1], 10)
        lat.append((time.perf_counter() - t) * 1e3)
    mb = index_bytes(index) / 2**20
    row = SearchRow(n, factory, index.factory, n_shards, index.nprobe, index.on_gpu, build_s, len(xq),
                    qps, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), recall, mb,
                    dup_recall, batch=batch, bare_qps=bare_qps,
                    vs_bare=None if bare_qps is None else qps / bare_qps)
    index.close()
    del index
    gc.collect()
    return row


def bench_search(sizes: list[int], factories: list[str], shards: list[int], dim: int,
                 n_queries: int, n_flat_queries_large: int, n_lat: int, nprobe: int, gpu: bool,
                 train_n: int, notes: list[str], on_row=None, batch: int = 256,
                 gflops: float | None = None, bare: bool = True,
                 repeats: int = 1) -> list[SearchRow]:
    """Every (size, factory, n_shards) combination, one index alive at a time, each next to
    a bare FAISS index of the same factory (``bare``; CPU only) and, for exact search, the
    FLOP limit at ``gflops``.

    ``on_row(rows)`` runs after each row, so a long run that is stopped keeps what it measured.
    """
    rows: list[SearchRow] = []
    for n in sizes:
        t0 = time.perf_counter()
        xb = clustered(n, dim, n_clusters=max(64, n // 20), seed=0, sample_seed=1)
        xq_all = clustered(n_queries, dim, n_clusters=max(64, n // 20), seed=0,
                           sample_seed=2)
        # Queries: perturbed copies of database vectors (near-duplicates) plus fresh points.
        rng = np.random.default_rng(7)
        half = n_queries // 2
        src_all = np.full(n_queries, -1, dtype=np.int64)
        src_all[:half] = rng.choice(n, half, replace=False)
        xq_all[:half] = xb[src_all[:half]]
        xq_all[:half] += 0.05 * rng.standard_normal((half, dim), dtype=np.float32)
        xq_all /= np.linalg.norm(xq_all, axis=1, keepdims=True)
        order = rng.permutation(n_queries)
        xq_all, src_all = xq_all[order], src_all[order]
        # Exact ground truth for recall: brute force over the full set (FAISS knn = BLAS GEMM).
        n_gt = min(n_queries, n_flat_queries_large if n >= 500_000 else n_queries)
        _, gt = faiss.knn(xq_all[:n_gt], xb, 10, faiss.METRIC_INNER_PRODUCT)
        print(f"  data {n}x{dim} + ground truth for {n_gt} queries: "
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if n_gt < n_queries:
            notes.append(f"size {n}: recall over the first {n_gt} queries; exact (Flat) rows "
                         f"time {n_flat_queries_large} queries instead of {n_queries}")
        for factory in factories:
            fac = factory
            if factory == "IVF":
                fac = "IVF4096,Flat" if n >= 500_000 else "IVF1024,Flat"
            base_qps = None
            exact = fac in ("Flat", "IDMap2,Flat")
            xq = xq_all[:n_gt] if exact else xq_all
            ref = None
            if bare and not gpu:
                probe = ShardedIndex(dim, fac, 1, expected_size=n, nprobe=nprobe)
                ref = bare_index(xb, probe.factory, probe.nprobe, train_n)
                probe.close()
            for s in shards:
                row = bench_index(xb, xq, gt, n_gt, fac, s, nprobe, gpu, n_lat, train_n, src_all,
                                  batch, ref, repeats)
                if "IVF" not in row.resolved and gflops:
                    row.flop_bound_qps = gflops * 1e9 / (2.0 * n * dim)
                if base_qps is None:
                    base_qps = row.qps
                else:
                    row.shard_ratio_qps = row.qps / base_qps
                rows.append(row)
                if on_row is not None:
                    on_row(rows)
                print(f"  {n} {fac} x{s}: build {row.build_s:.1f}s qps {row.qps:.0f} "
                      f"(bare {row.bare_qps or 0:.0f})", file=sys.stderr)
            del ref
            gc.collect()
        del xb, xq_all, src_all
        gc.collect()
    return rows


# -- output ---------------------------------------------------------------------------------
def print_table(headers: list[str], rows: list[list]) -> None:
    """Plain fixed-width table."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000", help="comma-separated index sizes")
    p.add_argument("--factories", default="Flat,auto,IVF",
                   help="comma-separated; IVF = IVF1024,Flat below 500k, IVF4096,Flat above")
    p.add_argument("--shards", default="1,2,4,8", help="comma-separated shard counts")
    p.add_argument("--batch", type=int, default=256, help="queries per search call")
    p.add_argument("--repeats", type=int, default=2,
                   help="timings per row (best kept), alternating with the bare index")
    p.add_argument("--no-bare", action="store_true",
                   help="skip the bare FAISS index each factory is compared with")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000, help="batch queries for QPS")
    p.add_argument("--flat-queries-large", type=int, default=200,
                   help="queries for exact search and recall at sizes >= 500k")
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--nprobe", type=int, default=None,
                   help="IVF lists probed (default: the index's auto_nprobe)")
    p.add_argument("--train-size", type=int, default=32768, help="IVF training sample (min)")
    p.add_argument("--gpu", action="store_true", help="GPU shards with fp16 storage")
    p.add_argument("--skip-embed", action="store_true")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--embedders", default=",".join(EMBED_SPECS))
    p.add_argument("--json", dest="json_path", help="also write the figures here")
    args = p.parse_args(argv)
    if args.gpu and num_gpus() == 0:
        p.error("--gpu: FAISS sees no GPU")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        shards = [int(s) for s in args.shards.split(",") if s]
    except ValueError as e:
        p.error(str(e))

    notes: list[str] = []
    gflops = matmul_gflops()
    env = {"faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(),
           "cpus": os.cpu_count(), "faiss_gpus": num_gpus(),
           "load_avg_1m": os.getloadavg()[0], "matmul_gflops": gflops}
    print(f"environment: {env}")
    out: dict = {"environment": env}
    if not args.skip_embed:
        embed_rows = bench_embed([s for s in args.embedders.split(",") if s], gflops)
        out["embed"] = embed_rows
        print(f"\nEmbedding throughput (items/s); limit = {gflops:.0f} GFLOP/s matmul rate / "
              "GFLOP per item")
        print_table(["space", "modality", "device", "dim", "load s", "GFLOP/item", "limit/s",
                     "b=1", "% limit", "b=32", "% limit"],
                    [[r["space"], r["modality"], r["device"], r["dim"], f"{r['load_s']:.1f}",
                      f"{r['gflop_per_item']:.2f}", f"{r['limit_items_s']:.0f}",
                      f"{r['items_s_b1']:.1f}", f"{r['pct_limit_b1']:.0f}%",
                      f"{r['items_s_b32']:.1f}", f"{r['pct_limit_b32']:.0f}%"]
                     for r in embed_rows])
    if not args.skip_search:

        def on_row(rows: list[SearchRow]) -> None:
            out["search"] = [asdict(r) for r in rows]
            out["notes"] = notes
            _write_json(args.json_path, out)

        rows = bench_search(sizes, [f for f in args.factories.split(",") if f], shards, args.dim,
                            args.queries, args.flat_queries_large, args.latency_queries,
                            args.nprobe, args.gpu, args.train_size, notes, on_row, args.batch,
                            gflops, not args.no_bare, args.repeats)
        print(f"\nSearch, {args.dim}-d, k=10, batch {args.batch}, "
              f"nprobe={args.nprobe or 'auto'} (IVF only)")
        print_table(
            ["size", "factory", "resolved", "shards", "nprobe", "gpu", "build s", "queries", "QPS",
             "bare QPS", "vs bare", "FLOP-bound QPS", "vs FLOP", "p50 ms", "p99 ms",
             "recall@10", "dup R@1", "index MB", "QPS vs 1 shard"],
            [[r.size, r.factory, r.resolved, r.n_shards, r.nprobe if "IVF" in r.resolved else "",
              "y" if r.gpu else "n",
              f"{r.build_s:.1f}", r.n_batch_queries, f"{r.qps:.0f}",
              "" if r.bare_qps is None else f"{r.bare_qps:.0f}",
              "" if r.vs_bare is None else f"{r.vs_bare:.2f}x",
              "" if r.flop_bound_qps is None else f"{r.flop_bound_qps:.0f}",
              "" if r.flop_bound_qps is None else f"{r.qps / r.flop_bound_qps:.2f}",
              f"{r.p50_ms:.2f}",
              f"{r.p99_ms:.2f}", f"{r.recall_at_10:.3f}", f"{r.dup_recall_at_1:.3f}",
              f"{r.index_mb:.0f}",
              "" if r.shard_ratio_qps is None else f"{r.shard_ratio_qps:.2f}x"] for r in rows])
    for note in notes:
        print(f"note: {note}")
    out["notes"] = notes
    _write_json(args.json_path, out)
    return 0


def _write_json(path: str | None, out: dict) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    raise SystemExit(main())
