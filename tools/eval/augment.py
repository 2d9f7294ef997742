"""Seeded near-duplicate edits of images and texts, in levels easy / medium / hard.

An image query is one picture after one *edit type* (what a re-poster did) at a level's strength,
sometimes after a light secondary edit (medium 25%, hard 50%), then delivered as an upload is:
resized and re-encoded (JPEG, sometimes WebP; PNG for some screenshots). Edit types:

  reencode       JPEG/WebP quality 50-75 / 25-50 / 8-25 (hard: twice)
  resize         scale 0.5-0.8 or 1.2-1.6 / thumbnail 160-256 px / 64-128 px blown up again
  crop           keep 80-92% / 60-80% / 40-60% of each side
  rotate         2-5 / 5-10 / 10-20 degrees, black or white corners, canvas kept or expanded
  greyscale      grey; + contrast; + contrast and gamma
  blur           Gaussian, radius 0.2-0.4% / 0.4-0.8% / 0.8-1.4% of the long side
  grey_blur      both of the above
  caption        meme bars with text: one bar / two bars / two tall bars + text on the picture
  text_overlay   1 / 2 / 3 lines of text over the picture, growing in size
  phone_photo    the picture on a screen photographed by a phone: bezel, background,
                 perspective, moire, glare, colour cast, defocus, sensor noise (all growing)
  sticker_mirror mirrored, with 1 / 2-3 / 3-5 drawn stickers (smileys, hearts, stars, badges)
  collage        one panel of 2 / 3 / 4 beside other pictures (distractor-side fillers)
  screenshot     inside app chrome (status bar, header, action bar; post text and comments at
                 hard): the picture covers ~80% / ~60% / ~45% of it
  border         thin solid / wide or double / on a blurred copy of itself in another aspect
  noise          Gaussian sigma 4-8 / 8-16 / 16-30 (+ salt and pepper at hard)
  jitter         brightness, contrast, saturation; + hue shift; + gamma (growing)

Text levels (paraphrase-free edits): easy: case, punctuation; medium: + homoglyphs, zero-width
characters, emoji; hard: + adjacent word swaps, every edit denser.

Every call takes a ``numpy.random.Generator``; ``query_rng`` derives an independent one per
(seed, level, kind, item, copy), so a query never depends on how many others were made before it.
The edits are written here with PIL and numpy, independent of any training pipeline's.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from dedup.errors import InvalidArgument

LEVELS = ("easy", "medium", "hard")
_KIND = {"image": 1, "text": 2}
EDIT_TYPES = ("reencode", "resize", "crop", "rotate", "greyscale", "blur", "grey_blur",
              "caption", "text_overlay", "phone_photo", "sticker_mirror", "collage",
              "screenshot", "border", "noise", "jitter")
# Light edits a second re-poster may have made first (applied at easy strength).
SECONDARY = ("crop", "jitter", "border", "text_overlay", "mirror", "resize")
_SECONDARY_P = (0.0, 0.25, 0.5)
MAX_QUERY_SIDE = 1024  # an upload's long side is capped here (collages and screenshots grow)


def query_rng(seed: int, level: str, kind: str, item: int, copy: int) -> np.random.Generator:
    """An independent generator for one query."""
    return np.random.default_rng([seed, _level_index(level), _KIND[kind], item, copy])


def _level_index(level: str) -> int:
    if level not in LEVELS:
        raise InvalidArgument(f"unknown level {level!r}; choose from {LEVELS}")
    return LEVELS.index(level)


@dataclass(frozen=True)
class Augmented:
    """A query as a re-poster would upload it: encoded bytes, and the edits that made it."""

    data: bytes
    ops: tuple[str, ...]  # every edit in order, with its parameters, e.g. "rotate:7.1:white"
    edit: str = ""  # the primary edit type (one of EDIT_TYPES)
    level: str = ""


# -- helpers ---------------------------------------------------------------------------------

def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _font(size: float) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, int(size)))


_WORDS = ("LOL", "when you see it", "share if you agree", "BREAKING", "so true", "wait for it",
          "me irl", "nobody:", "this is fine", "original content", "repost", "2024", "wow",
          "not again", "tag a friend", "mood", "can't unsee", "big if true", "no context",
          "day 1 vs day 30", "the absolute state", "read this twice", "POV", "be honest")


def _rand_colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def _draw_text_fit(draw, xy, text, width, size, fill, stroke=0, stroke_fill=(0, 0, 0)):
    """Draw ``text`` at ``xy``, shrinking the font until it fits ``width`` pixels."""
    font = _font(size)
    while size > 8 and draw.textlength(text, font=font) > width:
        size *= 0.85
        font = _font(size)
    draw.text(xy, text, fill=fill, font=font, stroke_width=stroke, stroke_fill=stroke_fill)
    return font


# -- edit types: (img, rng, strength 0..2, fillers) -> (img, detail) --------------------------

def _reencode(img, rng, s, fillers):
    lo, hi = ((50, 75), (25, 50), (8, 25))[s]
    fmt = "WEBP" if rng.random() < 0.25 else "JPEG"
    rounds = 2 if s == 2 else 1
    for _ in range(rounds):
        q = int(rng.integers(lo, hi + 1))
        buf = io.BytesIO()
        img.save(buf, format=fmt, quality=q)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img, f"{fmt.lower()}{q}x{rounds}"


def _resize(img, rng, s, fillers):
    w, h = img.size
    long = max(w, h)
    if s == 0:
        f = _u(rng, 0.5, 0.8) if rng.random() < 0.6 else _u(rng, 1.2, 1.6)
        return img.resize((max(16, round(w * f)), max(16, round(h * f))), Image.BICUBIC), f"x{f:.2f}"
    if s == 1:
        side = int(rng.integers(160, 257))
        aspect = _u(rng, 0.95, 1.05)
        f = side / long
        return img.resize((max(16, round(w * f * aspect)), max(16, round(h * f))),
                          Image.BILINEAR), f"thumb{side}"
    side = int(rng.integers(64, 129))
    f = side / long
    small = img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.BILINEAR)
    return small.resize((w, h), Image.BICUBIC), f"blowup{side}"


def _crop(img, rng, s, fillers):
    lo, hi = ((0.8, 0.92), (0.6, 0.8), (0.4, 0.6))[s]
    w, h = img.size
    kw, kh = _u(rng, lo, hi), _u(rng, lo, hi)
    cw, ch = max(16, round(w * kw)), max(16, round(h * kh))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x0, y0, x0 + cw, y0 + ch)), f"{kw:.2f}x{kh:.2f}"


def _rotate(img, rng, s, fillers):
    lo, hi = ((2, 5), (5, 10), (10, 20))[s]
    angle = _u(rng, lo, hi) * (1 if rng.random() < 0.5 else -1)
    fill = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    expand = bool(rng.random() < 0.5)
    out = img.rotate(angle, resample=Image.BICUBIC, expand=expand, fillcolor=fill)
    return out, f"{angle:.1f}:{'white' if fill[0] else 'black'}{':expand' if expand else ''}"


def _grey(img, rng, s):
    out = ImageOps.grayscale(img)
    if s >= 1:
        out = ImageEnhance.Contrast(out).enhance(_u(rng, 0.75, 1.25) if s == 1 else _u(rng, 0.6, 1.4))
    if s == 2:
        g = _u(rng, 0.7, 1.4)
        out = out.point(lambda v: round(255 * (v / 255) ** g))
    return out.convert("RGB")


def _blur_radius(img, rng, s) -> float:
    lo, hi = ((0.002, 0.004), (0.004, 0.008), (0.008, 0.014))[s]
    return max(0.6, _u(rng, lo, hi) * max(img.size))


def _greyscale(img, rng, s, fillers):
    return _grey(img, rng, s), ""


def _blur(img, rng, s, fillers):
    r = _blur_radius(img, rng, s)
    return img.filter(ImageFilter.GaussianBlur(r)), f"r{r:.1f}"


def _grey_blur(img, rng, s, fillers):
    r = _blur_radius(img, rng, s)
    return _grey(img, rng, s).filter(ImageFilter.GaussianBlur(r)), f"r{r:.1f}"


def _caption(img, rng, s, fillers):
    """Meme caption: white (or black) bars above and/or below with text, at hard text on it too."""
    w, h = img.size
    lo, hi = ((0.12, 0.18), (0.15, 0.25), (0.25, 0.35))[s]
    top_h = round(h * _u(rng, lo, hi)) if s >= 1 or rng.random() < 0.5 else 0
    bot_h = round(h * _u(rng, lo, hi)) if s >= 1 or top_h == 0 else 0
    bg = (255, 255, 255) if rng.random() < 0.8 else (0, 0, 0)
    fg = (0, 0, 0) if bg[0] else (255, 255, 255)
    canvas = Image.new("RGB", (w, h + top_h + bot_h), bg)
    canvas.paste(img, (0, top_h))
    draw = ImageDraw.Draw(canvas)
    for y0, band in ((0, top_h), (top_h + h, bot_h)):
        if band:
            _draw_text_fit(draw, (w * 0.04, y0 + band * 0.2), str(rng.choice(_WORDS)).upper(),
                           w * 0.92, band * 0.5, fg)
    if s == 2:
        _draw_text_fit(draw, (w * 0.05, top_h + h * 0.78), str(rng.choice(_WORDS)).upper(),
                       w * 0.9, h * 0.12, (255, 255, 255), stroke=3)
    return canvas, f"bars{int(top_h > 0) + int(bot_h > 0)}"


def _text_overlay(img, rng, s, fillers):
    img = img.copy()
    w, h = img.size
    draw = ImageDraw.Draw(img)
    lo, hi = ((0.05, 0.07), (0.07, 0.11), (0.11, 0.16))[s]
    meme = rng.random() < 0.5
    for _ in range(s + 1):
        size = h * _u(rng, lo, hi)
        x, y = _u(rng, 0, 0.35) * w, _u(rng, 0, 0.85) * h
        fill = (255, 255, 255) if meme else _rand_colour(rng)
        _draw_text_fit(draw, (x, y), str(rng.choice(_WORDS)), w - x, size, fill,
                       stroke=2 if meme else 1)
    return img, f"lines{s + 1}"


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output points ``dst`` to input points ``src``."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(a, float), src.reshape(8).astype(float)).tolist()


def _background(size, rng) -> Image.Image:
    """A desk or wall behind the phone shot: a soft two-colour gradient with grain."""
    w, h = size
    c0 = np.asarray(_rand_colour(rng), np.float32)
    c1 = np.clip(c0 + rng.normal(0, 40, 3), 0, 255).astype(np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    grad = c0 * (1 - t) + c1 * t
    grad = grad + 6 * rng.standard_normal((h, w, 1), dtype=np.float32)
    return Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8), "RGB")


def _phone_photo(img, rng, s, fillers):
    """The picture shown on a screen and photographed: bezel, background, perspective, moire,
    glare, colour cast, defocus and sensor noise, each growing with the level."""
    w, h = img.size
    bezel = round(min(w, h) * _u(rng, 0.03, 0.08))
    screen = ImageOps.expand(img, border=bezel, fill=tuple(int(v) for v in rng.integers(5, 45, 3)))
    sw, sh = screen.size
    a = np.asarray(screen, np.float32)
    # Moire: two beating gratings, as the camera's sensor samples the screen's pixel grid.
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    ang = _u(rng, 0, math.pi)
    f1, f2 = _u(rng, 0.2, 0.45), _u(rng, 0.2, 0.45)
    proj = xx * math.cos(ang) + yy * math.sin(ang)
    pattern = np.sin(2 * math.pi * f1 * proj) * np.sin(2 * math.pi * f2 * (yy * math.cos(ang) - xx * math.sin(ang)))
    amp = (4, 9, 16)[s] * _u(rng, 0.6, 1.0)
    a = a + amp * pattern[..., None]
    screen = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    # Perspective: the screen's corners land on a jittered quadrilateral inside the photo.
    margin = _u(rng, *((0.05, 0.12), (0.08, 0.18), (0.1, 0.25))[s])
    cw, ch = round(sw * (1 + 2 * margin)), round(sh * (1 + 2 * margin))
    jit = (0.03, 0.07, 0.13)[s]
    base = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32) + [sw * margin, sh * margin]
    dst = base + rng.uniform(-jit, jit, (4, 2)).astype(np.float32) * [sw, sh]
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    coeffs = _perspective_coeffs(dst, src)
    warped = screen.transform((cw, ch), Image.PERSPECTIVE, coeffs, Image.BICUBIC)
    mask = Image.new("L", screen.size, 255).transform((cw, ch), Image.PERSPECTIVE, coeffs,
                                                       Image.BILINEAR)
    photo = _background((cw, ch), rng)
    photo.paste(warped, (0, 0), mask)
    p = np.asarray(photo, np.float32)
    # Glare: a soft bright blob where a lamp reflects on the glass.
    gx, gy = _u(rng, 0.1, 0.9) * cw, _u(rng, 0.1, 0.9) * ch
    rad = _u(rng, 0.15, 0.4) * max(cw, ch)
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    glare = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * rad ** 2))
    p = p + (255 - p) * glare[..., None] * (0.15, 0.3, 0.5)[s] * _u(rng, 0.6, 1.0)
    # Colour cast (white balance) and sensor noise.
    p = p * (1 + rng.normal(0, (0.04, 0.08, 0.12)[s], 3)).astype(np.float32)
    p = p + (2, 4, 7)[s] * rng.standard_normal(p.shape, dtype=np.float32)
    photo = Image.fromarray(np.clip(p, 0, 255).astype(np.uint8), "RGB")
    r = (0.5, 1.0, 1.8)[s] * max(cw, ch) / 512 * _u(rng, 0.7, 1.0)
    return photo.filter(ImageFilter.GaussianBlur(r)), f"jit{jit}:moire{amp:.0f}"


def _sticker(rng, size: int) -> Image.Image:
    """One drawn sticker on a transparent square: smiley, heart, star or badge, white outline."""
    n = max(24, int(size))
    layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    m = n * 0.12
    kind = int(rng.integers(0, 4))
    if kind == 0:  # smiley
        d.ellipse((m, m, n - m, n - m), fill=(255, 205, 40, 255), outline=(120, 70, 0, 255),
                  width=max(1, n // 40))
        ey = n * 0.4
        for ex in (n * 0.37, n * 0.63):
            if rng.random() < 0.3:  # heart eyes
                d.regular_polygon((ex, ey, n * 0.07), 3, rotation=180, fill=(220, 20, 60, 255))
            else:
                d.ellipse((ex - n * 0.05, ey - n * 0.08, ex + n * 0.05, ey + n * 0.08),
                          fill=(60, 30, 0, 255))
        mouth = int(rng.integers(0, 3))
        box = (n * 0.3, n * 0.45, n * 0.7, n * 0.75)
        if mouth == 0:
            d.arc(box, 20, 160, fill=(60, 30, 0, 255), width=max(2, n // 25))
        elif mouth == 1:
            d.chord(box, 0, 180, fill=(90, 20, 20, 255))
        else:
            d.ellipse((n * 0.42, n * 0.58, n * 0.58, n * 0.74), fill=(90, 20, 20, 255))
    elif kind == 1:  # heart from its parametric curve
        t = np.linspace(0, 2 * math.pi, 60)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = [(n / 2 + xi * (n - 2 * m) / 34, n / 2 + yi * (n - 2 * m) / 34) for xi, yi in zip(x, y)]
        d.polygon(pts, fill=tuple(int(v) for v in (rng.integers(180, 256), rng.integers(0, 60),
                                                    rng.integers(40, 120))) + (255,))
    elif kind == 2:  # star
        d.regular_polygon((n / 2, n / 2, n / 2 - m), 5, fill=(255, 215, 0, 255))
        pts = []
        for i in range(10):
            r = (n / 2 - m) if i % 2 == 0 else (n / 2 - m) * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((n / 2 + r * math.cos(a), n / 2 + r * math.sin(a)))
        layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        d.polygon(pts, fill=(255, 200, 0, 255), outline=(180, 110, 0, 255))
    else:  # badge with a word
        colour = _rand_colour(rng) + (255,)
        d.rounded_rectangle((m, n * 0.28, n - m, n * 0.72), radius=n * 0.12, fill=colour)
        word = str(rng.choice(["OMG", "LOL", "WOW", "100", "NEW", "YES", "HOT"]))
        _draw_text_fit(d, (n * 0.18, n * 0.33), word, n * 0.64, n * 0.3, (255, 255, 255),
                       stroke=1)
    # The white die-cut outline stickers have.
    alpha = layer.getchannel("A").filter(ImageFilter.MaxFilter(max(3, (n // 16) | 1)))
    out = Image.new("RGBA", (n, n), (255, 255, 255, 0))
    out.putalpha(alpha)
    out.alpha_composite(layer)
    return out.rotate(_u(rng, -30, 30), resample=Image.BICUBIC, expand=True)


def _sticker_mirror(img, rng, s, fillers):
    out = ImageOps.mirror(img).convert("RGBA")
    w, h = out.size
    count = (1, int(rng.integers(2, 4)), int(rng.integers(3, 6)))[s]
    lo, hi = ((0.12, 0.18), (0.15, 0.25), (0.2, 0.35))[s]
    for _ in range(count):
        st = _sticker(rng, _u(rng, lo, hi) * min(w, h))
        x = int(rng.integers(-st.width // 4, max(1, w - 3 * st.width // 4)))
        y = int(rng.integers(-st.height // 4, max(1, h - 3 * st.height // 4)))
        out.alpha_composite(st, (max(0, x), max(0, y)))
    return out.convert("RGB"), f"n{count}"


def _collage(img, rng, s, fillers):
    """The picture as one panel of 2 (side by side), 3 (a row or column) or 4 (a 2x2 grid)."""
    k = s + 2
    if len(fillers) < k - 1:
        raise InvalidArgument(f"a collage of {k} panels needs {k - 1} filler pictures")
    picks = [fillers[i] for i in rng.choice(len(fillers), k - 1, replace=False)]
    panels = [img] + [_rgb(p) for p in picks]
    order = rng.permutation(k)
    panels = [panels[i] for i in order]
    pos = int(np.flatnonzero(order == 0)[0])
    gap = int(rng.integers(0, 13))
    bg = (255, 255, 255) if rng.random() < 0.6 else (0, 0, 0)
    cell = min(384, max(img.size))
    if k == 4:  # 2x2 grid of square-ish cells, each panel centre-cropped to its cell
        cw, ch = cell, round(cell * _u(rng, 0.75, 1.0))
        canvas = Image.new("RGB", (2 * cw + 3 * gap, 2 * ch + 3 * gap), bg)
        for i, p in enumerate(panels):
            tile = ImageOps.fit(p, (cw, ch), Image.BICUBIC)
            canvas.paste(tile, (gap + (i % 2) * (cw + gap), gap + (i // 2) * (ch + gap)))
        return canvas, f"k4:grid:pos{pos}"
    horizontal = bool(rng.random() < 0.7)
    if horizontal:  # panels scaled to one height, side by side
        hh = cell
        tiles = [p.resize((max(8, round(p.width * hh / p.height)), hh), Image.BICUBIC) for p in panels]
        canvas = Image.new("RGB", (sum(t.width for t in tiles) + (k + 1) * gap, hh + 2 * gap), bg)
        x = gap
        for t in tiles:
            canvas.paste(t, (x, gap))
            x += t.width + gap
    else:  # stacked, scaled to one width
        ww = cell
        tiles = [p.resize((ww, max(8, round(p.height * ww / p.width))), Image.BICUBIC) for p in panels]
        canvas = Image.new("RGB", (ww + 2 * gap, sum(t.height for t in tiles) + (k + 1) * gap), bg)
        y = gap
        for t in tiles:
            canvas.paste(t, (gap, y))
            y += t.height + gap
    return canvas, f"k{k}:{'row' if horizontal else 'column'}:pos{pos}"


def _ui_icon(draw, x, y, r, kind, fg):
    if kind == 0:  # heart
        draw.regular_polygon((x, y + r * 0.2, r * 0.8), 3, rotation=180, outline=fg)
        draw.ellipse((x - r, y - r * 0.6, x, y + r * 0.2), outline=fg)
        draw.ellipse((x, y - r * 0.6, x + r, y + r * 0.2), outline=fg)
    elif kind == 1:  # speech bubble
        draw.rounded_rectangle((x - r, y - r * 0.7, x + r, y + r * 0.6), radius=r * 0.4, outline=fg)
    else:  # share arrow
        draw.line((x - r, y + r * 0.5, x + r, y - r * 0.5), fill=fg, width=2)
        draw.line((x + r * 0.3, y - r * 0.6, x + r, y - r * 0.5), fill=fg, width=2)


def _screenshot(img, rng, s, fillers):
    """The picture inside a phone app's screenshot: status bar, header, post text, action bar."""
    frac = _u(rng, *((0.75, 0.88), (0.55, 0.68), (0.4, 0.5))[s])  # picture's share of the area
    if s == 2:  # the app's own crop of the picture
        img, _ = _crop(img, rng, 0, fillers)
    w, h = img.size
    dark = bool(rng.random() < 0.4)
    bg, fg, sub = ((18, 18, 18), (235, 235, 235), (150, 150, 150)) if dark else \
        ((255, 255, 255), (20, 20, 20), (110, 110, 110))
    pad = round(w * _u(rng, 0.0, 0.06))
    W = w + 2 * pad
    H = max(h + 40, round(W * h / frac / W))
    extra = H - h
    status, header = round(extra * 0.12), round(extra * 0.2)
    text_h = round(extra * (0.1, 0.2, 0.3)[s])
    canvas = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(canvas)
    fs = max(9, status * 0.6)
    d.text((pad + 6, status * 0.15), "9:41", fill=fg, font=_font(fs))
    d.text((W * 0.72, status * 0.15), "5G  87%", fill=fg, font=_font(fs))
    y = status
    av = header * 0.6
    d.ellipse((pad + 6, y + header * 0.2, pad + 6 + av, y + header * 0.2 + av), fill=_rand_colour(rng))
    _draw_text_fit(d, (pad + 12 + av, y + header * 0.25), "@" + str(rng.choice(
        ["daily.memes", "newsfeed", "user48213", "pics_hub", "lol.zone"])), W * 0.6, header * 0.4, fg)
    y += header
    lines = max(0, int(text_h // max(12, W * 0.04)))
    for i in range(lines):
        _draw_text_fit(d, (pad + 6, y + i * text_h / max(lines, 1)), " ".join(
            str(rng.choice(_WORDS)) for _ in range(3)), W - 2 * pad - 12, W * 0.035, fg)
    y += text_h
    canvas.paste(img, (pad, y))
    y += h
    bar = H - y
    r = max(5, min(bar * 0.15, W * 0.025))
    for i in range(3):
        _ui_icon(d, pad + 20 + i * W * 0.15, y + bar * 0.25, r, i, fg)
    if bar > 4 * r:
        _draw_text_fit(d, (pad + 8, y + bar * 0.45), f"{int(rng.integers(2, 999))} likes  "
                       + str(rng.choice(_WORDS)), W - 16, min(bar * 0.18, W * 0.04), sub)
    return canvas, f"{'dark' if dark else 'light'}:{frac:.2f}"


def _border(img, rng, s, fillers):
    w, h = img.size
    if s < 2:
        lo, hi = ((0.02, 0.05), (0.06, 0.12))[s]
        b = max(2, round(min(w, h) * _u(rng, lo, hi)))
        out = ImageOps.expand(img, border=b, fill=_rand_colour(rng))
        if s == 1 and rng.random() < 0.5:  # a second frame around the first
            out = ImageOps.expand(out, border=max(2, b // 2), fill=_rand_colour(rng))
        return out, f"b{b}"
    # Placed on a blurred, enlarged copy of itself in another aspect (a "no crop" app).
    aspect = float(rng.choice([1.0, 9 / 16, 16 / 9, 4 / 5]))
    area = _u(rng, 0.45, 0.7)  # the picture's share of the new canvas (at least)
    cw = max(w, round(math.sqrt(w * h / area * aspect)))
    ch = max(h, round(cw / aspect))
    bg = ImageOps.fit(img, (cw, ch), Image.BILINEAR).filter(ImageFilter.GaussianBlur(max(cw, ch) / 30))
    bg.paste(img, ((cw - w) // 2, (ch - h) // 2))
    return bg, f"blurfill{aspect:.2f}"


def _noise(img, rng, s, fillers):
    lo, hi = ((4, 8), (8, 16), (16, 30))[s]
    sigma = _u(rng, lo, hi)
    a = np.asarray(img, np.float32) + rng.normal(0.0, sigma, (img.height, img.width, 3)).astype(np.float32)
    if s == 2:
        sp = rng.random((img.height, img.width)) < 0.01
        a[sp] = rng.choice([0.0, 255.0], (int(sp.sum()), 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB"), f"s{sigma:.0f}"


def _jitter(img, rng, s, fillers):
    span = (0.15, 0.3, 0.45)[s]
    img = ImageEnhance.Brightness(img).enhance(_u(rng, 1 - span, 1 + span))
    img = ImageEnhance.Contrast(img).enhance(_u(rng, 1 - span, 1 + span))
    img = ImageEnhance.Color(img).enhance(_u(rng, 1 - 1.8 * span, 1 + 1.8 * span))
    detail = ""
    if s >= 1:  # hue rotation in HSV
        shift = int(_u(rng, 7, 21 if s == 2 else 10) * (1 if rng.random() < 0.5 else -1))
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
        img = Image.fromarray(hsv, "HSV").convert("RGB")
        detail = f"hue{shift}"
    if s == 2:
        g = _u(rng, 0.7, 1.4)
        img = img.point(lambda v: round(255 * (v / 255) ** g))
    return img, detail


def _mirror(img, rng, s, fillers):
    return ImageOps.mirror(img), ""


_EDITS = {"reencode": _reencode, "resize": _resize, "crop": _crop, "rotate": _rotate,
          "greyscale": _greyscale, "blur": _blur, "grey_blur": _grey_blur, "caption": _caption,
          "text_overlay": _text_overlay, "phone_photo": _phone_photo,
          "sticker_mirror": _sticker_mirror, "collage": _collage, "screenshot": _screenshot,
          "border": _border, "noise": _noise, "jitter": _jitter, "mirror": _mirror}
assert set(EDIT_TYPES) <= set(_EDITS) and set(SECONDARY) <= set(_EDITS)


def apply_edit(img: Image.Image, edit: str, level: str, rng: np.random.Generator,
               fillers: Sequence[Image.Image] = ()) -> tuple[Image.Image, str]:
    """One edit type at one level's strength; returns the image and a tag with its parameters."""
    if edit not in _EDITS:
        raise InvalidArgument(f"unknown edit {edit!r}; choose from {EDIT_TYPES}")
    out, detail = _EDITS[edit](_rgb(img), rng, _level_index(level), fillers)
    return _rgb(out), f"{edit}:{detail}" if detail else edit


def _deliver(img: Image.Image, rng, edit: str, ops: list[str]) -> bytes:
    """Resize to an upload's size and encode, as the platform would."""
    long = max(img.size)
    if edit not in ("resize", "reencode"):
        target = min(MAX_QUERY_SIDE, round(long * _u(rng, 0.7, 1.2)))
    else:
        target = min(MAX_QUERY_SIDE, long)
    if target != long:
        f = target / long
        img = img.resize((max(16, round(img.width * f)), max(16, round(img.height * f))),
                         Image.BICUBIC)
    buf = io.BytesIO()
    if edit == "reencode":  # the edit chose the encoding: keep it, losslessly
        img.save(buf, format="PNG", compress_level=1)
        ops.append("png")
    elif edit == "screenshot" and rng.random() < 0.5:
        img.save(buf, format="PNG", compress_level=1)
        ops.append("png")
    elif rng.random() < 0.15:
        q = int(rng.integers(70, 91))
        img.save(buf, format="WEBP", quality=q)
        ops.append(f"webp{q}")
    else:
        q = int(rng.integers(70, 96))
        img.save(buf, format="JPEG", quality=q)
        ops.append(f"jpeg{q}")
    return buf.getvalue()


def augment_image(img: Image.Image, level: str, rng: np.random.Generator, edit: str | None = None,
                  fillers: Sequence[Image.Image] = ()) -> Augmented:
    """A near-duplicate of ``img``: ``edit`` (or one drawn from ``rng``) at ``level``, delivered
    as an encoded upload. A collage needs ``fillers`` (other pictures, never seeds)."""
    s = _level_index(level)
    if edit is None:
        choices = [e for e in EDIT_TYPES if e != "collage" or len(fillers) >= 3]
        edit = str(rng.choice(choices))
    ops: list[str] = []
    out = _rgb(img)
    if rng.random() < _SECONDARY_P[s]:
        second = str(rng.choice([e for e in SECONDARY if e != edit]))
        out, tag = apply_edit(out, second, "easy", rng, fillers)
        ops.append("+" + tag)
    out, tag = apply_edit(out, edit, level, rng, fillers)
    ops.insert(0, tag)
    data = _deliver(out, rng, edit, ops)
    return Augmented(data, tuple(ops), edit, level)


# -- text ops: (text, rng, density) -> text --------------------------------------------------

def _pick(rng, ops: dict, lo: int, hi: int) -> list[str]:
    names = sorted(ops)
    return [names[i] for i in rng.choice(len(names), int(rng.integers(lo, hi + 1)), replace=False)]


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
