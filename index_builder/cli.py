"""`dedup-build`: batch rebuilds of a service's data dir.

  dedup-build [index]   rebuild every space's index from LMDB and publish a snapshot (then Reload)
  dedup-build reembed   embed the bank's stored content with a new model into a new space, served
                        in shadow; or bootstrap a bank from a manifest (--manifest)
  dedup-build list      snapshots, newest first, with their build reports
  dedup-build rollback VERSION   make an older snapshot CURRENT (then Reload)

Each space is built by the index plan (``[spaces."NAME".index]``) of the same TOML config the
service runs with. Exit codes: 0 done, 1 the work failed (nothing published), 2 bad arguments
or config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from dedup.config import SpaceConfig, load_config
from dedup.errors import DedupError, InvalidArgument
from index_builder.build import list_builds, rebuild_data_dir, rollback_to

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("index", "reembed", "list", "rollback")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="the service's TOML config (index plans, data_dir); default: built-in")
    p.add_argument("--data-dir", help="the service's data directory (default: the config's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dedup-build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    ix = sub.add_parser("index", help="re-index from stored vectors and publish a snapshot")
    _common(ix)
    ix.add_argument("--min-recall", type=float, default=0.9,
                    help="refuse to publish below this recall@10 against exact search")
    re = sub.add_parser("reembed", help="embed the bank with a new model (served in shadow)")
    _common(re)
    re.add_argument("--model", help="embedder spec of the new space, e.g. image:copydet-lite0")
    re.add_argument("--replaces", help="the live space promoting the new one would replace")
    re.add_argument("--threshold", type=float,
                    help="the new space's similarity threshold (calibrate it with dedup-eval)")
    re.add_argument("--manifest", metavar="FILE",
                    help="bootstrap: add a JSONL/Parquet manifest's items as seeds, embedded "
                         "in every configured space (no service may hold the data dir)")
    re.add_argument("--engine", choices=("ray", "local"), default="ray",
                    help="embed on Ray Data (default) or in this process")
    re.add_argument("--ray-address", help="a Ray cluster (ray://host:10001 or auto); default: "
                                          "a small local Ray started for this run")
    re.add_argument("--workers", type=int, default=2, help="embedder actors (GPUs: one each)")
    re.add_argument("--batch-size", type=int, default=32)
    re.add_argument("--window", type=int, default=2048,
                    help="items per committed window (what a killed run redoes at most)")
    re.add_argument("--server", metavar="HOST:PORT",
                    help="the live service on this data dir: write through it (it is the "
                         "store's one writer); token from DEDUP_TOKEN")
    re.add_argument("--max-rate", type=float, metavar="ITEMS_PER_S",
                    help="cap the run's pace, so a re-embed beside the live service leaves "
                         "its lookups their CPU (default: as fast as it goes)")
    re.add_argument("--reason", default="", help="why (kept in the op log)")
    re.add_argument("--min-recall", type=float, default=0.9)
    re.add_argument("--no-progress", action="store_true", help="no progress bar")
    ls = sub.add_parser("list", help="snapshots with their build reports")
    _common(ls)
    rb = sub.add_parser("rollback", help="make an older snapshot CURRENT (then Reload)")
    _common(rb)
    rb.add_argument("version")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["index", *argv]  # the original form: dedup-build --config ...
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        config = load_config(args.config, **({"data_dir": args.data_dir} if args.data_dir else {}))
    except (InvalidArgument, OSError) as e:
        print(f"dedup-build: {e}", file=sys.stderr)
        return EXIT_USAGE
    plans = {name: space.index for name, space in config.spaces.items()}
    try:
        if args.command == "index":
            return _index(args, config, plans)
        if args.command == "reembed":
            return _reembed(args, config, plans)
        if args.command == "list":
            builds = list_builds(Path(config.data_dir) / "index")
            if args.json:
                print(json.dumps(builds, indent=2))
            for b in ([] if args.json else builds):
                flags = "".join((" CURRENT" if b.get("current") else "",
                                 " serving" if b.get("serving") else ""))
                print(f"{b['version']}  op_seq {b.get('op_seq', '?')}{flags}")
                for name, sp in b.get("spaces", {}).items():
                    print(f"    {name:28s} {sp['ntotal']:>9d}  {sp['model_id']}")
                t = b.get("report", {}).get("timings", {})
                if t:
                    print("    timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
            return EXIT_OK
        rollback_to(Path(config.data_dir) / "index", args.version)
        print(f"CURRENT is {args.version}; call Reload (dedup-admin reload) to serve it")
        return EXIT_OK
    except DedupError as e:
        print(f"dedup-build: {e}", file=sys.stderr)
        return EXIT_FAILED


def _index(args, config, plans) -> int:
    report = rebuild_data_dir(config.data_dir, plans, min_recall=args.min_recall)
    out = {"version": report.manifest.version, "op_seq": report.manifest.op_seq,
           **report.to_dict()}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"published {out['version']} (op_seq {out['op_seq']})")
        for space, n in report.sizes.items():
            note = f"  ({report.notes[space]})" if space in report.notes else ""
            print(f"  {space:28s} {n:>9d} seeds  recall@10 {report.recall[space]:.3f}{note}")
        for stage, t in out["timings"].items():
            print(f"  {stage:40s} {t:8.3f} s")
    return EXIT_OK


def _reembed(args, config, plans) -> int:
    from index_builder.reembed import (ServiceTarget, StoreTarget, bootstrap, reembed_store,
                                       runner_factory)
    from dedup.store import SeedStore

    if bool(args.model) == bool(args.manifest):
        print("dedup-build reembed: give --model (re-embed the bank) or --manifest "
              "(bootstrap)", file=sys.stderr)
        return EXIT_USAGE
    run_dir = Path(config.data_dir) / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    make = runner_factory(args.engine, args.workers, args.batch_size, args.ray_address,
                          log_dir=str(run_dir / "ray") if not args.ray_address else None)
    actor = os.environ.get("USER", "")
    if args.manifest:
        if args.server:
            print("dedup-build reembed: --manifest writes the store directly; stop the service "
                  "(or add through it with dedup-admin) ", file=sys.stderr)
            return EXIT_USAGE
        target = StoreTarget(config.data_dir, actor=actor)
        try:
            report = bootstrap(args.manifest, target, make, config.enabled_spaces,
                               window=args.window, actor=actor, reason=args.reason,
                               progress_bar=not args.no_progress)
            target.finish(report, plans, args.min_recall)
        finally:
            target.close()
    else:
        name = args.model.split("@", 1)[0]
        base = config.spaces.get(name)
        sc = (base or SpaceConfig(model=args.model)).model_copy(update={
            k: v for k, v in (("replaces", args.replaces), ("threshold", args.threshold))
            if v is not None})
        if args.server:
            target = ServiceTarget(args.server, os.environ.get("DEDUP_TOKEN"), config.data_dir)
            source = SeedStore(Path(config.data_dir) / "store", readonly=True)
        else:
            target = StoreTarget(config.data_dir, actor=actor)
            source = target.store
        try:
            report = reembed_store(source, target, make, sc, window=args.window,
                                   reason=args.reason, progress_bar=not args.no_progress,
                                   max_rate=args.max_rate)
            target.finish(report, {**plans, report.space: sc.index}, args.min_recall)
        finally:
            if source is not getattr(target, "store", None):
                source.close()
            target.close()
    out = report.to_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{report.space}: read {report.read}, embedded {report.embedded}, written "
              f"{report.written}, rejected {report.rejected}, skipped {report.skipped} "
              f"({report.engine}, {report.items_per_s:.1f} items/s)"
              + (f"; resumed after {report.resumed_after}" if report.resumed_after else ""))
        for key, why in report.rejects[:20]:
            print(f"  rejected {key}: {why}")
        for stage, t in out["timings"].items():
            print(f"  {stage:40s} {t:8.3f} s")
        if report.snapshot:
            print(f"snapshot {report.snapshot}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
