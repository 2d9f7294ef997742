"""`dedup-build`: rebuild the index from LMDB and publish a snapshot (then call Reload).

Each space is built by the index plan (``[spaces."NAME".index]``) of the same TOML config the
service runs with. Exit codes: 0 published, 1 the build failed (nothing published), 2 bad
arguments or config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from dedup.config import load_config
from dedup.errors import DedupError, InvalidArgument
from index_builder.build import rebuild_data_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dedup-build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE",
                   help="the service's TOML config (index plans, data_dir); default: built-in")
    p.add_argument("--data-dir", help="the service's data directory (default: the config's)")
    p.add_argument("--min-recall", type=float, default=0.9,
                   help="refuse to publish below this recall@10 against exact search")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        config = load_config(args.config, **({"data_dir": args.data_dir} if args.data_dir else {}))
    except (InvalidArgument, OSError) as e:
        print(f"dedup-build: {e}", file=sys.stderr)
        return EXIT_USAGE
    plans = {name: space.index for name, space in config.spaces.items()}
    try:
        report = rebuild_data_dir(config.data_dir, plans, min_recall=args.min_recall)
    except DedupError as e:
        print(f"dedup-build: {e}", file=sys.stderr)
        return EXIT_FAILED
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


if __name__ == "__main__":
    sys.exit(main())
