"""Compare effnet-lite0 embedding recipes on near-duplicates of real images.

Usage (repo root): ``python -m tools.measure_effnet``

For 20 skimage seeds and 17 edits each, report per recipe the lowest cosine between a seed and
one of its edits (min matched), the highest cosine between a seed or edit and a DIFFERENT seed
(max unrelated), and the gap. One global threshold works only when the gap is positive. Centre
vectors are fitted per recipe on tools/fit_effnet_center.py's fit set, which shares no image
with these seeds.
"""

from __future__ import annotations

import argparse
import io
import itertools

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from dedup.embed.base import l2_normalize
from dedup.embed.effnet import RESIZE_POLICIES, load_network, pool, preprocess
from tools.fit_effnet_center import fit_center, fit_images

EVAL_SEEDS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page",
    "retina", "rocket", "stereo_motorcycle", "text", "cell",
)


def _seed(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if isinstance(arr, tuple):
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        return Image.fromarray(arr, "RGBA").convert("RGB")
    return Image.fromarray(arr).convert("RGB")


def _jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(img: Image.Image, keep: float, anchor: str = "center") -> Image.Image:
    w, h = img.size
    cw, ch = int(w * keep), int(h * keep)
    x, y = ((w - cw) // 2, (h - ch) // 2) if anchor == "center" else (0, 0)
    return img.crop((x, y, x + cw, y + ch))


def _resize(img: Image.Image, s: float) -> Image.Image:
    return img.resize((max(8, int(img.width * s)), max(8, int(img.height * s))), Image.BICUBIC)


def _jitter(img: Image.Image) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(1.2)
    img = ImageEnhance.Contrast(img).enhance(0.8)
    return ImageEnhance.Color(img).enhance(1.3)


def _border(img: Image.Image) -> Image.Image:
    return ImageOps.expand(img, border=max(4, img.width // 10), fill=(255, 255, 255))


def _caption(img: Image.Image) -> Image.Image:
    bar = max(16, img.height // 7)
    out = Image.new("RGB", (img.width, img.height + bar), (255, 255, 255))
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((6, img.height + bar // 4), "when the meme is too real lol", fill=(0, 0, 0))
    return out


def _rotate(img: Image.Image, deg: float) -> Image.Image:
    return img.rotate(deg, resample=Image.BICUBIC, expand=True, fillcolor=(0, 0, 0))


AUGMENTATIONS = {
    "resize0.5": lambda im: _resize(im, 0.5),
    "thumb160": lambda im: _resize(im, 160 / max(im.size)),
    "jpeg60": lambda im: _jpeg(im, 60),
    "jpeg30": lambda im: _jpeg(im, 30),
    "crop10": lambda im: _crop(im, 0.9),
    "crop20": lambda im: _crop(im, 0.8),
    "crop20corner": lambda im: _crop(im, 0.8, "corner"),
    "mirror": ImageOps.mirror,
    "jitter": _jitter,
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "rot5": lambda im: _rotate(im, 5),
    "border10": _border,
    "caption": _caption,
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
    "crop10+jpeg50+resize": lambda im: _resize(_jpeg(_crop(im, 0.9), 50), 0.7),
    "mirror+caption+jitter": lambda im: _jitter(_caption(ImageOps.mirror(im))),
    "rot-3+crop10": lambda im: _crop(_rotate(im, -3), 0.9),
}


POOLINGS = {"avg": ("avg", 1.0), "gem2": ("gem", 2.0), "gem3": ("gem", 3.0)}


@torch.inference_mode()
def _pooled(net, images, resize: str) -> dict[tuple[str, bool], np.ndarray]:
    """{(pooling, mirror): (n, 1280)} for one resize policy, from one pass per view."""
    out: dict[tuple[str, bool], list] = {k: [] for k in itertools.product(POOLINGS, (False, True))}
    for start in range(0, len(images), 32):
        x = preprocess(images[start : start + 32], resize)
        f0, f1 = net.features(x), net.features(x.flip(3))
        for name, (method, p) in POOLINGS.items():
            a, b = pool(f0, method, p).numpy(), pool(f1, method, p).numpy()
            out[(name, False)].append(a)
            out[(name, True)].append(0.5 * (a + b))
    return {k: np.concatenate(v) for k, v in out.items()}


def evaluate(emb: np.ndarray, n_seeds: int, n_aug: int) -> dict:
    """emb rows: seeds first, then seed-major edits -> min matched, max unrelated, recall at 0.1% FMR."""
    seeds, edits = emb[:n_seeds], emb[n_seeds:].reshape(n_seeds, n_aug, -1)
    matched = np.einsum("sd,sad->sa", seeds, edits)
    owner = np.repeat(np.arange(n_seeds), n_aug + 1)
    queries = np.concatenate([seeds[:, None], edits], axis=1).reshape(-1, emb.shape[1])
    sims = queries @ seeds.T
    related = np.zeros_like(sims, dtype=bool)
    related[np.arange(len(owner)), owner] = True  # a seed and its own edits are not unrelated
    unrelated = sims[~related]
    thr = float(np.quantile(unrelated, 0.999))
    return {
        "min_matched": float(matched.min()),
        "max_unrelated": float(unrelated.max()),
        "mean_unrelated": float(unrelated.mean()),
        "thr_fmr": thr,
        "recall_fmr": float((matched > thr).mean()),
        "per_edit_min": matched.min(axis=0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    torch.manual_seed(0)
    net = load_network()
    seeds = [_seed(n) for n in EVAL_SEEDS]
    edits = [aug(s) for s in seeds for aug in AUGMENTATIONS.values()]
    fit = fit_images()
    rows = []
    for resize in RESIZE_POLICIES:
        ev = _pooled(net, seeds + edits, resize)
        fv = _pooled(net, fit, resize)
        for (p, mirror), feats in ev.items():
            for centred in (False, True):
                x = feats - fit_center(fv[(p, mirror)]) if centred else feats
                r = evaluate(l2_normalize(x), len(seeds), len(AUGMENTATIONS))
                mode = "mirror" if mirror else "single"
                r["name"] = f"{resize:6s} {p:4s} {mode:6s} {'centred' if centred else 'raw':7s}"
                rows.append(r)
    n_unrel = len(seeds) * (len(AUGMENTATIONS) + 1) * (len(seeds) - 1)
    print(f"{len(seeds)} seeds x {len(AUGMENTATIONS)} edits, {n_unrel} unrelated pairs; "
          f"centres fitted on {len(fit)} disjoint images\n")
    print(f"{'recipe':28s} {'min match':>9s} {'max unrel':>9s} {'gap':>7s} {'mean unrel':>10s} "
          f"{'thr@0.1%':>8s} {'recall@0.1%':>11s}")
    rows.sort(key=lambda r: (r["recall_fmr"], r["min_matched"] - r["max_unrelated"]), reverse=True)
    for r in rows:
        print(f"{r['name']:28s} {r['min_matched']:9.3f} {r['max_unrelated']:9.3f} "
              f"{r['min_matched'] - r['max_unrelated']:+7.3f} {r['mean_unrelated']:10.3f} "
              f"{r['thr_fmr']:8.3f} {r['recall_fmr']:11.3f}")
    best = rows[0]
    print(f"\nper-edit min matched cosine, {best['name'].strip()}:")
    for aug, v in zip(AUGMENTATIONS, best["per_edit_min"]):
        print(f"  {aug:24s} {v:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
