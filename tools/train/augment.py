"""Training edits: what re-posters do to a picture, as seeded PIL/numpy transforms.

``Augmenter.view(img)`` draws one strongly edited view (SSCD-style: two views of one picture are
a positive pair). ``Augmenter.edit(img, family)`` applies one named family of edits, for the
validation queries. These edits are written for training alone; the benchmark's own edits
(``tools/eval/augment.py``) are a separate implementation, so the benchmark measures how the
descriptor generalises to edits it was not trained on.

Every random choice comes from the ``numpy.random.Generator`` passed in, so a view is a pure
function of (picture, generator state, other pictures drawn for collages and stickers).
Geometry that a later step needs (where the source picture sits in a collage) is returned as a
box in output coordinates, fractions of width and height.
"""

from __future__ import annotations

import io
import math
import string
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from dedup.errors import InvalidArgument

# A picture for collage panels and stickers: the augmenter asks for one when it needs it.
OtherPicture = Callable[[], Image.Image]

FAMILIES = ("mild", "crop", "grey_blur", "text", "sticker_mirror", "border_chrome", "phone",
            "collage", "pixel_noise", "mixed")
WORK_SIDE = 384  # edits run at most at this size: the network sees 224 px
_WORDS = ("the", "when", "you", "see", "it", "lol", "breaking", "news", "free", "win", "now",
          "share", "this", "before", "deleted", "real", "fake", "wow", "look", "at", "my",
          "new", "post", "follow", "for", "more", "link", "in", "bio", "official", "repost",
          "omg", "best", "ever", "day", "top", "viral", "check", "out", "like", "comment")


@dataclass
class View:
    """One edited picture, the edits applied, and where the source sits (collages)."""

    image: Image.Image
    ops: list[str] = field(default_factory=list)
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


def _font(size: int) -> ImageFont.ImageFont:
    # Pillow's embedded font: the same glyphs on every machine, no font files needed.
    return ImageFont.load_default(size=max(8, int(size)))


def _rand_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _text(rng: np.random.Generator, lo: int = 1, hi: int = 6) -> str:
    n = int(rng.integers(lo, hi + 1))
    if rng.random() < 0.2:
        chars = string.ascii_letters + string.digits + "!?#@"
        return "".join(chars[i] for i in rng.integers(0, len(chars), int(rng.integers(4, 14))))
    words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), n)]
    return " ".join(words).upper() if rng.random() < 0.5 else " ".join(words)


def _expand_box(box, w, h, left, top, new_w, new_h):
    """The box (fractions of a w x h picture) after pasting it at (left, top) of new_w x new_h."""
    x0, y0, x1, y1 = box
    return ((left + x0 * w) / new_w, (top + y0 * h) / new_h,
            (left + x1 * w) / new_w, (top + y1 * h) / new_h)


# -- geometry ---------------------------------------------------------------------------------
def resized_crop(img: Image.Image, rng: np.random.Generator, scale=(0.2, 1.0),
                 ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """A random crop of ``scale`` of the area with aspect ratio in ``ratio`` (log-uniform)."""
    w, h = img.size
    area = w * h
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.crop((x, y, x + cw, y + ch))
    side = min(w, h)
    return img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))


def limit_side(img: Image.Image, side: int = WORK_SIDE) -> Image.Image:
    """Shrink so the long side is at most ``side``."""
    if max(img.size) > side:
        f = side / max(img.size)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.BILINEAR)
    return img


def rotate(img: Image.Image, rng: np.random.Generator, max_deg: float = 12.0) -> Image.Image:
    """A small rotation, either with filled corners or cropped to the rotated content."""
    deg = float(rng.uniform(-max_deg, max_deg))
    if rng.random() < 0.5:
        return img.rotate(deg, Image.BICUBIC, expand=True, fillcolor=_rand_colour(rng))
    out = img.rotate(deg, Image.BICUBIC, expand=False)
    # the largest centred box free of the black corners, for a rotation by |deg|
    w, h = img.size
    a = math.radians(abs(deg))
    cw = (w * math.cos(a) - h * math.sin(a)) / math.cos(2 * a) if math.cos(2 * a) > 0.1 else w * 0.7
    ch = (h * math.cos(a) - w * math.sin(a)) / math.cos(2 * a) if math.cos(2 * a) > 0.1 else h * 0.7
    cw, ch = max(8.0, min(w, cw)), max(8.0, min(h, ch))
    return out.crop((int((w - cw) / 2), int((h - ch) / 2), int((w + cw) / 2), int((h + ch) / 2)))


