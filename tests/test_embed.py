"""Embedders: real models on real images, each loaded once per session."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from dedup.config import Limits
from dedup.embed import create_embedder, registered
from dedup.embed.base import Embedder, file_digest
from dedup.errors import InvalidArgument, ModelMismatch
from dedup.items import decode_image

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return decode_image(buf.getvalue(), Limits())


def _crop(img: Image.Image, keep: float) -> Image.Image:
    w, h = img.size
    dx, dy = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    return img.crop((dx, dy, w - dx, h - dy))


EDITS = {
    "jpeg50": lambda im: _jpeg(im, 50),
    "half_size": lambda im: im.resize((im.width // 2, im.height // 2), Image.BICUBIC),
    "crop10": lambda im: _crop(im, 0.9),
    "mirror": ImageOps.mirror,
}


def _assert_unit_float32(x: np.ndarray, n: int, dim: int) -> None:
    assert x.shape == (n, dim)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="session")
def effnet():
    return create_embedder("image:effnet-lite0", device="cpu")


@pytest.fixture(scope="session")
def minilm():
    return create_embedder("text:minilm-l6", device="cpu")


@pytest.fixture(scope="session")
def clip_tiny():
    return create_embedder("clip:dedup-tiny/none", device="cpu")


@pytest.fixture(scope="session")
def pdq():
    return create_embedder("pdq")


# --- registry -----------------------------------------------------------------------------------


def test_registry_names_every_space():
    assert {"image:effnet-lite0", "text:minilm-l6", "pdq", "clip:*"} <= set(registered())


@pytest.mark.parametrize("spec", ["image:resnet", "", "clip", "clip:dedup-tiny", "clip:no-such-arch/none"])
def test_unknown_or_malformed_spec_refused(spec):
    with pytest.raises(InvalidArgument):
        create_embedder(spec)


def test_spec_with_matching_digest_accepted_and_other_digest_refused(pdq):
    assert create_embedder(pdq.model_id).model_id == pdq.model_id
    with pytest.raises(ModelMismatch):
        create_embedder("pdq@0.0.0-other")


def test_every_embedder_follows_the_protocol(effnet, minilm, clip_tiny, pdq):
    for emb in (effnet, minilm, clip_tiny, pdq):
        assert isinstance(emb, Embedder)
        assert emb.model_id.startswith(emb.space + "@")
        assert emb.metric == ("hamming" if emb is pdq else "ip")


# --- image:effnet-lite0 -------------------------------------------------------------------------


def test_effnet_classifies_cat_and_coffee(effnet, cat_image, coffee_image):
    probs = effnet.classify([cat_image, coffee_image])
    top5 = np.argsort(-probs, axis=1)[:, :5]
    assert CAT_CLASSES & set(top5[0].tolist()), top5[0]
    assert CUP_CLASSES & set(top5[1].tolist()), top5[1]
    assert int(top5[0, 0]) in CAT_CLASSES and int(top5[1, 0]) in CUP_CLASSES


def test_effnet_vectors_are_unit_float32(effnet, cat_image, coffee_image):
    _assert_unit_float32(effnet.embed_images([cat_image, coffee_image]), 2, 1280)


def test_effnet_is_deterministic_and_batch_equals_one_by_one(effnet, skimage_images):
    imgs = [skimage_images[n] for n in ("chelsea", "coffee", "rocket")]
    small_batches = create_embedder("image:effnet-lite0", device="cpu", max_batch=2)
    batch = small_batches.embed_images(imgs)
    np.testing.assert_array_equal(batch, small_batches.embed_images(imgs))
    single = np.concatenate([effnet.embed_images([im]) for im in imgs])
    np.testing.assert_allclose(batch, single, atol=1e-4)


def test_effnet_is_mirror_invariant(effnet, cat_image):
    a, b = effnet.embed_images([cat_image, ImageOps.mirror(cat_image)])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_effnet_empty_batch_gives_empty_array(effnet):
    assert effnet.embed_images([]).shape == (0, 1280)


@pytest.mark.slow
def test_effnet_near_duplicate_beats_every_other_image(effnet, skimage_images):
    names = list(skimage_images)
    seeds = effnet.embed_images([skimage_images[n] for n in names])
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        i = names.index(name)
        edits = effnet.embed_images([edit(skimage_images[name]) for edit in EDITS.values()])
        sims = edits @ seeds.T
        others = np.delete(sims, i, axis=1).max(axis=1)
        for edit_name, own, other in zip(EDITS, sims[:, i], others):
            assert own > other, f"{name}/{edit_name}: own {own:.3f} <= other {other:.3f}"


def test_effnet_refuses_texts(effnet):
    with pytest.raises(InvalidArgument, match="images only"):
        effnet.embed_texts(["hello"])


def test_effnet_model_id_stable_and_changes_with_recipe(effnet):
    again = create_embedder("image:effnet-lite0", device="cpu")
    assert again.model_id == effnet.model_id
    assert len(effnet.model_id.split("@")[1]) == 12
    avg = create_embedder("image:effnet-lite0", device="cpu", pooling="avg")
    assert avg.model_id != effnet.model_id


def test_effnet_bad_settings_refused():
    with pytest.raises(InvalidArgument, match="pooling"):
        create_embedder("image:effnet-lite0", device="cpu", pooling="median")
    with pytest.raises(InvalidArgument, match="centre"):
        create_embedder("image:effnet-lite0", device="cpu", center=np.zeros(3))


# --- text:minilm-l6 -----------------------------------------------------------------------------


def test_minilm_vectors_are_unit_float32_and_deterministic(minilm):
    texts = ["buy cheap pills now", "the weather is nice today"]
    a = minilm.embed_texts(texts)
    _assert_unit_float32(a, 2, 384)
    np.testing.assert_array_equal(a, minilm.embed_texts(texts))


def test_minilm_batch_equals_one_by_one(minilm):
    texts = ["buy cheap pills now", "a much longer sentence about the local football club", "ok"]
    single = np.concatenate([minilm.embed_texts([t]) for t in texts])
    np.testing.assert_allclose(minilm.embed_texts(texts), single, atol=1e-4)


def test_minilm_near_duplicate_text_beats_unrelated(minilm):
    a, b, c, d = minilm.embed_texts(
        ["Buy CHEAP pills now!!", "buy cheap pills now", "the meeting moved to tuesday", "I love my cat"]
    )
    assert a @ b > 0.85
    assert a @ b > max(a @ c, a @ d, b @ c, b @ d) + 0.4


def test_minilm_empty_batch_and_refuses_images(minilm, cat_image):
    assert minilm.embed_texts([]).shape == (0, 384)
    with pytest.raises(InvalidArgument, match="texts only"):
        minilm.embed_images([cat_image])


def test_minilm_model_id_is_digest_of_weights_and_text_form(minilm):
    from dedup.embed.minilm import model_path
    from dedup.text.normalize import FORM_VERSION

    digest = file_digest(Path(model_path()) / "model.safetensors")
    assert minilm.model_id == f"text:minilm-l6@{digest}-{FORM_VERSION}"


def test_minilm_is_blind_to_homoglyphs_emoji_and_punctuation(minilm):
    from dedup.config import Limits
    from dedup.items import normalize_text

    clean = "claim your free prize now at the link below"
    disguised = "Clаim yоur FREE prizе 🔥🔥 now... at the link below!!! ✅"  # Cyrillic а о е
    a, b = minilm.embed_texts([normalize_text(t, Limits()) for t in (clean, disguised)])
    assert float(a @ b) > 0.999


# --- clip:dedup-tiny/none -----------------------------------------------------------------------


def test_clip_tiny_embeds_images_and_texts_in_one_space(clip_tiny, cat_image, coffee_image):
    assert clip_tiny.modalities == {"image", "text"}
    assert clip_tiny.space == "clip:dedup-tiny/none"
    imgs = clip_tiny.embed_images([cat_image, coffee_image])
    texts = clip_tiny.embed_texts(["a photo of a cat", "a cup of coffee", "pills"])
    _assert_unit_float32(imgs, 2, 64)
    _assert_unit_float32(texts, 3, 64)
    assert clip_tiny.dim == 64
    assert np.isfinite(imgs @ texts.T).all()


def test_clip_tiny_random_init_is_deterministic_across_instances(clip_tiny, cat_image):
    other = create_embedder("clip:dedup-tiny/none", device="cpu")
    assert other.model_id == clip_tiny.model_id
    np.testing.assert_array_equal(other.embed_images([cat_image]), clip_tiny.embed_images([cat_image]))
    np.testing.assert_array_equal(other.embed_texts(["x y"]), clip_tiny.embed_texts(["x y"]))


def test_clip_tiny_batch_equals_one_by_one(cat_image, coffee_image):
    emb = create_embedder("clip:dedup-tiny/none", device="cpu", max_batch=1)
    imgs, texts = [cat_image, coffee_image], ["a cat", "a much longer caption about coffee"]
    big = create_embedder("clip:dedup-tiny/none", device="cpu", max_batch=8)
    np.testing.assert_allclose(emb.embed_images(imgs), big.embed_images(imgs), atol=1e-4)
    np.testing.assert_allclose(emb.embed_texts(texts), big.embed_texts(texts), atol=1e-4)


# --- pdq ----------------------------------------------------------------------------------------


def test_pdq_codes_are_packed_uint8(pdq, cat_image):
    codes = pdq.embed_images([cat_image, cat_image])
    assert pdq.metric == "hamming" and pdq.dim == 256 and pdq.hash_format == "pdq"
    assert codes.shape == (2, 32) and codes.dtype == np.uint8 and codes.flags.c_contiguous
    np.testing.assert_array_equal(codes[0], codes[1])
    assert pdq.model_id.startswith("pdq@")


def test_pdq_jpeg_copy_is_close_and_different_images_are_far(pdq, skimage_images):
    from dedup.embed.pdq import hamming

    names = ["chelsea", "coffee", "astronaut", "rocket", "camera", "hubble_deep_field"]
    originals = pdq.embed_images([skimage_images[n] for n in names])
    copies = pdq.embed_images([_jpeg(skimage_images[n], 60) for n in names])
    assert hamming(originals, copies).max() <= 31
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert hamming(originals[i], originals[j]) > 70, (names[i], names[j])


def test_pdq_bytes_match_pdqhash_bits_hex_and_faiss(pdq, cat_image, coffee_image):
    import faiss
    import pdqhash

    from dedup.embed.pdq import from_hex, hamming, to_hex

    codes = pdq.embed_images([cat_image, coffee_image])
    bits, _ = pdqhash.compute(np.asarray(cat_image))
    np.testing.assert_array_equal(np.unpackbits(codes[0]), bits)
    # ThreatExchange hex: bit 0 is the most significant bit of the number.
    assert to_hex(codes)[0] == f"{int(''.join(map(str, bits)), 2):064x}"
    np.testing.assert_array_equal(from_hex(to_hex(codes)), codes)
    index = faiss.IndexBinaryFlat(256)
    index.add(codes)
    dist, ids = index.search(codes[::-1].copy(), 2)
    assert ids[:, 0].tolist() == [1, 0] and dist[:, 0].tolist() == [0, 0]
    assert dist[0, 1] == hamming(codes[0], codes[1])


def test_pdq_quality_high_for_photo_low_for_flat_image(pdq, cat_image):
    flat = Image.new("RGB", (200, 200), (128, 128, 128))
    q = pdq.quality([cat_image, flat])
    assert q.dtype == np.int32 and q[0] >= 50 and q[1] < q[0]


def test_pdq_refuses_texts_and_bad_hex(pdq):
    from dedup.embed.pdq import from_hex

    with pytest.raises(InvalidArgument):
        pdq.embed_texts(["x"])
    with pytest.raises(InvalidArgument):
        from_hex(["zz"])
    with pytest.raises(InvalidArgument):
        from_hex(["00ff"])
