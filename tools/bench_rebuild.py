"""Batch rebuild throughput: re-index from a real store, re-embed in-process vs on a local Ray.

  python -m tools.bench_rebuild                         # re-index 100k and 1M, re-embed 64 images
  python -m tools.bench_rebuild --sizes 100000 --images 32 --json out.json

Re-index: synthetic unit vectors (seeded) written as seeds into a real LMDB store, then
``index_builder.build.rebuild`` with the ``auto`` plan (exact below 100k vectors, IVF above):
vectors/s of each stage (read, train, add, validate, publish) and recall@10.
Re-embed: real photos (scikit-image's data folder, resized and re-encoded into distinct items)
in a real store, re-embedded into a second model by ``reembed_store`` in this process and on a
local Ray with ``--workers`` embedder actors; items/s of the embed stage and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _seeds(n: int, centers: np.ndarray, rng: np.random.Generator, start: int):
    """Unit vectors around seeded cluster centres (embeddings of real content cluster; uniform
    random vectors would make any IVF index look broken)."""
    from dedup.store import NewSeed
    from dedup.types import Label

    dim = centers.shape[1]
    vecs = centers[rng.integers(0, len(centers), n)] + 0.35 / np.sqrt(dim) * rng.standard_normal(
        (n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [NewSeed(labels=(Label("bench", 1),),
                    sha256=hashlib.sha256(f"bench-{start + i}".encode()).hexdigest(),
                    modalities=("image",), embeddings={"bench": v}) for i, v in enumerate(vecs)]


def bench_reindex(n: int, dim: int, root: Path) -> dict:
    """Write ``n`` synthetic vectors into a real store, then rebuild and publish."""
    from dedup.store import SeedStore
    from index_builder.build import rebuild

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((max(64, n // 100), dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    data = root / f"reindex-{n}"
    with SeedStore(data / "store", map_size=1 << 36) as store:
        store.register_space("bench", "bench@synthetic", dim, "float32")
        t0 = time.perf_counter()
        for start in range(0, n, 20_000):
            store.add_seeds(_seeds(min(20_000, n - start), centers, rng, start))
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = rebuild(store, data / "index", min_recall=0.0)  # measured, not gated
        total_s = time.perf_counter() - t0
    out = {"vectors": n, "dim": dim, "store_write_s": round(write_s, 2),
           "rebuild_s": round(total_s, 2), "vectors_per_s": round(n / total_s),
           "stages_s": {k.split(":")[-1]: round(v, 2) for k, v in report.timings.items()},
           "recall@10": round(report.recall["bench"], 4),
           "factory": report.manifest.spaces["bench"].factory if report.manifest else ""}
    shutil.rmtree(data, ignore_errors=True)
    return out


def _photos(n: int) -> list[bytes]:
    """``n`` distinct real images: scikit-image's photos at several sizes and crops."""
    import skimage.data
    from PIL import Image

    paths = sorted(p for p in Path(skimage.data.__file__).parent.iterdir()
                   if p.suffix in (".png", ".jpg") and "chessboard" not in p.name)
    out = []
    i = 0
    while len(out) < n:
        img = Image.open(paths[i % len(paths)]).convert("RGB")
        k = i // len(paths)
        w, h = img.size
        img = img.crop((k * w // 40, k * h // 40, w - k * w // 50, h)).resize((320, 240))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90 - k % 20)
        out.append(buf.getvalue())
        i += 1
    return out


def bench_reembed(n_images: int, model: str, workers: int, root: Path) -> dict:
    """Re-embed the same bank in-process and on a local Ray; items/s of the embed stage."""
    from dedup.config import SpaceConfig, load_config
    from dedup.engine import Engine
    from dedup.types import Item, Label
    from index_builder.reembed import StoreTarget, reembed_store, runner_factory

    images = _photos(n_images)
    out: dict = {"model": model, "items": n_images, "workers": workers}
    for engine in ("local", "ray"):
        data = root / f"reembed-{engine}"
        config = load_config(None, data_dir=str(data), spaces={
            "pdq": {"model": "pdq", "threshold": 0.67578125}})
        with Engine.open(config) as e:
            for start in range(0, len(images), 32):
                e.add_seeds([Item(image=b) for b in images[start:start + 32]],
                            [Label("bench", 1)])
        target = StoreTarget(data)
        try:
            t0 = time.perf_counter()
            report = reembed_store(target.store, target,
                                   runner_factory(engine, workers=workers, batch_size=16,
                                                  log_dir=str(root / "ray")),
                                   SpaceConfig(model=model), window=max(64, n_images),
                                   progress_bar=False)
            wall = time.perf_counter() - t0
        finally:
            target.close()
        out[engine] = {"written": report.written, "rejected": report.rejected,
                       "embed_s": round(report.timings["embed"], 2),
                       "items_per_s": round(report.items_per_s, 2),
                       "wall_s_with_startup": round(wall, 2), "runner": report.engine}
        shutil.rmtree(data, ignore_errors=True)
    out["ray_over_local"] = round(out["ray"]["items_per_s"] / out["local"]["items_per_s"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_rebuild", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="re-index sizes (vectors)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--images", type=int, default=64, help="items to re-embed (0: skip)")
    p.add_argument("--model", default="image:effnet-lite0", help="the re-embed's model")
    p.add_argument("--workers", type=int, default=2, help="Ray embedder actors")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-rebuild-"))
    results: dict = {"cpus": os.cpu_count(), "reindex": [], "reembed": None}
    try:
        for n in [int(x) for x in args.sizes.split(",") if x]:
            r = bench_reindex(n, args.dim, root)
            results["reindex"].append(r)
            print(f"re-index {n:>9,d} x {args.dim}: {r['rebuild_s']:8.2f} s "
                  f"({r['vectors_per_s']:,} vectors/s, {r['factory']}, recall@10 "
                  f"{r['recall@10']}); stages {r['stages_s']}", flush=True)
        if len(results["reindex"]) > 1:
            a, b = results["reindex"][0], results["reindex"][-1]
            print(f"re-index time ratio {b['vectors']:,} / {a['vectors']:,}: "
                  f"{b['rebuild_s'] / a['rebuild_s']:.1f}x for "
                  f"{b['vectors'] / a['vectors']:.0f}x the vectors")
        if args.images:
            r = bench_reembed(args.images, args.model, args.workers, root)
            results["reembed"] = r
            print(f"re-embed {r['items']} items into {r['model']}: in-process "
                  f"{r['local']['items_per_s']} items/s, Ray ({r['workers']} workers) "
                  f"{r['ray']['items_per_s']} items/s; ratio ray/local {r['ray_over_local']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
