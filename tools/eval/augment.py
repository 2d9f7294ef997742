"""Seeded near-duplicate transformations of images and texts, in named levels.

Image levels (each includes the one before):
  mild:   resize, JPEG re-encode
  medium: + crop up to 20% per side, colour jitter, mirror, small rotation
  hard:   + text overlay, border, meme caption, screenshot-style padding, heavy crop, blur, noise
Text levels (paraphrase-free edits):
  mild:   case, punctuation
  medium: + homoglyphs, zero-width characters, emoji
  hard:   + adjacent word swaps, and every edit denser

Every call takes a ``numpy.random.Generator``; ``query_rng`` derives an independent one per
(seed, level, item, copy), so a query never depends on how many others were made before it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from dedup.errors import InvalidArgument

LEVELS = ("mild", "medium", "hard")
_KIND = {"image": 1, "text": 2}


def query_rng(seed: int, level: str, kind: str, item: int, copy: int) -> np.random.Generator:
    """An independent generator for one query."""
    if level not in LEVELS:
        raise InvalidArgument(f"unknown level {level!r}; choose from {LEVELS}")
    return np.random.default_rng([seed, LEVELS.index(level), _KIND[kind], item, copy])


@dataclass(frozen=True)
class Augmented:
    """A query as a re-poster would upload it: encoded bytes, and the edits that made it."""

    data: bytes
    ops: tuple[str, ...]


# -- image ops: (img, rng) -> img ------------------------------------------------------------

def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, int(size)))


_WORDS = ("LOL", "when you see it", "share if you agree", "BREAKING", "so true", "wait for it",
          "me irl", "nobody:", "this is fine", "original content", "repost", "2024", "wow")


def _resize(img, rng):
    s = rng.uniform(0.5, 1.5)
    aspect = rng.uniform(0.95, 1.05)
    w, h = img.size
    return img.resize((max(48, round(w * s * aspect)), max(48, round(h * s))), Image.BICUBIC)


def _crop(img, rng, keep=(0.8, 1.0)):
    w, h = img.size
    kw, kh = rng.uniform(*keep), rng.uniform(*keep)
    cw, ch = max(16, round(w * kw)), max(16, round(h * kh))
    x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    return img.crop((int(x0), int(y0), int(x0) + cw, int(y0) + ch))


def _heavy_crop(img, rng):
    return _crop(img, rng, keep=(0.45, 0.7))


def _jitter(img, rng):
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))


def _mirror(img, rng):
    return ImageOps.mirror(img)


def _rotate(img, rng):
    angle = rng.uniform(3, 10) * rng.choice([-1, 1])
    return img.rotate(angle, resample=Image.BICUBIC, expand=False)


def _rand_colour(rng):
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _text_overlay(img, rng):
    img = img.copy()
    w, h = img.size
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 3))):
        text = str(rng.choice(_WORDS))
        font = _font(h * rng.uniform(0.06, 0.14))
        x, y = rng.uniform(0, 0.6) * w, rng.uniform(0, 0.85) * h
        draw.text((x, y), text, fill=_rand_colour(rng), font=font,
                  stroke_width=1, stroke_fill=(0, 0, 0))
    return img


def _border(img, rng):
    w, h = img.size
    b = max(2, round(min(w, h) * rng.uniform(0.04, 0.12)))
    return ImageOps.expand(img, border=b, fill=_rand_colour(rng))


def _caption(img, rng):
    """A meme caption: white bands above and/or below with black text."""
    w, h = img.size
    band = max(12, round(h * rng.uniform(0.12, 0.22)))
    top, bottom = (True, True) if rng.random() < 0.5 else (rng.random() < 0.5, True)
    canvas = Image.new("RGB", (w, h + band * (top + bottom)), (255, 255, 255))
    canvas.paste(img, (0, band if top else 0))
    draw = ImageDraw.Draw(canvas)
    font = _font(band * 0.55)
    if top:
        draw.text((w * 0.05, band * 0.2), str(rng.choice(_WORDS)).upper(), fill=(0, 0, 0), font=font)
    if bottom:
        draw.text((w * 0.05, h + band * (top + 0.2)), str(rng.choice(_WORDS)).upper(),
                  fill=(0, 0, 0), font=font)
    return canvas


def _screenshot(img, rng):
    """The image inside a phone screenshot: status bar, padding, UI bar below."""
    w, h = img.size
    pad = round(w * rng.uniform(0.03, 0.15))
    bar = max(10, round(h * rng.uniform(0.06, 0.1)))
    ui = max(14, round(h * rng.uniform(0.15, 0.35)))
    bg = (250, 250, 250) if rng.random() < 0.5 else (18, 18, 18)
    canvas = Image.new("RGB", (w + 2 * pad, h + bar + ui + 2 * pad), bg)
    canvas.paste(img, (pad, bar + pad))
    draw = ImageDraw.Draw(canvas)
    fg = (0, 0, 0) if bg[0] > 128 else (230, 230, 230)
    font = _font(bar * 0.7)
    draw.text((pad, bar * 0.1), "9:41", fill=fg, font=font)
    draw.text((w * 0.7, bar * 0.1), "5G 87%", fill=fg, font=font)
    y = bar + 2 * pad + h
    draw.text((pad, y + ui * 0.1), "♥ 1.2k   comments 87   share", fill=fg, font=_font(ui * 0.2))
    return canvas


def _blur(img, rng):
    return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(1.0, 2.5)))


def _noise(img, rng):
    a = np.asarray(img, dtype=np.float32)
    a = a + rng.normal(0.0, rng.uniform(6, 16), a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


_MEDIUM_OPS = {"crop": _crop, "jitter": _jitter, "mirror": _mirror, "rotate": _rotate}
_HARD_OPS = {"text_overlay": _text_overlay, "border": _border, "caption": _caption,
             "screenshot": _screenshot, "heavy_crop": _heavy_crop, "blur": _blur, "noise": _noise}
# Geometry before pixel edits before additions around the picture, as a re-post happens.
_ORDER = ("heavy_crop", "crop", "rotate", "mirror", "jitter", "blur", "noise", "text_overlay",
          "caption", "border", "screenshot")


def _pick(rng, ops: dict, lo: int, hi: int) -> list[str]:
    names = sorted(ops)
    return [names[i] for i in rng.choice(len(names), int(rng.integers(lo, hi + 1)), replace=False)]


def augment_image(img: Image.Image, level: str, rng: np.random.Generator) -> Augmented:
    """A near-duplicate of ``img`` at ``level``, JPEG-encoded."""
    if level not in LEVELS:
        raise InvalidArgument(f"unknown level {level!r}; choose from {LEVELS}")
    chosen: list[str] = []
    if level == "medium":
        chosen = _pick(rng, _MEDIUM_OPS, 2, 3)
    elif level == "hard":
        chosen = _pick(rng, _MEDIUM_OPS, 1, 2) + _pick(rng, _HARD_OPS, 1, 2)
        if "heavy_crop" in chosen and "crop" in chosen:
            chosen.remove("crop")
    ops = {**_MEDIUM_OPS, **_HARD_OPS}
    out = img.convert("RGB")
    for name in sorted(chosen, key=_ORDER.index):
        out = ops[name](out, rng)
    out = _resize(out, rng)
    quality = int(rng.integers(40, 91))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    return Augmented(buf.getvalue(), tuple(sorted(chosen, key=_ORDER.index)) + ("resize", f"jpeg{quality}"))


# -- text ops: (text, rng, density) -> text --------------------------------------------------

_HOMOGLYPHS = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і",
               "A": "А", "B": "В", "E": "Е", "H": "Н", "K": "К", "M": "М", "O": "О", "P": "Р",
               "C": "С", "T": "Т", "X": "Х", "s": "ѕ", "j": "ј"}
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
_EMOJI = ("😂", "🔥", "👍", "🙏", "😡", "💯", "👀", "🚨", "❤️", "✅", "🤔", "😱")


def _case(text, rng, density):
    mode = int(rng.integers(0, 4))
    if mode == 0:
        return text.lower()
    if mode == 1:
        return text.upper()
    if mode == 2:
        return text.title()
    words = text.split(" ")
    return " ".join(w.upper() if rng.random() < 0.3 else w for w in words)


def _punct(text, rng, density):
    mode = int(rng.integers(0, 4))
    if mode == 0:  # strip punctuation
        return "".join(ch for ch in text if ch.isalnum() or ch.isspace())
    if mode == 1:
        return text.rstrip(".!?") + str(rng.choice(["!!!", "?!", "...", " !!", ""]))
    if mode == 2:
        return text.replace(", ", " , ").replace(". ", " . ").replace(",", ";")
    return "  ".join(text.split(" "))  # doubled spaces


def _homoglyph(text, rng, density):
    p = 0.15 * density
    return "".join(_HOMOGLYPHS[ch] if ch in _HOMOGLYPHS and rng.random() < p else ch for ch in text)


def _insert(text, rng, pieces):
    chars = list(text)
    for piece in pieces:
        chars.insert(int(rng.integers(0, len(chars) + 1)), piece)
    return "".join(chars)


def _zero_width(text, rng, density):
    n = int(rng.integers(1, 4 * density + 2))
    return _insert(text, rng, [str(rng.choice(_ZERO_WIDTH)) for _ in range(n)])


def _emoji(text, rng, density):
    words = text.split(" ")
    for _ in range(int(rng.integers(1, 2 * density + 1))):
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_EMOJI)))
    return " ".join(words)


def _word_swap(text, rng, density):
    words = text.split(" ")
    for _ in range(int(rng.integers(1, 2 * density + 1))):
        if len(words) < 2:
            break
        i = int(rng.integers(0, len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


_TEXT_MEDIUM = {"homoglyph": _homoglyph, "zero_width": _zero_width, "emoji": _emoji}


def augment_text(text: str, level: str, rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
    """A paraphrase-free near-duplicate of ``text`` at ``level``; returns (text, edits)."""
    if level not in LEVELS:
        raise InvalidArgument(f"unknown level {level!r}; choose from {LEVELS}")
    chosen = ["case", "punct"]
    density = 1
    if level == "medium":
        chosen += _pick(rng, _TEXT_MEDIUM, 2, 3)
    elif level == "hard":
        chosen = ["word_swap"] + chosen + sorted(_TEXT_MEDIUM)
        density = 2
    ops = {"case": _case, "punct": _punct, "word_swap": _word_swap, **_TEXT_MEDIUM}
    # Word swaps first (they split on spaces), invisible characters last (nothing may move them).
    order = ("word_swap", "case", "punct", "homoglyph", "emoji", "zero_width")
    for name in sorted(chosen, key=order.index):
        text = ops[name](text, rng, density)
    return text, tuple(sorted(chosen, key=order.index))
