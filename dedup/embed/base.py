"""The one protocol every embedder implements, and the helpers they share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

MODALITIES = ("image", "text")


METRICS = ("ip", "hamming")


@runtime_checkable
class Embedder(Protocol):
    """Maps items of its modalities to vectors of one space, and says how they compare.

    ``space`` names the space (``image:effnet-lite0``); ``model_id`` adds a digest of the
    weights (``image:effnet-lite0@1a2b3c4d5e6f``), so a snapshot can refuse to mix models.
    ``metric`` is ``"ip"`` (float32 rows of unit L2 norm, ``dim`` floats; similarity = cosine)
    or ``"hamming"`` (packed uint8 bits, ``dim`` bits = ``dim // 8`` bytes; similarity =
    ``1 - hamming / dim``). A space whose vectors are a shareable hash (PDQ) also has
    ``hash_format`` (the name callers use for it), ``parse_hash(text) -> code`` and
    ``format_hash(code) -> text``, as ThreatExchange's signal types own their hash formats:
    nothing else names a space.

    Optional, for hashes that must equal other implementations': ``image_input = "original"``
    (take the first frame as stored, not the upright RGB image) and ``embed_views(images) ->
    Views`` (one or more vectors per image, each with a quality; the first is the one a seed
    keeps).
    """

    space: str
    model_id: str
    dim: int
    metric: str
    modalities: frozenset[str]
    device: str

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32, C-contiguous, rows of unit L2 norm. Images are RGB."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, C-contiguous, rows of unit L2 norm. Texts are normalised."""
        ...


@dataclass(frozen=True)
class Views:
    """Vectors of a batch of images, one or more per image, each with a quality (0..100).

    ``rows[i]`` is the image vector ``i`` belongs to; an image's vectors are contiguous and its
    first is its primary (what a seed stores). An image may have none (nothing to hash).
    """

    vectors: np.ndarray  # (m, width)
    rows: np.ndarray  # (m,) int64
    quality: np.ndarray  # (m,) int32


def hash_format(embedder: Embedder) -> str | None:
    """The shareable hash format an embedder's vectors are (``"pdq"``), or None."""
    return getattr(embedder, "hash_format", None)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit L2 norm, float32 C-contiguous; zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def file_digest(path: str | Path, n_hex: int = 12) -> str:
    """Short sha256 of a weights file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n_hex]


def pick_device(device: str | None = None) -> str:
    """``cuda`` when torch sees a GPU (and none was forced), else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
