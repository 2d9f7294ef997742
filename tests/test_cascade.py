"""The cascade's verification stage inside the engine: close calls re-scored against the seeds'
own content, with the evidence saying so. Real PDQ and MinHash spaces (quick to load), real
SIFT + RANSAC, real LMDB; the verification data a seed keeps is written with it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dedup.config import SpaceConfig, VerifyConfig, load_config
from dedup.engine import Engine
from dedup.types import Item, Label
from dedup.verify import on_space_scale

SCAM = Label("spam.scam", 2)
TERROR = Label("terror.propaganda", 3)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def edited(img: Image.Image) -> bytes:
    """Cropped, rotated 6 degrees (black corners), JPEG 70: PDQ loses it, SIFT does not."""
    w, h = img.size
    out = img.crop((w // 8, h // 10, w, h)).rotate(6, Image.BICUBIC)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=70)
    return buf.getvalue()


def _engine(tmp_path, verify: dict | None, threshold: float = 0.95) -> Engine:
    spaces = {"pdq": SpaceConfig(model="pdq", threshold=threshold, verify=verify).model_dump()}
    return Engine.open(load_config(None, data_dir=str(tmp_path / "data"), spaces=spaces))


@pytest.fixture()
def verifying(tmp_path):
    # PDQ as the shortlist (1 - Hamming/256; the edit below leaves ~0.46): every candidate
    # is verified.
    with _engine(tmp_path, VerifyConfig(method="geometric", band_low=0.0).model_dump()) as eng:
        yield eng


def test_a_close_call_is_verified_and_the_evidence_says_so(verifying, skimage_images):
    [(sid, _)] = verifying.add_seeds([Item(image=png(skimage_images["astronaut"]))], [SCAM])
    assert verifying.store.aux("geometric", [sid])[sid]  # the seed's features are kept in LMDB
    [r] = verifying.lookup([Item(image=edited(skimage_images["astronaut"]))])
    [n] = [n for n in r.neighbors if n.seed_id == sid]
    assert n.verified == "geometric"
    assert n.similarity is not None and n.similarity < 0.95  # the search alone: no match
    assert n.score >= n.similarity + 0.25  # >= 12 inliers add at least 0.1*log(13)
    [v] = r.verdicts
    assert v.label == SCAM.name and v.matched and v.evidence[0].verified == "geometric"


def test_unrelated_pictures_stay_unmatched_after_verification(verifying, skimage_images):
    ids = {}
    for name in ("astronaut", "coffee"):
        [(ids[name], _)] = verifying.add_seeds([Item(image=png(skimage_images[name]))], [SCAM])
    for name in ("chelsea", "rocket", "camera"):
        [r] = verifying.lookup([Item(image=edited(skimage_images[name]))])
        assert not any(v.matched for v in r.verdicts), name
        for n in r.neighbors:  # a candidate verified without enough inliers keeps its score
            if n.verified:
                assert n.score == pytest.approx(n.similarity), (name, n)


def test_without_verification_the_same_edit_is_missed(tmp_path, skimage_images):
    with _engine(tmp_path, None) as eng:
        [(sid, _)] = eng.add_seeds([Item(image=png(skimage_images["astronaut"]))], [SCAM])
        assert eng.store.aux("geometric", [sid]) == {}
        [r] = eng.lookup([Item(image=edited(skimage_images["astronaut"]))])
        assert not any(v.matched for v in r.verdicts)
        assert all(not n.verified and n.similarity is None for n in r.neighbors)


def test_a_seed_added_before_verification_is_verified_from_its_content(tmp_path, skimage_images):
    with _engine(tmp_path, None) as eng:
        [(sid, _)] = eng.add_seeds([Item(image=png(skimage_images["coffee"]))], [TERROR])
    verify = VerifyConfig(method="geometric", band_low=0.0).model_dump()
    with _engine(tmp_path, verify) as eng:
        assert eng.store.aux("geometric", [sid]) == {}
        [r] = eng.lookup([Item(image=edited(skimage_images["coffee"]))])
        assert [v.label for v in r.verdicts if v.matched] == [TERROR.name]


def test_a_removed_seed_is_never_verified_into_a_verdict(verifying, skimage_images):
    [(sid, _)] = verifying.add_seeds([Item(image=png(skimage_images["astronaut"]))], [SCAM])
    verifying.remove_seeds([sid], reason="retired")
    [r] = verifying.lookup([Item(image=edited(skimage_images["astronaut"]))])
    assert not r.verdicts and not r.neighbors


TEXT_SEED = ("Limited offer: send 0.5 BTC to the wallet below and receive double back within "
             "the hour, guaranteed by our foundation, act now before the window closes")


def test_a_partial_text_copy_is_caught_by_containment(tmp_path):
    spaces = {"text:minhash": SpaceConfig(
        model="text:minhash", threshold=0.95,
        verify=VerifyConfig(method="containment", band_low=-1.0, threshold=0.74)).model_dump()}
    config = load_config(None, data_dir=str(tmp_path / "data"), spaces=spaces)
    with Engine.open(config) as eng:
        [(sid, _)] = eng.add_seeds([Item(text=TEXT_SEED)], [SCAM])
        eng.add_seeds([Item(text="Weekly gardening notes: plant the tulip bulbs before the "
                                 "first frost and water them once a week until spring")], [TERROR])
        partial = "DM me for more!! " + TEXT_SEED[:110]
        [r] = eng.lookup([Item(text=partial)])
        [n] = [n for n in r.neighbors if n.seed_id == sid]
        assert n.verified == "containment" and n.score >= 0.95 > n.similarity
        assert [v.label for v in r.verdicts if v.matched] == [SCAM.name]
        [r] = eng.lookup([Item(text="Plant tulip bulbs before frost, says the gardening club")])
        assert not any(v.matched for v in r.verdicts)


def test_own_threshold_maps_onto_the_space_scale():
    assert on_space_scale(0.6, 0.80, 0.74, 0.9) == pytest.approx(0.96)  # passed by 0.06
    assert on_space_scale(0.6, 0.70, 0.74, 0.9) == 0.6  # below its own threshold: unchanged
    assert on_space_scale(0.6, 0.55, None, 0.9) == 0.6  # never lower than the search's
    assert on_space_scale(0.6, 0.95, None, 0.9) == 0.95


def test_containment_needs_its_own_threshold():
    with pytest.raises(ValueError, match="own calibrated threshold"):
        VerifyConfig(method="containment", band_low=0.0)
    with pytest.raises(ValueError, match="drop verify.threshold"):
        VerifyConfig(method="geometric", band_low=0.5, threshold=0.7)


def _only_its_seed_matches(tmp_path, seed: Image.Image, other: Image.Image,
                           upload: Image.Image) -> None:
    """The shipped image space, two seeds: the JPEG ``upload`` matches ``seed``'s label through
    a geometrically verified neighbour, and not ``other``'s."""
    from dedup.config import default_spaces

    space = default_spaces()["image:copydet-lite0"]
    spaces = {"image:copydet-lite0": space.model_dump()}
    with Engine.open(load_config(None, data_dir=str(tmp_path / "data"), spaces=spaces)) as eng:
        [(sid, _)] = eng.add_seeds([Item(image=png(seed))], [SCAM])
        eng.add_seeds([Item(image=png(other))], [TERROR])
        buf = io.BytesIO()
        upload.save(buf, "JPEG", quality=80)
        [r] = eng.lookup([Item(image=buf.getvalue())])
        verdicts = {v.label: v for v in r.verdicts}
        assert verdicts[SCAM.name].matched
        assert TERROR.name not in verdicts or not verdicts[TERROR.name].matched
        [n] = [n for n in r.neighbors if n.seed_id == sid]
        assert n.verified == "geometric" and n.score >= space.threshold


