"""The GPU acceptance run behind ``tools/gpu_check.sh``: every GPU path the project has, measured
once on a GPU machine in a few minutes, results saved as JSON.

    tools/gpu_check.sh                 # on a GPU machine: < 8 min, writes gpu_check.json
    tools/gpu_check.sh --dry-run       # anywhere: tiny sizes on CPU, seconds (CI runs this)

Stages (each timed; one that fails is recorded with its error and the next one runs):
  env      torch / CUDA / FAISS versions, the GPUs
  tests    ``pytest -m gpu tests/gpu``
  faiss    ShardedIndex on the GPUs (``n_shards = auto``: one shard per GPU), exact and IVF,
           ``fp16=True`` (float16 storage where FAISS's GPU cloner offers it), at 1M and
           10M x 512: QPS and recall@10 (against exact fp32 search) at batch 1 and 1,024
  embed    each model's items/s in fp16 at batch 1 and 256
  service  ``tools.bench_service`` against a real ``dedup serve`` on loopback (GPU models and
           GPU shards): QPS and p50/p99 at several concurrencies, batched and unbatched

``--dry-run`` runs the same code with tiny sizes on the CPU and skips the service stage unless
``--service`` is given; its figures mean nothing, it proves the script works before GPU time is
spent on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FULL = {"sizes": (1_000_000, 10_000_000), "dim": 512, "nlist": 4096, "batches": (1, 1024),
        "queries_b1": 200, "queries_big": 4096, "embed_batches": (1, 256),
        "embedders": ("image:effnet-lite0", "image:copydet-lite0", "text:minilm-l6"),
        "service": ("--concurrency", "1,32,128", "--duration", "5", "--bare-n", "50")}
DRY = {"sizes": (2_000,), "dim": 512, "nlist": 16, "batches": (1, 64),
       "queries_b1": 10, "queries_big": 128, "embed_batches": (1, 2),
       "embedders": ("image:effnet-lite0",),
       "service": ("--concurrency", "1,2", "--duration", "1", "--bare-n", "3")}


# -- stages ---------------------------------------------------------------------------------
def stage_env(cfg: dict) -> dict:
    """Versions and devices."""
    import faiss
    import torch

    from dedup.index.shard import num_gpus

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "torch_gpus": gpus, "faiss": faiss.__version__,
            "faiss_gpus": num_gpus(), "cpus": os.cpu_count(), "dry_run": cfg["dry_run"]}


def stage_tests(cfg: dict) -> dict:
    """``pytest -m gpu tests/gpu`` (every test skips itself where FAISS sees no GPU)."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "tests/gpu"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    return {"returncode": proc.returncode, "summary": lines[-1] if lines else "",
            "ok": proc.returncode == 0, "tail": "\n".join(lines[-15:])}


