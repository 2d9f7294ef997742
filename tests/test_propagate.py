"""Label propagation: neighbours -> verdicts, per space and per label thresholds."""

from dedup.propagate import EXACT_SPACE, Thresholds, propagate
from dedup.types import Label, Seed

SCAM = Label("spam.scam", 2)
GORE = Label("violence.graphic", 5)


def seed(i, *labels, removed=False):
    return Seed(i, tuple(labels), "case-1", "", 0.0, f"{i:064x}", ("image",), removed=removed)


SEEDS = {1: seed(1, SCAM), 2: seed(2, GORE, SCAM), 3: seed(3, GORE, removed=True)}
TH = Thresholds({"image:a": 0.8, "text:b": 0.9}, {"image:a": {"spam.scam": 0.95}})


def by_label(verdicts):
    return {v.label: v for v in verdicts}


def test_neighbor_above_space_threshold_matches_its_labels():
    verdicts, neighbors = propagate([("image:a", 2, 0.85)], SEEDS, TH)
    v = by_label(verdicts)
    assert v["violence.graphic"].matched and v["violence.graphic"].severity == 5
    assert abs(v["violence.graphic"].margin - 0.05) < 1e-9
    assert [n.seed_id for n in v["violence.graphic"].evidence] == [2]
    # the per-label override is stricter for scam in this space
    assert not v["spam.scam"].matched
    assert [n.seed_id for n in neighbors] == [2]


def test_removed_seed_never_in_verdict_or_neighbors():
    verdicts, neighbors = propagate([("image:a", 3, 0.99)], SEEDS, TH)
    assert verdicts == () and neighbors == ()


def test_unknown_seed_is_dropped():
    assert propagate([("image:a", 99, 0.99)], SEEDS, TH) == ((), ())


def test_spaces_combine_by_or_and_rank_by_margin():
    hits = [("image:a", 1, 0.5), ("text:b", 1, 0.93)]
    (v,), neighbors = propagate(hits, SEEDS, TH)
    assert v.label == "spam.scam" and v.matched
    assert v.evidence[0].space == "text:b"
    assert [n.score for n in neighbors] == [0.93, 0.5]


def test_exact_match_always_matches_all_labels():
    verdicts, neighbors = propagate([], SEEDS, Thresholds({"image:a": 0.999}), exact_seed=SEEDS[2])
    assert {v.label for v in verdicts if v.matched} == {"spam.scam", "violence.graphic"}
    assert neighbors[0].space == EXACT_SPACE


def test_label_filter_restricts_verdicts():
    verdicts, _ = propagate([("image:a", 2, 0.99)], SEEDS, TH, labels=["spam.scam"])
    assert [v.label for v in verdicts] == ["spam.scam"]


def test_per_call_threshold_override():
    hits = [("image:a", 2, 0.85)]
    assert not by_label(propagate(hits, SEEDS, TH.with_override(0.9))[0])["violence.graphic"].matched
    assert by_label(propagate(hits, SEEDS, TH.with_override({"image:a": 0.5}))[0])["spam.scam"].matched


def test_matched_verdicts_sort_first():
    verdicts, _ = propagate([("image:a", 2, 0.85)], SEEDS, TH)
    assert [v.matched for v in verdicts] == [True, False]
