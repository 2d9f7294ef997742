"""dedup-eval: metrics against hand-computed cases, seeded augmentations, dataset dedup, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dedup.config import Limits, load_config
from dedup.errors import InvalidArgument
from dedup.items import decode_image, normalize_text
from tools.eval import metrics
from tools.eval.augment import (EDIT_TYPES, LEVELS, apply_edit, augment_image, augment_text,
                                query_rng)
from tools.eval.dataset import (HALVES, Original, Picture, build_picture_cache,
                                build_text_benchmark, dedup_images, dedup_sentences,
                                load_originals, near_duplicate_groups, split_pictures)
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
    scored = {("image:effnet-lite0", "easy"): _scored(pos, neg)}
    cal = calibrate("image:effnet-lite0", scored, ("easy",), 0.001)
    # floor(0.001 * 1000) = 1 negative may pass: just above the second highest, rounded up.
    assert cal["threshold"] == pytest.approx(0.8002)
    assert cal["achieved_fmr"] == pytest.approx(0.001) and cal["recall"] == pytest.approx(0.75)

    bits = 256
    neg_b = 1 - np.r_[np.full(998, 60), [40, 30]] / bits  # two close negatives
    pos_b = 1 - np.array([0, 10, 35, 50]) / bits
    scored_b = {("pdq", "easy"): _scored(pos_b, neg_b)}
    cal_b = calibrate("pdq", scored_b, ("easy",), 0.001, binary_bits=bits)
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


def test_exact_interval_covers_the_rate_and_is_wider_than_wilson():
    lo, hi = metrics.exact_interval(9, 10_000)
    wlo, whi = metrics.wilson_interval(9, 10_000)
    assert lo < 9 / 10_000 < hi and lo < wlo and hi > whi * 0.99
    assert metrics.exact_interval(0, 1000)[0] == 0.0
    assert metrics.exact_interval(0, 1000)[1] == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-6)


# -- augmentations ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pictures():
    return {o.name: o.image for o in load_originals()}


@pytest.fixture(scope="module")
def astronaut(pictures):
    return pictures["skimage/astronaut"]


@pytest.fixture(scope="module")
def fillers(pictures):
    return [pictures[n] for n in ("skimage/coffee", "skimage/chelsea", "sklearn/china",
                                  "skimage/rocket")]


def _differs(a, b) -> bool:
    if a.size != b.size:
        return True
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean()) > 0.5


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("edit", EDIT_TYPES)
def test_every_edit_is_deterministic_per_seed_and_changes_the_image(astronaut, fillers, edit, level):
    a = augment_image(astronaut, level, query_rng(7, level, "image", 3, 1), edit, fillers)
    b = augment_image(astronaut, level, query_rng(7, level, "image", 3, 1), edit, fillers)
    c = augment_image(astronaut, level, query_rng(8, level, "image", 3, 1), edit, fillers)
    assert a == b and a.data != c.data
    assert a.edit == edit and a.level == level and a.ops[0].split(":")[0] == edit
    out, tag = apply_edit(astronaut, edit, level, query_rng(7, level, "image", 3, 2), fillers)
    assert tag.split(":")[0] == edit and _differs(out, astronaut)
    img = decode_image(a.data, Limits())  # the service's decoder accepts every query
    assert img.mode == "RGB" and min(img.size) >= 16 and max(img.size) <= 1024


def test_edits_grow_with_the_level(astronaut):
    def crop_area(level):
        out, _ = apply_edit(astronaut, "crop", level, query_rng(0, level, "image", 0, 0))
        return out.width * out.height
    assert crop_area("easy") > crop_area("medium") > crop_area("hard")
    angles = [abs(float(apply_edit(astronaut, "rotate", lv, query_rng(0, lv, "image", 0, 0))[1]
                        .split(":")[1])) for lv in LEVELS]
    assert angles[0] < 5 <= angles[1] < 10 <= angles[2] <= 20


def test_sticker_edit_mirrors_and_collage_keeps_the_picture_as_one_panel(astronaut, fillers):
    out, _ = apply_edit(astronaut, "sticker_mirror", "easy", query_rng(0, "easy", "image", 0, 0))
    from PIL import ImageOps

    diff = lambda x, y: np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).mean()
    assert diff(out, ImageOps.mirror(astronaut)) < diff(out, astronaut)
    out, tag = apply_edit(astronaut, "collage", "hard", query_rng(0, "hard", "image", 0, 0), fillers)
    assert tag.startswith("collage:k4") and out.width > astronaut.width * 0.5
    with pytest.raises(InvalidArgument):  # a collage needs pictures to sit beside
        apply_edit(astronaut, "collage", "easy", query_rng(0, "easy", "image", 0, 0), [])


@pytest.mark.parametrize("level", LEVELS)
def test_text_augmentation_is_deterministic_and_survives_normalisation(level):
    s = "The Bartlett window is very similar to a triangular window, except at the end points."
    a = augment_text(s, level, query_rng(1, level, "text", 0, 0))
    assert a == augment_text(s, level, query_rng(1, level, "text", 0, 0))
    assert normalize_text(a[0], Limits())
    if level != "easy":
        assert any(ord(ch) > 127 for ch in a[0])  # homoglyphs, emoji or zero-width


def test_easy_text_edit_keeps_the_words_in_order():
    s = "Compute the envelope of a real or complex valued signal."
    t, _ = augment_text(s, "easy", query_rng(0, "easy", "text", 5, 0))
    words = lambda x: "".join(ch for ch in normalize_text(x, Limits()) if ch.isalnum() or ch == " ").split()
    assert words(t) == words(s)


# -- sources and dataset ---------------------------------------------------------------------

def test_reserved_packages_are_refused_everywhere(tmp_path):
    from tools.datasources import (BENCH_PACKAGES, RESERVED, TRAIN_PACKAGES, check_allowed,
                                   ensure_installed, is_reserved, package_files, side_of)

    relatives = ["fortunes-min", "fortune-mod", "lomiri-wallpapers-20.04", "tuxpaint-stamps-default",
                 "tuxpaint-config", "plasma-wallpapers-addons", "mate-backgrounds", "ukui-wallpapers"]
    for pkg in [p.rstrip("*") + ("x" if p.endswith("*") else "") for p in RESERVED] + relatives:
        assert is_reserved(pkg)
        for side in ("train", "bench"):
            with pytest.raises(InvalidArgument):
                check_allowed(pkg, side)
            with pytest.raises(InvalidArgument):
                ensure_installed([pkg], side)
            with pytest.raises(InvalidArgument):
                package_files(pkg, side)
        with pytest.raises(InvalidArgument):  # refused before anything is installed or read
            build_picture_cache(tmp_path / "c", packages=(pkg,), include_pip=False, train_hashes={})
    assert not set(BENCH_PACKAGES) & set(TRAIN_PACKAGES)
    assert all(side_of(p) == "bench" and not is_reserved(p) for p in BENCH_PACKAGES)
    with pytest.raises(InvalidArgument):  # a training package never feeds the benchmark
        build_picture_cache(tmp_path / "c", packages=(TRAIN_PACKAGES[0],), include_pip=False,
                            train_hashes={})


def test_a_picture_whose_file_a_training_package_ships_is_dropped(tmp_path):
    import hashlib
    import json

    from tools.eval.dataset import _pip_files

    files = {name: path for _, name, path in _pip_files()}
    sha = hashlib.sha256(files["skimage/astronaut"].read_bytes()).hexdigest()
    pics = build_picture_cache(tmp_path / "c", packages=(), train_hashes={sha: "x:astronaut.png"})
    names = {p.name for p in pics}
    assert "skimage/astronaut" not in names and "skimage/camera" in names
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["training_duplicates"] == ["skimage/astronaut"]
    assert manifest["stats"]["training_duplicate"] == 1


def test_training_hashes_cover_installed_training_packages():
    from tools.datasources import TRAIN_PACKAGES, installed_version, package_files
    from tools.eval.dataset import _file_sha, training_hashes

    installed = [p for p in TRAIN_PACKAGES if installed_version(p)]
    if not installed:
        pytest.skip("no training-side package installed on this machine")
    files = package_files(installed[0], "train")
    hashes = training_hashes()
    assert files and all(_file_sha(f) in hashes for f in files[:: max(1, len(files) // 20)])


def test_dedup_drops_stereo_pair_colour_copy_and_aspect_variant():
    originals = load_originals()
    china = next(o.image for o in originals if o.name == "sklearn/china")  # 640 x 427
    narrow = china.crop((35, 0, 605, 427))  # the same artwork cut to 4:3, as wallpapers ship
    items = originals + [Original("test/china_4x3", narrow)]
    kept, dropped = dedup_images(items)
    kept_names = {o.name for o in kept}
    assert ("skimage/chessboard_RGB", "skimage/chessboard_GRAY") in dropped
    assert ("skimage/motorcycle_right", "skimage/motorcycle_left") in dropped
    assert ("test/china_4x3", "sklearn/china") in dropped
    assert "skimage/astronaut" in kept_names and "skimage/camera" in kept_names
    assert len(kept) == len(items) - len(dropped)


def test_near_duplicate_check_groups_recoloured_and_reused_artwork(tmp_path, pictures):
    """A recolour of a picture and a cut-out of it pasted into another scene are the same
    content (the benchmark must not count their matches as false); unrelated pictures stay."""
    astronaut = pictures["skimage/astronaut"]
    recolour = Image.fromarray(np.asarray(astronaut)[..., [1, 2, 0]])
    scene = pictures["skimage/coffee"].copy()
    scene.paste(astronaut.crop((120, 30, 370, 280)), (300, 60))
    images = {"astronaut": astronaut, "recolour": recolour, "scene": scene,
              **{n: pictures[f"skimage/{n}"] for n in ("chelsea", "camera", "rocket")},
              "china": pictures["sklearn/china"]}
    pics = []
    for pid, (name, img) in enumerate(images.items()):
        img.save(tmp_path / f"{pid}.png")
        pics.append(Picture(pid, name, "test", name, str(tmp_path / f"{pid}.png")))
    found = near_duplicate_groups(pics)
    assert found["groups"] == [[0, 1, 2]]
    assert found["drop"] == [1, 2]
    assert found["pairs"] == len(pics) * (len(pics) - 1) // 2  # so few: every pair is checked


def _fake_pictures(n_families=60, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_families):
        for _ in range(int(rng.integers(1, 30))):
            out.append(Picture(len(out), f"p{len(out)}", "pkg", f"fam{f}", "-"))
    return out


def test_split_never_puts_a_family_on_two_sides():
    pics = _fake_pictures()
    bench = split_pictures(pics, n_seeds=100, seed=3)
    side_of = {}
    for half in HALVES:
        assert len(bench.seeds[half]) == 50
        for role, group in (("seed", bench.seeds[half]), ("distractor", bench.distractors[half])):
            for p in group:
                assert side_of.setdefault(p.family, (half, role)) == (half, role)
    pids = [p.pid for h in HALVES for p in bench.seeds[h] + bench.distractors[h]]
    assert len(pids) == len(set(pids))
    again = split_pictures(pics, n_seeds=100, seed=3)
    assert [p.pid for p in again.all_seeds] == [p.pid for p in bench.all_seeds]
    assert [p.pid for p in split_pictures(pics, n_seeds=100, seed=4).all_seeds] != \
        [p.pid for p in bench.all_seeds]


def test_query_plan_spreads_levels_and_edits_and_fills_collages_from_the_same_half():
    from tools.eval.imagebench import ImageBenchSettings, plan_queries

    bench = split_pictures(_fake_pictures(120), n_seeds=200, seed=0)
    s = ImageBenchSettings(n_seeds=200, n_negatives=3000, pos_per_level=2, calib_pos_per_level=1)
    qs = plan_queries(bench, s)
    pos = [q for q in qs if q.truth >= 0]
    neg = [q for q in qs if q.truth < 0]
    assert len(pos) == 100 * 2 * len(LEVELS) + 100 * len(LEVELS) and abs(len(neg) - 3000) <= 2
    per_seed = {}
    for q in pos:
        per_seed.setdefault((q.half, q.truth), []).append(q.level)
    assert len(per_seed) == 200
    assert all(sorted(v) == sorted(LEVELS * (2 if h == "heldout" else 1))
               for (h, _), v in per_seed.items())
    for group in (pos, neg):
        counts = np.array([sum(q.edit == e for q in group) for e in EDIT_TYPES])
        assert counts.min() >= 0.8 * counts.mean()
    half_of = {p.pid: h for h in HALVES for p in bench.seeds[h] + bench.distractors[h]}
    distractor_pids = {p.pid for h in HALVES for p in bench.distractors[h]}
    for q in qs:
        assert q.half == half_of[q.pid]
        if q.edit == "collage":
            assert q.fillers and q.pid not in q.fillers
            assert all(f in distractor_pids and half_of[f] == q.half for f in q.fillers)
        else:
            assert not q.fillers


def test_missing_scores_are_floored_and_counted_as_ambiguous_only_above_the_floor():
    from dedup.types import LookupResult, Neighbor, Verdict
    from tools.eval.augment import Augmented
    from tools.eval.imagebench import Query, _ambiguous, read_result, scores_of

    spaces = ("a", "b")
    id_to_seed = {101: 0, 102: 1, 103: 2}
    nbrs = (Neighbor(101, "a", 0.9), Neighbor(102, "a", 0.8), Neighbor(103, "a", 0.7))
    res = LookupResult(verdicts=(Verdict("bench.s00001", True, 0.8, 0.1),), neighbors=nbrs,
                       exact_match=None)
    q_pos = Query(0, "heldout", 5, 2, "easy", "crop", 0)
    q_miss = Query(1, "heldout", 7, 4, "easy", "crop", 0)  # its seed is not listed
    q_neg = Query(2, "heldout", 6, -1, "easy", "crop", 0)
    aug = Augmented(b"", ("crop",), "crop", "easy")
    r_pos, r_miss, r_neg = (read_result(q, aug, res, id_to_seed, spaces, top_k=3)
                            for q in (q_pos, q_miss, q_neg))
    assert r_pos.best == {"a": 0.9} and r_pos.true == {"a": 0.7} and r_pos.best_seed == {"a": 0}
    # top_k is per space: "a" listed its 3, so a seed it did not list scores below 0.7;
    # "b" listed none at all, so nothing of it was cut
    assert r_pos.floor == {"a": 0.7, "b": -np.inf}
    assert r_pos.matched == (1,)
    sc = scores_of([r_pos, r_miss, r_neg], spaces)
    assert list(sc.wrong) == [True, True, True] and list(sc.right) == [False, False, False]
    assert _ambiguous(sc, "a", 0.75) == {"negatives": 0, "positives": 0}
    assert _ambiguous(sc, "a", 0.6) == {"negatives": 0, "positives": 1}  # r_miss might reach it
    assert _ambiguous(sc, "b", 0.0) == {"negatives": 0, "positives": 0}
    short = read_result(q_miss, aug, LookupResult((), nbrs[:1], None), id_to_seed, spaces, top_k=3)
    assert short.floor["a"] == -np.inf  # fewer than top_k listed: nothing was cut


def test_checkpoint_gives_back_answered_queries_and_refuses_other_settings(tmp_path):
    from tools.eval.imagebench import Checkpoint, Query, Record

    qs = [Query(0, "heldout", 5, 2, "easy", "crop", 0), Query(1, "heldout", 6, -1, "hard", "blur", 1)]
    ckpt = Checkpoint(tmp_path, qs)
    assert ckpt.seeds() is None and ckpt.records("heldout") == []
    ckpt.save_seeds({101: 0, 102: 1})
    rec = Record(qs[0], ("crop:0.9x0.9", "jpeg80"), None, {"a": 0.9}, {"a": 2}, {"a": 0.7},
                 {"a": 0.5, "b": -np.inf}, (2,))
    ckpt.appender("heldout")([rec])
    again = Checkpoint(tmp_path, qs)
    assert again.seeds() == {101: 0, 102: 1}
    assert again.records("heldout") == [rec]
    other = [Query(0, "heldout", 5, 2, "easy", "rotate", 0)]  # planned with other settings
    with pytest.raises(InvalidArgument):
        Checkpoint(tmp_path, other).records("heldout")


# -- texts -----------------------------------------------------------------------------------

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
def test_quick_image_run_through_a_real_server_reports_heldout_figures(tmp_path, capsys):
    import gzip

    from tools.eval.cli import main

    out = tmp_path / "out"
    cfg_path = tmp_path / "cfg" / "spaces.toml"
    assert main(["--modality", "image", "--quick", "--out", str(out),
                 "--write-config", str(cfg_path)]) == 0
    report = json.loads((out / "report.json").read_text())
    image = report["image"]
    assert set(image["spaces"]) == {"image:copydet-lite0", "pdq"}
    for space, r in image["spaces"].items():
        ho = r["heldout"]
        assert {"threshold", "fmr", "recall", "recall_at_1", "threshold_free", "ambiguous"} <= set(ho)
        assert ho["fmr"]["n"] > 0 and 0 <= ho["fmr"]["ci95_exact"][0] <= ho["fmr"]["ci95_exact"][1]
        assert set(ho["recall"]["by_level"]) == set(LEVELS)
        assert set(ho["recall"]["by_edit"]) <= set(EDIT_TYPES) and ho["recall"]["by_edit"]
        assert r["calibration"]["n_negative"] > 0
    assert image["spaces"]["pdq"]["calibration"]["hamming_threshold"] is not None
    # The default image space verifies: thresholds come from the joint calibration, which keeps
    # the calibration verdicts' wrong labels (edited copies included) within the target.
    for r in image["spaces"].values():
        joint = r["calibration"]["joint"]
        assert "own_threshold" in r["calibration"] and joint["lookups"] > 0
        assert joint["verdict_fmr"] <= image["settings"]["target_fmr"]
    v = image["verdicts"]["heldout_at_calibrated"]
    assert {"wrong_label", "recall", "thresholds", "negatives_above_any_threshold"} <= set(v)
    assert v["errors"] == 0 and {"all", "negatives", "positives", "by_level", "by_edit"} <= set(v["wrong_label"])
    assert v["thresholds"] == {sp: r["calibration"]["threshold"] for sp, r in image["spaces"].items()}
    counts = image["dataset"]["queries"]
    n_queries = sum(c["positives"] + c["negatives"] for c in counts.values())
    with gzip.open(out / "queries.jsonl.gz", "rt") as f:
        assert sum(1 for _ in f) == n_queries
    for name in image["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = load_config(out / "thresholds.toml")
    assert {"image:copydet-lite0", "pdq"} <= set(cfg.spaces)
    assert cfg.spaces["pdq"].threshold == image["spaces"]["pdq"]["calibration"]["threshold"]
    assert cfg_path.read_text() == (out / "thresholds.toml").read_text()
    assert "held-out FMR" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_text_run_writes_report_plots_and_loadable_thresholds(tmp_path, capsys):
    from tools.eval.cli import main

    out = tmp_path / "out"
    assert main(["--modality", "text", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    spaces = {r["space"] for r in report["text"]["results"]}
    assert "text:minilm-l6" in spaces
    for r in report["text"]["results"]:
        assert 0.0 <= r["micro_ap"] <= 1.0 and 0.0 <= r["recall_at_1"] <= 1.0
    for name in report["text"]["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "text:minilm-l6" in load_config(out / "thresholds.toml").spaces
    assert "microAP" in capsys.readouterr().out
