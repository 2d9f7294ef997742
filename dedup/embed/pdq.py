"""Meta's PDQ perceptual hash (space ``pdq``): a BINARY space of 256 bits, matched by Hamming.

Bits are packed with ``np.packbits`` (bit 0 of the hash is the most significant bit of byte 0),
which gives exactly the bytes of the ThreatExchange hex form (``bytes.fromhex(hex)``), and the
uint8 (n, 32) codes FAISS binary indexes (IndexBinaryFlat(256)) take as they are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from dedup.errors import InvalidArgument

SPACE = "pdq"
BITS = 256
# PDQ's reference implementation hashes a downsampled image; bounding the input side keeps the
# cost flat for large uploads without changing the hash in practice (it works at 64x64).
_MAX_SIDE = 512


class PdqEmbedder:
    """PDQ hashes as packed bits; ``quality`` says how much structure the image had (0..100)."""

    binary = True
    space = SPACE
    dim = BITS  # bits; each row is dim // 8 bytes
    modalities = frozenset({"image"})

    def __init__(self, device: str | None = None):
        import pdqhash

        self._pdq = pdqhash
        self.device = "cpu"  # PDQ runs on the CPU whatever the device
        version = getattr(pdqhash, "__version__", "unknown")
        self.model_id = f"{SPACE}@{version}"

    def _hash(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        bits = np.zeros((len(images), BITS), dtype=np.uint8)
        quality = np.zeros(len(images), dtype=np.int32)
        for i, img in enumerate(images):
            img = img.convert("RGB")
            if max(img.size) > _MAX_SIDE:
                img = img.copy()
                img.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.BILINEAR)
            vector, q = self._pdq.compute(np.ascontiguousarray(np.asarray(img)))
            bits[i] = vector
            quality[i] = q
        return bits, quality

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 32) uint8 C-contiguous packed hashes."""
        bits, _ = self._hash(list(images))
        return np.ascontiguousarray(np.packbits(bits, axis=1))

    def quality(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n,) int32 PDQ quality; below about 50 the hash says little about the image."""
        return self._hash(list(images))[1]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidArgument(f"{SPACE} hashes images only, not texts")


def to_hex(codes: np.ndarray) -> list[str]:
    """Packed (n, 32) codes -> ThreatExchange 64-character hex strings."""
    return [bytes(row).hex() for row in np.asarray(codes, dtype=np.uint8)]


def from_hex(hexes: Sequence[str]) -> np.ndarray:
    """ThreatExchange hex strings -> packed (n, 32) uint8 codes."""
    try:
        rows = [np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hexes]
    except ValueError as e:
        raise InvalidArgument(f"bad PDQ hex: {e}") from e
    if any(r.shape != (BITS // 8,) for r in rows):
        raise InvalidArgument("a PDQ hex string must be 64 hex digits (256 bits)")
    return np.ascontiguousarray(np.stack(rows)) if rows else np.zeros((0, BITS // 8), np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distance between packed code arrays of equal shape."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1)
