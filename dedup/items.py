"""Decode and validate item content (image bytes, text, a given hash) into a ``Prepared`` item.

Everything a caller sends passes through here before any model sees it (DESIGN invariant 6):
sizes are checked from the image header before a single pixel is decoded, and every refusal is
an ``InvalidItem`` (or its subclass ``LimitExceeded``) with a reason a caller can act on.
A prepared item carries its exact-duplicate digest (sha256), the same for seeds and queries.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageOps

from dedup.config import Limits
from dedup.errors import InvalidItem, LimitExceeded
from dedup.types import Item

# hash format -> (space that holds such hashes, parser of the caller's text form)
HashParsers = Mapping[str, tuple[str, Callable[[str], np.ndarray]]]


@dataclass(frozen=True)
class Prepared:
    """An item decoded, validated and normalised; ready to embed.

    ``hashes`` holds codes the caller gave instead of content (a partner's PDQ hash), by the
    space that holds them; such a code stands for an image.
    """

    image: Image.Image | None  # RGB, upright
    text: str | None  # normalised text
    sha256: str
    raw_image: bytes | None = None
    hashes: Mapping[str, np.ndarray] = field(default_factory=dict)
    # The first frame as stored: its own mode, EXIF orientation not applied. Spaces that must
    # hash an image exactly as other implementations do (PDQ) start from this, not ``image``.
    original: Image.Image | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        has_image = self.image is not None or bool(self.hashes)
        return tuple(m for m, v in (("image", has_image), ("text", self.text)) if v)


def given_hashes(item: Item) -> dict[str, str]:
    """The hashes an item carries instead of content, by hash format."""
    return {"pdq": item.pdq} if item.pdq is not None else {}


def prepare_item(item: Item, limits: Limits, parsers: HashParsers) -> Prepared:
    """Decode, validate and normalise one item; InvalidItem / LimitExceeded when refused."""
    hashes = given_hashes(item)
    if item.image is None and item.text is None and not hashes:
        raise InvalidItem("item has neither image nor text nor pdq hash")
    if hashes and item.image is not None:
        raise InvalidItem(f"give an image or its {' / '.join(hashes)} hash, not both")
    original, image = decode_image_both(item.image, limits) if item.image is not None else (None, None)
    text = normalize_text(item.text, limits) if item.text is not None else None
    codes: dict[str, np.ndarray] = {}
    for fmt, value in hashes.items():
        if fmt not in parsers:
            raise InvalidItem(f"a {fmt} hash was given but no enabled space holds {fmt} hashes")
        space, parse = parsers[fmt]
        codes[space] = parse(value)
    if not codes:
        sha = item_sha256(item.image, text)
    else:  # a hash-only item: its identity is the hash (with the text, for a post)
        text_sha = item_sha256(None, text) if text is not None else ""
        (fmt, space), = ((f, parsers[f][0]) for f in hashes)
        sha = hashlib.sha256(f"{fmt}:".encode() + codes[space].tobytes()
                             + text_sha.encode()).hexdigest()
    return Prepared(image, text, sha, item.image, codes, original)

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")

# Magic numbers: we sniff the format ourselves so Pillow only ever runs the four accepted
# decoders on untrusted bytes, and a refused format gets a reason naming it.
_ACCEPTED_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
_REFUSED_MAGIC = (
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
)


def _sniff_format(data: bytes) -> str:
    for magic, fmt in _ACCEPTED_MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _REFUSED_MAGIC:
        if data.startswith(magic):
            raise InvalidItem(f"image format {fmt} is not accepted (accepted: JPEG, PNG, WebP, GIF)")
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        raise InvalidItem("image format AVIF/HEIC is not accepted (accepted: JPEG, PNG, WebP, GIF)")
    raise InvalidItem("not a recognised image: bytes do not start like JPEG, PNG, WebP or GIF")


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Decode JPEG/PNG/WebP/GIF(first frame) bytes to an upright RGB image within ``limits``."""
    return decode_image_both(data, limits)[1]


def _open(data: bytes, limits: Limits) -> tuple[Image.Image, str]:
    """Open (header only: no pixel buffer yet) within the byte, pixel and side limits."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidItem(f"image must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidItem("image is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        raise LimitExceeded(
            f"image is {len(data)} bytes, more than allowed",
            limit=f"max_image_bytes={limits.max_image_bytes}",
        )
    fmt = _sniff_format(data)
    try:
        img = Image.open(io.BytesIO(data), formats=(fmt,))
    except Image.DecompressionBombError as e:
        raise LimitExceeded(
            f"image header claims too many pixels (decompression bomb): {e}",
            limit=f"max_image_pixels={limits.max_image_pixels}",
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidItem(f"cannot parse {fmt} header: corrupt or truncated ({_plain(e)})") from e
    _check_size(*img.size, limits)
    return img, fmt


_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>")


def _plain(error: BaseException) -> str:
    """A decoder's message for a caller: no object reprs (``<_io.BytesIO object at 0x..>``)."""
    return _OBJECT_REPR.sub("the data", str(error)) or type(error).__name__


def decoded_bytes(data: bytes, limits: Limits) -> tuple[int, int]:
    """(peak bytes ``decode_image_both`` may hold, pixels) for these bytes, from the header
    alone (the stored frame, an upright copy when EXIF rotates it, an RGB copy unless already
    RGB). InvalidItem / LimitExceeded as decoding would."""
    img, _ = _open(data, limits)
    pixels = img.size[0] * img.size[1]
    bands = len(img.getbands()) * (2 if img.mode.startswith("I;16") else 1)
    bands = 4 if img.mode in ("I", "F") else bands
    copies = bands + (0 if img.mode == "RGB" else 3)
    if _orientation(img) not in (0, 1):
        copies += bands
    return pixels * copies, pixels


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1


def decode_image_both(data: bytes, limits: Limits) -> tuple[Image.Image, Image.Image]:
    """Decode within ``limits`` to (the first frame as stored, in its own mode and orientation;
    the same upright, in RGB with transparency flattened onto white). An RGB image with no
    EXIF rotation is one buffer shared by both, not three copies."""
    img, fmt = _open(data, limits)
    try:
        # An animated GIF/WebP opens on its first frame, which stands for the item; its frames
        # are never counted (``n_frames`` walks the whole file: seconds for 200,000 frames).
        img.load()
        upright = ImageOps.exif_transpose(img) if _orientation(img) not in (0, 1) else img
    except Image.DecompressionBombError as e:
        raise LimitExceeded(
            f"image too large to decode: {e}", limit=f"max_image_pixels={limits.max_image_pixels}"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as e:
        raise InvalidItem(f"cannot decode {fmt} pixels: corrupt or truncated ({_plain(e)})") from e
    return img, _to_rgb(upright)


def _check_size(width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise InvalidItem(f"image has no pixels ({width}x{height})")
    if max(width, height) > limits.max_image_side:
        raise LimitExceeded(
            f"image is {width}x{height}, a side is longer than allowed",
            limit=f"max_image_side={limits.max_image_side}",
        )
    if width * height > limits.max_image_pixels:
        raise LimitExceeded(
            f"image is {width}x{height} = {width * height} pixels, more than allowed",
            limit=f"max_image_pixels={limits.max_image_pixels}",
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any alpha or palette transparency composited onto white (an RGB image is
    returned as it is, not copied)."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit greyscale: scale to 8 bits instead of letting convert() clip at 255.
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


_ZERO_WIDTH = {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD}


def _drop_table(text: str) -> dict[int, None]:
    """Code points to delete: format (Cf) characters and non-whitespace controls (Cc)."""
    drop: dict[int, None] = {}
    for ch in set(text):
        cp = ord(ch)
        if cp in _ZERO_WIDTH:
            drop[cp] = None
            continue
        cat = unicodedata.category(ch)
        if cat == "Cf" or (cat == "Cc" and not ch.isspace()):
            drop[cp] = None
    return drop


def normalize_text(text: str, limits: Limits) -> str:
    """NFKC + casefold, invisible characters removed, whitespace collapsed; refuse empty or long."""
    if not isinstance(text, str):
        raise InvalidItem(f"text must be a str, got {type(text).__name__}")
    if len(text) > limits.max_text_chars:
        raise LimitExceeded(
            f"text is {len(text)} characters, more than allowed",
            limit=f"max_text_chars={limits.max_text_chars}",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidItem(
            f"text is not valid Unicode: lone surrogate at position {e.start}"
        ) from e
    # Invisible characters go first so they cannot split a sequence NFKC would compose.
    text = text.translate(_drop_table(text))
    text = unicodedata.normalize("NFKC", text).casefold()
    # casefold can leave a non-NFKC sequence (e.g. U+0130); normalise again.
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_drop_table(text))
    text = " ".join(text.split())
    if not text:
        raise InvalidItem("text is empty after normalisation (only whitespace or invisible characters)")
    return text


# Lower-case Cyrillic and Greek letters drawn like Latin ones (the lookalike subset of Unicode's
# confusables), applied after casefold. Spammers swap these in to dodge exact text filters.
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i",
    "ј": "j", "к": "k", "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "г": "r",
    "ѕ": "s", "т": "t", "у": "y", "ԝ": "w", "х": "x", "ү": "y", "ь": "b", "п": "n",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w",
})
_VARIATION_SELECTORS = {cp: None for cp in range(0xFE00, 0xFE10)}


def match_form(text: str) -> str:
    """The form a normalised text is embedded in, so cosmetic edits cannot move it.

    Lookalike Cyrillic/Greek letters become Latin, punctuation, symbols (emoji included) and
    separators become spaces, whitespace collapses. Only for matching: the stored text and its
    sha256 keep ``normalize_text``'s form. A text of nothing but symbols keeps its own form.
    """
    folded = text.translate(_CONFUSABLES).translate(_VARIATION_SELECTORS)
    spaced = "".join(" " if unicodedata.category(ch)[0] in "PSZ" else ch for ch in folded)
    return " ".join(spaced.split()) or text


def item_sha256(image: bytes | None, text_normalized: str | None) -> str:
    """Hex sha256 for exact duplicates: of the image bytes, the normalised text, or both tagged."""
    if image is None and text_normalized is None:
        raise InvalidItem("item has neither an image nor a text")
    img_digest = hashlib.sha256(bytes(image)).digest() if image is not None else None
    txt_digest = (
        hashlib.sha256(text_normalized.encode("utf-8")).digest()
        if text_normalized is not None
        else None
    )
    if txt_digest is None:
        return img_digest.hex()
    if img_digest is None:
        return txt_digest.hex()
    # A post: tags keep (image, text) from ever colliding with a lone image or text digest.
    return hashlib.sha256(b"dedup-post-v1\x00image:" + img_digest + b"\x00text:" + txt_digest).hexdigest()
