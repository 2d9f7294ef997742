"""Property-based fuzzing of item decoding: thousands of corrupted images and odd texts, and
every outcome is a decoded item or a typed refusal (InvalidItem / LimitExceeded), never a
crash or another exception."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dedup.config import Limits
from dedup.embed.pdq import PdqEmbedder
from dedup.errors import InvalidItem
from dedup.items import decode_image_both, decoded_bytes, normalize_text, prepare_item
from dedup.types import Item

LIMITS = Limits(max_image_pixels=4_000_000, max_image_side=4000, max_text_chars=2000)


def _encoded() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = []
    for fmt, mode, kw in (("PNG", "RGB", {}), ("PNG", "LA", {}), ("PNG", "P", {}),
                          ("JPEG", "RGB", {"quality": 80}), ("JPEG", "CMYK", {}),
                          ("GIF", "P", {}), ("WEBP", "RGBA", {"quality": 70}),
                          ("PNG", "I;16", {})):
        img = Image.fromarray(pixels)
        img = (Image.fromarray(pixels[..., 0].astype(np.uint16) * 200) if mode == "I;16"
               else img.convert(mode))
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


ENCODED = _encoded()


@st.composite
def corrupted(draw) -> bytes:
    """A real encoding with bytes flipped, cut, repeated or inserted."""
    data = bytearray(draw(st.sampled_from(ENCODED)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "dup", "header"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 4096))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 512))]
        else:  # rewrite a header field: width/height/lengths live in the first bytes
            at = draw(st.integers(0, min(40, max(0, len(data) - 4))))
            data[at:at + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_corrupted_images_decode_or_are_refused_with_a_typed_error(data):
    try:
        cost, pixels = decoded_bytes(data, LIMITS)
        assert 0 < pixels <= LIMITS.max_image_pixels and cost >= pixels
    except InvalidItem:
        pass
    try:
        original, rgb = decode_image_both(data, LIMITS)
    except InvalidItem as e:  # LimitExceeded is one too
        assert str(e)
        return
    assert rgb.mode == "RGB" and rgb.size[0] * rgb.size[1] <= LIMITS.max_image_pixels
    assert original.size == rgb.size or original.size == rgb.size[::-1]


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_are_never_more_than_a_typed_refusal(data):
    try:
        decode_image_both(data, LIMITS)
    except InvalidItem:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=80)))
def test_any_text_or_hash_string_is_prepared_or_refused_with_a_typed_error(text, pdq):
    try:
        normalize_text(text, LIMITS)
    except InvalidItem:
        pass
    parsers = {"pdq": ("pdq", PdqEmbedder.parse_hash)}
    try:
        p = prepare_item(Item(text=text or None, pdq=pdq), LIMITS, parsers)
    except InvalidItem:
        return
    assert len(p.sha256) == 64


@pytest.mark.parametrize("data", ENCODED)
def test_every_fuzz_seed_decodes(data):
    original, rgb = decode_image_both(data, LIMITS)
    assert rgb.size == (64, 48)


@settings(max_examples=300, deadline=None)
@given(corrupted())
def test_refusals_speak_to_the_caller_not_of_internals(data):
    try:
        decode_image_both(data, LIMITS)
    except InvalidItem as e:
        assert " object at 0x" not in str(e) and "Traceback" not in str(e)
