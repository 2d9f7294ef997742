"""`dedup-build`: rebuild the index from LMDB and publish a snapshot (then call Reload)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from dedup.errors import DedupError
from index_builder.build import SpacePlan, rebuild_data_dir

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dedup-build", description=__doc__)
    p.add_argument("--data-dir", required=True, help="the service's data directory")
    p.add_argument("--space", action="append", default=[], metavar="NAME=FACTORY[:SHARDS]",
                   help="per-space plan, e.g. image:effnet-lite0=IVF1024,Flat:4 (default auto:1)")
    p.add_argument("--nprobe", type=int, default=None,
                   help="IVF lists probed per query (default: 1/16 of the lists, at least 16)")
    p.add_argument("--min-recall", type=float, default=0.9)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    plans = {}
    for spec in args.space:
        name, sep, rest = spec.partition("=")
        if not sep:
            p.error(f"bad --space {spec!r}")
        factory, _, shards = rest.rpartition(":") if rest.rsplit(":", 1)[-1].isdigit() else (rest, "", "1")
        plans[name] = SpacePlan(factory=factory or "auto", n_shards=int(shards or 1), nprobe=args.nprobe)
    try:
        report = rebuild_data_dir(args.data_dir, plans, min_recall=args.min_recall)
    except DedupError as e:
        print(f"dedup-build: {e}", file=sys.stderr)
        return EXIT_FAILED
    out = {"version": report.manifest.version, "op_seq": report.manifest.op_seq,
           "sizes": report.sizes, "recall@10": report.recall,
           "timings_s": {k: round(v, 3) for k, v in report.timings.items()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"published {out['version']} (op_seq {out['op_seq']})")
        for space, n in report.sizes.items():
            print(f"  {space:28s} {n:>9d} seeds  recall@10 {report.recall[space]:.3f}")
        for stage, t in out["timings_s"].items():
            print(f"  {stage:40s} {t:8.3f} s")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
