"""Fit a centre vector for the ``image:effnet-lite0`` space (the mean pooled feature).

Usage (repo root): ``python -m tools.fit_effnet_center --out center.npy``

Measured by tools/measure_effnet.py, centring did not help, so none ships; this tool keeps the
experiment reproducible (pass the vector as ``create_embedder(..., center=np.load(path))``).
The centre is the mean pooled feature (default embedding settings) over a deterministic fit set that shares NO image with the evaluation seeds
of tools/measure_effnet.py (tests/conftest.py SKIMAGE_NAMES): sklearn's china/flower photos,
matplotlib's sample photos, skimage's LFW faces and the skimage images left out of the
evaluation, each also as random crops, plus synthetic noise, gradients and shapes. Needs the
dev extras (scikit-learn, matplotlib) for the sample photos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SEED = 20240601
# skimage images NOT in the evaluation set (cat == chelsea, so it is left out too).
_SKIMAGE_FIT = ("binary_blobs", "horse", "checkerboard", "microaneurysms", "shepp_logan_phantom")


def _photos() -> list[Image.Image]:
    import matplotlib
    import skimage.data
    import sklearn.datasets

    photos = [Image.fromarray(a) for a in sklearn.datasets.load_sample_images().images]
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        if (sample / name).exists():
            photos.append(Image.open(sample / name).convert("RGB"))
    # The motorcycle's right view is a near-duplicate of an evaluation seed: not used.
    for name in _SKIMAGE_FIT:
        arr = np.asarray(getattr(skimage.data, name)())
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype != np.uint8:
            arr = (255 * (arr - arr.min()) / max(float(np.ptp(arr)), 1e-9)).astype(np.uint8)
        photos.append(Image.fromarray(arr).convert("RGB"))
    return photos


def _faces(n: int) -> list[Image.Image]:
    import skimage.data

    faces = skimage.data.lfw_subset()[:n]
    return [Image.fromarray((f * 255).astype(np.uint8)).convert("RGB").resize((112, 112)) for f in faces]


def _synthetic(rng: np.random.Generator, n: int) -> list[Image.Image]:
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:  # smooth coloured noise at a random scale
            s = int(rng.integers(2, 32))
            small = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
            out.append(Image.fromarray(small).resize((224, 224), Image.BICUBIC))
        elif kind == 1:  # two-colour gradient
            a, b = rng.integers(0, 256, (2, 3))
            t = np.linspace(0, 1, 224)[:, None, None]
            arr = (a * (1 - t) + b * t).astype(np.uint8).repeat(224, axis=1)
            out.append(Image.fromarray(arr))
        else:  # random shapes on a random background
            img = Image.new("RGB", (224, 224), tuple(int(v) for v in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(3, 12))):
                x0, y0 = (int(v) for v in rng.integers(0, 200, 2))
                w, h = (int(v) for v in rng.integers(10, 120, 2))
                fill = tuple(int(v) for v in rng.integers(0, 256, 3))
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill=fill)
            out.append(img)
    return out


def _crops(rng: np.random.Generator, photos: list[Image.Image], per_photo: int) -> list[Image.Image]:
    out = []
    for img in photos:
        w, h = img.size
        for _ in range(per_photo):
            s = rng.uniform(0.3, 0.9)
            cw, ch = max(16, int(w * s)), max(16, int(h * s))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            out.append(img.crop((x, y, x + cw, y + ch)))
    return out


def fit_images() -> list[Image.Image]:
    """The deterministic fit set (about 300 images), disjoint from the evaluation seeds."""
    rng = np.random.default_rng(SEED)
    photos = _photos()
    return photos + _crops(rng, photos, 12) + _faces(60) + _synthetic(rng, 60)


def fit_center(features: np.ndarray) -> np.ndarray:
    """Mean pooled feature, float32 (1280,)."""
    return np.ascontiguousarray(features.mean(axis=0), dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    from dedup.embed.effnet import EffnetLite0Embedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    images = fit_images()
    emb = EffnetLite0Embedder(device="cpu")  # default recipe, uncentred
    center = fit_center(emb.pooled_features(images))
    np.save(args.out, center)
    print(f"wrote {args.out}: mean of {len(images)} images, |c|={np.linalg.norm(center):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
