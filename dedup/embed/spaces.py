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
from dedup.embed.base import METRICS, Embedder, hash_format
from dedup.errors import DedupError, InvalidArgument, InvalidItem
from dedup.items import HashParsers, Prepared, prepare_item
from dedup.propagate import Thresholds
from dedup.types import Item


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
    """The configured similarity thresholds, per space and per (space, label)."""
    return Thresholds({n: s.config.threshold for n, s in spaces.items()},
                      {n: dict(s.config.label_thresholds) for n, s in spaces.items()})


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


@dataclass
class Embedded:
    """Per space: which prepared rows were embedded, and their vectors (row order)."""

    rows: dict[str, np.ndarray] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def vector(self, space: str, row: int) -> np.ndarray | None:
        """The vector of prepared row ``row`` in ``space``, or None when it has none there."""
        rows = self.rows.get(space)
        if rows is None:
            return None
        hit = np.flatnonzero(rows == row)
        return self.vectors[space][hit[0]] if hit.size else None


def embed(spaces: Mapping[str, Space], prepared: Sequence[Prepared]) -> Embedded:
    """One batched model pass per space over the rows it accepts."""
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
            parts.append(space.embedder.embed_images([prepared[i].image for i in img_rows]))
            rows += img_rows
        if given:
            parts.append(np.stack([prepared[i].hashes[name] for i in given]))
            rows += given
        if txt_rows:
            parts.append(space.embedder.embed_texts([prepared[i].text for i in txt_rows]))
            rows += txt_rows
        if rows:
            result.rows[name] = np.asarray(rows, dtype=np.int64)
            result.vectors[name] = np.ascontiguousarray(np.concatenate(parts))
    return result
