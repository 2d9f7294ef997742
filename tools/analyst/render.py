"""How dedup-admin shows things: plain tables for people, JSON-ready dicts for scripts."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Iterable, Mapping, Sequence

from dedup.types import Label, LookupResult, Neighbor, OpEntry, Seed

SEED_HEADER = ("seed_id", "labels", "modalities", "source", "added_by", "created", "state", "text")
OP_HEADER = ("seq", "time", "kind", "seed_id", "actor", "labels", "reason")


def table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def when(ts: float | None) -> str:
    """Unix seconds as UTC ``YYYY-MM-DD HH:MM:SSZ`` ("" for none)."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def labels_text(labels: Iterable[Label]) -> str:
    return ",".join(f"{x.name}:{x.severity}" for x in labels)


def seed_row(s: Seed) -> list:
    state = f"removed {when(s.removed_at)}" if s.removed else "active"
    return [s.seed_id, labels_text(s.labels), ",".join(s.modalities) + (" (hash)" if s.hash_only
                                                                       else ""),
            s.source, s.added_by, when(s.created_at), state, (s.text or "")[:40]]


def seed_json(s: Seed) -> dict:
    return asdict(s)


def seed_details(s: Seed) -> str:
    """One seed, one field per line; fields it does not have are left out."""
    fields = [("seed_id", s.seed_id), ("labels", labels_text(s.labels)),
              ("state", f"removed {when(s.removed_at)}" if s.removed else "active"),
              ("modalities", ",".join(s.modalities)), ("added_by", s.added_by),
              ("created", when(s.created_at)), ("source", s.source), ("note", s.note),
              ("sha256", s.sha256), ("content", "kept" if s.has_content else
                                     "hash only" if s.hash_only else "not kept"),
              ("text", s.text)]
    shown = [(k, v) for k, v in fields if v not in (None, "")]
    width = max(len(k) for k, _ in shown)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in shown)


def op_labels(op: OpEntry) -> str:
    if op.previous_labels:
        return f"{labels_text(op.previous_labels)} -> {labels_text(op.labels)}"
    return labels_text(op.labels)


def op_row(op: OpEntry) -> list:
    return [op.seq, when(op.ts), op.kind.name.lower(), op.seed_id, op.actor, op_labels(op),
            op.reason]


def op_json(op: OpEntry) -> dict:
    d = asdict(op)
    d["kind"] = op.kind.name.lower()
    return d


def lookup_json(r: LookupResult) -> dict:
    return asdict(r)


def _evidence(neighbors: Iterable[Neighbor]) -> str:
    """Each evidence seed once per space, at its best score: ``5 (pdq 0.914)``."""
    best: dict[tuple[int, str], float] = {}
    for n in neighbors:
        key = (n.seed_id, n.space)
        best[key] = max(best.get(key, n.score), n.score)
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{sid} ({space} {score:.3f})" for (sid, space), score in ranked)


def _close(n: Neighbor, thresholds: Mapping[str, float], near: float | None) -> bool:
    """Whether a neighbour is worth showing: it cleared its space's threshold or came within
    ``near`` of it (every neighbour when ``near`` is None; exact matches always)."""
    if near is None or n.space not in thresholds:
        return True
    return n.score >= thresholds[n.space] - near


def lookup_text(name: str, r: LookupResult, near: float | None,
                thresholds: Mapping[str, float] = {}) -> str:
    """A lookup for people: the exact match when there is one; the labels that matched or
    came within ``near`` of their threshold, each with its evidence seeds once per space; the
    neighbours that came that close (``near`` None: every label and neighbour)."""
    lines = [name]
    if r.exact_match is not None:
        lines.append(f"  exact match: seed {r.exact_match}")
    shown = [v for v in r.verdicts if v.matched or near is None or v.margin >= -near]
    if shown:
        rows = []
        for v in shown:
            evidence = ([n for n in v.evidence if _close(n, thresholds, near)]
                        or list(v.evidence[:1]))
            rows.append([v.label, "MATCH" if v.matched else "near", f"{v.score:.3f}",
                         f"{v.margin:+.3f}", v.severity, _evidence(evidence)])
        lines += ["  " + line for line in table(
            rows, ("label", "verdict", "score", "margin", "severity", "evidence")).splitlines()]
    else:
        lines.append("  no label matched" + (f" or came within {near:g} of its threshold"
                                               if near is not None else ""))
    close = [n for n in r.neighbors if _close(n, thresholds, near)]
    if close:
        rows = [[n.seed_id, n.space, f"{n.score:.3f}", labels_text(n.labels)] for n in close]
        lines.append("  neighbours:")
        lines += ["  " + line for line in table(rows, ("seed_id", "space", "score",
                                                       "labels")).splitlines()]
    if len(close) < len(r.neighbors):
        lines.append(f"  ({len(r.neighbors) - len(close)} weaker neighbours not shown; "
                     "--all-labels shows them)")
    for h in r.hashes:
        if h.used:
            lines.append(f"  {h.space} hash {h.hash} (quality {h.quality})")
    return "\n".join(lines)
