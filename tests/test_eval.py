"""dedup-eval: metrics against hand-computed cases, seeded augmentations, dataset dedup, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dedup.config import Limits, load_config
from dedup.items import decode_image, normalize_text
from tools.eval import metrics
from tools.eval.augment import LEVELS, augment_image, augment_text, query_rng
from tools.eval.dataset import (build_image_benchmark, build_text_benchmark, dedup_images,
                                dedup_sentences, load_originals)
from tools.eval.runner import calibrate, thresholds_toml

# Three queries, k=2: q0 -> seed 0, q1 -> seed 1, q2 is a negative.
D = np.array([[0.9, 0.5], [0.8, 0.7], [0.75, 0.1]])
I = np.array([[0, 1], [0, 1], [1, 0]])
TRUTH = np.array([0, 1, -1])


# -- metrics ---------------------------------------------------------------------------------

def test_micro_ap_matches_hand_computation():
    # Pooled by score: TP .9, FP .8, FP .75, TP .7, FP .5, FP .1; two true pairs.
    # AP = 1/2 * 1/1 + 1/2 * 2/4 = 0.75
    ap, p, r, t = metrics.micro_ap(D, I, TRUTH)
    assert ap == pytest.approx(0.75)
    assert r[-1] == pytest.approx(1.0)
    assert list(t) == sorted(t, reverse=True)


def test_micro_ap_counts_true_seed_missing_from_top_k_as_lost_recall():
    D2 = np.array([[0.9], [0.8]])
    I2 = np.array([[0], [0]])  # q1's true seed 1 never retrieved
    ap, *_ = metrics.micro_ap(D2, I2, np.array([0, 1]))
    assert ap == pytest.approx(0.5)


def test_micro_ap_tied_scores_do_not_depend_on_order():
    a, *_ = metrics.micro_ap(np.array([[0.9], [0.9]]), np.array([[0], [0]]), np.array([0, -1]))
    b, *_ = metrics.micro_ap(np.array([[0.9], [0.9]]), np.array([[0], [0]]), np.array([-1, 0]))
    assert a == b == pytest.approx(0.5)  # one step: both pairs admitted together


def test_recall_at_1_only_counts_true_top1():
    assert metrics.recall_at_1(D, I, TRUTH) == pytest.approx(0.5)  # q1's top-1 is seed 0


def test_threshold_at_fmr_lets_through_at_most_the_allowed_negatives():
    neg = np.linspace(0.9, 0.0, 10)  # 0.9, 0.8, ..., 0.0
    t, achieved = metrics.threshold_at_fmr(neg, 0.1)
    assert 0.8 < t < 0.8 + 1e-9 and achieved == pytest.approx(0.1)
    t0, a0 = metrics.threshold_at_fmr(neg, 0.05)  # 0.05 * 10 < 1: no negative may pass
    assert t0 > 0.9 and a0 == 0.0
    pos = np.array([0.95, 0.85, 0.8])
    assert metrics.recall_at_threshold(pos, t) == pytest.approx(2 / 3)


def test_threshold_at_fmr_with_tied_negatives_stays_under_target():
    neg = np.array([0.9, 0.9, 0.9] + [0.1] * 7)
    t, achieved = metrics.threshold_at_fmr(neg, 0.2)
    assert t > 0.9 and achieved == 0.0


def test_evaluate_reports_counts_and_rates():
    m = metrics.evaluate(D, I, TRUTH, fmrs=(0.5,))
    assert m["n_positive"] == 2 and m["n_negative"] == 1
    # One negative at 0.75: floor(0.5 * 1) = 0 may pass -> threshold above 0.75, q0 (0.9) and
    # q1 (true seed at 0.7) -> recall 1/2.
    assert m["at_fmr"]["0.5"]["recall"] == pytest.approx(0.5)
    assert list(m["_pos_scores"]) == [0.9, 0.7]


def _scored(pos, neg):
    return {"_pos_scores": np.asarray(pos, float), "_neg_scores": np.asarray(neg, float)}


def test_calibration_rounds_float_threshold_up_and_binary_to_a_hamming_radius(tmp_path):
    neg = np.r_[[0.81234, 0.80011], np.full(998, 0.5)]
    pos = np.array([0.95, 0.9, 0.81, 0.7])
    scored = {("image:effnet-lite0", "mild"): _scored(pos, neg)}
    cal = calibrate("image:effnet-lite0", scored, ("mild",), 0.001)
    # floor(0.001 * 1000) = 1 negative may pass: just above the second highest, rounded up.
    assert cal["threshold"] == pytest.approx(0.8002)
    assert cal["achieved_fmr"] == pytest.approx(0.001) and cal["recall"] == pytest.approx(0.75)

    bits = 256
    neg_b = 1 - np.r_[np.full(998, 60), [40, 30]] / bits  # two close negatives
    pos_b = 1 - np.array([0, 10, 35, 50]) / bits
    scored_b = {("pdq", "mild"): _scored(pos_b, neg_b)}
    cal_b = calibrate("pdq", scored_b, ("mild",), 0.001, binary_bits=bits)
    # One may pass (d=30); the next (d=40) must not: radius 39.
    assert cal_b["hamming_threshold"] == 39
    assert cal_b["threshold"] == pytest.approx(1 - 39 / bits)
    assert cal_b["recall"] == pytest.approx(0.75)

    toml = thresholds_toml([cal, cal_b], {})
    path = tmp_path / "t.toml"
    path.write_text(toml)
    cfg = load_config(path)
    assert cfg.spaces["image:effnet-lite0"].threshold == pytest.approx(0.8002)
    assert cfg.spaces["pdq"].threshold == pytest.approx(1 - 39 / bits)


# -- augmentations ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut():
    return next(o.image for o in load_originals() if o.name == "skimage/astronaut")


@pytest.mark.parametrize("level", LEVELS)
def test_image_augmentation_is_deterministic_and_decodes(astronaut, level):
    a = augment_image(astronaut, level, query_rng(7, level, "image", 3, 1))
    b = augment_image(astronaut, level, query_rng(7, level, "image", 3, 1))
    c = augment_image(astronaut, level, query_rng(8, level, "image", 3, 1))
    assert a == b and a.data != c.data
    img = decode_image(a.data, Limits())  # the service's decoder accepts every query
    assert img.mode == "RGB" and min(img.size) >= 32


def test_image_levels_use_their_own_edits(astronaut):
    medium_ops = {"crop", "jitter", "mirror", "rotate"}
    for copy in range(6):
        mild = augment_image(astronaut, "mild", query_rng(0, "mild", "image", 0, copy)).ops
        medium = augment_image(astronaut, "medium", query_rng(0, "medium", "image", 0, copy)).ops
        hard = augment_image(astronaut, "hard", query_rng(0, "hard", "image", 0, copy)).ops
        assert mild[0] == "resize" and mild[1].startswith("jpeg")
        assert len(set(medium) & medium_ops) >= 2 and set(medium) <= medium_ops | {"resize", medium[-1]}
        assert set(hard) - medium_ops - {"resize", hard[-1]}  # at least one hard-only edit


@pytest.mark.parametrize("level", LEVELS)
def test_text_augmentation_is_deterministic_and_survives_normalisation(level):
    s = "The Bartlett window is very similar to a triangular window, except at the end points."
    a = augment_text(s, level, query_rng(1, level, "text", 0, 0))
    assert a == augment_text(s, level, query_rng(1, level, "text", 0, 0))
    assert normalize_text(a[0], Limits())
    if level != "mild":
        assert any(ord(ch) > 127 for ch in a[0])  # homoglyphs, emoji or zero-width


def test_mild_text_edit_keeps_the_words_in_order():
    s = "Compute the envelope of a real or complex valued signal."
    t, _ = augment_text(s, "mild", query_rng(0, "mild", "text", 5, 0))
    words = lambda x: "".join(ch for ch in normalize_text(x, Limits()) if ch.isalnum() or ch == " ").split()
    assert words(t) == words(s)


# -- dataset ---------------------------------------------------------------------------------

def test_dedup_drops_stereo_pair_and_colour_copy_of_chessboard():
    originals = load_originals()
    kept, dropped = dedup_images(originals)
    kept_names = {o.name for o in kept}
    assert ("skimage/chessboard_RGB", "skimage/chessboard_GRAY") in dropped
    assert ("skimage/motorcycle_right", "skimage/motorcycle_left") in dropped
    assert "skimage/astronaut" in kept_names and "skimage/camera" in kept_names
    assert len(kept) == len(originals) - len(dropped)


def test_image_benchmark_seeds_and_distractors_are_disjoint_and_tiles_never_whole():
    b = build_image_benchmark(seed=0)
    seeds, dis = {o.name for o in b.seeds}, {o.name for o in b.distractors}
    assert not seeds & dis
    tile_sources = {n.split("#")[0] for n in seeds | dis if "#" in n}
    # A tile source's full image would contain its tiles: it is never an item itself.
    assert not tile_sources & (seeds | dis)
    assert len(dis) >= 200 and len(b.seeds) >= 100


def test_sentence_dedup_drops_high_word_overlap():
    s = ["Return the sum of the array elements over a given axis.",
         "Return the sum of array elements over the given axis.",
         "Open a file and return a stream object for it."]
    assert dedup_sentences(s) == [s[0], s[2]]


def test_text_benchmark_is_disjoint_and_seeded():
    a = build_text_benchmark(seed=3, n_seeds=100, n_distractors=500)
    b = build_text_benchmark(seed=3, n_seeds=100, n_distractors=500)
    assert a.seeds == b.seeds and a.distractors == b.distractors
    assert len(a.distractors) == 500 and not set(a.seeds) & set(a.distractors)


# -- end to end ------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_run_writes_report_plots_and_loadable_thresholds(tmp_path, capsys):
    from tools.eval.cli import main

    out = tmp_path / "out"
    cfg_path = tmp_path / "cfg" / "spaces.toml"
    assert main(["--quick", "--out", str(out), "--write-config", str(cfg_path)]) == 0
    report = json.loads((out / "report.json").read_text())
    spaces = {(r["modality"], r["space"]) for r in report["results"]}
    assert {("image", "image:effnet-lite0"), ("image", "pdq"), ("text", "text:minilm-l6")} <= spaces
    for r in report["results"]:
        assert 0.0 <= r["micro_ap"] <= 1.0 and 0.0 <= r["recall_at_1"] <= 1.0
    for name in report["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = load_config(out / "thresholds.toml")
    assert {"image:effnet-lite0", "text:minilm-l6", "pdq"} <= set(cfg.spaces)
    assert cfg_path.read_text() == (out / "thresholds.toml").read_text()
    assert "microAP" in capsys.readouterr().out