def test_a_panel_in_a_row_of_three_matches_through_its_crop_and_verification(
        tmp_path, skimage_images):
    """A seed that is the middle panel of a three-panel row is shortlisted by the row's own
    thirds and then verified; the other seed stays unmatched."""
    row = Image.new("RGB", (3 * 384, 384), (255, 255, 255))
    for k, name in enumerate(("rocket", "coffee", "camera")):
        row.paste(skimage_images[name].convert("RGB").resize((384, 384)), (k * 384, 0))
    _only_its_seed_matches(tmp_path, skimage_images["coffee"], skimage_images["astronaut"], row)


def test_a_cell_of_a_grid_collage_matches_through_its_cell_and_verification(
        tmp_path, skimage_images):
    """A seed that is one cell of a 2x2 grid (square, so no panel crops) is shortlisted by the
    grid's own cells (``dedup.embed.layout``) and then verified. The picture's best region (a
    quadrant of the grid's feature map) stays below the band."""
    gap = 6
    grid = Image.new("RGB", (2 * 360 + 3 * gap, 2 * 300 + 3 * gap), (0, 0, 0))
    for k, name in enumerate(("rocket", "chelsea", "coffee", "camera")):
        tile = skimage_images[name].convert("RGB").resize((360, 300))
        grid.paste(tile, (gap + (k % 2) * (360 + gap), gap + (k // 2) * (300 + gap)))
    _only_its_seed_matches(tmp_path, skimage_images["rocket"], skimage_images["astronaut"], grid)


def test_a_blurred_copy_matches_through_its_aligned_pixels(tmp_path, skimage_images):
    """A heavily blurred copy at a third of the size keeps too few keypoints to reach the
    inlier floor; the few it keeps align it with the seed's stored thumbnail, whose pixels
    agree, so the engine scores it as a fit at the floor and it matches; the other seed does
    not. (The blur also costs the descriptor: similarity ~0.54, so the space's threshold here
    is 1.25, below the shipped one.)"""
    from PIL import ImageFilter

    from dedup.config import default_spaces
    from dedup.verify import geometric as G

    seed = skimage_images["cell"]
    w, h = seed.size
    upload = seed.filter(ImageFilter.GaussianBlur(0.016 * max(w, h))).resize((w // 3, h // 3))
    q, qm = G.extract_query(upload)
    match = G.verify(q, G.extract(seed), qm)
    assert match.inliers < G.INLIER_FLOOR <= match.counted  # by its pixels alone
    space = default_spaces()["image:copydet-lite0"].model_copy(update={"threshold": 1.25})
    spaces = {"image:copydet-lite0": space.model_dump()}
    with Engine.open(load_config(None, data_dir=str(tmp_path / "data"), spaces=spaces)) as eng:
        [(sid, _)] = eng.add_seeds([Item(image=png(seed))], [SCAM])
        eng.add_seeds([Item(image=png(skimage_images["astronaut"]))], [TERROR])
        [r] = eng.lookup([Item(image=png(upload))])
        assert [v.label for v in r.verdicts if v.matched] == [SCAM.name]
        [n] = [n for n in r.neighbors if n.seed_id == sid]
        assert n.verified == "geometric" and n.similarity < space.threshold - 0.5
        fused = n.similarity + space.verify.weight * np.log1p(G.INLIER_FLOOR)
        assert n.score == pytest.approx(fused, abs=1e-5)


def test_a_seed_sharing_a_patch_of_the_upload_is_explained_away(tmp_path, skimage_images):
    """A re-post of one seed also fits, with a sixth of the inliers and inside the same part
    of the upload, a second seed that carries a patch of the first (a shared logo); that fit
    would clear the threshold on its own, but only the first seed's label is propagated and
    the second keeps its similarity as its score."""
    from dedup.verify import geometric as G

    a = skimage_images["astronaut"].convert("RGB")
    b = skimage_images["coffee"].convert("RGB").resize((600, 400))
    b.paste(a.crop((120, 20, 360, 260)).resize((200, 200)), (380, 180))
    upload = edited(a)
    q, qm = G.extract_query(Image.open(io.BytesIO(upload)).convert("RGB"))
    alone = G.verify(q, G.extract(b), qm)
    weight = 0.3
    verify = VerifyConfig(method="geometric", band_low=0.0, weight=weight).model_dump()
    with _engine(tmp_path, verify) as eng:
        [(sa, _)] = eng.add_seeds([Item(image=png(a))], [TERROR])
        [(sb, _)] = eng.add_seeds([Item(image=png(b))], [SCAM])
        [r] = eng.lookup([Item(image=upload)])
        nb = {n.seed_id: n for n in r.neighbors}
        assert nb[sb].similarity + weight * np.log1p(alone.counted) >= 0.95  # would match
        assert nb[sb].score == pytest.approx(nb[sb].similarity)
        assert nb[sa].score >= 0.95
        assert [v.label for v in r.verdicts if v.matched] == [TERROR.name]
