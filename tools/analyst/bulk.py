"""Bulk import for dedup-admin: gather items from files, folders, globs and manifests, send them
in batches within the server's limits, and account for every item.

Nothing here stops at one bad item: an unreadable file, an oversized one, a bad manifest row or
an item the server refuses is recorded with its reason and the rest go on. Re-running an import
adds nothing twice (the server answers an item already in the bank with its existing seed).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from dedup.errors import (DedupError, InvalidArgument, Overloaded, PermissionDenied,
                          Unauthenticated)
from dedup.types import Item, Label, LookupResult, check_labels

# Files a folder walk sends; the server decides what it accepts (JPEG, PNG, WebP, GIF) and says
# why it refuses the rest, so a stray BMP or HEIC shows up in the summary instead of vanishing.
IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif",
                            ".tiff", ".heic", ".heif", ".avif"))
MANIFEST_COLUMNS = ("path", "text", "pdq", "labels", "severity", "source", "note")
_GLOB_CHARS = re.compile(r"[*?\[]")
_LABEL_SPLIT = re.compile(r"[;,\s]+")
_RETRIES = 4  # a busy server (RESOURCE_EXHAUSTED, UNAVAILABLE) is retried with backoff


@dataclass(frozen=True)
class Limits:
    """What one AddSeeds / BatchLookup request may carry (from the server's Stats)."""

    max_batch_items: int = 64
    max_message_bytes: int = 64 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024

    @classmethod
    def from_stats(cls, stats: dict, batch_size: int | None = None) -> "Limits":
        got = stats.get("limits") or {}
        default = cls()
        n = got.get("max_batch_items") or default.max_batch_items
        return cls(max_batch_items=min(n, batch_size) if batch_size else n,
                   max_message_bytes=got.get("max_message_bytes") or default.max_message_bytes,
                   max_image_bytes=got.get("max_image_bytes") or default.max_image_bytes)


@dataclass(frozen=True)
class Entry:
    """One item to import: where its content comes from, its labels, and any refusal found
    before sending (``error``)."""

    name: str
    path: Path | None = None
    text: str | None = None
    pdq: str | None = None
    labels: tuple[Label, ...] = ()
    source: str = ""
    note: str = ""
    error: str = ""

    def item(self, max_image_bytes: int) -> Item:
        """The item to send; InvalidArgument (with the reason) when it cannot be read."""
        if self.path is None:
            return Item(text=self.text, pdq=self.pdq)
        try:
            size = self.path.stat().st_size
            if size > max_image_bytes:
                raise InvalidArgument(f"{size} bytes (limit: max_image_bytes={max_image_bytes})")
            return Item(image=self.path.read_bytes(), text=self.text)
        except OSError as e:
            raise InvalidArgument(f"cannot read: {e.strerror or e}") from e


@dataclass
class Outcome:
    """What became of one entry. ``status``: added, present (already in the bank, labels
    unchanged), merged (already in the bank, labels merged), rejected; for a dry run: new,
    exact (already in the bank), near (near-matches the bank), rejected."""

    entry: Entry
    status: str
    seed_id: int | None = None
    labels: tuple[Label, ...] = ()
    error: str = ""
    matches: list[tuple[str, int, float]] = field(default_factory=list)  # (label, seed, score)

    def as_json(self) -> dict:
        row = {"item": self.entry.name, "status": self.status}
        if self.seed_id is not None:
            row["seed_id"] = self.seed_id
            row["created"] = self.status == "added"
            row["labels_merged"] = self.status == "merged"
            row["labels"] = [{"name": x.name, "severity": x.severity} for x in self.labels]
        if self.error:
            row["error"] = self.error
        if self.matches:
            row["matches"] = [{"label": lb, "seed_id": sid, "score": round(score, 4)}
                              for lb, sid, score in self.matches]
        return row


# ------------------------------------------------------------------ labels
def parse_label(spec: str, default_severity: int = 1) -> Label:
    """``name`` or ``name:severity`` (1..5), checked by the service's own label rule."""
    spec = spec.strip()
    name, sep, sev = spec.rpartition(":")
    label = Label(name, int(sev)) if sep and sev.strip().lstrip("-").isdigit() else Label(
        spec, default_severity)
    check_labels([label])
    return label


def parse_labels(specs: Iterable[str], default_severity: int = 1) -> tuple[Label, ...]:
    """Labels from specs that may each hold several (``a:2;b`` or ``a:2, b``)."""
    labels = [parse_label(part, default_severity) for spec in specs
              for part in _LABEL_SPLIT.split(spec) if part]
    return check_labels(labels)


# ------------------------------------------------------------------ gathering inputs
def gather(paths: Sequence[str], texts: Sequence[str] = (), pdqs: Sequence[str] = (),
           manifests: Sequence[str] = (), labels: tuple[Label, ...] = (), source: str = "",
           note: str = "", default_severity: int = 1) -> tuple[list[Entry], list[str]]:
    """Entries for every input (files, folders walked recursively, globs, manifests, texts,
    hashes), and the files a folder walk skipped as not images."""
    entries: list[Entry] = []
    skipped: list[str] = []
    base = dict(labels=labels, source=source, note=note)
    for spec in paths:
        entries += _from_path(spec, base, skipped)
    for i, text in enumerate(texts):
        entries.append(Entry(f"text[{i}]", text=text, **base))
    for i, pdq in enumerate(pdqs):
        entries.append(Entry(f"pdq[{i}]", pdq=pdq.strip(), **base))
    for manifest in manifests:
        entries += read_manifest(Path(manifest), labels, source, note, default_severity)
    return entries, skipped


def _from_path(spec: str, base: dict, skipped: list[str]) -> list[Entry]:
    path = Path(spec)
    if path.is_dir():
        return list(_walk(path, base, skipped))
    if path.exists() or not _GLOB_CHARS.search(spec):
        if not path.exists():
            return [Entry(spec, path=path, error="no such file or folder", **base)]
        return [Entry(spec, path=path, **base)]
    matches = sorted(glob.glob(spec, recursive=True))
    if not matches:
        return [Entry(spec, error="no file matches this pattern", **base)]
    out: list[Entry] = []
    for m in matches:
        p = Path(m)
        out += list(_walk(p, base, skipped)) if p.is_dir() else [Entry(m, path=p, **base)]
    return out


def _walk(folder: Path, base: dict, skipped: list[str]) -> Iterator[Entry]:
    """Image files under ``folder`` in a stable (sorted) order; hidden entries are left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(root) / name
            if p.suffix.lower() in IMAGE_SUFFIXES:
                yield Entry(str(p), path=p, **base)
            else:
                skipped.append(str(p))


def read_manifest(path: Path, labels: tuple[Label, ...] = (), source: str = "", note: str = "",
                  default_severity: int = 1) -> list[Entry]:
    """Entries of a CSV (with a header) or JSONL manifest. Columns: one of path (relative to
    the manifest's folder) | text | pdq, then labels (``a:3;b`` or a JSON list), severity (for
    labels without one), source and note (the command line's when left empty). A bad row
    becomes an entry carrying its error."""
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InvalidArgument(f"cannot read manifest {path}: {e.strerror or e}") from e
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(raw)
    elif path.suffix.lower() == ".csv":
        rows = _csv_rows(raw, path)
    else:
        raise InvalidArgument(f"manifest {path}: want a .csv or .jsonl file")
    out = []
    for line, row in rows:
        name = f"{path}:{line}"
        if isinstance(row, str):
            out.append(Entry(name, error=row))
            continue
        out.append(_manifest_entry(name, row, path.parent, labels, source, note,
                                   default_severity))
    return out


def _csv_rows(raw: str, path: Path) -> Iterator[tuple[int, dict | str]]:
    reader = csv.DictReader(raw.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or ()]
    unknown = [h for h in header if h not in MANIFEST_COLUMNS]
    if unknown or not {"path", "text", "pdq"} & set(header):
        raise InvalidArgument(f"manifest {path}: columns must be among "
                              f"{', '.join(MANIFEST_COLUMNS)} with one of path/text/pdq "
                              f"(got {', '.join(header) or 'none'})")
    for row in reader:
        yield reader.line_num, {k.strip().lower(): (v or "").strip() for k, v in row.items()
                                if k is not None}


def _jsonl_rows(raw: str) -> Iterator[tuple[int, dict | str]]:
    for line, text in enumerate(raw.splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            yield line, f"not JSON: {e.msg}"
            continue
        if not isinstance(row, dict):
            yield line, "each line must be a JSON object"
            continue
        unknown = sorted(set(row) - set(MANIFEST_COLUMNS))
        yield line, (f"unknown keys {', '.join(unknown)}" if unknown else row)


def _manifest_entry(name: str, row: dict, folder: Path, labels: tuple[Label, ...], source: str,
                    note: str, default_severity: int) -> Entry:
    content = {k: row.get(k) for k in ("path", "text", "pdq") if row.get(k)}
    try:
        severity = int(row["severity"]) if row.get("severity") not in (None, "") else \
            default_severity
        given = row.get("labels") or ()
        specs = [given] if isinstance(given, str) else [str(x) for x in given]
        row_labels = parse_labels(specs, severity) if any(specs) else labels
        if not row_labels:
            raise InvalidArgument("no labels: give a labels column or --label")
        if not content:
            raise InvalidArgument("no content: give a path, text or pdq")
        if "path" in content and "pdq" in content:
            raise InvalidArgument("give a path or a pdq hash, not both")
    except (InvalidArgument, ValueError, TypeError) as e:
        return Entry(name, error=str(e))
    path = None
    if "path" in content:
        path = Path(str(content["path"]))
        path = path if path.is_absolute() else folder / path
    return Entry(name, path=path, text=content.get("text"), pdq=content.get("pdq"),
                 labels=tuple(row_labels), source=str(row.get("source") or source),
                 note=str(row.get("note") or note))


# ------------------------------------------------------------------ sending
def _batches(entries: Sequence[Entry], limits: Limits, done: Callable[[Outcome], None],
             ) -> Iterator[tuple[list[Entry], list[Item]]]:
    """Groups of entries sharing labels/source/note, read lazily and cut to the server's
    item and message limits. Entries refused before sending go straight to ``done``."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        if e.error:
            done(Outcome(e, "rejected", error=e.error))
        else:
            groups.setdefault((e.labels, e.source, e.note), []).append(e)
    budget = int(limits.max_message_bytes * 0.9)  # headroom for labels and framing
    for group in groups.values():
        batch: list[Entry] = []
        items: list[Item] = []
        size = 0
        for e in group:
            try:
                item = e.item(limits.max_image_bytes)
            except InvalidArgument as err:
                done(Outcome(e, "rejected", error=str(err)))
                continue
            n = len(item.image or b"") + len((item.text or "").encode()) + 128
            if batch and (len(batch) >= limits.max_batch_items or size + n > budget):
                yield batch, items
                batch, items, size = [], [], 0
            batch.append(e)
            items.append(item)
            size += n
        if batch:
            yield batch, items


def _send(call: Callable[[list[Item]], list], items: list[Item]) -> list:
    """``call(items)`` with retries when the server is busy; when the whole request is refused
    (not one item in it), each item is sent alone so only the bad one fails."""
    attempt = 0
    while True:
        try:
            return call(items)
        except Overloaded:
            attempt += 1
            if attempt == _RETRIES:
                raise
            time.sleep(0.5 * 2 ** attempt)  # adding again is safe: a present item is found
        except (Unauthenticated, PermissionDenied):
            raise
        except DedupError as e:
            if len(items) == 1:
                return [e]
            return [r for item in items for r in _send(call, [item])]


def add_all(client, entries: Sequence[Entry], limits: Limits, *, reason: str = "",
            merge_labels: bool = False, progress: bool | None = None) -> list[Outcome]:
    """Add every entry; one Outcome per entry, in input order."""
    outcomes: dict[int, Outcome] = {}
    order = {id(e): i for i, e in enumerate(entries)}
    with tqdm(total=len(entries), unit="item", desc="adding", disable=_disable(progress),
              dynamic_ncols=True) as bar:
        def done(o: Outcome) -> None:
            outcomes[order[id(o.entry)]] = o
            bar.update(1)

        for batch, items in _batches(entries, limits, done):
            first = batch[0]

            def call(its: list[Item], first=first) -> list:
                return client.add_seeds(its, first.labels, source=first.source, note=first.note,
                                        reason=reason, merge_labels=merge_labels)

            for e, r in zip(batch, _send(call, items)):
                if isinstance(r, DedupError):
                    done(Outcome(e, "rejected", error=str(r)))
                else:
                    status = "added" if r.created else "merged" if r.labels_merged else "present"
                    done(Outcome(e, status, seed_id=r.seed_id, labels=r.labels))
    return [outcomes[i] for i in range(len(entries))]


def check_all(client, entries: Sequence[Entry], limits: Limits, *,
              progress: bool | None = None) -> list[Outcome]:
    """A dry run: look every entry up (no write) and say whether it is new, already in the
    bank, or near-matches it, and with which labels."""
    outcomes: dict[int, Outcome] = {}
    order = {id(e): i for i, e in enumerate(entries)}
    with tqdm(total=len(entries), unit="item", desc="checking", disable=_disable(progress),
              dynamic_ncols=True) as bar:
        def done(o: Outcome) -> None:
            outcomes[order[id(o.entry)]] = o
            bar.update(1)

        for batch, items in _batches(entries, limits, done):
            for e, r in zip(batch, _send(lambda its: client.batch_lookup(its, top_k=5), items)):
                if isinstance(r, DedupError):
                    done(Outcome(e, "rejected", error=str(r)))
                else:
                    done(_dry_outcome(e, r))
    return [outcomes[i] for i in range(len(entries))]


def _dry_outcome(entry: Entry, r: LookupResult) -> Outcome:
    matches = [(v.label, max(v.evidence, key=lambda n: n.score).seed_id, v.score)
               for v in r.verdicts if v.matched and v.evidence]
    if r.exact_match is not None:
        return Outcome(entry, "exact", seed_id=r.exact_match, matches=matches)
    return Outcome(entry, "near" if matches else "new", matches=matches)


def _disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows the bar only on a terminal."""
    return None if progress is None else not progress


# ------------------------------------------------------------------ summaries
def summary(outcomes: Sequence[Outcome], skipped: Sequence[str], dry_run: bool) -> str:
    """The closing account: how many of each outcome, and every rejected item with its reason."""
    count = {s: sum(o.status == s for o in outcomes) for s in
             ("added", "present", "merged", "rejected", "new", "exact", "near")}
    if dry_run:
        lines = [f"dry run, nothing written: {len(outcomes)} items: {count['new']} new, "
                 f"{count['exact']} already in the bank, {count['near']} near-match the bank, "
                 f"{count['rejected']} rejected"]
    else:
        head = (f"added {count['added']}, already present {count['present'] + count['merged']}"
                + (f" (labels merged onto {count['merged']})" if count["merged"] else "")
                + f", rejected {count['rejected']}")
        lines = [head]
        if count["present"]:
            lines.append(f"{count['present']} already present kept their labels "
                         "(--merge-labels adds yours to them)")
    if skipped:
        lines.append(f"skipped {len(skipped)} files that are not images: "
                     + ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    rejected = [o for o in outcomes if o.status == "rejected"]
    if rejected:
        lines.append("rejected:")
        lines += [f"  {o.entry.name}: {o.error}" for o in rejected]
    return "\n".join(lines)
