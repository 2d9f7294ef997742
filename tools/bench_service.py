"""Load benchmark of the gRPC service on loopback: Lookup QPS and p50/p95/p99 latency at several
concurrencies, with and without micro-batching, each next to its bound, the bare library call
(Engine.lookup in-process, same data, same items, one at a time): ``qps/bare`` is QPS over
1 / bare p50, ``p50/bare`` and ``p99/bare`` the latency ratios. Lookups refused by admission
(RESOURCE_EXHAUSTED) are counted apart from errors; the caller then waits its retry hint.
Latency is also split by whether the cascade verified a candidate of the lookup (local-feature
verification of close calls) or not (an unrelated upload with no candidate in the band).

    python -m tools.bench_service                 # concurrency 1, 8, 32; 5 s per level
    python -m tools.bench_service --duration 3 --concurrency 1,4 --json

Each mode starts a real `dedup serve` subprocess on 127.0.0.1 (demo seed bank, tmp data dir);
every phase is bounded by --duration and the start timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def workload(n: int = 16) -> list[bytes]:
    """JPEG re-encodings of real images (demo photos and others), ~512 px: typical uploads."""
    import skimage.data
    from PIL import Image

    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "clock", "moon")
    out = []
    for i in range(n):
        arr = getattr(skimage.data, names[i % len(names)])()
        img = Image.fromarray(arr).convert("RGB")
        img = img.resize((512 - 8 * (i // len(names)), int(512 * img.height / img.width)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80 + i % 10)
        out.append(buf.getvalue())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, batching: bool, timeout: float,
                 config: str | None = None) -> tuple[subprocess.Popen, str]:
    """A `dedup serve` subprocess serving the demo bank (or ``config``'s); returns once it is
    SERVING."""
    from dedup.client import DedupClient

    port = _free_port()
    cmd = [sys.executable, "-m", "dedup.cli", "serve", "--data-dir", str(data_dir), "--port",
           str(port), "--no-metrics", "--log-level", "WARNING"]
    if not batching:
        cmd.append("--no-batching")
    if config:
        cmd += ["--config", str(Path(config).resolve())]
    env = dict(os.environ, DEDUP_AUTH_TOKENS=f"{TOKEN}:reader", PYTHONPATH=str(REPO))
    log = open(data_dir.parent / f"server-{port}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    target = f"127.0.0.1:{port}"
    with DedupClient(target) as client:
        try:
            client.wait_ready(timeout)
        except TimeoutError:
            proc.kill()
            raise
    return proc, target


async def load(target: str, images: list[bytes], concurrency: int, duration: float) -> dict:
    """``concurrency`` closed-loop callers for ``duration`` seconds; latency percentiles in ms."""
    import grpc

    from dedup.v1 import dedup_pb2 as pb
    from dedup.v1 import dedup_pb2_grpc

    from dedup.service.convert import RETRY_AFTER_KEY

    md = (("authorization", f"Bearer {TOKEN}"),)
    latencies: list[float] = []
    verified: list[bool] = []  # per answered lookup: did the cascade verify a neighbour
    errors = refused = 0
    async with grpc.aio.insecure_channel(target) as ch:
        stub = dedup_pb2_grpc.DedupStub(ch)
        await stub.Lookup(pb.LookupRequest(item=pb.Item(image=images[0])), metadata=md, timeout=60)
        end = time.perf_counter() + duration

        async def caller(k: int):
            nonlocal errors, refused
            i = k
            while time.perf_counter() < end:
                req = pb.LookupRequest(item=pb.Item(image=images[i % len(images)]))
                t0 = time.perf_counter()
                call = stub.Lookup(req, metadata=md, timeout=30)
                try:
                    resp = await call
                    latencies.append(time.perf_counter() - t0)
                    verified.append(any(n.verified for n in resp.neighbors))
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        errors += 1
                    else:  # shed by admission: come back when told
                        refused += 1
                        hint = dict(await call.trailing_metadata() or ()).get(RETRY_AFTER_KEY)
                        await asyncio.sleep(int(hint) / 1000 if hint else 0.05)
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    ver = np.asarray(verified, dtype=bool)
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors,
            "refused": refused,
            "qps": len(latencies) / wall,
            **_percentiles(lat, (50, 95, 99)),
            # lookups whose candidates the cascade verified (local features) and those it did
            # not (no candidate in a verifying space's band: most unrelated uploads)
            "verified": {"n": int(ver.sum()), **_percentiles(lat[ver], (50, 99))},
            "unverified": {"n": int((~ver).sum()), **_percentiles(lat[~ver], (50, 99))}}


def _percentiles(lat_ms: np.ndarray, qs: tuple[int, ...]) -> dict:
    """{"p50_ms": ..., ...} of ``lat_ms`` (NaN when there is none)."""
    return {f"p{q}_ms": float(np.percentile(lat_ms, q)) if lat_ms.size else float("nan")
            for q in qs}


def bare_library(data_dir: Path, images: list[bytes], n: int, config: str | None = None) -> dict:
    """Engine.lookup of one item in-process (no gRPC): the floor the service is compared to."""
    from dedup.config import load_config
    from dedup.engine import Engine
    from dedup.types import Item

    cfg = load_config(config, data_dir=str(data_dir)) if config else \
        load_config(None, demo=True, data_dir=str(data_dir))
    with Engine.open(cfg) as engine:
        engine.lookup([Item(image=images[0])])
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            engine.lookup([Item(image=images[i % len(images)])])
            lat.append(time.perf_counter() - t0)
    lat_ms = np.asarray(lat) * 1000
    return {"requests": n, **{f"p{q}_ms": float(np.percentile(lat_ms, q)) for q in (50, 95, 99)}}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated caller counts")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    p.add_argument("--bare-n", type=int, default=50, help="bare library calls to time")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--config", default=None,
                   help="serve this TOML config (it should set demo = true) instead of the demo")
    p.add_argument("--modes", default="batched,unbatched", help="comma-separated")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    images = workload()
    report: dict = {"modes": {}, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        for mode, batching in (("batched", True), ("unbatched", False)):
            if mode not in args.modes.split(","):
                continue
            proc, target = start_server(data_dir, batching, args.start_timeout, args.config)
            try:
                report["modes"][mode] = [asyncio.run(load(target, images, c, args.duration))
                                         for c in levels]
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        report["bare"] = bare_library(data_dir, images, args.bare_n, args.config)
    bare_p50, bare_p99 = report["bare"]["p50_ms"], report["bare"]["p99_ms"]
    report["bare"]["items_s"] = 1000 / bare_p50
    for rows in report["modes"].values():
        for row in rows:
            row["p50_vs_bare"] = row["p50_ms"] / bare_p50
            row["p99_vs_bare"] = row["p99_ms"] / bare_p99
            row["qps_vs_bare"] = row["qps"] * bare_p50 / 1000
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"bare Engine.lookup (1 item, in-process): p50 {bare_p50:.1f} ms, "
          f"p95 {report['bare']['p95_ms']:.1f} ms, p99 {report['bare']['p99_ms']:.1f} ms")
    print(f"{'mode':<10} {'conc':>4} {'qps':>8} {'qps/bare':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'p50/bare':>8} {'p99/bare':>8} {'refused':>7} {'errors':>6}")
    for mode, rows in report["modes"].items():
        for r in rows:
            print(f"{mode:<10} {r['concurrency']:>4} {r['qps']:>8.1f} {r['qps_vs_bare']:>8.2f} "
                  f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                  f"{r['p50_vs_bare']:>8.2f} {r['p99_vs_bare']:>8.2f} {r['refused']:>7} "
                  f"{r['errors']:>6}")
    print("split by the cascade's verification (local features on candidates in its band):")
    for mode, rows in report["modes"].items():
        for r in rows:
            v, u = r["verified"], r["unverified"]
            print(f"{mode:<10} {r['concurrency']:>4}  verified n={v['n']} p50 {v['p50_ms']:.1f} "
                  f"p99 {v['p99_ms']:.1f} ms; not verified n={u['n']} p50 {u['p50_ms']:.1f} "
                  f"p99 {u['p99_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
