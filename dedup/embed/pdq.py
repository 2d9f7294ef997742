"""Meta's PDQ perceptual hash (space ``pdq``): a BINARY space of 256 bits, matched by Hamming.

A shared hash only helps if an upload is hashed exactly as the partner hashed it, so images are
hashed from the first frame AS STORED (mode kept, EXIF orientation not applied), the way
ThreatExchange's hasher (``threatexchange.signal_type.pdq.pdq_hasher``) does: ``LA`` and
``I;16`` through Pillow's ``convert("RGB")``, a grey array repeated into three channels, and
otherwise the stored channels (RGBA's alpha ignored). Where implementations disagree — palette
images (ThreatExchange hashes the palette indices as grey levels), CMYK (it hashes C, M, Y as if
they were R, G, B, which inverts the hash), 16-bit images (Pillow's convert clips samples above
255; other hashers scale to 8 bits), other exotic modes, and EXIF-rotated images (some hashers
apply the orientation) — the RGB-converted, scaled and upright variants are hashed too, and a
query matches with any of them. A seed keeps the first, ThreatExchange's.

Bits are packed with ``np.packbits`` (bit 0 of the hash is the most significant bit of byte 0),
which gives exactly the bytes of the ThreatExchange hex form (``bytes.fromhex(hex)``), and the
uint8 (n, 32) codes FAISS binary indexes (IndexBinaryFlat(256)) take as they are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from dedup.embed.base import Views
from dedup.errors import InvalidArgument, InvalidItem

SPACE = "pdq"
BITS = 256
# Modes whose stored channels ThreatExchange hashes as they are and every hasher agrees on.
_AGREED_MODES = ("RGB", "RGBA", "RGBX", "L", "LA")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # more than 8 bits per sample


def threatexchange_array(img: Image.Image) -> np.ndarray:
    """The (h, w, >=3) array ThreatExchange's hasher gives pdqhash for this image."""
    if img.mode in ("LA", "I;16"):
        img = img.convert("RGB")
    array = np.asarray(img)
    if array.ndim == 2:
        array = np.repeat(array[..., np.newaxis], 3, axis=2)
    return array


def _variants(img: Image.Image) -> list[np.ndarray]:
    """Arrays to hash, ThreatExchange's first; others where implementations disagree."""
    out = []
    try:
        te = threatexchange_array(img)
        if te.dtype == np.uint8 and te.ndim == 3 and te.shape[2] >= 3:
            out.append(np.ascontiguousarray(te))
    except (ValueError, TypeError, OSError):  # modes ThreatExchange cannot hash at all
        pass
    if img.mode in _WIDE_MODES:
        # Pillow's convert clips samples above 255 (a full-range 16-bit picture turns white);
        # hashers that scale to 8 bits see the picture itself.
        wide = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(wide.max()), 1.0)
        grey = np.clip(np.rint(wide * (255.0 / top)), 0, 255).astype(np.uint8)
        out.append(np.repeat(grey[..., np.newaxis], 3, axis=2))
    elif img.mode not in _AGREED_MODES or not out:
        out.append(np.asarray(img.convert("RGB")))
    orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
    if orientation not in (0, 1):
        out += [np.asarray(ImageOps.exif_transpose(img).convert("RGB"))]
    return out


class PdqEmbedder:
    """PDQ hashes as packed bits, with their quality (0..100); see the module docstring."""

    space = SPACE
    dim = BITS  # bits; each row is dim // 8 bytes
    metric = "hamming"
    hash_format = "pdq"  # what Item.pdq carries: the ThreatExchange hex form
    image_input = "original"  # hash the stored first frame, as other implementations do
    modalities = frozenset({"image"})
    # Peak bytes per input pixel while hashing (pdqhash's float buffers at full size): 26
    # measured on a 7000x7000 RGB picture (1.26 GB), with a margin.
    bytes_per_pixel = 28

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
        # The decoding and a downscale change the hashes, so both are part of the model id.
        self.model_id = f"{SPACE}@{version}-te" + (f"-max{max_side}" if max_side else "")

    def _compute(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        if self.max_side is not None and max(array.shape[:2]) > self.max_side:
            small = Image.fromarray(np.ascontiguousarray(array[..., :3]))
            small.thumbnail((self.max_side, self.max_side), Image.BILINEAR)
            array = np.asarray(small)
        bits, quality = self._pdq.compute(np.ascontiguousarray(array))
        return np.packbits(np.asarray(bits, dtype=np.uint8)), int(quality)

    def embed_views(self, images: Sequence[Image.Image]) -> Views:
        """Every distinct hash of every image (ThreatExchange's first), with its quality."""
        vectors, rows, quality = [], [], []
        for i, img in enumerate(images):
            seen: set[bytes] = set()
            for array in _variants(img):
                code, q = self._compute(array)
                if code.tobytes() in seen:
                    continue
                seen.add(code.tobytes())
                vectors.append(code)
                rows.append(i)
                quality.append(q)
        return Views(
            np.stack(vectors) if vectors else np.zeros((0, BITS // 8), np.uint8),
            np.asarray(rows, dtype=np.int64), np.asarray(quality, dtype=np.int32))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 32) uint8 C-contiguous packed hashes: each image's primary (ThreatExchange's)."""
        out = np.zeros((len(images), BITS // 8), dtype=np.uint8)
        for i, img in enumerate(images):
            out[i] = self._compute(_variants(img)[0])[0]
        return out

    def quality(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n,) int32 PDQ quality of each primary hash; below about 50 it says little."""
        return np.asarray([self._compute(_variants(img)[0])[1] for img in images], dtype=np.int32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidArgument(f"{SPACE} hashes images only, not texts")

    @staticmethod
    def parse_hash(text: str) -> np.ndarray:
        """A partner's hex hash -> one packed (32,) uint8 code (InvalidItem when malformed)."""
        try:
            return from_hex([text.strip()])[0]
        except InvalidArgument as e:
            raise InvalidItem(str(e)) from e

    @staticmethod
    def format_hash(code: np.ndarray) -> str:
        """A packed (32,) code -> the ThreatExchange hex form."""
        return to_hex(np.asarray(code, dtype=np.uint8)[None, :])[0]


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
