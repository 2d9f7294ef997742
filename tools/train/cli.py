"""``dedup-train``: build the training set, train the copy-detection descriptor, validate, export.

    dedup-train prepare --data /work/data/train                 # pictures + manifest + summary
    dedup-train cache --data D --cache C --views 6 [--worker 0 --workers 2]
    dedup-train fit --data D --out RUN [--cache C] --steps 3000 --batch 64 [--resume]
    dedup-train fit --data D --out RUN --device cuda --split 0   # GPU: the whole network, AMP
    dedup-train build-val --data D --val V                      # held-out queries + negatives
    dedup-train eval --val V (--checkpoint RUN/last.pt | --baseline image:effnet-lite0)
    dedup-train export --checkpoint RUN/last.pt --out dedup/embed/weights/copydet-lite0.pt

Without a subcommand's name, ``dedup-train --data D --out RUN ...`` means ``fit``.
Exit codes: 0 done, 2 bad arguments (argparse or a typed InvalidArgument).
"""

from __future__ import annotations

import argparse
import json
import sys

from dedup.errors import InvalidArgument

COMMANDS = ("prepare", "cache", "fit", "build-val", "eval", "export")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dedup-train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("prepare", help="collect, filter and cache the training pictures")
    s.add_argument("--data", required=True, help="output folder (outside the repository)")
    s.add_argument("--packages", nargs="*", help="training-side packages (default: all)")
    s.add_argument("--workers", type=int, default=2)

    s = sub.add_parser("cache", help="run the frozen trunk on edited views, write fp16 shards")
    s.add_argument("--data", required=True)
    s.add_argument("--cache", required=True)
    s.add_argument("--views", type=int, default=4, help="edited views per picture")
    s.add_argument("--shard-size", type=int, default=128)
    s.add_argument("--max-shards", type=int, default=None)
    s.add_argument("--split", type=int, default=15, help="frozen blocks (the trunk)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--worker", type=int, default=0)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--threads", type=int, default=1)

    s = sub.add_parser("fit", help="train (online edits, or on a view cache)")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="run folder: last.pt, history.json")
    s.add_argument("--cache", default=None, help="view cache from `cache` (CPU recipe)")
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--batch", type=int, default=64, help="pictures per step (2 views each)")
    s.add_argument("--lr", type=float, default=5e-4)
    s.add_argument("--weight-decay", type=float, default=1e-4)
    s.add_argument("--warmup", type=int, default=50)
    s.add_argument("--temperature", type=float, default=0.05)
    s.add_argument("--koleo-weight", type=float, default=10.0)
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--split", type=int, default=15, help="frozen blocks; 0 trains everything")
    s.add_argument("--train-from", type=int, default=None,
                   help="first trained block (default: --split); 16 = head + projection, 17 = projection")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    s.add_argument("--no-region-positives", action="store_true",
                   help="describe collage views globally, not by their panel's cells")
    s.add_argument("--checkpoint-every", type=int, default=100)
    s.add_argument("--budget-minutes", type=float, default=0.0,
                   help="stop with a checkpoint after this many minutes (0: no limit)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")

    s = sub.add_parser("build-val", help="held-out validation queries and negatives")
    s.add_argument("--data", required=True)
    s.add_argument("--val", required=True)
    s.add_argument("--seeds", type=int, default=300)
    s.add_argument("--min-negatives", type=int, default=5000)

    s = sub.add_parser("eval", help="recall at 0.1%% FMR on the validation set")
    s.add_argument("--val", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="a training checkpoint (last.pt)")
    g.add_argument("--weights", help="shipped weights (copydet-lite0.pt)")
    g.add_argument("--baseline", help="a registered embedder spec, e.g. image:effnet-lite0")
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--json", dest="json_out", default=None, help="also write the figures here")

    s = sub.add_parser("export", help="fp16 shipped weights from a checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True)
    return p


def _run(a: argparse.Namespace) -> dict:
    from tools.train import train

    if a.cmd == "prepare":
        from tools.train.data import prepare

        return prepare(a.data, a.packages, workers=a.workers)
    if a.cmd == "cache":
        n = train.cache_views(a.data, a.cache, views=a.views, shard_size=a.shard_size, seed=a.seed,
                              split=a.split, worker=a.worker, n_workers=a.workers,
                              threads=a.threads, max_shards=a.max_shards)
        return {"shards_written": n}
    if a.cmd == "fit":
        cfg = train.FitConfig(
            data=a.data, out=a.out, cache=a.cache, steps=a.steps, batch=a.batch, lr=a.lr,
            weight_decay=a.weight_decay, warmup=a.warmup, temperature=a.temperature,
            koleo_weight=a.koleo_weight, dim=a.dim, split=a.split, train_from=a.train_from,
            seed=a.seed, device=a.device,
            threads=a.threads, region_positives=not a.no_region_positives,
            checkpoint_every=a.checkpoint_every, max_minutes=a.budget_minutes)
        res = train.fit(cfg, resume=a.resume)
        h = res["history"]
        return {"steps_done": res["steps_done"], "checkpoint": res["checkpoint"],
                "first_loss": h[0]["loss"] if h else None, "last_loss": h[-1]["loss"] if h else None}
    if a.cmd == "build-val":
        return train.build_val(a.data, a.val, n_seeds=a.seeds, min_negatives=a.min_negatives)
    if a.cmd == "eval":
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)  # under CPU contention one thread wastes least
        if a.baseline:
            from dedup.embed import create_embedder

            res = train.evaluate_embedder(create_embedder(a.baseline, "cpu"), a.val)
        else:
            from dedup.embed.copydet import load_network

            net = train.load_checkpoint(a.checkpoint) if a.checkpoint else load_network(a.weights)
            res = train.evaluate_net(net, a.val, threads=a.threads)
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(res, f, indent=1)
        return res
    if a.cmd == "export":
        return {"weights": str(train.export(a.checkpoint, a.out))}
    raise InvalidArgument(f"unknown command {a.cmd}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["fit", *argv]
    a = _parser().parse_args(argv)
    try:
        res = _run(a)
    except InvalidArgument as e:
        print(f"dedup-train: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
