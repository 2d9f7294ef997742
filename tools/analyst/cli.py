"""dedup-admin's argument parsing and commands (see the package docstring for usage and exit
codes). Thin: each command calls the client (dedup.client) or the bulk importer and prints."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Callable

from dedup.errors import (DedupError, InvalidArgument, InvalidItem, NotFound, Overloaded,
                          PermissionDenied, Unauthenticated)
from dedup.types import (MAX_SEVERITY, MIN_SEVERITY, Label, OpFilter, OpKind, RemoveStatus,
                         SeedFilter, check_labels)
from tools.analyst import bulk, render

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_UNAVAILABLE, EXIT_SERVER = (
    0, 1, 2, 3, 4, 5, 6)
_MEDIA_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif",
                 "image/webp": ".webp", "image/bmp": ".bmp", "image/tiff": ".tif"}


def exit_code(error: DedupError) -> int:
    """The documented exit code for a typed error (the CLI's one mapping)."""
    for cls, code in ((InvalidItem, EXIT_INPUT), (InvalidArgument, EXIT_INPUT),
                      (NotFound, EXIT_NOT_FOUND), (Unauthenticated, EXIT_AUTH),
                      (PermissionDenied, EXIT_AUTH), (Overloaded, EXIT_UNAVAILABLE)):
        if isinstance(error, cls):
            return code
    return EXIT_SERVER


# ------------------------------------------------------------------ argument types
def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _severity(text: str) -> int:
    n = int(text)
    if not MIN_SEVERITY <= n <= MAX_SEVERITY:
        raise argparse.ArgumentTypeError(f"severity must be {MIN_SEVERITY}..{MAX_SEVERITY}, "
                                         f"got {n}")
    return n


def _seed_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a seed id is a non-negative integer, got {text!r}")
    return int(text)


def _time(text: str) -> float:
    """Unix seconds, or an ISO date/time (UTC unless it names a zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"want an ISO date/time (2025-01-31, 2025-01-31T12:00) or unix seconds, got {text!r}")
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a reason must say something")
    return text


# ------------------------------------------------------------------ the parser
def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options every subcommand takes too, so they work before or after it; inside a
    subcommand they default to 'not given' so they never undo the ones given before it."""
    p = argparse.ArgumentParser(add_help=False)
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)  # noqa: E731
    p.add_argument("--json", action="store_true", default=d(False), help="JSON output for scripts")
    p.add_argument("--target", default=d(os.environ.get("DEDUP_TARGET", "127.0.0.1:50051")),
                   help="server address (DEDUP_TARGET)")
    p.add_argument("--token", default=d(os.environ.get("DEDUP_TOKEN")), help="bearer token "
                   "(DEDUP_TOKEN)")
    p.add_argument("--tls-ca", default=d(None), help="CA certificate (PEM); enables TLS")
    p.add_argument("--tls-cert", default=d(None), help="client certificate (PEM) for mTLS")
    p.add_argument("--tls-key", default=d(None), help="client key (PEM) for mTLS")
    p.add_argument("--timeout", type=float, default=d(120.0), help="seconds per call")
    return p


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files, folders (recursive) or glob patterns")
    p.add_argument("--text", action="append", default=[], help="a text item (repeatable)")
    p.add_argument("--pdq", action="append", default=[],
                   help="a PDQ hash, 64 hex digits (repeatable)")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                   default=None, help="no progress bar (default: shown on a terminal)")
    p.add_argument("--progress", dest="progress", action="store_const", const=True,
                   help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--batch-size", type=_positive, help="items per request (default: the "
                   "server's max_batch_items)")


def parser() -> argparse.ArgumentParser:
    common = _common(suppress=True)
    p = argparse.ArgumentParser(prog="dedup-admin", description="manage the dedup seed bank",
                                parents=[_common(suppress=False)])
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    add = cmd("add", "add images (files, folders, globs), texts, PDQ hashes or a manifest as seeds")
    _inputs(add)
    add.add_argument("--manifest", action="append", default=[], metavar="FILE",
                     help="CSV (with header) or JSONL: path|text|pdq, labels, severity, "
                     "source, note")
    add.add_argument("--label", action="append", default=[], metavar="NAME[:SEVERITY]",
                     help="label for every item without its own (repeatable)")
    add.add_argument("--severity", type=_severity, default=1,
                     help="severity of labels given without one (default 1)")
    add.add_argument("--source", default="", help="case / ticket id")
    add.add_argument("--note", default="")
    add.add_argument("--reason", default="", help="why these are added (kept in the audit trail)")
    add.add_argument("--merge-labels", action="store_true",
                     help="an item already in the bank gets these labels added")
    add.add_argument("--dry-run", action="store_true",
                     help="write nothing: report which items already match the bank, and how")
    add.add_argument("-v", "--verbose", action="store_true", help="a row per item, always")

    lk = cmd("lookup", "check images, texts or PDQ hashes against the bank")
    _inputs(lk)
    lk.add_argument("--top-k", type=_positive, default=10)
    lk.add_argument("--only", action="append", metavar="LABEL", help="only verdicts for this label")
    lk.add_argument("--threshold", type=float, help="one similarity threshold for every space")
    lk.add_argument("--near", type=float, default=0.05,
                    help="also show labels within this margin of their threshold (default 0.05)")
    lk.add_argument("--all-labels", action="store_true", help="show every label's verdict")

    rm = cmd("remove", "remove seeds (each id reported: removed, already removed, not found)")
    rm.add_argument("ids", nargs="+", type=_seed_id)
    rm.add_argument("--reason", required=True, type=_reason, help="why (kept in the audit trail)")

    rl = cmd("relabel", "replace a seed's labels")
    rl.add_argument("id", type=_seed_id)
    rl.add_argument("--label", action="append", required=True, metavar="NAME[:SEVERITY]")
    rl.add_argument("--reason", required=True, type=_reason)

    rs = cmd("restore", "undo a removal: the same seed id is active and searchable again")
    rs.add_argument("id", type=_seed_id)
    rs.add_argument("--reason", required=True, type=_reason)

    hist = cmd("history", "a seed's audit trail: who added, relabelled, removed it, and why")
    hist.add_argument("id", type=_seed_id)

    ops = cmd("ops", "the audit trail, newest first")
    ops.add_argument("--actor")
    ops.add_argument("--kind", action="append", choices=[k.name.lower() for k in OpKind])
    ops.add_argument("--since", type=_time, help="ISO date/time or unix seconds")
    ops.add_argument("--until", type=_time)
    ops.add_argument("--label")
    ops.add_argument("--seed", type=_seed_id)
    ops.add_argument("--limit", type=_positive, default=50)

    content = cmd("content", "save a seed's stored content (image bytes or text)")
    content.add_argument("id", type=_seed_id)
    content.add_argument("-o", "--output", help="file to write ('-' for stdout; default "
                         "seed-<id>.<ext> in the current folder)")

    get = cmd("get", "show one seed")
    get.add_argument("id", type=_seed_id)

    ls = cmd("list", "list seeds in id order")
    ls.add_argument("--label")
    ls.add_argument("--source", help="case-insensitive part of the source")
    ls.add_argument("--actor", help="who added them")
    ls.add_argument("--since", type=_time, help="created at or after")
    ls.add_argument("--until", type=_time, help="created before")
    ls.add_argument("--limit", type=_positive, default=100)
    ls.add_argument("--all", action="store_true", help="include removed seeds")

    cmd("stats", "counts per label and space, snapshot, op-log position")
    cmd("whoami", "the name and role of your token")
    cmd("reload", "admin: swap in the newest published snapshot")
    cmd("publish", "admin: publish the live index as a snapshot")
    cmd("shadow", "each space's role, and how shadow spaces' verdicts compare with the live ones")
    pr = cmd("promote", "admin: a shadow space decides verdicts from now on (the one it "
             "replaces stays in shadow for a rollback)")
    pr.add_argument("space")
    pr.add_argument("--replaces", help="the live space it replaces (default: as recorded)")
    pr.add_argument("--reason", default="", help="why (kept in the op log)")
    rb = cmd("rollback", "admin: undo a promotion (the replaced space is live again)")
    rb.add_argument("space", nargs="?", help="the promoted space (default: the only one)")
    rb.add_argument("--reason", default="")
    rt = cmd("retire", "admin: stop serving a shadow space and drop its vectors")
    rt.add_argument("space")
    rt.add_argument("--reason", default="")

    # Local to the service's machine (its data dir), safe beside the running service: LMDB
    # copies in one read transaction. No token or server needed.
    bk = sub.add_parser("backup", help="copy the store (compacted) and the serving snapshot "
                        "into a new directory", parents=[common])
    bk.add_argument("out", metavar="DIR", help="the backup directory to create")
    bk.add_argument("--data-dir", default="./dedup-data", help="the service's data dir")
    rs2 = sub.add_parser("restore-backup", help="copy a backup into a new, empty data dir",
                         parents=[common])
    rs2.add_argument("backup", metavar="DIR", help="a directory made by `dedup-admin backup`")
    rs2.add_argument("--data-dir", required=True, help="the (new, empty) data dir")
    return p


# ------------------------------------------------------------------ commands
class Out:
    """Where results go: stdout for results, stderr for summaries and notes."""

    def __init__(self, as_json: bool, write: Callable[[str], None] = print):
        self.json = as_json
        self.write = write

    def result(self, human: str, data) -> None:
        self.write(json.dumps(data) if self.json else human)

    @staticmethod
    def note(text: str) -> None:
        print(text, file=sys.stderr)


def _labels(specs, severity: int = 1) -> tuple[Label, ...]:
    """Labels from ``--label NAME[:SEVERITY]`` options, by the service's label rule."""
    return check_labels([bulk.parse_label(s, severity) for s in specs])


def cmd_add(args, client, out: Out) -> int:
    labels = _labels(args.label, args.severity) if args.label else ()
    entries, skipped = bulk.gather(args.paths, args.text, args.pdq, args.manifest, labels,
                                   args.source, args.note, args.severity)
    if not entries:
        raise InvalidArgument("nothing to add: give files, folders, globs, --text, --pdq or "
                              "--manifest" + (f" (skipped {len(skipped)} non-image files)"
                                              if skipped else ""))
    if not labels and any(not e.labels and not e.error for e in entries):
        raise InvalidArgument("give --label (items without a manifest label need one)")
    limits = bulk.Limits.from_stats(client.stats(), args.batch_size)
    if args.dry_run:
        outcomes = bulk.check_all(client, entries, limits, progress=args.progress)
    else:
        outcomes = bulk.add_all(client, entries, limits, reason=args.reason,
                                merge_labels=args.merge_labels, progress=args.progress)
    if out.json:
        out.result("", [o.as_json() for o in outcomes])
    else:
        shown = outcomes if args.verbose or len(outcomes) <= 20 else [
            o for o in outcomes if o.status not in ("added", "new")]
        if shown:
            out.result(render.table([_outcome_row(o) for o in shown],
                                    ("item", "status", "seed_id", "labels", "detail")), None)
    out.note(bulk.summary(outcomes, skipped, args.dry_run))
    return EXIT_PARTIAL if any(o.status == "rejected" for o in outcomes) else EXIT_OK


_STATUS_DETAIL = {"present": "already a seed; its labels were not changed",
                  "merged": "already a seed; your labels were merged onto it"}


def _outcome_row(o: bulk.Outcome) -> list:
    detail = o.error or ", ".join(f"{label} via seed {sid} ({score:.3f})"
                                  for label, sid, score in o.matches) or _STATUS_DETAIL.get(
        o.status, "")
    return [o.entry.name, o.status, o.seed_id, render.labels_text(o.labels), detail]


def cmd_lookup(args, client, out: Out) -> int:
    entries, skipped = bulk.gather(args.paths, args.text, args.pdq)
    if not entries:
        raise InvalidArgument("nothing to look up: give files, folders, globs, --text or --pdq")
    stats = client.stats()
    limits = bulk.Limits.from_stats(stats, args.batch_size)
    thresholds = {name: sp["threshold"] for name, sp in stats["spaces"].items()}
    results: list = [None] * len(entries)
    pending: list[tuple[int, object]] = []  # (entry index, item) waiting to be sent

    def send() -> None:
        found = client.batch_lookup([item for _, item in pending], top_k=args.top_k,
                                    labels=args.only or None, threshold=args.threshold)
        for (i, _), r in zip(pending, found):
            results[i] = r
        pending.clear()

    for i, e in enumerate(entries):
        try:
            if e.error:
                raise InvalidArgument(e.error)
            pending.append((i, e.item(limits.max_image_bytes)))
        except InvalidArgument as err:
            results[i] = err
        if len(pending) == limits.max_batch_items:
            send()
    if pending:
        send()
    near = None if args.all_labels else args.near
    data, texts = [], []
    for e, r in zip(entries, results):
        if isinstance(r, DedupError):
            data.append({"item": e.name, "error": str(r)})
            texts.append(f"{e.name}\n  error: {r}")
        else:
            data.append({"item": e.name, **render.lookup_json(r)})
            texts.append(render.lookup_text(e.name, r, near, thresholds))
    out.result("\n\n".join(texts), data)
    if skipped:
        out.note(f"skipped {len(skipped)} files that are not images")
    return EXIT_PARTIAL if any(isinstance(r, DedupError) for r in results) else EXIT_OK


def cmd_remove(args, client, out: Out) -> int:
    results = client.remove_each(args.ids, reason=args.reason)
    out.result(render.table([[r.seed_id, r.status.value.replace("_", " ")] for r in results],
                            ("seed_id", "result")),
               [{"seed_id": r.seed_id, "result": r.status.value} for r in results])
    return EXIT_PARTIAL if any(r.status is RemoveStatus.NOT_FOUND for r in results) else EXIT_OK


def cmd_relabel(args, client, out: Out) -> int:
    seed = client.relabel(args.id, _labels(args.label), reason=args.reason)
    out.result(render.seed_details(seed), render.seed_json(seed))
    return EXIT_OK


def cmd_restore(args, client, out: Out) -> int:
    seed, restored = client.restore(args.id, reason=args.reason)
    human = (f"restored seed {seed.seed_id}: active and searchable again" if restored
             else f"seed {seed.seed_id} was not removed; nothing changed")
    out.result(human + "\n" + render.seed_details(seed),
               {"restored": restored, "seed": render.seed_json(seed)})
    return EXIT_OK


def cmd_history(args, client, out: Out) -> int:
    seed, ops = client.history(args.id)
    out.result(render.seed_details(seed) + "\n\n" + render.table([render.op_row(o) for o in ops],
                                                                 render.OP_HEADER),
               {"seed": render.seed_json(seed), "ops": [render.op_json(o) for o in ops]})
    return EXIT_OK


def cmd_ops(args, client, out: Out) -> int:
    where = OpFilter(actor=args.actor, kinds=tuple(OpKind[k.upper()] for k in args.kind or ()),
                     since=args.since, until=args.until, label=args.label, seed_id=args.seed)
    ops = []
    for op in client.iter_ops(where, page_size=min(args.limit, 1000)):
        ops.append(op)
        if len(ops) >= args.limit:
            break
    out.result(render.table([render.op_row(o) for o in ops], render.OP_HEADER),
               [render.op_json(o) for o in ops])
    return EXIT_OK


def cmd_content(args, client, out: Out) -> int:
    c = client.content(args.id)
    if args.output == "-":
        sys.stdout.buffer.write(c.data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    suffix = ".txt" if c.media_type.startswith("text/") else _MEDIA_SUFFIX.get(c.media_type, ".bin")
    path = Path(args.output or f"seed-{c.seed_id}{suffix}")
    path.write_bytes(c.data)
    out.result(f"wrote {path} ({c.media_type}, {len(c.data)} bytes)",
               {"seed_id": c.seed_id, "path": str(path), "media_type": c.media_type,
                "bytes": len(c.data)})
    return EXIT_OK


def cmd_get(args, client, out: Out) -> int:
    seed = client.get_seed(args.id)
    out.result(render.seed_details(seed), render.seed_json(seed))
    return EXIT_OK


def cmd_list(args, client, out: Out) -> int:
    where = SeedFilter(label=args.label, source=args.source, added_by=args.actor,
                       created_after=args.since, created_before=args.until,
                       include_removed=args.all)
    seeds = []
    for seed in client.iter_seeds(page_size=min(args.limit, 1000), where=where):
        seeds.append(seed)
        if len(seeds) >= args.limit:
            break
    out.result(render.table([render.seed_row(s) for s in seeds], render.SEED_HEADER),
               [render.seed_json(s) for s in seeds])
    return EXIT_OK


def cmd_stats(args, client, out: Out) -> int:
    s = client.stats()
    human = "\n".join([
        f"seeds: {s['seeds_active']} active, {s['seeds_removed']} removed; op_seq {s['op_seq']}; "
        f"snapshot {s['snapshot_version'] or '-'}",
        render.table([[n, sp["model_id"], sp["ntotal"], f"{sp['threshold']:.3f}"]
                      for n, sp in s["spaces"].items()], ("space", "model_id", "vectors",
                                                          "threshold")),
        render.table(sorted(s["labels"].items()), ("label", "seeds"))])
    out.result(human, s)
    return EXIT_OK


def cmd_whoami(args, client, out: Out) -> int:
    name, role = client.whoami()
    out.result(f"{name} ({role})", {"name": name, "role": role})
    return EXIT_OK


def cmd_snapshot(args, client, out: Out) -> int:
    version = client.reload() if args.cmd == "reload" else client.publish_snapshot()
    out.result(f"snapshot: {version}", {"snapshot_version": version})
    return EXIT_OK


def cmd_shadow(args, client, out: Out) -> int:
    spaces = client.stats()["spaces"]
    rows = []
    for name, sp in spaces.items():
        o = sp.get("shadow_outcomes", {})
        rows.append([name, sp["role"], sp["ntotal"], o.get("agree_match", "-"),
                     o.get("agree_none", "-"), o.get("shadow_only", "-"),
                     o.get("live_only", "-"), o.get("differ", "-"),
                     sp.get("shadow_new_seeds", "-")])
    out.result(render.table(rows, ("space", "role", "vectors", "agree_match", "agree_none",
                                   "shadow_only", "live_only", "differ", "new_seeds")), spaces)
    return EXIT_OK


def cmd_space(args, client, out: Out) -> int:
    if args.cmd == "promote":
        replaced = client.promote_space(args.space, args.replaces, reason=args.reason)
        out.result(f"{args.space} is live" + (f"; {replaced} in shadow" if replaced else ""),
                   {"live": args.space, "shadow": replaced or None})
    elif args.cmd == "rollback":
        live = client.rollback_space(args.space, reason=args.reason)
        out.result(f"{live} is live again", {"live": live})
    else:
        client.retire_space(args.space, reason=args.reason)
        out.result(f"{args.space} retired", {"retired": args.space})
    return EXIT_OK


COMMANDS: dict[str, Callable] = {
    "add": cmd_add, "lookup": cmd_lookup, "remove": cmd_remove, "relabel": cmd_relabel,
    "restore": cmd_restore, "history": cmd_history, "ops": cmd_ops, "content": cmd_content,
    "get": cmd_get, "list": cmd_list, "stats": cmd_stats, "whoami": cmd_whoami,
    "reload": cmd_snapshot, "publish": cmd_snapshot, "shadow": cmd_shadow,
    "promote": cmd_space, "rollback": cmd_space, "retire": cmd_space,
}


def run(args, client, write: Callable[[str], None] = print) -> int:
    """Execute one parsed subcommand against ``client``; returns the exit code."""
    return COMMANDS[args.cmd](args, client, Out(args.json, write))


def _local_backup(args) -> int:
    """``backup`` / ``restore-backup``: on the service's own data dir, no server involved."""
    from dedup.backup import backup, restore

    out = Out(args.json)
    try:
        info = (backup(args.data_dir, args.out) if args.cmd == "backup"
                else restore(args.backup, args.data_dir))
    except DedupError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return exit_code(e)
    out.result("\n".join(f"{k}: {v}" for k, v in info.items()), info)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dedup-admin``."""
    from dedup.client import DedupClient

    args = parser().parse_args(argv)
    if args.cmd in ("backup", "restore-backup"):
        return _local_backup(args)
    try:
        with DedupClient(args.target, args.token, timeout=args.timeout, root_cert=args.tls_ca,
                         client_cert=args.tls_cert, client_key=args.tls_key) as client:
            return run(args, client)
    except DedupError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return exit_code(e)
    except BrokenPipeError:
        # the reader of our output went away (``| head``): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
