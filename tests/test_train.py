"""dedup-train on a tiny folder of real pictures: checkpoints, resume, determinism, the view cache,
export into the shipped embedder, and the training edits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tools.train import cli
from tools.train.augment import FAMILIES, Augmenter

pytestmark = pytest.mark.slow

FIT = ["--steps", "2", "--batch", "3", "--threads", "1", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, skimage_images):
    d = tmp_path_factory.mktemp("pictures")
    for name in list(skimage_images)[:6]:
        skimage_images[name].save(d / f"{name}.png")
    return d


def _fit(capsys, *args) -> dict:
    assert cli.main(["fit", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _history(run) -> list[dict]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False)["history"]


def test_fit_writes_checkpoint_and_resume_continues(tiny_folder, tmp_path, capsys):
    run = tmp_path / "run"
    res = _fit(capsys, "--data", str(tiny_folder), "--out", str(run), *FIT)
    assert res["steps_done"] == 2 and (run / "last.pt").exists()
    first = _history(run)
    assert [h["step"] for h in first] == [0, 1]
    assert all(np.isfinite(h["loss"]) for h in first)

    res = _fit(capsys, "--data", str(tiny_folder), "--out", str(run), *FIT[2:], "--steps", "3", "--resume")
    assert res["steps_done"] == 3
    resumed = _history(run)
    assert [h["step"] for h in resumed] == [0, 1, 2]
    assert resumed[:2] == first  # the resumed run kept, not redid, the first two steps


def test_resume_without_checkpoint_is_a_usage_error(tiny_folder, tmp_path, capsys):
    assert cli.main(["fit", "--data", str(tiny_folder), "--out", str(tmp_path / "none"), *FIT, "--resume"]) == 2


def test_same_seed_gives_same_first_loss(tiny_folder, tmp_path, capsys):
    one = _fit(capsys, "--data", str(tiny_folder), "--out", str(tmp_path / "a"), *FIT[2:], "--steps", "1")
    two = _fit(capsys, "--data", str(tiny_folder), "--out", str(tmp_path / "b"), *FIT[2:], "--steps", "1")
    other = _fit(capsys, "--data", str(tiny_folder), "--out", str(tmp_path / "c"), *FIT[2:], "--steps", "1",
                 "--seed", "1")
    assert one["first_loss"] == pytest.approx(two["first_loss"], rel=1e-6)
    assert other["first_loss"] != pytest.approx(one["first_loss"], rel=1e-6)


def test_fit_on_view_cache_and_export_to_embedder(tiny_folder, tmp_path, capsys, skimage_images):
    from dedup.embed.copydet import CopyDetEmbedder

    cache = tmp_path / "cache"
    assert cli.main(["cache", "--data", str(tiny_folder), "--cache", str(cache), "--views", "2",
                     "--shard-size", "3"]) == 0
    capsys.readouterr()
    assert len(list(cache.glob("shard-*.json"))) == 2
    acts = np.load(cache / "shard-00000.npy")
    assert acts.shape == (6, 192, 7, 7) and acts.dtype == np.float16  # 3 pictures x 2 views
    run = tmp_path / "run"
    res = _fit(capsys, "--data", str(tiny_folder), "--cache", str(cache), "--out", str(run), *FIT[2:],
               "--steps", "2")
    assert res["steps_done"] == 2

    weights = tmp_path / "w.pt"
    assert cli.main(["export", "--checkpoint", str(run / "last.pt"), "--out", str(weights)]) == 0
    emb = CopyDetEmbedder("cpu", weights=weights)
    v = emb.embed_images([skimage_images["astronaut"], skimage_images["coffee"]])
    assert v.shape == (2, 512) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)


def test_training_views_are_seeded_and_cover_every_family(skimage_images):
    img = skimage_images["astronaut"]
    others = list(skimage_images.values())

    def views(seed):
        rng = np.random.default_rng(seed)
        aug = Augmenter(rng, other=lambda: others[int(rng.integers(len(others)))])
        return [aug.view(img) for _ in range(30)]

    a, b, c = views(0), views(0), views(1)
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    assert not all(x.image.size == y.image.size and np.array_equal(np.asarray(x.image), np.asarray(y.image))
                   for x, y in zip(a, c))
    rng = np.random.default_rng(0)
    aug = Augmenter(rng, other=lambda: others[int(rng.integers(len(others)))])
    for fam in FAMILIES:
        v = aug.edit(img, fam)
        assert v.image.mode == "RGB" and min(v.image.size) >= 32
        x0, y0, x1, y1 = v.box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    collage = aug.edit(img, "collage")
    x0, y0, x1, y1 = collage.box
    assert (x1 - x0) * (y1 - y0) < 0.6  # the picture is one panel of several
