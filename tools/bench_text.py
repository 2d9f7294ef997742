"""Text Lookup latency with 100k text seeds in a real server, next to the 50 ms bound.

    python -m tools.bench_text                       # 100k seeds, concurrency 1 and 8
    python -m tools.bench_text --seeds 20000 --lookups 200 --json
    python -m tools.bench_text --data-dir /tmp/tb    # keep the store; a rerun skips the adds
    python -m tools.bench_text --data-dir /tmp/tb --factory exact --answers exact.json

The server runs the text cascade (``text:exact``, ``text:minhash``, ``text:minilm-l6``; any
comma list with ``--spaces``). Seeds are distinct texts of 40-400 characters made from the
benchmark corpus (``tools.eval.textsources``): corpus texts, then sentences of different texts
recombined (seeded) until there are enough. They go in with bulk ``AddSeeds`` calls of 64.
Lookups are edited copies of seeds and edited unrelated texts (``tools.eval.textedits``),
one text per Lookup; a caller refused by admission waits the retry hint and asks again, its
latency counted from the first attempt. ``--factory exact`` searches every space exactly at any
size (``auto``, as shipped, puts MiniLM on IVF from 100k); ``--answers`` keeps each lookup's
neighbours, so two runs can be compared. The server verifies with the containment verifier in
its cascade, as the shipped config does (``dedup/thresholds.toml``); the same verifier is also
timed in process on each lookup's returned neighbours (``verifier``), the share of the latency
it takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dedup.types import Item, Label
from tools.eval import textedits as te
from tools.eval import textsources as ts

BOUND_MS = 50.0
SPACES = ("text:exact", "text:minhash", "text:minilm-l6")
BINARY = ("text:exact", "text:minhash")  # Hamming spaces (FAISS binary indexes)


def seed_texts(corpus: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` distinct texts of 40-400 characters: the corpus, then recombined sentences."""
    rng = np.random.default_rng(seed)
    out = list(dict.fromkeys(corpus))[:n]
    seen = set(out)
    sents = [s for t in corpus for s in ts._SENT_SPLIT.split(t) if len(s) >= 20]
    while len(out) < n:
        k = int(rng.integers(1, 4))
        text = " ".join(sents[i] for i in rng.integers(0, len(sents), k))
        if ts.MIN_CHARS <= len(text) <= ts.MAX_CHARS and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean())}


def add_all(server, texts: list[str], chunk: int = 64, budget_s: float | None = None) -> float:
    """Bulk AddSeeds in chunks (stopping after ``budget_s`` if given); returns seconds."""
    t0 = time.perf_counter()
    with server.client("analyst") as c:
        for s in range(0, len(texts), chunk):
            if budget_s is not None and time.perf_counter() - t0 >= budget_s:
                break
            res = c.add_seeds([Item(text=t) for t in texts[s:s + chunk]],
                              [Label("bench.latency", 1)], source="bench_text", timeout=600)
            bad = [r for r in res if not isinstance(r, tuple)]
            if bad:
                raise bad[0]
            if sys.stderr.isatty():
                print(f"\r  added {s + chunk}/{len(texts)}", end="", file=sys.stderr)
    return time.perf_counter() - t0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server, queries: list[str], concurrency: int, seed_text: dict[int, str]) -> dict:
    """Lookup latency at ``concurrency`` callers, one text per call; verifier timed beside.

    Also the server's CPU seconds per lookup: on a machine shared with other work the wall
    clock says how busy the machine was, the CPU time what one lookup costs."""
    from dedup.config import Limits
    from dedup.items import normalize_text
    from dedup.verify import text as vtext

    from dedup.errors import Overloaded

    limits = Limits()
    lat, ver = [], []
    answers: dict[str, dict[str, list[tuple[int, float]]]] = {}  # (seed, search similarity)
    # ms to each refusal the caller saw (after the client's own retries): the service shed the
    # call (admission) with a retry hint, which the caller then waited before trying again
    refused = []
    lock = threading.Lock()
    with server.client("reader") as c:
        c.lookup(text="warm up the models and the channel")

        def one(q: str) -> None:
            # A caller as the service asks: refused, it waits the retry hint and asks again;
            # its latency runs from the first attempt to the answer.
            t0 = time.perf_counter()
            while True:
                t1 = time.perf_counter()
                try:
                    res = c.lookup(text=q, top_k=10, timeout=60)
                    break
                except Overloaded as e:
                    with lock:
                        refused.append((time.perf_counter() - t1) * 1000)
                    time.sleep(e.retry_after_s or 0.05)
            dt = (time.perf_counter() - t0) * 1000
            cands = list(dict.fromkeys(n.seed_id for n in res.neighbors))
            with lock:  # each space's neighbours, to compare index choices (--answers)
                answers[q] = {s: [(n.seed_id, n.similarity if n.similarity is not None
                                   else n.score) for n in res.neighbors if n.space == s]
                              for s in {n.space for n in res.neighbors}}
            t1 = time.perf_counter()
            vtext.rescore(normalize_text(q, limits), [seed_text[i] for i in cands if i in seed_text])
            dv = (time.perf_counter() - t1) * 1000
            with lock:
                lat.append(dt)
                ver.append(dv)

        cpu0 = _cpu_seconds(server.proc.pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, queries))
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds(server.proc.pid) - cpu0
    out = {"concurrency": concurrency, **percentiles(lat), "qps": len(lat) / wall,
           "refused": len(refused), "refused_p50_ms": float(np.median(refused)) if refused else None,
           "server_cpu_ms_per_lookup": 1000 * cpu / len(queries), "verifier": percentiles(ver),
           "_answers": answers}
    out["p50_over_bound"] = out["p50_ms"] / BOUND_MS
    return out


