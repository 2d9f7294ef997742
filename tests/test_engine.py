"""The core end to end: real packaged models, real LMDB, real FAISS, real images and texts."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from dedup.config import load_config
from dedup.engine import Engine
from dedup.errors import InvalidArgument, InvalidItem, LimitExceeded, ModelMismatch, NotFound
from dedup.index.snapshot import current_version
from dedup.types import Item, Label

pytestmark = pytest.mark.slow

GORE = Label("violence.graphic", 5)
SCAM = Label("spam.scam", 2)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def skimage_rgb(name: str) -> Image.Image:
    """A real photograph shipped in scikit-image's data folder, as RGB."""
    from pathlib import Path

    import skimage.data

    (path,) = Path(skimage.data.__file__).parent.glob(f"{name}.*")
    return Image.open(path).convert("RGB")


def modified_copies(img: Image.Image) -> dict[str, bytes]:
    """The re-posts moderation sees: re-encoded, resized, cropped, mirrored."""
    w, h = img.size
    return {
        "jpeg_q40": encode(img, "JPEG", quality=40),
        "resized_half": encode(img.resize((w // 2, h // 2), Image.BILINEAR), "JPEG", quality=80),
        "cropped_10pct": encode(img.crop((w // 20, h // 20, w - w // 20, h - h // 20)), "PNG"),
        "mirrored": encode(ImageOps.mirror(img), "JPEG", quality=85),
    }


@pytest.fixture(scope="module")
def embedders():
    from dedup.embed import create_embedder

    return {"image:effnet-lite0": create_embedder("image:effnet-lite0"),
            "text:minilm-l6": create_embedder("text:minilm-l6")}


# The engine's own behaviour, on a fixed set of spaces (the service's defaults are measured by
# the benchmarks and tested end to end in test_default_spaces_* below and in tests/e2e).
SPACES = {"image:effnet-lite0": {"model": "image:effnet-lite0", "threshold": 0.682},
          "pdq": {"model": "pdq", "threshold": 0.67578125, "min_quality": 50},
          "text:minilm-l6": {"model": "text:minilm-l6", "threshold": 0.9099}}


def make_config(tmp_path, **kw):
    return load_config(None, data_dir=str(tmp_path / "data"), **{"spaces": SPACES, **kw})


def test_default_spaces_catch_an_edited_copy_by_verified_evidence(tmp_path):
    with Engine.open(load_config(None, data_dir=str(tmp_path / "data"))) as eng:
        assert {"image:copydet-lite0", "pdq", "text:exact", "text:minhash",
                "text:minilm-l6"} <= set(eng.spaces)
        astronaut = skimage_rgb("astronaut")
        [(seed_id, _)] = eng.add_seeds([Item(image=encode(astronaut))], [GORE])
        eng.add_seeds([Item(image=encode(skimage_rgb(n))) for n in ("coffee", "rocket")], [SCAM])
        copies = modified_copies(astronaut)
        for name, r in zip(copies, eng.lookup([Item(image=b) for b in copies.values()])):
            assert matched_labels(r) == {"violence.graphic"}, name
            v = next(x for x in r.verdicts if x.label == "violence.graphic")
            assert v.evidence[0].seed_id == seed_id, name
        [r] = eng.lookup([Item(image=encode(skimage_rgb("chelsea")))])
        assert not matched_labels(r)


@pytest.fixture()
def engine(tmp_path, embedders):
    eng = Engine.open(make_config(tmp_path), embedders=embedders)
    yield eng
    eng.close()


def matched_labels(result) -> set[str]:
    return {v.label for v in result.verdicts if v.matched}


def test_modified_copies_of_a_seed_match_it_with_its_labels(engine):
    astronaut = skimage_rgb("astronaut")
    [(seed_id, created)] = engine.add_seeds([Item(image=encode(astronaut))], [GORE], source="case-7")
    assert created
    engine.add_seeds([Item(image=encode(skimage_rgb(n)))
                      for n in ("coffee", "chelsea", "rocket", "hubble_deep_field")], [SCAM])
    copies = modified_copies(astronaut)
    results = engine.lookup([Item(image=b) for b in copies.values()], top_k=5)
    for name, r in zip(copies, results):
        assert matched_labels(r) == {"violence.graphic"}, name
        assert r.neighbors[0].seed_id == seed_id, name
        best = {n.space: n.seed_id for n in reversed(r.neighbors)}  # best hit per space
        assert best["image:effnet-lite0"] == seed_id, name
        verdict = next(v for v in r.verdicts if v.label == "violence.graphic")
        assert seed_id in {n.seed_id for n in verdict.evidence}
        assert r.exact_match is None


def test_a_different_image_does_not_match(engine):
    engine.add_seeds([Item(image=encode(skimage_rgb("astronaut")))], [GORE])
    for name in ("camera", "coins", "horse", "motorcycle_left"):
        [r] = engine.lookup([Item(image=encode(skimage_rgb(name)))])
        assert "violence.graphic" not in matched_labels(r), name


def test_text_near_duplicates_match_and_unrelated_text_does_not(engine):
    engine.add_seeds([Item(text="Send 0.1 BTC to this wallet and get 1 BTC back, guaranteed!")], [SCAM])
    near, far = engine.lookup([
        Item(text="send 0.1 btc to this wallet and get 1 btc back guaranteed"),
        Item(text="The committee will meet on Tuesday to discuss the library budget."),
    ])
    assert matched_labels(near) == {"spam.scam"}
    assert matched_labels(far) == set()


def test_exact_duplicate_returns_existing_seed_and_always_matches(engine):
    data = encode(skimage_rgb("chelsea"), "JPEG", quality=90)
    [(first, created)] = engine.add_seeds([Item(image=data)], [SCAM])
    [(again, created_again)] = engine.add_seeds([Item(image=data)], [GORE])
    assert (again, created_again) == (first, False)
    [r] = engine.lookup([Item(image=data)], threshold=1.01)  # no similarity can clear 1.01
    assert r.exact_match == first and matched_labels(r) == {"spam.scam"}


def test_removed_seed_never_in_verdict_at_once(engine):
    img = skimage_rgb("coffee")
    [(sid, _)] = engine.add_seeds([Item(image=encode(img))], [SCAM])
    assert [(r.seed_id, r.status.value) for r in engine.remove_seeds([sid])] == [(sid, "removed")]
    [r] = engine.lookup([Item(image=encode(img)), ][:1])
    assert sid not in {n.seed_id for n in r.neighbors}
    assert r.exact_match is None and matched_labels(r) == set()
    assert engine.get_seed(sid).removed


def test_relabel_changes_verdicts_at_once(engine):
    img = skimage_rgb("rocket")
    [(sid, _)] = engine.add_seeds([Item(image=encode(img))], [SCAM])
    engine.relabel(sid, [GORE])
    [r] = engine.lookup([Item(image=encode(img, "JPEG", quality=70))])
    assert matched_labels(r) == {"violence.graphic"}


def test_reopened_engine_has_everything(tmp_path, embedders):
    cfg = make_config(tmp_path)
    with Engine.open(cfg, embedders=embedders) as eng:
        [(kept, _)] = eng.add_seeds([Item(image=encode(skimage_rgb("astronaut")))], [GORE])
        [(gone, _)] = eng.add_seeds([Item(image=encode(skimage_rgb("chelsea")))], [SCAM])
        eng.remove_seeds([gone])
    with Engine.open(cfg, embedders=embedders) as eng:
        a, c = eng.lookup([Item(image=encode(skimage_rgb("astronaut"), "JPEG", quality=60)),
                           Item(image=encode(skimage_rgb("chelsea"), "JPEG", quality=60))])
        assert a.neighbors[0].seed_id == kept and matched_labels(a) == {"violence.graphic"}
        assert gone not in {n.seed_id for n in c.neighbors}
        assert eng.stats().seeds_active == 1


def test_snapshot_then_op_log_replay_restores_live_state(tmp_path, embedders):
    cfg = make_config(tmp_path)
    with Engine.open(cfg, embedders=embedders) as eng:
        [(a, _)] = eng.add_seeds([Item(image=encode(skimage_rgb("astronaut")))], [GORE])
        [(b, _)] = eng.add_seeds([Item(image=encode(skimage_rgb("chelsea")))], [SCAM])
        version = eng.publish_snapshot()
        # after the snapshot: one add, one remove; only the op log knows them
        [(c, _)] = eng.add_seeds([Item(image=encode(skimage_rgb("rocket")))], [SCAM])
        eng.remove_seeds([a])
    assert current_version(tmp_path / "data" / "index") == version
    with Engine.open(cfg, embedders=embedders) as eng:
        assert eng.snapshot_version == version
        ra, rb, rc = eng.lookup([Item(image=encode(skimage_rgb(n), "JPEG", quality=70))
                                 for n in ("astronaut", "chelsea", "rocket")])
        assert a not in {n.seed_id for n in ra.neighbors}
        assert rb.neighbors[0].seed_id == b
        assert rc.neighbors[0].seed_id == c
        assert eng.live.current.indexes["image:effnet-lite0"].ntotal == 2


def test_reload_swaps_in_a_builder_snapshot_without_losing_writes(tmp_path, embedders):
    from dedup.config import IndexPlan
    from index_builder.build import rebuild

    cfg = make_config(tmp_path)
    with Engine.open(cfg, embedders=embedders) as eng:
        ids = [r[0] for r in eng.add_seeds(
            [Item(image=encode(skimage_rgb(n))) for n in ("astronaut", "chelsea", "coffee")], [GORE])]
        report = rebuild(eng.store, eng.live.root,
                         {"image:effnet-lite0": IndexPlan(factory="Flat", n_shards=2)})
        assert report.recall["image:effnet-lite0"] == 1.0
        # a write after the builder's read view, before the reload
        [(late, _)] = eng.add_seeds([Item(image=encode(skimage_rgb("rocket")))], [SCAM])
        assert eng.reload() == report.manifest.version
        idx = eng.live.current.indexes["image:effnet-lite0"]
        assert idx.n_shards == 2 and idx.ntotal == 4
        [r] = eng.lookup([Item(image=encode(skimage_rgb("rocket"), "JPEG", quality=70))])
        assert r.neighbors[0].seed_id == late and ids[0] != late


def test_bad_items_get_typed_errors_in_place(engine):
    good = Item(image=encode(skimage_rgb("coffee")))
    results = engine.lookup([good, Item(image=b"not an image"), Item(), Item(text="\u200b \u200b")])
    assert not isinstance(results[0], Exception)
    assert isinstance(results[1], InvalidItem) and "image" in str(results[1]).lower()
    assert isinstance(results[2], InvalidItem)
    assert isinstance(results[3], InvalidItem)


def test_request_limits_are_typed(engine):
    with pytest.raises(LimitExceeded, match="max_top_k"):
        engine.lookup([Item(text="hello")], top_k=10_000)
    with pytest.raises(LimitExceeded, match="max_batch_items"):
        engine.lookup([Item(text="hello")] * 1000)
    with pytest.raises(InvalidArgument):
        engine.add_seeds([Item(text="hello")], [])
    with pytest.raises(NotFound):
        engine.get_seed(123456)


def test_other_model_weights_are_refused_for_an_existing_space(tmp_path, embedders):
    cfg = make_config(tmp_path)
    with Engine.open(cfg, embedders=embedders) as eng:
        eng.add_seeds([Item(text="some seed text")], [SCAM])

    class Retrained:
        """The same space name served by other weights (a new model id)."""

        def __init__(self, inner):
            self.__dict__.update(inner.__dict__)
            self._inner = inner
            self.model_id = inner.model_id + "-retrained"

        def __getattr__(self, name):
            return getattr(self._inner, name)

    other = dict(embedders, **{"text:minilm-l6": Retrained(embedders["text:minilm-l6"])})
    with pytest.raises(ModelMismatch):
        Engine.open(cfg, embedders=other)


@pytest.fixture()
def pdq_engine(tmp_path, embedders):
    from dedup.embed import create_embedder

    cfg = load_config(None, data_dir=str(tmp_path / "pdq"), spaces={
        "image:effnet-lite0": {"model": "image:effnet-lite0", "threshold": 0.6},
        "pdq": {"model": "pdq", "threshold": 0.878}})
    eng = Engine.open(cfg, embedders={**embedders, "pdq": create_embedder("pdq")})
    yield eng
    eng.close()


def test_shared_pdq_hash_seed_matches_an_upload_of_that_image(pdq_engine):
    from dedup.embed.pdq import to_hex

    img = skimage_rgb("astronaut")
    partner_hash = to_hex(pdq_engine.spaces["pdq"].embedder.embed_images([img]))[0]
    [(sid, created)] = pdq_engine.add_seeds([Item(pdq=partner_hash)], [GORE], source="partner-x")
    assert created and pdq_engine.get_seed(sid).modalities == ("image",)
    assert pdq_engine.add_seeds([Item(pdq=partner_hash.upper())], [GORE]) == [(sid, False)]
    upload, other = pdq_engine.lookup([Item(image=encode(img, "JPEG", quality=70)),
                                       Item(image=encode(skimage_rgb("coffee")))])
    assert matched_labels(upload) == {"violence.graphic"}
    assert {(n.seed_id, n.space) for n in upload.neighbors} == {(sid, "pdq")}
    assert matched_labels(other) == set()
    # a partner's hash can be looked up directly too
    [by_hash] = pdq_engine.lookup([Item(pdq=partner_hash)])
    assert by_hash.exact_match == sid


def test_hash_only_seed_survives_snapshot_and_replay(tmp_path, pdq_engine):
    from dedup.embed.pdq import to_hex

    h = to_hex(pdq_engine.spaces["pdq"].embedder.embed_images([skimage_rgb("chelsea")]))[0]
    pdq_engine.publish_snapshot()
    [(sid, _)] = pdq_engine.add_seeds([Item(pdq=h)], [SCAM])
    pdq_engine.reload()  # snapshot without the seed + op-log replay
    assert pdq_engine.live.current.indexes["pdq"].ntotal == 1
    assert pdq_engine.live.current.indexes["image:effnet-lite0"].ntotal == 0
    [r] = pdq_engine.lookup([Item(image=encode(skimage_rgb("chelsea"), "JPEG", quality=80))])
    assert r.neighbors[0].seed_id == sid


def test_bad_pdq_hashes_are_refused(tmp_path, pdq_engine, embedders):
    bad = pdq_engine.lookup([Item(pdq="xyz"), Item(pdq="ab" * 31),
                             Item(pdq="00" * 32, image=b"\x89PNG")])
    assert all(isinstance(r, InvalidArgument | InvalidItem) for r in bad)
    cfg = load_config(None, data_dir=str(tmp_path / "text-only"),
                      spaces={"text:minilm-l6": {"model": "text:minilm-l6"}})
    with Engine.open(cfg, embedders=embedders) as text_only:
        [no_space] = text_only.lookup([Item(pdq="00" * 32)])
    assert isinstance(no_space, InvalidItem) and "no enabled space holds pdq hashes" in str(no_space)
