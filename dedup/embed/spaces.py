"""Spaces: one embedder and its config each, and the batched pass that embeds prepared items.

A space is where one model's vectors are compared (DESIGN "Space"). Its embedder says what it
takes (modalities), how its vectors compare (``metric``) and, for a shareable hash such as PDQ,
how to read a caller's hash; nothing here names a particular space. Every item is embedded in
every space that accepts it, one model pass per space per batch, and a space with both
modalities (CLIP) embeds an item's image when it has one, else its text: one vector per item
per space, the same rule for seeds and queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from dedup.config import Config, Limits, SpaceConfig
from dedup.embed import create_embedder
from dedup.embed.base import METRICS, Embedder, Views, hash_format
from dedup.errors import DedupError, InvalidArgument, InvalidItem
from dedup.items import HashParsers, Prepared, decoded_bytes, prepare_item
from dedup.propagate import Thresholds
from dedup.types import Item, QueryHash


@dataclass(frozen=True)
class Space:
    """One representation space: its embedder and its config (index plan, thresholds)."""

    name: str
    embedder: Embedder
    config: SpaceConfig

    def __post_init__(self) -> None:
        if self.embedder.metric not in METRICS:
            raise InvalidArgument(f"space {self.name}: metric {self.embedder.metric!r} is not "
                                  f"one of {METRICS}")

    @property
    def metric(self) -> str:
        return self.embedder.metric

    @property
    def dim(self) -> int:
        """Floats per vector, or bits per code for a Hamming space."""
        return self.embedder.dim

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dtype(self) -> str:
        """How the store keeps its vectors."""
        return "uint8" if self.metric == "hamming" else "float32"

    def accepts(self, modalities: Sequence[str]) -> bool:
        return any(m in self.embedder.modalities for m in modalities)


def open_spaces(config: Config, embedders: Mapping[str, Embedder] | None = None) -> dict[str, Space]:
    """One Space per enabled space of the config; ``embedders`` may supply loaded models."""
    spaces = {}
    for name, sc in config.enabled_spaces.items():
        emb = (embedders or {}).get(name) or create_embedder(sc.model, device=config.device)
        spaces[name] = Space(name, emb, sc)
    return spaces


def thresholds(spaces: Mapping[str, Space]) -> Thresholds:
    """The configured similarity thresholds: per space, per (space, label), and per space for
    hash-only (partner) seeds."""
    return Thresholds({n: s.config.threshold for n, s in spaces.items()},
                      {n: dict(s.config.label_thresholds) for n, s in spaces.items()},
                      {n: s.config.partner_threshold for n, s in spaces.items()
                       if s.config.partner_threshold is not None})


def hash_parsers(spaces: Mapping[str, Space]) -> HashParsers:
    """hash format -> (space, parser) for every space whose vectors are a shareable hash."""
    out = {}
    for name, space in spaces.items():
        fmt = hash_format(space.embedder)
        if fmt is not None:
            out[fmt] = (name, space.embedder.parse_hash)
    return out


def prepare(spaces: Mapping[str, Space], items: Sequence[Item], limits: Limits,
            ) -> list[Prepared | DedupError]:
    """Decode and validate each item; a refused item yields its error in place, not a raise."""
    parsers = hash_parsers(spaces)
    out: list[Prepared | DedupError] = []
    for item in items:
        try:
            p = prepare_item(item, limits, parsers)
            if not any(s.accepts(p.modalities) for s in spaces.values()):
                raise InvalidItem(f"no enabled space accepts {'+'.join(p.modalities)} items")
            out.append(p)
        except DedupError as e:
            out.append(e)
    return out


# Transient bytes per input pixel an image embedder holds beyond the decoded image (a copy in
# its own mode before resizing); an embedder that holds more says so in ``bytes_per_pixel``.
DEFAULT_BYTES_PER_PIXEL = 3


def memory_cost(spaces: Mapping[str, Space], item: Item, limits: Limits) -> int:
    """Peak bytes preparing and embedding ``item`` may take (0 for texts and hashes); an item
    the limits refuse costs 0 here and is refused when prepared."""
    if item.image is None:
        return 0
    try:
        decoded, pixels = decoded_bytes(item.image, limits)
    except DedupError:
        return 0
    per_pixel = sum(getattr(s.embedder, "bytes_per_pixel", DEFAULT_BYTES_PER_PIXEL)
                    for s in spaces.values() if "image" in s.embedder.modalities)
    return decoded + pixels * per_pixel


@dataclass
class Embedded:
    """Per space: which prepared rows were embedded, and their vectors. A row may have several
    vectors in a space (its first is its primary) or none; ``hashes`` reports, per prepared
    row, the shareable hashes computed from it and whether each is used."""

    rows: dict[str, np.ndarray] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    hashes: dict[int, list[QueryHash]] = field(default_factory=dict)

    def vector(self, space: str, row: int) -> np.ndarray | None:
        """The vector of prepared row ``row`` in ``space``, or None when it has none there."""
        rows = self.rows.get(space)
        if rows is None:
            return None
        hit = np.flatnonzero(rows == row)
        return self.vectors[space][hit[0]] if hit.size else None


def embed(spaces: Mapping[str, Space], prepared: Sequence[Prepared], query: bool = False,
          ) -> Embedded:
    """One batched model pass per space over the rows it accepts. For a ``query``, a space
    with ``query_regions`` adds the vectors of the picture's parts (a row may then have
    several vectors; its best one decides)."""
    result = Embedded()
    for name, space in spaces.items():
        mods = space.embedder.modalities
        given = [i for i, p in enumerate(prepared) if name in p.hashes]
        img_rows = [i for i, p in enumerate(prepared) if p.image is not None and "image" in mods]
        taken = set(img_rows) | set(given)
        txt_rows = [i for i, p in enumerate(prepared)
                    if p.text is not None and "text" in mods and i not in taken]
        parts, rows = [], []
        if img_rows:
            vectors, vec_rows = _embed_images(name, space, [prepared[i] for i in img_rows], result,
                                              np.asarray(img_rows, dtype=np.int64), query)
            parts.append(vectors)
            rows.append(vec_rows)
        if given:
            parts.append(np.stack([prepared[i].hashes[name] for i in given]))
            rows.append(np.asarray(given, dtype=np.int64))
        if txt_rows:
            parts.append(space.embedder.embed_texts([prepared[i].text for i in txt_rows]))
            rows.append(np.asarray(txt_rows, dtype=np.int64))
        all_rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
        if len(all_rows):
            result.rows[name] = all_rows
            result.vectors[name] = np.ascontiguousarray(np.concatenate(parts))
    return result


def _embed_images(name: str, space: Space, items: Sequence[Prepared], result: Embedded,
                  rows: np.ndarray, query: bool) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of the items' images in one space, and the prepared row of each."""
    emb = space.embedder
    original = getattr(emb, "image_input", "upright") == "original"
    images = [p.original if original else p.image for p in items]
    if query and space.config.query_regions and hasattr(emb, "embed_regions"):
        regions = emb.embed_regions(images)  # (n, R, dim): the whole picture first
        n, r, _ = regions.shape
        vectors, vec_rows = regions.reshape(n * r, -1), np.repeat(rows, r)
        if hasattr(emb, "embed_parts"):  # panels, grid cells, a photographed screen
            parts, owner = emb.embed_parts(images)
            if len(owner):  # most uploads have none: no copy of the region vectors then
                vectors = np.concatenate([vectors, parts])
                vec_rows = np.concatenate([vec_rows, rows[owner]])
        return vectors, vec_rows
    if not hasattr(emb, "embed_views"):
        return emb.embed_images(images), rows
    views: Views = emb.embed_views(images)
    floor = space.config.min_quality
    used = views.quality >= floor if floor is not None else np.ones(len(views.rows), bool)
    if hash_format(emb) is not None:
        for code, row, quality, ok in zip(views.vectors, views.rows, views.quality, used):
            note = "" if ok else f"quality {int(quality)} below min_quality {floor}: not used to match"
            result.hashes.setdefault(int(rows[row]), []).append(
                QueryHash(name, emb.format_hash(code), int(quality), bool(ok), note))
    return views.vectors[used], rows[views.rows[used]]
