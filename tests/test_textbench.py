"""The text benchmark, end to end on a tiny set: real servers, real models, real edits."""

from __future__ import annotations

import re
import tomllib

import pytest

from dedup.config import Config
from tools.eval import textbench as tb
from tools.eval import textedits as te


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("textbench")
    args = tb.parser().parse_args(["--quick", "--out", str(out), "--cache-dir", str(out / "cache")])
    return out, tb.run(tb.settings_from(args), out)


@pytest.mark.slow
def test_quick_run_reports_every_level_edit_type_and_band(quick_run):
    out, result = quick_run
    held = result["heldout"]
    assert set(held["levels"]) == set(te.LEVELS)
    assert set(held["edit_types"]) == {t for lv in te.LEVELS for t in te.TYPES[lv]}
    assert set(held["bands"]) == {"40-100", "100-200", "200-400"}
    for level in held["levels"].values():
        for key in ("verdict", "verdict_with_containment"):
            assert {"recall", "false_match", "fmr_negatives"} <= set(level[key])
            ci = level[key]["false_match"]["ci95"]
            assert 0 <= ci[0] <= level[key]["false_match"]["rate"] <= ci[1] <= 1
        assert set(level["spaces"]) == {*tb.SPACES, tb.CONTAINMENT}
    assert result["dataset"]["seeds"] == 30
    assert result["dataset"]["negative_queries"] == 300  # one edited copy each
    # The verdict rule applied to per-space neighbours is what one server with all spaces says.
    check = result["server_verdict_check"]
    assert check["n"] > 0
    assert check["recall_agrees"] == 1.0 and check["false_match_agrees"] == 1.0
    assert (out / "report.md").read_text().startswith("## Held-out verdicts")
    assert (out / "scores.npz").exists()


@pytest.mark.slow
def test_quick_run_thresholds_are_a_valid_config_and_match_exactly(quick_run):
    out, result = quick_run
    text = (out / "thresholds.toml").read_text()
    raw = tomllib.loads(text)
    Config.model_validate({"spaces": raw["spaces"]})  # loadable as the service's config as is
    assert set(raw["spaces"]) == set(tb.SPACES)
    assert "# [verify.text]" in text  # the verifier's threshold, for the service to read
    assert raw["spaces"]["text:exact"]["threshold"] == 1.0
    cal = result["calibration"]
    assert cal["calib_fmr_negatives"] <= cal["target_fmr"]
    # Easy copies of the seeds are found: case, spacing, punctuation and the like.
    easy = result["heldout"]["levels"]["easy"]["verdict_with_containment"]["recall"]
    assert easy["rate"] >= 0.8


def test_edits_are_seeded_and_tagged():
    text = "Your package could not be delivered due to an unpaid fee of five dollars."
    for level in te.LEVELS:
        for primary in te.TYPES[level]:
            a = te.edit_text(text, level, primary, te.query_rng(0, level, primary))
            b = te.edit_text(text, level, primary, te.query_rng(0, level, primary))
            assert a == b and a.primary == primary and primary in a.edits
            assert a.text != text or primary in ("case", "punctuation")


def test_partial_copy_keeps_sixty_to_seventy_percent_of_the_words():
    words = " ".join(f"w{i}" for i in range(100))
    for k in range(20):
        e = te.edit_text(words, "hard", "partial", te.query_rng(1, k))
        # An extra easy edit may change case or run words together; the words stay countable.
        n = len(re.findall(r"w\d+", e.text.lower()))
        assert 60 <= n <= 70


def test_split_is_by_source_text():
    texts = [f"text number {i}" for i in range(400)]
    sides = [tb.side_of(t, 0) for t in texts]
    assert 150 < sides.count("calib") < 250
    assert sides == [tb.side_of(t, 0) for t in texts]
