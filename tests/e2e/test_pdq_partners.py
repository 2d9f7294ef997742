"""Partners' PDQ hashes match uploads through the service, whatever the image's mode.

The reference is ThreatExchange's own hasher (``threatexchange`` on PyPI): for an image of
each mode, its hash is added as a hash-only seed over gRPC, and a Lookup of the image's bytes
must find that seed at Hamming distance 0. Where implementations disagree (palette, CMYK,
16-bit, EXIF orientation), the RGB-converted / scaled / upright hash must match too.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dedup.embed.pdq import from_hex, hamming, to_hex
from dedup.types import Item, Label

pdq_hasher = pytest.importorskip("threatexchange.signal_type.pdq.pdq_hasher")

pytestmark = pytest.mark.slow

CONFIG = """
[spaces."pdq"]
model = "pdq"
threshold = 0.67578125
partner_threshold = 0.87890625
min_quality = 50
"""


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def mode_images(photo: Image.Image, other: Image.Image) -> dict[str, bytes]:
    """One real photo encoded in every mode and container partners meet."""
    grey = photo.convert("L")
    alpha = Image.linear_gradient("L").resize(photo.size)
    la = grey.copy()
    la.putalpha(alpha)
    rgba = photo.copy()
    rgba.putalpha(alpha)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 on display
    gif = io.BytesIO()
    photo.convert("P").save(gif, "GIF", save_all=True, append_images=[other.convert("P")],
                            duration=100, loop=0)
    return {
        "rgb": _jpeg(photo),
        "l": _png(grey),
        "la": _png(la),
        "i16": _png(Image.fromarray(np.asarray(grey).astype(np.uint16))),  # 8-bit data, 16-bit PNG
        "rgba": _png(rgba),
        "p": _png(photo.quantize(64)),
        "cmyk": _jpeg(photo.convert("CMYK")),
        "exif": _jpeg(photo, exif=exif.tobytes()),
        "gif": gif.getvalue(),
    }


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("pdq-partners", config_text=CONFIG)


@pytest.fixture(scope="module")
def photos(skimage_images):
    return skimage_images["astronaut"], skimage_images["coffee"].resize((512, 512))


def _pdq_hits(result, seed_id: int) -> list[float]:
    return [n.score for n in result.neighbors if n.space == "pdq" and n.seed_id == seed_id]


def test_threatexchange_hash_of_every_mode_matches_the_upload_at_distance_zero(server, photos):
    images = mode_images(*photos)
    with server.client("analyst") as analyst:
        seeds = {}
        for mode, data in images.items():
            te_hash, quality = pdq_hasher.pdq_from_bytes(data)
            assert quality >= 50, mode
            [(sid, _)] = analyst.add_seeds([Item(pdq=te_hash)], [Label(f"partner.{mode}", 4)],
                                           source="partner-bank")
            # PDQ hashes luminance, so lossless grey, LA, RGBA and 8-bit-range I;16 encodings of
            # one photo share one hash: the later ones are exact duplicates of the first seed.
            seed = analyst.get_seed(sid)
            seeds[mode] = (sid, te_hash, seed.labels[0].name)
            assert seed.hash_only
        for mode, data in images.items():
            sid, te_hash, label = seeds[mode]
            r = analyst.lookup(image=data, top_k=20)
            assert 1.0 in _pdq_hits(r, sid), mode  # Hamming 0 against ThreatExchange's hash
            assert any(v.label == label and v.matched for v in r.verdicts), mode
            assert te_hash in {h.hash for h in r.hashes if h.used}, mode


def test_where_hashers_disagree_the_rgb_converted_hash_matches_too(server, photos):
    images = mode_images(*photos)
    with server.client("analyst") as analyst:
        for mode in ("p", "cmyk", "exif"):
            img = Image.open(io.BytesIO(images[mode]))
            if mode == "exif":
                from PIL import ImageOps
                img = ImageOps.exif_transpose(img)
            rgb_hash, _ = pdq_hasher._pdq_from_numpy_array(np.asarray(img.convert("RGB")))
            [(sid, _)] = analyst.add_seeds([Item(pdq=rgb_hash)], [Label(f"other.{mode}", 2)])
            r = analyst.lookup(image=images[mode], top_k=30)
            assert 1.0 in _pdq_hits(r, sid), mode


def test_a_full_range_16_bit_image_is_matched_by_its_scaled_hash(server, photos):
    grey = np.asarray(photos[0].convert("L"))
    wide = _png(Image.fromarray(grey.astype(np.uint16) * 257))
    clipped_hash, _ = pdq_hasher.pdq_from_bytes(wide)  # Pillow's convert clips above 255
    scaled_hash, _ = pdq_hasher.pdq_from_bytes(_png(Image.fromarray(grey)))
    assert hamming(from_hex([clipped_hash]), from_hex([scaled_hash]))[0] > 31
    with server.client("analyst") as analyst:
        [(sid, _)] = analyst.add_seeds([Item(pdq=scaled_hash)], [Label("partner.wide", 3)])
        r = analyst.lookup(image=wide, top_k=30)
    assert 1.0 in _pdq_hits(r, sid)
    assert {clipped_hash, scaled_hash} <= {h.hash for h in r.hashes}  # both hashes reported


def test_low_quality_hashes_are_not_used_and_say_so(server):
    flat = _png(Image.new("RGB", (300, 200), (120, 130, 140)))
    with server.client("analyst") as analyst:
        r = analyst.lookup(image=flat)
    assert r.hashes and not any(h.used for h in r.hashes)
    assert all("not used to match" in h.note for h in r.hashes)
    assert not [n for n in r.neighbors if n.space == "pdq"]


def test_partner_seeds_match_at_the_partner_threshold_not_the_calibrated_one(server, photos):
    data = _jpeg(photos[1])
    te_hash, _ = pdq_hasher.pdq_from_bytes(data)
    code = from_hex([te_hash])
    rng = np.random.default_rng(0)
    flipped = {}
    for distance in (20, 40):
        bits = np.unpackbits(code, axis=1)
        bits[0, rng.choice(256, distance, replace=False)] ^= 1
        flipped[distance] = to_hex(np.packbits(bits, axis=1))[0]
        assert hamming(from_hex([flipped[distance]]), code)[0] == distance
    with server.client("analyst") as analyst:
        near = analyst.add_seeds([Item(pdq=flipped[20])], [Label("partner.near", 3)])[0][0]
        far = analyst.add_seeds([Item(pdq=flipped[40])], [Label("partner.far", 3)])[0][0]
        r = analyst.lookup(image=data, top_k=50)
    verdicts = {v.label: v for v in r.verdicts}
    assert verdicts["partner.near"].matched  # 20 <= 31
    # 40 would clear the calibrated threshold (Hamming <= 83) but not the partner one (<= 31)
    assert not verdicts["partner.far"].matched
    assert _pdq_hits(r, near) and _pdq_hits(r, far)


# The published expected hashes of ThreatExchange's own PDQ tests
# (python-threatexchange/threatexchange/tests/hashing/test_pdq_hasher.py); the pictures are its
# test resources, BSD-licensed (tests/data/threatexchange/LICENSE).
PUBLISHED = {
    "LA.png": ("accb6d39648035f8125c8ce6ba65007de7b54c67a2d93ef7b8f33b0611306715", 100),
    "I16.png": ("de2ef0e99ecdfc1d248a0eb055f023d1d61e79c3920cbb55d561c02accab1763", 36),
    "rgb.jpeg": ("fb4eed46cb8a6c78819ca06b756c541f7b07ef6d02c82fccd00f862166272cda", 100),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_expected_hashes_are_matched_through_the_service(server, name):
    from pathlib import Path

    expected, quality = PUBLISHED[name]
    data = (Path(__file__).parents[1] / "data" / "threatexchange" / name).read_bytes()
    with server.client("reader") as reader:
        result = reader.lookup(image=data)
    hashes = {h.hash: h for h in result.hashes if h.space == "pdq"}
    assert expected in hashes, (name, list(hashes))
    assert hashes[expected].quality == quality
