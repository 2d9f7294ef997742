"""Text near-duplicates: normalised forms, the exact and MinHash spaces, the containment verifier."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from dedup.config import Limits
from dedup.embed import create_embedder
from dedup.embed.minhash import jaccard_from_score
from dedup.embed.pdq import hamming
from dedup.items import normalize_text
from dedup.text import normalize
from dedup.text.normalize import FORM_VERSION, aggressive_form, known_words, match_form
from dedup.text.shingles import shingle_hashes
from dedup.verify import text as vtext

LIMITS = Limits()


def norm(t: str) -> str:
    return normalize_text(t, LIMITS)


# --- match form ------------------------------------------------------------------------------


def test_docstring_examples_hold():
    assert doctest.testmod(normalize).failed == 0


@pytest.mark.parametrize("disguised, clean", [
    ("сlаim yоur prizе", "claim your prize"),  # Cyrillic с а о е
    ("ρayρal lοgin", "paypal login"),  # Greek ρ ο
    ("ɑpple ѕtore", "apple store"),  # Latin alpha, Cyrillic dze
    ("Ｆｒｅｅ 𝐠𝐢𝐟𝐭", "free gift"),  # fullwidth, mathematical bold (NFKC)
    ("frée çash", "free cash"),  # accents
])
def test_lookalike_letters_become_latin(disguised, clean):
    assert match_form(norm(disguised)) == clean


@pytest.mark.parametrize("disguised, clean", [
    ("fr33 m0n3y", "free money"),  # 0 3
    ("c1ick the 1ink", "click the link"),  # 1 for l, chosen by the known word
    ("w1n a pr1ze", "win a prize"),  # 1 for i
    ("7ime 4 ca5h", "time 4 cash"),  # 7 5 inside words; a lone 4 is a number
    ("$end c@sh", "send cash"),  # $ leading a word, @ inside it
    ("fr!end", "friend"),  # ! inside a word
    ("0f t0 b3 1n 4nd a11 file$", "of to be in and all files"),  # short words, trailing $
])
def test_digits_and_symbols_read_as_letters_inside_words(disguised, clean):
    assert match_form(norm(disguised)) == clean


@pytest.mark.parametrize("text, form", [
    ("Win $1000 in 24 hours", "win $1000 in 24 hours"),
    ("rated 3.5 by 1,000 users, 10% off", "rated 3.5 by 1,000 users 10% off"),
    ("open 24/7 from 10am, 1st floor", "open 24/7 from 10am 1st floor"),
    ("iphone 15 and mp3 files", "iphone 15 and mp3 files"),
])
def test_real_numbers_keep_their_digits(text, form):
    assert match_form(norm(text)) == form


def test_apostrophes_are_removed_without_splitting_words():
    assert match_form("don't") == match_form("don’t") == match_form("dont") == "dont"
    assert match_form("it's the user's") == "its the users"


def test_zero_width_and_emoji_are_removed():
    assert match_form("fr\u200bee gi\u200dft 🔥🎁 now 👍🏽") == "free gift now"
    assert match_form("Hi👋there") == "hi there"


def test_spaced_out_and_dotted_words_are_rejoined():
    assert match_form("get your f r e e phone") == "get your free phone"
    assert match_form("a f r e e gift") == "a free gift"
    assert match_form("f.r.e.e c-a-s-h") == "free cash"
    assert match_form("f r 3 3 stuff") == "free stuff"
    assert match_form("pages 1 2 3") == "pages 1 2 3"  # no letters: not a word


def test_text_of_symbols_only_keeps_a_form():
    assert match_form("🔥🔥🔥") == "🔥🔥🔥"
    assert aggressive_form("🔥🔥🔥") == "🔥🔥🔥"
    assert match_form("日本語のテキスト。") == "日本語のテキスト"


def test_forms_are_idempotent_and_accept_raw_or_normalised_text():
    for t in ("G3t y0ur FR33 1Ph0ne!!! 🔥", "сlаim — now", "don't  wait\n24 hours"):
        assert match_form(t) == match_form(norm(t)) == match_form(match_form(t))


def test_aggressive_form_ignores_spaces_punctuation_and_disguise():
    variants = ["Get your FREE iPhone now!!!", "getyourfreeiphonenow", "g3t y0ur fr33 i-ph0ne n0w",
                "Get  your free\tiPhone... now", "GET YOUR FREE IPHONE NOW 🔥",
                "Get yоur frее iPhоne now", "G e t your free iPhone now"]
    forms = {aggressive_form(norm(v)) for v in variants}
    assert forms == {"getyourfreeiphonenow"}
    assert aggressive_form("hello") == aggressive_form("he11o") == "heiio"  # l read as i
    assert aggressive_form("go to it") == aggressive_form("90 70 17")  # digits fold everywhere


def test_lexicon_is_the_packaged_vocabulary():
    words = known_words()
    assert {"free", "click", "money", "friend"} <= words.keys()
    assert words["all"] < words["ali"]  # listed by frequency: "a11" reads as "all"
    assert len(words) > 20000


# --- text:exact --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exact():
    return create_embedder("text:exact")


@pytest.fixture(scope="module")
def minhash():
    return create_embedder("text:minhash")


def test_binary_text_spaces_follow_the_embedder_protocol(exact, minhash):
    for emb, bits in ((exact, 64), (minhash, 2048)):
        assert emb.binary and emb.metric == "hamming" and emb.dim == bits
        assert emb.modalities == {"text"}
        codes = emb.embed_texts(["one text", "another text"])
        assert codes.dtype == np.uint8 and codes.shape == (2, bits // 8)
        assert codes.flags["C_CONTIGUOUS"]
        assert emb.embed_texts([]).shape == (0, bits // 8)
    assert exact.model_id == f"text:exact@{FORM_VERSION}-blake2b64"
    assert minhash.model_id.startswith(f"text:minhash@{FORM_VERSION}-k5-b2048-")


def test_every_text_space_model_id_carries_the_form_version(exact, minhash):
    from dedup.embed import minilm as minilm_mod

    assert FORM_VERSION in exact.model_id and FORM_VERSION in minhash.model_id
    assert minilm_mod.FORM_VERSION == FORM_VERSION  # the id suffix is this constant


def test_exact_space_equal_under_cosmetic_edits_only(exact):
    clean = "Your package could not be delivered. Pay the small fee at the link below."
    cosmetic = [
        "YOUR PACKAGE COULD NOT BE DELIVERED. PAY THE SMALL FEE AT THE LINK BELOW!!!",
        "your package could not be delivered pay the small fee at the link below",
        "Your  package could\nnot be delivered... Pay the small fee, at the link below.",
        "Your packagecould not be delivered. Pay thesmall fee at the linkbelow.",
        "Yоur раckage cоuld nоt be delivered. Pay the small fee at the link belоw.",
        "Y0ur p@ckage c0uld n0t be de1ivered. P@y the $mall fee at the 1ink be10w.",
        "Your pack\u200bage could not be 🔥 delivered. Pay the small fee at the l i n k below.",
    ]
    codes = exact.embed_texts([norm(t) for t in [clean] + cosmetic])
    assert (codes == codes[0]).all()
    other = exact.embed_texts([norm("Your package was delivered. Pay the small fee at the link below.")])
    assert hamming(codes[0], other[0]) > 0
    # Scores are 1 - hamming/64: equality is 1.0, the threshold.
    assert 1 - hamming(codes[0], codes[1]) / 64 == 1.0


# --- text:minhash ------------------------------------------------------------------------------


def _word_texts(rng, n_pairs):
    words = sorted(known_words())
    pairs = []
    for _ in range(n_pairs):
        a = [words[i] for i in rng.integers(0, len(words), int(rng.integers(8, 60)))]
        b = list(a)
        for i in np.flatnonzero(rng.random(len(b)) < rng.uniform(0, 1)):
            b[i] = words[int(rng.integers(0, len(words)))]
        pairs.append((" ".join(a), " ".join(b)))
    return pairs


def test_minhash_score_tracks_true_jaccard_within_the_stated_error(minhash):
    """1 - hamming/bits estimates (1 + J)/2; J read back has standard error <= 0.022 at 2048
    bits, so over 150 random pairs the mean error stays under 0.03 and the worst under 0.1."""
    rng = np.random.default_rng(7)
    pairs = _word_texts(rng, 150)
    a = minhash.embed_texts([p[0] for p in pairs])
    b = minhash.embed_texts([p[1] for p in pairs])
    est = jaccard_from_score(1 - hamming(a, b) / minhash.dim)
    true = []
    for x, y in pairs:
        sx, sy = shingle_hashes(aggressive_form(x)), shingle_hashes(aggressive_form(y))
        inter = np.intersect1d(sx, sy).size
        true.append(inter / (sx.size + sy.size - inter))
    true = np.array(true)
    assert true.min() < 0.2 and true.max() > 0.8  # the pairs span the scale
    err = np.abs(est - true)
    assert err.mean() < 0.03
    assert err.max() < 0.1


def test_minhash_near_copy_scores_above_unrelated(minhash):
    seed = norm("Congratulations! You have been selected to receive a $500 gift card. "
                "Click the link below to claim it before the offer ends tonight.")
    copy = norm("C0ngratulati0ns!! Y0u have been $elected t0 receive a $500 gift card "
                "Check this out: click the link below 🔥")
    other = norm("The meeting has moved to Tuesday afternoon; bring the quarterly figures "
                 "and the slides for the budget review.")
    c = minhash.embed_texts([seed, copy, other])
    s_copy = 1 - hamming(c[0], c[1]) / minhash.dim
    s_other = 1 - hamming(c[0], c[2]) / minhash.dim
    assert s_copy > 0.7
    assert s_other < 0.6


def test_minhash_is_deterministic_across_instances(minhash):
    other = create_embedder("text:minhash")
    texts = ["some text to hash", "another one"]
    np.testing.assert_array_equal(minhash.embed_texts(texts), other.embed_texts(texts))


# --- containment verifier --------------------------------------------------------------------


SEED = ("Your bank account has been temporarily locked after suspicious activity. To restore "
        "access, verify your identity at the secure link below within 24 hours or your account "
        "will be permanently closed.")


def test_containment_catches_a_sixty_percent_partial_copy():
    words = SEED.split()
    part = " ".join(words[5:5 + int(0.6 * len(words))])
    m = vtext.compare(norm(part), norm(SEED))
    assert m.query_in_seed > 0.95
    assert m.jaccard < 0.7  # the sketch's quantity alone would be weak here
    assert m.score > 0.9


def test_containment_catches_the_seed_inside_a_longer_post():
    post = "Check this out: " + SEED + " DM me for more, link in bio #viral #fyp"
    m = vtext.compare(norm(post), norm(SEED))
    assert m.seed_in_query > 0.95 and m.score > 0.9


def test_containment_refuses_a_short_query_inside_a_long_seed():
    m = vtext.compare(norm("verify your identity"), norm(SEED))
    assert m.query_in_seed == 1.0  # every shingle of the query is in the seed...
    assert m.score < 0.2  # ...but it is too short to be a copy of it


def test_containment_of_unrelated_texts_is_low():
    other = ("The meeting has moved to Tuesday afternoon; please bring the quarterly figures and "
             "the slides for the budget review with the regional managers.")
    m = vtext.compare(norm(other), norm(SEED))
    assert m.score < 0.15


def test_rescore_equals_compare_one_by_one():
    q = norm("verify your identity at the secure link below within 24 hours")
    seeds = [norm(SEED), norm("something else entirely, nothing shared here at all")]
    assert vtext.rescore(q, seeds) == [vtext.compare(q, s) for s in seeds]
