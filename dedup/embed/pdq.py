"""Meta's PDQ perceptual hash (space ``pdq``): a BINARY space of 256 bits, matched by Hamming.

Bits are packed with ``np.packbits`` (bit 0 of the hash is the most significant bit of byte 0),
which gives exactly the bytes of the ThreatExchange hex form (``bytes.fromhex(hex)``), and the
uint8 (n, 32) codes FAISS binary indexes (IndexBinaryFlat(256)) take as they are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from dedup.errors import InvalidArgument, InvalidItem

SPACE = "pdq"
BITS = 256


class PdqEmbedder:
    """PDQ hashes as packed bits; ``quality`` says how much structure the image had (0..100)."""

    space = SPACE
    dim = BITS  # bits; each row is dim // 8 bytes
    metric = "hamming"
    hash_format = "pdq"  # what Item.pdq carries: the ThreatExchange hex form
    modalities = frozenset({"image"})

    def __init__(self, device: str | None = None, max_side: int | None = None):
        """``max_side``: downscale larger images first. Off by default: ThreatExchange hashes
        are taken at full size, and thumbnailing a 600x400 photo to 512 px already moved 20 of
        256 bits (measured); full size costs about 0.1 s per megapixel on one core."""
        import pdqhash

        if max_side is not None and max_side < 64:
            raise InvalidArgument(f"max_side must be >= 64, got {max_side}")
        self.max_side = max_side

        self._pdq = pdqhash
        self.device = "cpu"  # PDQ runs on the CPU whatever the device
        version = getattr(pdqhash, "__version__", "unknown")
        # A downscale changes the hashes, so it is part of the model id.
        self.model_id = f"{SPACE}@{version}" + (f"-max{max_side}" if max_side else "")

    def _hash(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        bits = np.zeros((len(images), BITS), dtype=np.uint8)
        quality = np.zeros(len(images), dtype=np.int32)
        for i, img in enumerate(images):
            img = img.convert("RGB")
            if self.max_side is not None and max(img.size) > self.max_side:
                img = img.copy()
                img.thumbnail((self.max_side, self.max_side), Image.BILINEAR)
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

    @staticmethod
    def parse_hash(text: str) -> np.ndarray:
        """A partner's hex hash -> one packed (32,) uint8 code (InvalidItem when malformed)."""
        try:
            return from_hex([text.strip()])[0]
        except InvalidArgument as e:
            raise InvalidItem(str(e)) from e


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