def component_costs(n_seeds: int, queries: list[str], spaces: tuple[str, ...],
                    repeats: int = 50) -> dict:
    """In process, no server: per-lookup ms to embed one query in each space and to search
    an exact FAISS index of ``n_seeds`` codes of that space's shape (random codes: an exact
    search costs the same whatever the values). The floor the service adds its overhead to."""
    import faiss

    from dedup.config import Limits
    from dedup.embed import create_embedder
    from dedup.items import normalize_text

    limits = Limits()
    texts = [normalize_text(q, limits) for q in queries[:repeats]]
    rng = np.random.default_rng(0)
    out = {}
    for name in spaces:
        emb = create_embedder(name)
        emb.embed_texts(texts[:2])
        t0, c0 = time.perf_counter(), time.process_time()
        codes = [emb.embed_texts([t]) for t in texts]
        embed_ms = (time.perf_counter() - t0) * 1000 / len(texts)
        embed_cpu = (time.process_time() - c0) * 1000 / len(texts)
        if getattr(emb, "binary", False):
            index = faiss.IndexBinaryFlat(emb.dim)
            index.add(rng.integers(0, 256, (n_seeds, emb.dim // 8), dtype=np.uint8))
        else:
            index = faiss.IndexFlatIP(emb.dim)
            base = rng.standard_normal((n_seeds, emb.dim)).astype(np.float32)
            index.add(base / np.linalg.norm(base, axis=1, keepdims=True))
        t0, c0 = time.perf_counter(), time.process_time()
        for c in codes:
            index.search(c, 10)
        search_ms = (time.perf_counter() - t0) * 1000 / len(codes)
        search_cpu = (time.process_time() - c0) * 1000 / len(codes)
        out[name] = {"embed_ms": embed_ms, "search_ms": search_ms, "embed_cpu_ms": embed_cpu,
                     "search_cpu_ms": search_cpu}
    out["total_ms"] = sum(v["embed_ms"] + v["search_ms"] for v in out.values())
    out["total_cpu_ms"] = sum(v["embed_cpu_ms"] + v["search_cpu_ms"] for v in out.values()
                              if isinstance(v, dict))
    return out


def run(args: argparse.Namespace) -> dict:
    from tools.eval.textbench import TextBenchSettings, config_text, load_corpus
    from tools.localserver import ServerProcess

    settings = TextBenchSettings(seed=args.seed)
    if args.cache_dir:
        settings.cache_dir = args.cache_dir
    corpus = [t.text for t in load_corpus(settings)]
    texts = seed_texts(corpus, args.seeds, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    queries = []
    for i in range(args.lookups):
        if i % 2 == 0:  # an edited copy of a seed
            src = texts[int(rng.integers(len(texts)))]
        else:  # an edited text that is not a seed
            src = " ".join(reversed(texts[int(rng.integers(len(texts)))].split()))
        level = te.LEVELS[i % 3]
        prim = te.TYPES[level][int(rng.integers(len(te.TYPES[level])))]
        queries.append(te.edit_text(src, level, prim, te.query_rng(args.seed, "lat", i)).text)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="bench_text-")) / "data"
    thresholds = {s: 0.99 for s in args.spaces}
    result = {"seeds": len(texts), "spaces": list(args.spaces), "bound_ms": BOUND_MS,
              "machine_cores": os.cpu_count()}
    from dedup.config import default_spaces

    shipped = default_spaces().get("text:minhash")
    contain = shipped.verify.threshold if shipped is not None and shipped.verify else None
    result["containment_threshold"] = contain
    config = config_text(thresholds, contain)
    if args.factory == "exact":  # exact search at any size (the default, auto, as shipped)
        from dedup.index.sharded import exact_factory

        for name in args.spaces:
            factory = exact_factory("hamming" if name in BINARY else "ip")
            config = config.replace(f'model = "{name}"\n',
                                    f'model = "{name}"\nindex_factory = "{factory}"\n')
    result["factory"] = args.factory
    with ServerProcess(data_dir, config).start() as server:
        with server.client("reader") as c:
            have = c.stats()["seeds_active"]
        if have < len(texts):
            result["add_seconds"] = add_all(server, texts[have:], budget_s=args.add_budget_s)
        with server.client("reader") as c:
            stats = c.stats()
        if "add_seconds" in result:
            result["add_per_second"] = (stats["seeds_active"] - have) / result["add_seconds"]
        result["seeds"] = stats["seeds_active"]  # fewer than asked when the add budget ran out
        result["index"] = {k: v["ntotal"] for k, v in stats["spaces"].items()}
        seed_text = {}
        with server.client("reader") as c:
            # seed id -> stored (normalised) text, what the verifier reads
            for seed in c.iter_seeds(label="bench.latency", page_size=1000):
                seed_text[seed.seed_id] = seed.text or ""
        result["runs"] = [measure(server, queries, conc, seed_text) for conc in args.concurrency]
    result["load_average"] = os.getloadavg()
    result["_queries"] = queries
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_text", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=400)
    p.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1, 8])
    p.add_argument("--spaces", type=lambda v: tuple(x for x in v.split(",") if x), default=SPACES)
    p.add_argument("--data-dir", default=None, help="keep the server's store here (reruns skip adds)")
    p.add_argument("--add-budget-s", type=float, default=None,
                   help="stop adding after this many seconds and measure with what is there")
    p.add_argument("--cache-dir", default=None, help="benchmark corpus cache (tools.eval.textbench)")
    p.add_argument("--factory", choices=("auto", "exact"), default="auto",
                   help="indexes: auto, as shipped (exact below 100k vectors, IVF from there), "
                        "or exact search at any size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--component-seeds", type=int, default=None,
                   help="index size for --components (default: --seeds)")
    p.add_argument("--components", action="store_true",
                   help="also time embedding and an exact search of --seeds codes per space in "
                        "process (no server)")
    p.add_argument("--answers", default=None,
                   help="write each lookup's neighbours per space here (JSON: seed id, search "
                        "similarity), to compare "
                        "two runs, e.g. --factory auto against exact")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.lookups < 1 or min(args.concurrency) < 1:
        p.error("--seeds, --lookups and --concurrency must be >= 1")
    result = run(args)
    answers = [r.pop("_answers") for r in result["runs"]][0]  # the first concurrency's
    if args.answers:
        Path(args.answers).write_text(json.dumps(answers))
    if args.components:
        n = args.component_seeds or args.seeds
        result["components"] = component_costs(n, result.pop("_queries"), args.spaces)
        result["components"]["n_codes"] = n
    else:
        result.pop("_queries")
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['seeds']} text seeds, spaces {', '.join(result['spaces'])}; index sizes "
          f"{result['index']}; factory {result['factory']}")
    if "add_per_second" in result:
        print(f"bulk add: {result['add_per_second']:.0f} seeds/s")
    print(f"{'conc':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'qps':>7} {'p50/50ms':>9} "
          f"{'server CPU ms/lookup':>21} {'verifier p50':>13} {'refused':>8}")
    for r in result["runs"]:
        print(f"{r['concurrency']:>4} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['qps']:>7.1f} {r['p50_over_bound']:>9.2f} {r['server_cpu_ms_per_lookup']:>21.1f} "
              f"{r['verifier']['p50_ms']:>10.2f} ms {r['refused']:>8}")
    print(f"load average during the run: {result['load_average']}")
    if "components" in result:
        c = result["components"]
        print(f"in process, {c['n_codes']} codes per space (ms per lookup):")
        for name, v in c.items():
            if isinstance(v, dict):
                print(f"  {name:<16} embed {v['embed_ms']:7.2f} ms ({v['embed_cpu_ms']:.2f} CPU)  "
                      f"search {v['search_ms']:7.2f} ms ({v['search_cpu_ms']:.2f} CPU)")
        print(f"  total {c['total_ms']:.1f} ms = {c['total_ms'] / BOUND_MS:.2f} x the bound "
              f"({c['total_cpu_ms']:.1f} CPU ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
