"""Seeded near-duplicate edits of texts, in three levels, each query tagged with its edit types.

- easy:   case, whitespace, punctuation, words run together, a trailing hashtag or URL,
          quoting ("RT: ...")
- medium: lookalike letters (Cyrillic/Greek), digit and symbol substitutions (0 for o, 1 for
          l, 3 for e, @ for a, $ for s ...), zero-width characters, emoji between words, one
          spaced-out word, accents, fullwidth/mathematical letters
- hard:   15-25% of words dropped, 15-25% of words swapped with a neighbour, a prefix or a
          suffix sentence ("Check this out:", "DM me for more"), a partial copy keeping
          60-70% of the words

A query has one *primary* edit of its level (``EditedText.primary``, what results are reported
by), and at medium and hard levels sometimes an easy edit on top (in ``EditedText.edits``).
Primary edits cycle through a seeded order, so every type gets its share of each seed's copies.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

import numpy as np

LEVELS = ("easy", "medium", "hard")
EASY = ("case", "whitespace", "punctuation", "run_together", "hashtag", "url", "quote")
MEDIUM = ("lookalike", "digit_symbol", "zero_width", "emoji", "spaced_word", "accents",
          "fullwidth")
HARD = ("word_drop", "word_swap", "prefix", "suffix", "partial")
TYPES = {"easy": EASY, "medium": MEDIUM, "hard": HARD}


@dataclass(frozen=True)
class EditedText:
    """An edited copy: its text, the primary edit type and every edit applied (in order)."""

    text: str
    level: str
    primary: str
    edits: tuple[str, ...]


def query_rng(seed: int, *key) -> np.random.Generator:
    """A generator seeded by (seed, key...): one query's edits never depend on another's."""
    digest = hashlib.sha256(repr((seed, "text") + tuple(key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _words(text: str) -> list[str]:
    return text.split(" ")


# -- easy --------------------------------------------------------------------------------------

def _case(text, rng):
    mode = int(rng.integers(4))
    if mode == 0:
        return text.lower()
    if mode == 1:
        return text.upper()
    if mode == 2:
        return text.title()
    return " ".join(w.upper() if rng.random() < 0.3 else w for w in _words(text))


def _whitespace(text, rng):
    seps = ["  ", "\n", "\t", "   ", " \n "]
    out = [w + (str(rng.choice(seps)) if rng.random() < 0.3 else " ") for w in _words(text)]
    return "  " + "".join(out).rstrip() + " \n"


def _punctuation(text, rng):
    mode = int(rng.integers(4))
    if mode == 0:
        return "".join(ch for ch in text if ch.isalnum() or ch.isspace())
    if mode == 1:
        return text.rstrip(".!?") + str(rng.choice(["!!!", "?!", "...", " !!", "!!1"]))
    if mode == 2:
        return text.replace(", ", " , ").replace(". ", "... ").replace(",", ";")
    return "".join(ch for ch in text if ch not in ".,;:'\"") + "."


def _run_together(text, rng):
    words = _words(text)
    if len(words) < 2:
        return text
    out = [words[0]]
    p = rng.uniform(0.2, 0.5)
    for w in words[1:]:
        if rng.random() < p:
            out[-1] += w
        else:
            out.append(w)
    return " ".join(out)


_TAGS = ["#viral", "#fyp", "#repost", "#share", "#truth", "#news", "#deal", "#free", "#wow",
         "#mustread"]


def _hashtag(text, rng):
    n = int(rng.integers(1, 4))
    return text + " " + " ".join(rng.choice(_TAGS, n, replace=False))


def _url(text, rng):
    tail = "".join(rng.choice(list(string.ascii_letters + string.digits), 6))
    url = str(rng.choice(["https://bit.ly/", "http://tinyurl.com/", "www.example.com/p/",
                          "https://t.co/", "https://example.net/?ref="])) + tail
    return text + " " + url


def _quote(text, rng):
    wrap = str(rng.choice(['"{}"', "RT: {}", "> {}", "«{}»", "Repost: {}"]))
    return wrap.format(text)


# -- medium ------------------------------------------------------------------------------------

# Cyrillic and Greek letters that Unicode's confusables (UTS #39) lists as drawn like Latin
# ones, capitals included (they reach the service case-folded: В arrives as в).
_LOOKALIKES = {"a": "аɑα", "c": "сϲ", "e": "еҽ", "i": "іι", "j": "ј", "o": "оοσ", "p": "рρ",
               "s": "ѕ", "x": "хχ", "y": "уүγ", "h": "һ", "d": "ԁ", "q": "ԛ", "w": "ԝѡ",
               "k": "κ", "v": "ν", "A": "АΑ", "B": "ВΒ", "C": "С", "E": "ЕΕ",
               "H": "НΗ", "I": "ІΙ", "K": "КΚ", "M": "МΜ", "O": "ОΟ", "P": "РΡ", "T": "ТΤ",
               "X": "ХΧ"}


def _lookalike(text, rng):
    p = rng.uniform(0.2, 0.5)
    return "".join(str(rng.choice(list(_LOOKALIKES[ch]))) if ch in _LOOKALIKES and
                   rng.random() < p else ch for ch in text)


_LEET = {"o": "0", "l": "1", "i": "1!", "e": "3", "a": "@4", "s": "$5", "t": "7", "b": "8",
         "g": "9"}


def _digit_symbol(text, rng):
    """Digits and symbols for letters in 40-80% of the words, most letters of those words."""
    p_word, p_char = rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.9)
    out = []
    for w in _words(text):
        if rng.random() < p_word:
            w = "".join(str(rng.choice(list(_LEET[ch.lower()]))) if ch.lower() in _LEET and
                        rng.random() < p_char else ch for ch in w)
        out.append(w)
    return " ".join(out)


_ZW = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def _zero_width(text, rng):
    chars = list(text)
    for _ in range(int(rng.integers(3, 12))):
        chars.insert(int(rng.integers(0, len(chars) + 1)), str(rng.choice(_ZW)))
    return "".join(chars)


_EMOJI = ["🔥", "💯", "😂", "👉", "✅", "🚨", "💰", "❤️", "👍🏽", "🎁", "⚡", "🙏", "😱", "🇺🇸", "👇"]


def _emoji(text, rng):
    words = _words(text)
    for _ in range(int(rng.integers(2, 6))):
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_EMOJI)))
    return " ".join(words)


def _spaced_word(text, rng):
    words = _words(text)
    cands = [i for i, w in enumerate(words) if sum(ch.isalpha() for ch in w) >= 4]
    if not cands:
        return text
    i = int(rng.choice(cands))
    words[i] = " ".join(words[i])
    return " ".join(words)


_ACCENTS = {"a": "áàâäã", "e": "éèêë", "i": "íìîï", "o": "óòôöõ", "u": "úùûü", "n": "ñ",
            "c": "ç", "y": "ýÿ"}


def _accents(text, rng):
    p = rng.uniform(0.2, 0.5)
    return "".join(str(rng.choice(list(_ACCENTS[ch]))) if ch in _ACCENTS and rng.random() < p
                   else ch for ch in text)


def _fullwidth(text, rng):
    """Some words in fullwidth or mathematical bold letters (NFKC folds both back)."""
    words = _words(text)
    bold = rng.random() < 0.5

    def conv(ch):
        if "a" <= ch <= "z":
            return chr((0x1D41A if bold else 0xFF41) + ord(ch) - ord("a"))
        if "A" <= ch <= "Z":
            return chr((0x1D400 if bold else 0xFF21) + ord(ch) - ord("A"))
        return ch

    p = rng.uniform(0.3, 0.7)
    return " ".join("".join(map(conv, w)) if rng.random() < p else w for w in words)


# -- hard --------------------------------------------------------------------------------------

def _word_drop(text, rng):
    words = _words(text)
    n_drop = round(len(words) * rng.uniform(0.15, 0.25))
    if len(words) - n_drop < 2:
        return text
    drop = set(rng.choice(len(words), n_drop, replace=False).tolist())
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def _word_swap(text, rng):
    words = _words(text)
    n_swap = max(1, round(len(words) * rng.uniform(0.15, 0.25) / 2))
    for _ in range(n_swap):
        if len(words) < 2:
            break
        i = int(rng.integers(0, len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


_PREFIXES = ["Check this out:", "Wow, look at this!", "Can't believe this is real.",
             "Sharing for a friend:", "Read this before it gets deleted!", "PSA:",
             "Just saw this and had to share.", "Everyone needs to see this:", "Breaking:",
             "Not sure if this is true but", "Copied from a friend's post:", "FYI -"]
_SUFFIXES = ["DM me for more", "Link in bio.", "Share with everyone you know!",
             "Follow for more tips.", "Thoughts?", "Pass it on.", "Like and subscribe!",
             "More info in the comments.", "Message me if interested.", "You're welcome.",
             "Don't say nobody told you.", "Tag someone who needs this."]


def _prefix(text, rng):
    return str(rng.choice(_PREFIXES)) + " " + text


def _suffix(text, rng):
    return text + " " + str(rng.choice(_SUFFIXES))


def _partial(text, rng):
    words = _words(text)
    keep = max(2, round(len(words) * rng.uniform(0.6, 0.7)))
    if keep >= len(words):
        return text
    start = int(rng.integers(0, len(words) - keep + 1))
    return " ".join(words[start:start + keep])


OPS = {
    "case": _case, "whitespace": _whitespace, "punctuation": _punctuation,
    "run_together": _run_together, "hashtag": _hashtag, "url": _url, "quote": _quote,
    "lookalike": _lookalike, "digit_symbol": _digit_symbol, "zero_width": _zero_width,
    "emoji": _emoji, "spaced_word": _spaced_word, "accents": _accents, "fullwidth": _fullwidth,
    "word_drop": _word_drop, "word_swap": _word_swap, "prefix": _prefix, "suffix": _suffix,
    "partial": _partial,
}
# Structural edits go first (they work on words), glyph-level ones last (they break words).
_ORDER = ("partial", "word_drop", "word_swap", "prefix", "suffix", "hashtag", "url", "quote",
          "run_together", "spaced_word", "punctuation", "case", "digit_symbol", "lookalike",
          "accents", "fullwidth", "emoji", "whitespace", "zero_width")
# Text-wide case changes would undo the glyph edits' own case; they are not stacked on them.
_NO_EXTRA = {"digit_symbol": {"case"}, "lookalike": {"case"}, "fullwidth": {"case"}}


def edit_text(text: str, level: str, primary: str, rng: np.random.Generator) -> EditedText:
    """Apply ``primary`` (a type of ``level``) and, at medium/hard, maybe one easy edit."""
    if level not in TYPES or primary not in TYPES[level]:
        raise ValueError(f"{primary!r} is not an edit type of level {level!r}")
    chosen = [primary]
    p_extra = {"easy": 0.3, "medium": 0.4, "hard": 0.5}[level]
    if rng.random() < p_extra:
        extra = [e for e in EASY if e != primary and e not in _NO_EXTRA.get(primary, set())]
        chosen.append(str(rng.choice(extra)))
    chosen.sort(key=_ORDER.index)
    for name in chosen:
        text = OPS[name](text, rng)
    return EditedText(text, level, primary, tuple(chosen))


def primaries(level: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` primary types of ``level``, cycling a shuffled order so types get equal shares."""
    types = list(TYPES[level])
    start = int(rng.integers(len(types)))
    order = [types[(start + i) % len(types)] for i in range(len(types))]
    return [order[i % len(order)] for i in range(n)]
