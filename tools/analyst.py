"""The analyst tool (console ``dedup-admin``): manage and query the seed bank over gRPC.

    dedup-admin add photo.jpg --label violence.graphic:4 --source CASE-123
    dedup-admin add --text "send 1 BTC ..." --label spam.scam:3
    dedup-admin lookup suspicious.png
    dedup-admin list --label spam.scam
    dedup-admin get 42 | remove 42 43 | relabel 42 --label spam.scam:2 | stats | reload

Target and token come from --target/--token or DEDUP_TARGET/DEDUP_TOKEN. Tables by default,
``--json`` for scripts. Exit codes: 0 ok, 1 some items failed, 2 bad input or arguments,
3 not found, 4 not authenticated or not allowed, 5 service unavailable or overloaded,
6 server-side failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from dedup.errors import (DedupError, InvalidArgument, InvalidItem, NotFound, Overloaded,
                          PermissionDenied, Unauthenticated)
from dedup.types import Item, Label, LookupResult, Seed

EXIT_PARTIAL, EXIT_INPUT, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_UNAVAILABLE, EXIT_SERVER = 1, 2, 3, 4, 5, 6


def exit_code(error: DedupError) -> int:
    """The documented exit code for a typed error (the CLI's one mapping)."""
    for cls, code in ((InvalidItem, EXIT_INPUT), (InvalidArgument, EXIT_INPUT),
                      (NotFound, EXIT_NOT_FOUND), (Unauthenticated, EXIT_AUTH),
                      (PermissionDenied, EXIT_AUTH), (Overloaded, EXIT_UNAVAILABLE)):
        if isinstance(error, cls):
            return code
    return EXIT_SERVER


def parse_label(spec: str) -> Label:
    """``name`` or ``name:severity``."""
    name, sep, sev = spec.rpartition(":")
    if sep and sev.isdigit():
        return Label(name, int(sev))
    return Label(spec, 1)


def _items(paths: Sequence[str], texts: Sequence[str], pdqs: Sequence[str] = ()) -> list[Item]:
    items = [Item(image=Path(p).read_bytes()) for p in paths]
    items += [Item(text=t) for t in texts]
    items += [Item(pdq=h) for h in pdqs]
    if not items:
        raise InvalidArgument("give image files, --text and/or --pdq")
    return items


def _labels(labels: Sequence[Label]) -> str:
    return ",".join(f"{x.name}:{x.severity}" for x in labels)


def table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _seed_row(s: Seed) -> list:
    return [s.seed_id, _labels(s.labels), ",".join(s.modalities), s.source,
            "removed" if s.removed else "active", (s.text or "")[:40]]


_SEED_HEADER = ("seed_id", "labels", "modalities", "source", "state", "text")


def _seed_json(s: Seed) -> dict:
    return asdict(s)


def _lookup_json(r: LookupResult) -> dict:
    return asdict(r)


def _print_lookup(name: str, r: LookupResult) -> None:
    print(f"{name}: exact_match={r.exact_match} snapshot={r.snapshot_version or '-'}")
    if r.verdicts:
        print(table([[v.label, "MATCH" if v.matched else "-", f"{v.score:.3f}", f"{v.margin:+.3f}",
                      ",".join(str(n.seed_id) for n in v.evidence)] for v in r.verdicts],
                    ("label", "matched", "score", "margin", "evidence")))
    if r.neighbors:
        print(table([[n.seed_id, n.space, f"{n.score:.3f}", _labels(n.labels)] for n in r.neighbors],
                    ("seed_id", "space", "score", "labels")))


def run(args, client, out=print) -> int:
    """Execute one subcommand; returns the exit code."""
    as_json = args.json
    if args.cmd == "add":
        items = _items(args.files, args.text, args.pdq)
        names = list(args.files) + [f"text[{i}]" for i in range(len(args.text))]
        results = client.add_seeds(items, [parse_label(x) for x in args.label], source=args.source,
                                   note=args.note)
        rows, failed = [], 0
        for name, r in zip(names, results):
            if isinstance(r, DedupError):
                failed += 1
                rows.append({"item": name, "error": str(r)})
            else:
                rows.append({"item": name, "seed_id": r[0], "created": r[1]})
        if as_json:
            out(json.dumps(rows))
        else:
            out(table([[r["item"], r.get("seed_id", "-"), r.get("created", "-"), r.get("error", "")]
                       for r in rows], ("item", "seed_id", "created", "error")))
        return EXIT_PARTIAL if failed else 0
    if args.cmd == "remove":
        removed = client.remove_seeds(args.ids)
        out(json.dumps({"removed": removed}) if as_json else f"removed: {removed or 'none'}")
        return 0
    if args.cmd == "relabel":
        seed = client.relabel(args.id, [parse_label(x) for x in args.label])
        out(json.dumps(_seed_json(seed)) if as_json else table([_seed_row(seed)], _SEED_HEADER))
        return 0
    if args.cmd == "get":
        seed = client.get_seed(args.id)
        out(json.dumps(_seed_json(seed)) if as_json else table([_seed_row(seed)], _SEED_HEADER))
        return 0
    if args.cmd == "list":
        seeds = []
        for seed in client.iter_seeds(args.label, include_removed=args.all):
            seeds.append(seed)
            if len(seeds) >= args.limit:
                break
        out(json.dumps([_seed_json(s) for s in seeds]) if as_json
            else table([_seed_row(s) for s in seeds], _SEED_HEADER))
        return 0
    if args.cmd == "lookup":
        items = _items(args.files, args.text, args.pdq)
        names = list(args.files) + [f"text[{i}]" for i in range(len(args.text))]
        results = client.batch_lookup(items, top_k=args.top_k, labels=args.only or None,
                                      threshold=args.threshold)
        failed = sum(isinstance(r, DedupError) for r in results)
        if as_json:
            out(json.dumps([{"item": n, "error": str(r)} if isinstance(r, DedupError)
                            else {"item": n, **_lookup_json(r)} for n, r in zip(names, results)]))
        else:
            for n, r in zip(names, results):
                if isinstance(r, DedupError):
                    out(f"{n}: error: {r}")
                else:
                    _print_lookup(n, r)
        return EXIT_PARTIAL if failed else 0
    if args.cmd == "stats":
        s = client.stats()
        if as_json:
            out(json.dumps(s))
        else:
            out(f"seeds: {s['seeds_active']} active, {s['seeds_removed']} removed; "
                f"op_seq {s['op_seq']}; snapshot {s['snapshot_version'] or '-'}")
            out(table([[n, sp["model_id"], sp["ntotal"], f"{sp['threshold']:.3f}"]
                       for n, sp in s["spaces"].items()], ("space", "model_id", "vectors", "threshold")))
            out(table(sorted(s["labels"].items()), ("label", "seeds")))
        return 0
    if args.cmd in ("reload", "publish"):
        version = client.reload() if args.cmd == "reload" else client.publish_snapshot()
        out(json.dumps({"snapshot_version": version}) if as_json else f"snapshot: {version}")
        return 0
    raise InvalidArgument(f"unknown command {args.cmd}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dedup-admin", description="manage the dedup seed bank")
    p.add_argument("--target", default=os.environ.get("DEDUP_TARGET", "127.0.0.1:50051"))
    p.add_argument("--token", default=os.environ.get("DEDUP_TOKEN"))
    p.add_argument("--tls-ca", help="CA certificate (PEM) to verify the server; enables TLS")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mTLS")
    p.add_argument("--tls-key", help="client key (PEM) for mTLS")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", help="JSON output for scripts")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add image files and/or texts as seeds")
    add.add_argument("files", nargs="*")
    add.add_argument("--text", action="append", default=[])
    add.add_argument("--pdq", action="append", default=[], help="a shared PDQ hash (64 hex digits)")
    add.add_argument("--label", action="append", required=True, help="name[:severity], repeatable")
    add.add_argument("--source", default="", help="case / ticket id")
    add.add_argument("--note", default="")
    rm = sub.add_parser("remove", help="remove seeds by id")
    rm.add_argument("ids", nargs="+", type=int)
    rl = sub.add_parser("relabel", help="replace a seed's labels")
    rl.add_argument("id", type=int)
    rl.add_argument("--label", action="append", required=True)
    get = sub.add_parser("get", help="show one seed")
    get.add_argument("id", type=int)
    ls = sub.add_parser("list", help="list seeds in id order")
    ls.add_argument("--label")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--all", action="store_true", help="include removed seeds")
    lk = sub.add_parser("lookup", help="check image files and/or texts against the bank")
    lk.add_argument("files", nargs="*")
    lk.add_argument("--text", action="append", default=[])
    lk.add_argument("--pdq", action="append", default=[], help="a PDQ hash (64 hex digits)")
    lk.add_argument("--top-k", type=int, default=10)
    lk.add_argument("--only", action="append", help="only verdicts for this label (repeatable)")
    lk.add_argument("--threshold", type=float)
    sub.add_parser("stats", help="counts per label and space, snapshot, op-log position")
    sub.add_parser("reload", help="admin: swap in the newest published snapshot")
    sub.add_parser("publish", help="admin: publish the live index as a snapshot")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dedup-admin``."""
    from dedup.client import DedupClient

    args = parser().parse_args(argv)
    try:
        with DedupClient(args.target, args.token, timeout=args.timeout, root_cert=args.tls_ca,
                         client_cert=args.tls_cert, client_key=args.tls_key) as client:
            return run(args, client)
    except DedupError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return exit_code(e)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