def perspective(img: Image.Image, rng: np.random.Generator, strength: float = 0.1,
                fill=(0, 0, 0)) -> Image.Image:
    """Move each corner by up to ``strength`` of the side (a camera that is not square-on)."""
    w, h = img.size
    d = rng.uniform(0, strength, 8) * np.array([w, h] * 4)
    src = [(d[0], d[1]), (w - d[2], d[3]), (w - d[4], h - d[5]), (d[6], h - d[7])]
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    coeffs = _perspective_coeffs(dst, src)
    return img.transform((w, h), Image.PERSPECTIVE, coeffs, Image.BICUBIC, fillcolor=fill)


def _perspective_coeffs(dst, src) -> list[float]:
    """PIL's 8 coefficients mapping output points ``dst`` to input points ``src``."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    b = np.array([c for p in src for c in p], dtype=np.float64)
    return np.linalg.solve(np.array(a, dtype=np.float64), b).tolist()


# -- pixels -----------------------------------------------------------------------------------
def colour_jitter(img: Image.Image, rng: np.random.Generator, s: float = 0.4) -> Image.Image:
    """Brightness, contrast, saturation and hue, each by a random amount, in random order."""
    ops = [lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - s, 1 + s)),
           lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(1 - s, 1 + s)),
           lambda im: ImageEnhance.Color(im).enhance(rng.uniform(1 - s, 1 + s * 1.5)),
           lambda im: _hue(im, float(rng.uniform(-0.1, 0.1)))]
    for i in rng.permutation(len(ops)):
        img = ops[i](img)
    return img


def _hue(img: Image.Image, shift: float) -> Image.Image:
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(shift * 255)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def greyscale(img: Image.Image) -> Image.Image:
    return ImageOps.grayscale(img).convert("RGB")


def blur(img: Image.Image, rng: np.random.Generator, lo: float = 0.5, hi: float = 3.0) -> Image.Image:
    """Gaussian blur, the radius relative to a 256 px picture."""
    r = rng.uniform(lo, hi) * max(img.size) / 256
    return img.filter(ImageFilter.GaussianBlur(r))


def jpeg(img: Image.Image, rng: np.random.Generator, lo: int = 15, hi: int = 90) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(lo, hi + 1)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def down_up(img: Image.Image, rng: np.random.Generator, lo: float = 0.25, hi: float = 0.7) -> Image.Image:
    """Shrink then enlarge back (a thumbnail re-posted at full size)."""
    f = rng.uniform(lo, hi)
    w, h = img.size
    small = img.resize((max(8, int(w * f)), max(8, int(h * f))),
                       [Image.NEAREST, Image.BILINEAR, Image.BICUBIC][int(rng.integers(0, 3))])
    return small.resize((w, h), Image.BILINEAR)


def pixelate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    block = float(rng.uniform(3, 10)) * max(w, h) / 256
    small = img.resize((max(4, int(w / block)), max(4, int(h / block))), Image.BILINEAR)
    return small.resize((w, h), Image.NEAREST)


def noise(img: Image.Image, rng: np.random.Generator, lo: float = 3, hi: float = 20) -> Image.Image:
    a = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.7:
        a = a + rng.normal(0, rng.uniform(lo, hi), a.shape)
    else:  # salt and pepper
        m = rng.random(a.shape[:2]) < rng.uniform(0.005, 0.04)
        a[m] = rng.choice([0.0, 255.0], size=(int(m.sum()), 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


# -- overlays ---------------------------------------------------------------------------------
def text_overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One to three lines of text drawn over the picture (meme style or plain)."""
    img = img.copy()
    d = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(int(rng.integers(1, 4))):
        size = int(h * rng.uniform(0.05, 0.16))
        font = _font(size)
        meme = rng.random() < 0.5
        fill = (255, 255, 255) if meme else _rand_colour(rng)
        x, y = int(rng.uniform(-0.1, 0.7) * w), int(rng.uniform(0, 0.9) * h)
        d.text((x, y), _text(rng), font=font, fill=fill,
               stroke_width=max(1, size // 12) if meme else 0, stroke_fill=(0, 0, 0))
    return img


def caption_bar(img: Image.Image, rng: np.random.Generator, box=(0.0, 0.0, 1.0, 1.0)):
    """A solid bar with a caption added above or below (the canvas grows); returns (img, box)."""
    w, h = img.size
    bar = int(h * rng.uniform(0.1, 0.35))
    light = rng.random() < 0.6
    bg = (255, 255, 255) if light else ((0, 0, 0) if rng.random() < 0.7 else _rand_colour(rng))
    out = Image.new("RGB", (w, h + bar), bg)
    top = rng.random() < 0.6
    out.paste(img, (0, bar if top else 0))
    d = ImageDraw.Draw(out)
    lines = int(rng.integers(1, 3))
    size = max(8, int(bar / (lines + 0.6)))
    fg = (0, 0, 0) if light else (255, 255, 255)
    for i in range(lines):
        y0 = (0 if top else h) + int(size * 0.2) + i * size
        d.text((int(w * rng.uniform(0.02, 0.2)), y0), _text(rng, 2, 6), font=_font(size * 0.85), fill=fg)
    return out, _expand_box(box, w, h, 0, bar if top else 0, w, h + bar)


def _smiley(size: int, rng: np.random.Generator) -> Image.Image:
    s = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(s)
    face = [(255, 204, 0), (255, 80, 80), (90, 200, 255), (120, 220, 100)][int(rng.integers(0, 4))]
    d.ellipse((1, 1, size - 2, size - 2), fill=face + (255,), outline=(0, 0, 0, 255), width=max(1, size // 30))
    e = size // 8
    d.ellipse((size * 0.3 - e, size * 0.35 - e, size * 0.3 + e, size * 0.35 + e), fill=(0, 0, 0, 255))
    d.ellipse((size * 0.7 - e, size * 0.35 - e, size * 0.7 + e, size * 0.35 + e), fill=(0, 0, 0, 255))
    d.arc((size * 0.22, size * 0.3, size * 0.78, size * 0.8), 20, 160, fill=(0, 0, 0, 255), width=max(2, size // 16))
    return s


def _shape(size: int, rng: np.random.Generator) -> Image.Image:
    s = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(s)
    fill = _rand_colour(rng) + (255,)
    kind = int(rng.integers(0, 3))
    if kind == 0:  # star
        pts = [(size / 2 + (size / 2 - 1) * (1 if k % 2 == 0 else 0.45) * math.cos(math.pi * k / 5 - math.pi / 2),
                size / 2 + (size / 2 - 1) * (1 if k % 2 == 0 else 0.45) * math.sin(math.pi * k / 5 - math.pi / 2))
               for k in range(10)]
        d.polygon(pts, fill=fill, outline=(0, 0, 0, 255))
    elif kind == 1:  # heart
        r = size / 4
        d.ellipse((0, 0, 2 * r, 2 * r), fill=fill)
        d.ellipse((2 * r, 0, 4 * r, 2 * r), fill=fill)
        d.polygon([(0, r * 1.2), (size, r * 1.2), (size / 2, size - 1)], fill=fill)
    else:  # speech bubble with text
        d.rounded_rectangle((0, 0, size - 1, size * 0.7), radius=size // 6, fill=(255, 255, 255, 255),
                            outline=(0, 0, 0, 255), width=2)
        d.polygon([(size * 0.2, size * 0.69), (size * 0.4, size * 0.69), (size * 0.15, size * 0.95)],
                  fill=(255, 255, 255, 255))
        d.text((size * 0.1, size * 0.2), _text(rng, 1, 2), font=_font(size * 0.2), fill=(0, 0, 0, 255))
    return s


def _photo_sticker(size: int, other: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A cut-out of another picture with a white sticker border."""
    patch = resized_crop(other, rng, (0.2, 0.8)).convert("RGB").resize((size, size), Image.BILINEAR)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size - 1, size - 1), fill=255) if rng.random() < 0.5 else \
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, size - 1, size - 1), radius=size // 5, fill=255)
    border = max(2, size // 14)
    out = Image.new("RGBA", (size + 2 * border, size + 2 * border), (0, 0, 0, 0))
    big = ImageOps.expand(mask, border, 0).filter(ImageFilter.MaxFilter(2 * (border // 2) + 1))
    out.paste(Image.new("RGBA", out.size, (255, 255, 255, 255)), (0, 0), big)
    out.paste(patch, (border, border), mask)
    return out


def stickers(img: Image.Image, rng: np.random.Generator, other: OtherPicture | None = None) -> Image.Image:
    """One to three emoji-like faces, shapes or photo stickers pasted on the picture."""
    img = img.copy()
    w, h = img.size
    for _ in range(int(rng.integers(1, 4))):
        size = max(12, int(min(w, h) * rng.uniform(0.12, 0.4)))
        kind = rng.random()
        if kind < 0.35:
            s = _smiley(size, rng)
        elif kind < 0.7 or other is None:
            s = _shape(size, rng)
        else:
            s = _photo_sticker(size, other(), rng)
        s = s.rotate(float(rng.uniform(-30, 30)), Image.BICUBIC, expand=True)
        img.paste(s, (int(rng.uniform(-0.1, 0.9) * w), int(rng.uniform(-0.1, 0.9) * h)), s)
    return img


# -- framing ----------------------------------------------------------------------------------
def border(img: Image.Image, rng: np.random.Generator, box=(0.0, 0.0, 1.0, 1.0)):
    """A plain or uneven border / letterbox padding; returns (img, box)."""
    w, h = img.size
    if rng.random() < 0.5:  # letterbox to a square or a 16:9 / 9:16 canvas
        target = [1.0, 16 / 9, 9 / 16][int(rng.integers(0, 3))]
        nw, nh = (max(w, int(h * target)), h) if w / h < target else (w, max(h, int(w / target)))
    else:
        f = rng.uniform(0.03, 0.25, 4)
        nw, nh = int(w * (1 + f[0] + f[1])), int(h * (1 + f[2] + f[3]))
    bg = _rand_colour(rng) if rng.random() < 0.5 else ((0, 0, 0) if rng.random() < 0.5 else (255, 255, 255))
    out = Image.new("RGB", (nw, nh), bg)
    if rng.random() < 0.3:  # blurred copy of the picture as the background, as phones do
        out = img.resize((nw, nh), Image.BILINEAR).filter(ImageFilter.GaussianBlur(max(nw, nh) / 20))
    left, top = int(rng.integers(0, nw - w + 1)), int(rng.integers(0, nh - h + 1))
    out.paste(img, (left, top))
    return out, _expand_box(box, w, h, left, top, nw, nh)


def ui_chrome(img: Image.Image, rng: np.random.Generator, box=(0.0, 0.0, 1.0, 1.0)):
    """A screenshot of a feed: status bar, header with a name, action bar; returns (img, box)."""
    w, h = img.size
    dark = rng.random() < 0.4
    bg = (20, 20, 24) if dark else (250, 250, 250)
    fg = (230, 230, 230) if dark else (30, 30, 30)
    status = max(10, int(h * 0.05))
    header, actions = max(12, int(h * rng.uniform(0.08, 0.18))), max(12, int(h * rng.uniform(0.08, 0.2)))
    margin = int(w * rng.uniform(0.0, 0.08))
    nw, nh = w + 2 * margin, h + status + header + actions
    out = Image.new("RGB", (nw, nh), bg)
    out.paste(img, (margin, status + header))
    d = ImageDraw.Draw(out)
    fs = max(8, status - 2)
    d.text((4, 0), f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}", font=_font(fs), fill=fg)
    d.rectangle((nw - 5 * fs, 2, nw - 4, status - 2), outline=fg)
    r = header // 3
    d.ellipse((margin + 4, status + r, margin + 4 + 2 * r, status + 3 * r), fill=_rand_colour(rng))
    d.text((margin + 8 + 2 * r, status + r), _text(rng, 1, 3), font=_font(r * 1.2), fill=fg)
    y = status + header + h + actions // 4
    for k in range(4):
        x = margin + 6 + k * actions
        d.ellipse((x, y, x + actions // 2, y + actions // 2), outline=fg, width=2)
    return out, _expand_box(box, w, h, margin, status + header, nw, nh)


def phone_photo(img: Image.Image, rng: np.random.Generator, box=(0.0, 0.0, 1.0, 1.0)):
    """A phone photo of a screen showing the picture: bezel, perspective, moire, glare, blur,
    colour cast, noise; returns (img, approximate box)."""
    w, h = img.size
    pad = int(max(w, h) * rng.uniform(0.02, 0.1))
    screen = ImageOps.expand(img, pad, fill=(int(rng.integers(0, 40)),) * 3)
    sw, sh = screen.size
    room = int(max(sw, sh) * rng.uniform(0.0, 0.15))
    bg = _rand_colour(rng)
    canvas = Image.new("RGB", (sw + 2 * room, sh + 2 * room), bg)
    canvas.paste(screen, (room, room))
    box = _expand_box(box, w, h, room + pad, room + pad, *canvas.size)
    canvas = perspective(canvas, rng, rng.uniform(0.02, 0.12), fill=bg)
    a = np.asarray(canvas, dtype=np.float32)
    H, W = a.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if rng.random() < 0.8:  # moire: interference of the screen grid and the sensor grid
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(2.5, 8.0) * max(H, W) / 256
        wave = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
        a *= 1.0 + rng.uniform(0.04, 0.18) * wave[..., None]
    if rng.random() < 0.6:  # glare: a soft bright spot
        cx, cy, rad = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.2, 0.6) * max(H, W)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad ** 2)) * rng.uniform(40, 140)
        a += g[..., None]
    a *= rng.uniform(0.85, 1.15, 3)  # white balance
    a += rng.normal(0, rng.uniform(2, 8), a.shape)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5) * max(H, W) / 256))
    if rng.random() < 0.5:  # the photo is cropped a little, never to the picture's inside
        out = resized_crop(out, rng, (0.75, 1.0), (0.8, 1.25))
        box = (0.0, 0.0, 1.0, 1.0)  # where the picture went is no longer tracked
    return out, box


def collage(img: Image.Image, rng: np.random.Generator, other: OtherPicture, box=(0.0, 0.0, 1.0, 1.0)):
    """The picture as one panel of 2 to 4 beside other pictures; returns (img, panel box)."""
    layout = [(2, 1), (1, 2), (2, 2), (3, 1), (1, 3)][int(rng.choice(5, p=[0.35, 0.2, 0.25, 0.1, 0.1]))]
    cols, rows = layout
    cell = int(rng.integers(160, 257))
    cw, ch = (cell, int(cell * rng.uniform(0.75, 1.33))) if rng.random() < 0.5 else (cell, cell)
    gap = int(rng.integers(0, 10))
    bg = (255, 255, 255) if rng.random() < 0.6 else _rand_colour(rng)
    W, H = cols * cw + (cols + 1) * gap, rows * ch + (rows + 1) * gap
    out = Image.new("RGB", (W, H), bg)
    slot = int(rng.integers(0, cols * rows))
    fill = rng.random() < 0.5  # fill each cell (crop) or fit it (keep all of the picture)
    for k in range(cols * rows):
        pic = img if k == slot else other().convert("RGB")
        if fill:
            pic = ImageOps.fit(pic, (cw, ch), Image.BILINEAR)
        else:
            pic = pic.copy()
            pic.thumbnail((cw, ch), Image.BILINEAR)
        x = gap + (k % cols) * (cw + gap) + (cw - pic.width) // 2
        y = gap + (k // cols) * (ch + gap) + (ch - pic.height) // 2
        out.paste(pic, (x, y))
        if k == slot:
            box = (x / W, y / H, (x + pic.width) / W, (y + pic.height) / H)
    return out, box


# -- the pipeline -----------------------------------------------------------------------------
class Augmenter:
    """Draws strongly edited views of pictures; ``other`` supplies pictures for collages/stickers."""

    def __init__(self, rng: np.random.Generator, other: OtherPicture | None = None):
        self.rng = rng
        self.other = other

    def view(self, img: Image.Image) -> View:
        """One random view: crops, geometry, colour, overlays, framing, degradations."""
        rng, ops = self.rng, []
        img = img.convert("RGB")
        if rng.random() < 0.9:
            heavy = rng.random() < 0.25
            img = resized_crop(img, rng, (0.08, 0.35) if heavy else (0.3, 1.0), (0.6, 1.66))
            ops.append("heavy_crop" if heavy else "crop")
        img = limit_side(img, int(rng.integers(224, WORK_SIDE + 1)))
        box = (0.0, 0.0, 1.0, 1.0)
        if rng.random() < 0.25:
            img = rotate(img, rng)
            ops.append("rotate")
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
            ops.append("mirror")
        if rng.random() < 0.7:
            img = colour_jitter(img, rng)
            ops.append("colour")
        if rng.random() < 0.2:
            img = greyscale(img)
            ops.append("grey")
        if self.other is not None and rng.random() < 0.15:
            img, box = collage(img, rng, self.other, box)
            ops.append("collage")
        if rng.random() < 0.25:
            img = text_overlay(img, rng)
            ops.append("text")
        if rng.random() < 0.2:
            img = stickers(img, rng, self.other)
            ops.append("stickers")
        if rng.random() < 0.12:
            img, box = caption_bar(img, rng, box)
            ops.append("caption")
        r = rng.random()
        if r < 0.1:
            img, box = border(img, rng, box)
            ops.append("border")
        elif r < 0.17:
            img, box = ui_chrome(img, rng, box)
            ops.append("chrome")
        if rng.random() < 0.12:
            img, box = phone_photo(img, rng, box)
            ops.append("phone")
        img = limit_side(img)
        if rng.random() < 0.3:
            img = blur(img, rng)
            ops.append("blur")
        if rng.random() < 0.12:
            img = noise(img, rng)
            ops.append("noise")
        if rng.random() < 0.05:
            img = pixelate(img, rng)
            ops.append("pixelate")
        if rng.random() < 0.25:
            img = down_up(img, rng)
            ops.append("down_up")
        if rng.random() < 0.6:
            img = jpeg(img, rng)
            ops.append("jpeg")
        return View(img, ops, box)

    def edit(self, img: Image.Image, family: str) -> View:
        """One edit of a named family (validation queries)."""
        rng = self.rng
        img = limit_side(img.convert("RGB"), 512)
        box = (0.0, 0.0, 1.0, 1.0)
        if family == "mild":
            img = limit_side(img, int(rng.integers(160, 400)))
            img = jpeg(img, rng, 30, 90)
        elif family == "crop":
            img = resized_crop(img, rng, (0.35, 0.8), (0.6, 1.66))
            img = jpeg(img, rng, 50, 90)
        elif family == "grey_blur":
            img = blur(greyscale(img), rng, 1.0, 3.0)
            img = jpeg(img, rng, 40, 90)
        elif family == "text":
            img = text_overlay(img, rng)
            img, box = caption_bar(img, rng, box)
            img = jpeg(img, rng, 50, 90)
        elif family == "sticker_mirror":
            img = stickers(ImageOps.mirror(img), rng, self.other)
            img = jpeg(img, rng, 50, 90)
        elif family == "border_chrome":
            img, box = (ui_chrome if rng.random() < 0.5 else border)(img, rng, box)
            img = jpeg(img, rng, 50, 90)
        elif family == "phone":
            img, box = phone_photo(img, rng, box)
            img = jpeg(img, rng, 50, 90)
        elif family == "collage":
            if self.other is None:
                raise InvalidArgument("collage edits need other pictures")
            img, box = collage(img, rng, self.other, box)
            img = jpeg(img, rng, 50, 90)
        elif family == "pixel_noise":
            img = (pixelate if rng.random() < 0.4 else noise)(img, rng)
            img = down_up(img, rng, 0.4, 0.8)
            img = jpeg(img, rng, 30, 80)
        elif family == "mixed":
            return self.view(img)
        else:
            raise InvalidArgument(f"unknown edit family {family!r}; want one of {FAMILIES}")
        return View(img, [family], box)
