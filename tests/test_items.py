"""Item decoding and validation: every accepted format decodes upright RGB, every bad input is refused."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from dedup.config import Limits
from dedup.errors import InvalidItem, LimitExceeded
from dedup.items import decode_image, item_sha256, normalize_text

LIMITS = Limits()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a tiny (wrong) IDAT: header-only bait."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


# --- accepted formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_each_accepted_format_decodes_to_rgb_of_same_size(cat_image, encode, fmt):
    img = decode_image(encode(cat_image, fmt), LIMITS)
    assert img.mode == "RGB"
    assert img.size == cat_image.size


def test_png_decodes_pixel_exact(cat_image, cat_png):
    img = decode_image(cat_png, LIMITS)
    assert np.array_equal(np.asarray(img), np.asarray(cat_image))


def test_jpeg_decodes_close_to_original(cat_image, cat_jpeg):
    img = decode_image(cat_jpeg, LIMITS)
    diff = np.abs(np.asarray(img, dtype=np.int16) - np.asarray(cat_image, dtype=np.int16))
    assert diff.mean() < 4


def test_animated_gif_decodes_first_frame(encode):
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    blue = Image.new("RGB", (40, 30), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    img = decode_image(data, LIMITS)
    assert img.getpixel((5, 5)) == (255, 0, 0)


def test_exif_rotated_jpeg_decodes_upright(cat_image, encode):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    data = encode(cat_image, "JPEG", quality=90, exif=exif.tobytes())
    w, h = cat_image.size
    img = decode_image(data, LIMITS)
    assert img.size == (h, w)
    # The stored top-left corner is displayed at the top-right after a 90 degree CW turn.
    stored = np.asarray(cat_image, dtype=np.int16)[:8, :8].mean()
    shown = np.asarray(img, dtype=np.int16)[:8, -8:].mean()
    assert abs(stored - shown) < 6


def test_rgba_png_flattened_onto_white(encode):
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (10, 0, 20, 10))  # right half fully transparent black
    img = decode_image(encode(rgba, "PNG"), LIMITS)
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (255, 0, 0)
    assert img.getpixel((15, 5)) == (255, 255, 255)


def test_palette_transparency_gif_flattened_onto_white(encode):
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(0, (0, 0, 5, 10))
    img = decode_image(encode(pal, "GIF", transparency=0), LIMITS)
    assert img.getpixel((1, 1)) == (255, 255, 255)
    assert img.getpixel((8, 8)) == (0, 255, 0)


def test_greyscale_png_becomes_rgb(encode):
    grey = Image.new("L", (8, 8), 77)
    img = decode_image(encode(grey, "PNG"), LIMITS)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (77, 77, 77)


# --- refused inputs -----------------------------------------------------------------------------


def test_empty_bytes_refused():
    with pytest.raises(InvalidItem, match="empty"):
        decode_image(b"", LIMITS)


def test_garbage_bytes_refused():
    with pytest.raises(InvalidItem, match="not a recognised image"):
        decode_image(b"hello, this is not an image at all" * 10, LIMITS)


def test_non_bytes_refused():
    with pytest.raises(InvalidItem, match="must be bytes"):
        decode_image("a string", LIMITS)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_refused_as_invalid_not_limit(cat_image, encode, fmt):
    data = encode(cat_image, fmt)
    with pytest.raises(InvalidItem, match="truncated") as info:
        decode_image(data[: len(data) // 2], LIMITS)
    assert not isinstance(info.value, LimitExceeded)


def test_magic_only_header_refused(cat_jpeg):
    with pytest.raises(InvalidItem, match="corrupt or truncated"):
        decode_image(cat_jpeg[:3], LIMITS)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_other_formats_refused_by_name(cat_image, encode, fmt):
    with pytest.raises(InvalidItem, match=f"{fmt} is not accepted"):
        decode_image(encode(cat_image, fmt), LIMITS)


def test_over_max_bytes_refused(cat_png):
    limits = Limits(max_image_bytes=1000)
    with pytest.raises(LimitExceeded) as info:
        decode_image(cat_png, limits)
    assert info.value.limit == "max_image_bytes=1000"


def test_pixel_bomb_header_refused_fast():
    bomb = _png_header(100_000, 100_000)
    assert len(bomb) < 100
    t0 = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        decode_image(bomb, LIMITS)
    assert time.perf_counter() - t0 < 0.5
    assert info.value.limit.startswith(("max_image_pixels", "max_image_side"))


def test_pixel_limit_checked_before_decoding():
    # 6000 x 6000 = 36 M pixels: under Pillow's own bomb threshold, over our configured 10 M.
    with pytest.raises(LimitExceeded, match="36000000 pixels") as info:
        decode_image(_png_header(6000, 6000), Limits(max_image_pixels=10_000_000))
    assert info.value.limit == "max_image_pixels=10000000"


def test_side_limit_refused():
    with pytest.raises(LimitExceeded, match="side") as info:
        decode_image(_png_header(30_000, 10), LIMITS)
    assert info.value.limit == f"max_image_side={LIMITS.max_image_side}"


def test_real_image_over_pixel_limit_refused(cat_jpeg):
    with pytest.raises(LimitExceeded) as info:
        decode_image(cat_jpeg, Limits(max_image_pixels=10_000))
    assert info.value.limit == "max_image_pixels=10000"


# --- text ---------------------------------------------------------------------------------------


def test_text_normalisation_exact():
    raw = "  \uff22\uff55\uff59\u200b CHEAP\u00a0\u00a0pills\u00ad\n\tNOW!!\ufeff "
    assert normalize_text(raw, LIMITS) == "buy cheap pills now!!"


@pytest.mark.parametrize(
    "raw, want",
    [
        ("Stra\u00dfe", "strasse"),  # casefold, not lower
        ("\ufb01le", "file"),  # NFKC ligature
        ("x\u2060y\u200cz\u200d", "xyz"),  # word joiner, ZWNJ, ZWJ
        ("a\u2028b\u3000c", "a b c"),  # line separator, ideographic space
        ("caf\u0065\u0301", "caf\u00e9"),  # composed
        ("e\u200b\u0301", "\u00e9"),  # zero width cannot block composition
        ("\u2460 \u00bd", "1 1\u20442"),  # compatibility forms
        ("tab\x00null\x07bell", "tabnullbell"),  # invisible controls
    ],
)
def test_text_normalisation_cases(raw, want):
    assert normalize_text(raw, LIMITS) == want


def test_text_normalisation_is_idempotent():
    once = normalize_text("\u0130stanbul \u1e9e \ufb03 \u00c5ngstr\u00f6m", LIMITS)
    assert normalize_text(once, LIMITS) == once


def test_text_too_long_refused_before_normalising():
    with pytest.raises(LimitExceeded) as info:
        normalize_text("a" * 101, Limits(max_text_chars=100))
    assert info.value.limit == "max_text_chars=100"


def test_text_empty_after_normalisation_refused():
    with pytest.raises(InvalidItem, match="empty after normalisation"):
        normalize_text(" \u200b\u00ad\t\n\ufeff\u2060 ", LIMITS)


def test_non_str_text_refused():
    with pytest.raises(InvalidItem, match="must be a str"):
        normalize_text(b"bytes", LIMITS)  # type: ignore[arg-type]


def test_lone_surrogate_refused():
    with pytest.raises(InvalidItem, match="surrogate"):
        normalize_text("ok \ud800 not ok", LIMITS)


# --- exact-duplicate digests --------------------------------------------------------------------


def test_sha256_of_image_is_digest_of_bytes(cat_jpeg):
    assert item_sha256(cat_jpeg, None) == hashlib.sha256(cat_jpeg).hexdigest()


def test_sha256_of_text_is_digest_of_normalised_utf8():
    text = normalize_text("Buy CHEAP pills", LIMITS)
    assert item_sha256(None, text) == hashlib.sha256("buy cheap pills".encode()).hexdigest()


def test_sha256_of_post_differs_from_its_parts(cat_jpeg):
    both = item_sha256(cat_jpeg, "caption")
    assert both not in (item_sha256(cat_jpeg, None), item_sha256(None, "caption"))
    assert both == item_sha256(cat_jpeg, "caption")
    assert both != item_sha256(cat_jpeg, "other caption")


def test_sha256_of_nothing_refused():
    with pytest.raises(InvalidItem, match="neither"):
        item_sha256(None, None)


def test_match_form_folds_lookalikes_and_drops_symbols_but_keeps_symbol_only_text():
    from dedup.items import match_form

    assert match_form("сlаim yоur prizе!!! 🔥🔥 now…") == "claim your prize now"
    assert match_form("ρayρal — lοgin") == "paypal login"
    assert match_form("🔥🔥🔥") == "🔥🔥🔥"
    assert match_form("日本語のテキスト。") == "日本語のテキスト"


def _gif_with_frames(n: int, tail: bytes = b"") -> bytes:
    """A 64x64 GIF whose first frame is real, then ``n`` 1x1 frames, then ``tail``."""
    buf = io.BytesIO()
    first = Image.new("P", (64, 64), 1)
    first.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    first.save(buf, "GIF")
    body = buf.getvalue()[:-1]  # drop the trailer
    frame = (bytes([0x21, 0xF9, 4, 0, 1, 0, 0, 0]) + bytes([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0])
             + bytes([2, 2, 0x4C, 0x01, 0]))
    return body + frame * n + tail + b"\x3B"


def test_an_animation_is_its_first_frame_and_its_frames_are_never_walked():
    many = _gif_with_frames(200_000)  # 4.6 MB: within the byte limit
    assert decode_image(many, Limits()).size == (64, 64)
    # frames after the first are corrupt: walking them (counting frames) would fail
    broken_tail = _gif_with_frames(2, tail=b"\x2C\xff\xff\x00garbage")
    assert decode_image(broken_tail, Limits()).size == (64, 64)