def _vectors(n: int, dim: int, seed: int, device: str, n_clusters: int,
             centers=None) -> tuple[np.ndarray, object]:
    """L2-normalised clustered float32 vectors (host array), drawn on ``device``."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    if centers is None:
        centers = torch.randn(n_clusters, dim, generator=g, device=device)
    out = np.empty((n, dim), dtype=np.float32)
    chunk = 1_000_000
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = centers[torch.randint(0, len(centers), (m,), generator=g, device=device)]
        x += torch.randn(m, dim, generator=g, device=device)
        out[lo:lo + m] = torch.nn.functional.normalize(x, dim=1).cpu().numpy()
    return out, centers


def _ground_truth(xb: np.ndarray, xq: np.ndarray, k: int, device: str) -> np.ndarray:
    """Exact fp32 top-k inner-product ids (torch on ``device``, database in chunks)."""
    import torch

    q = torch.from_numpy(xq).to(device)
    best_d = torch.full((len(xq), k), -math.inf, device=device)
    best_i = torch.full((len(xq), k), -1, dtype=torch.int64, device=device)
    chunk = 250_000  # (queries x chunk) similarities at a time: 4 GB for 4,096 queries
    for lo in range(0, len(xb), chunk):
        d = q @ torch.from_numpy(xb[lo:lo + chunk]).to(device).T
        dd, ii = d.topk(min(k, d.shape[1]), dim=1)
        best_d, order = torch.cat([best_d, dd], 1).topk(k, dim=1)
        best_i = torch.cat([best_i, ii + lo], 1).gather(1, order)
    return best_i.cpu().numpy()


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    return hits / truth.size


def stage_faiss(cfg: dict) -> list[dict]:
    """GPU shards, exact and IVF with fp16 storage: QPS and recall@10 at each batch size."""
    import torch

    from dedup.index import ShardedIndex

    gpu = not cfg["dry_run"]
    device = "cuda" if gpu else "cpu"
    dim, nlist, k = cfg["dim"], cfg["nlist"], 10
    rows = []
    for n in cfg["sizes"]:
        t0 = time.perf_counter()
        xb, centers = _vectors(n, dim, 0, device, max(64, n // 20))
        nq = max(cfg["queries_big"], cfg["queries_b1"])
        xq, _ = _vectors(nq, dim, 1, device, 0, centers)
        rng = np.random.default_rng(2)
        half = nq // 2  # half the queries are near-duplicates of stored vectors
        xq[:half] = xb[rng.choice(n, half, replace=False)] + 0.05 * rng.standard_normal(
            (half, dim)).astype(np.float32)
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
        truth = _ground_truth(xb, xq, k, device)
        data_s = time.perf_counter() - t0
        del centers
        for factory in ("Flat", f"IVF{nlist},Flat"):
            t0 = time.perf_counter()
            index = ShardedIndex(dim, factory, "auto", use_gpu=gpu, expected_size=n, fp16=gpu)
            if "IVF" in factory:
                index.train(xb[rng.choice(n, min(n, 30 * nlist), replace=False)])
            ids = np.arange(n, dtype=np.int64)
            for lo in range(0, n, 1_000_000):
                index.add(ids[lo:lo + 1_000_000], xb[lo:lo + 1_000_000])
            build_s = time.perf_counter() - t0
            for batch in cfg["batches"]:
                m = cfg["queries_b1"] if batch == 1 else cfg["queries_big"]
                index.search(xq[:batch], k)  # warm-up
                found = []
                t0 = time.perf_counter()
                for lo in range(0, m, batch):
                    found.append(index.search(xq[lo:lo + batch], k)[1])
                if gpu:
                    torch.cuda.synchronize()
                secs = time.perf_counter() - t0
                rows.append({"size": n, "dim": dim, "factory": factory,
                             "n_shards": index.n_shards, "gpu": index.on_gpu, "fp16": gpu,
                             "nprobe": index.nprobe if "IVF" in factory else None,
                             "batch": batch, "queries": m, "qps": m / secs,
                             "ms_per_call": 1e3 * secs / math.ceil(m / batch),
                             "recall_at_10": _recall(np.concatenate(found), truth[:m]),
                             "build_s": build_s, "data_s": data_s})
                print(f"  faiss {n} {factory} b={batch}: {rows[-1]['qps']:.0f} qps, "
                      f"recall {rows[-1]['recall_at_10']:.3f}", file=sys.stderr, flush=True)
            index.close()
            del index
        del xb, xq
    return rows


def stage_embed(cfg: dict) -> list[dict]:
    """Items/s per model and batch size (fp16 on a GPU: the embedders' own choice there)."""
    import torch

    from dedup.embed import create_embedder
    from tools.bench_core import SENTENCES, _images, _rate

    device = "cpu" if cfg["dry_run"] else "cuda"
    images, texts = _images(), list(SENTENCES)
    rows = []
    for spec in cfg["embedders"]:
        t0 = time.perf_counter()
        emb = create_embedder(spec, device=device, max_batch=max(cfg["embed_batches"]))
        load_s = time.perf_counter() - t0
        fn, items = ((emb.embed_images, images) if "image" in emb.modalities
                     else (emb.embed_texts, texts))
        for batch in cfg["embed_batches"]:
            def timed(chunk, fn=fn):
                out = fn(chunk)
                if device == "cuda":
                    torch.cuda.synchronize()
                return out

            rate = _rate(timed, items, batch, min_s=0.0 if cfg["dry_run"] else 2.0,
                         max_calls=1 if cfg["dry_run"] else 20)
            rows.append({"space": spec, "device": emb.device,
                         "dtype": "fp16" if device == "cuda" else "fp32", "batch": batch,
                         "items_s": rate, "load_s": load_s})
            print(f"  embed {spec} b={batch}: {rate:.1f}/s", file=sys.stderr, flush=True)
        del emb
    return rows


def stage_service(cfg: dict) -> dict:
    """``tools.bench_service`` (real server subprocesses on loopback), its JSON report."""
    cmd = [sys.executable, "-m", "tools.bench_service", *cfg["service"], "--json"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=420)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_service exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


STAGES = {"env": stage_env, "tests": stage_tests, "faiss": stage_faiss, "embed": stage_embed,
          "service": stage_service}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, seconds")
    p.add_argument("--service", action="store_true", help="with --dry-run: run the service too")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    p.add_argument("--out", default="gpu_check.json", help="JSON results (written per stage)")
    args = p.parse_args(argv)
    cfg = dict(DRY if args.dry_run else FULL, dry_run=args.dry_run)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    if args.dry_run and not args.service and "service" in stages:
        stages.remove("service")
    if not args.dry_run:
        from dedup.index.shard import num_gpus

        if num_gpus() == 0:
            print("gpu_check: FAISS sees no GPU (install faiss-gpu: pip install '.[gpu]'); "
                  "use --dry-run to check the script on a CPU", file=sys.stderr)
            return 2
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}}
    failed = []
    t_all = time.perf_counter()
    for name in stages:
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        entry: dict = {}
        try:
            entry["result"] = STAGES[name](cfg)
            if name == "tests" and not entry["result"]["ok"]:
                failed.append(name)
        except Exception as e:  # recorded; the other stages still run
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()
            failed.append(name)
            print(f"gpu_check: {name} failed: {entry['error']}", file=sys.stderr, flush=True)
        entry["seconds"] = time.perf_counter() - t0
        report["stages"][name] = entry
        report["seconds"] = time.perf_counter() - t_all
        report["failed"] = failed
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"gpu_check: {len(stages) - len(failed)}/{len(stages)} stages ok in "
          f"{report['seconds']:.0f} s; results in {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
