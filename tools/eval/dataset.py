"""The benchmark set, built on the fly from real images and texts that installed packages ship.

Images come from ``skimage/data``, ``sklearn.datasets`` and matplotlib's ``sample_data``; they
are deduplicated (exact, PDQ and thumbnail correlation), then split three ways:

* pool A: small or synthetic full images that become seeds;
* pool B: small or synthetic full images that become distractors;
* pool C: tile sources, the large natural photos. Their full image is never used (it would contain every tile); their
  non-overlapping tiles are genuinely different images. Half of the sources give seed tiles,
  the other half distractor tiles, so no negative shares a photo with a seed. This is how the
  benchmark reaches enough unrelated pairs for a 0.1% false-match rate.

Texts are sentences split from docstrings of installed packages, deduplicated by word overlap.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import os
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from dedup.errors import InvalidArgument

# Files that are not natural single images (multi-page TIFF, 14x25 GIF) or need a download.
_SKIP = {"multipage.tif", "multipage_rgb.tif", "no_time_for_that_tiny.gif"}
# Periodic or synthetic images whose tiles would be identical to each other.
_NO_TILES = {"chessboard_GRAY", "chessboard_RGB", "color", "logo", "phantom", "horse",
             "clock_motion", "text", "page", "logo2"}
_IMAGE_EXT = (".png", ".jpg", ".jpeg")


@dataclass
class Original:
    """One original image of the benchmark."""

    name: str  # "skimage/astronaut", "skimage/retina#r1c2" (a tile), "lfw/017"
    image: Image.Image  # RGB


@dataclass
class ImageBenchmark:
    """Seeds (the bank) and distractors (originals of negative queries), all distinct."""

    seeds: list[Original]
    distractors: list[Original]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (dropped, kept) duplicates

    def summary(self) -> dict:
        """Counts and names, for the report."""
        return {
            "n_seeds": len(self.seeds),
            "n_distractors": len(self.distractors),
            "seeds": [o.name for o in self.seeds],
            "distractor_sources": sorted({o.name.split("#")[0] for o in self.distractors
                                          if not o.name.startswith("lfw/")}),
            "n_lfw_distractors": sum(o.name.startswith("lfw/") for o in self.distractors),
            "n_tile_distractors": sum("#" in o.name for o in self.distractors),
            "n_tile_seeds": sum("#" in o.name for o in self.seeds),
            "dropped_duplicates": [{"dropped": a, "kept": b} for a, b in self.dropped],
        }


@dataclass
class TextBenchmark:
    """Seed sentences and unrelated distractor sentences."""

    seeds: list[str]
    distractors: list[str]
    n_candidates: int = 0

    def summary(self) -> dict:
        """Counts and examples, for the report."""
        return {"n_seeds": len(self.seeds), "n_distractors": len(self.distractors),
                "n_candidates": self.n_candidates, "seed_examples": self.seeds[:3]}


# -- loading ---------------------------------------------------------------------------------

def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _image_files() -> list[tuple[str, str]]:
    """(name, path) of every packaged natural image that loads offline, sorted by name."""
    import matplotlib
    import skimage
    import sklearn.datasets

    dirs = [
        ("skimage", os.path.join(os.path.dirname(skimage.__file__), "data")),
        ("sklearn", os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")),
        ("matplotlib", os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")),
    ]
    out = []
    for prefix, d in dirs:
        if not os.path.isdir(d):
            continue
        for fn in sorted(os.listdir(d)):
            if fn in _SKIP or not fn.lower().endswith(_IMAGE_EXT):
                continue
            out.append((f"{prefix}/{os.path.splitext(fn)[0]}", os.path.join(d, fn)))
    return sorted(out)


def load_originals(min_side: int = 96) -> list[Original]:
    """Every packaged image as RGB, smallest side at least ``min_side`` pixels."""
    out = []
    for name, path in _image_files():
        with Image.open(path) as img:
            img.load()
            rgb = _to_rgb(img)
        if min(rgb.size) >= min_side:
            out.append(Original(name, rgb))
    return out


def load_lfw(n: int, size: int = 112) -> list[Original]:
    """Up to ``n`` of skimage's 200 LFW face crops (25x25 grey), upscaled to ``size``."""
    import skimage

    if n <= 0:
        return []
    faces = np.load(os.path.join(os.path.dirname(skimage.__file__), "data", "lfw_subset.npy"))
    out = []
    for i, face in enumerate(faces[:n]):
        img = Image.fromarray((face * 255).round().astype(np.uint8), "L")
        out.append(Original(f"lfw/{i:03d}", img.resize((size, size), Image.BICUBIC).convert("RGB")))
    return out


# -- dedup -----------------------------------------------------------------------------------

def _pdq_bits(img: Image.Image) -> np.ndarray:
    import pdqhash

    bits, _quality = pdqhash.compute(np.asarray(img))
    return bits.astype(bool)


def _thumb(img: Image.Image, side: int = 16) -> np.ndarray:
    """Zero-mean, unit-norm grey thumbnail: dot products are correlations."""
    a = np.asarray(img.convert("L").resize((side, side), Image.BILINEAR), dtype=np.float32).ravel()
    a = a - a.mean()
    return a / max(float(np.linalg.norm(a)), 1e-6)


def dedup_images(items: list[Original], max_hamming: int = 40,
                 min_corr: float = 0.85) -> tuple[list[Original], list[tuple[str, str]]]:
    """Drop every image that is an exact, PDQ (Hamming <= max_hamming) or thumbnail
    (correlation >= min_corr) near-duplicate of one kept before it; returns (kept, dropped)."""
    if not items:
        return [], []
    sha = [hashlib.sha256(o.image.tobytes()).hexdigest() for o in items]
    bits = np.stack([_pdq_bits(o.image) for o in items])
    thumbs = np.stack([_thumb(o.image) for o in items])
    ham = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    corr = thumbs @ thumbs.T
    kept: list[int] = []
    dropped: list[tuple[str, str]] = []
    for i in range(len(items)):
        dup = next((j for j in kept if sha[i] == sha[j] or ham[i, j] <= max_hamming
                    or corr[i, j] >= min_corr), None)
        if dup is None:
            kept.append(i)
        else:
            dropped.append((items[i].name, items[dup].name))
    return [items[i] for i in kept], dropped


# -- tiles -----------------------------------------------------------------------------------

def tiles(orig: Original, tile: int, max_tiles: int, min_std: float = 12.0) -> list[Original]:
    """Non-overlapping ``tile`` x ``tile`` crops, skipping flat ones, at most ``max_tiles``."""
    w, h = orig.image.size
    grey = np.asarray(orig.image.convert("L"), dtype=np.float32)
    ox, oy = (w % tile) // 2, (h % tile) // 2  # centre the grid
    out = []
    for r in range(h // tile):
        for c in range(w // tile):
            x0, y0 = ox + c * tile, oy + r * tile
            if grey[y0:y0 + tile, x0:x0 + tile].std() < min_std:
                continue  # empty sky, black space: every such tile looks alike
            out.append(Original(f"{orig.name}#r{r}c{c}",
                                orig.image.crop((x0, y0, x0 + tile, y0 + tile))))
    if len(out) > max_tiles:  # evenly spread over the image, not just its top rows
        out = [out[i] for i in np.linspace(0, len(out) - 1, max_tiles).round().astype(int)]
    return out


def build_image_benchmark(seed: int = 0, tile: int = 112, max_tiles: int = 32,
                          n_lfw: int = 100, quick: bool = False) -> ImageBenchmark:
    """Load, deduplicate and split the packaged images into seeds and distractors."""
    originals, dropped = dedup_images(load_originals())
    rng = np.random.default_rng(seed)
    order = [originals[i] for i in rng.permutation(len(originals))]
    tileable = [o for o in order if o.name.split("/")[1] not in _NO_TILES
                and min(o.image.size) >= 2 * tile]
    # Every large natural photo is a tile source (many distinct images from few photos); the
    # small and synthetic ones stay whole.
    sources = tileable
    whole = [o for o in order if o not in sources]
    pool_a, pool_b = whole[0::2], whole[1::2]
    if quick:
        sources, pool_a, pool_b = sources[:2], pool_a[:3], pool_b[:2]
        max_tiles, n_lfw = min(max_tiles, 6), min(n_lfw, 10)
    # All tiles of one source go to one side, so a negative never shares a photo with a seed.
    seed_tiles = [t for src in sources[0::2] for t in tiles(src, tile, max_tiles)]
    dis_tiles = [t for src in sources[1::2] for t in tiles(src, tile, max_tiles)]
    # Tiles are deduplicated too (two tiles of one texture can be near-identical).
    kept, tile_dropped = dedup_images(list(pool_a) + list(pool_b) + seed_tiles + dis_tiles)
    kept_names = {o.name for o in kept}
    seeds = [o for o in list(pool_a) + seed_tiles if o.name in kept_names]
    distractors = [o for o in list(pool_b) + dis_tiles if o.name in kept_names]
    distractors.extend(load_lfw(n_lfw))
    if not seeds or not distractors:
        raise InvalidArgument("benchmark has no seeds or no distractors: too few packaged images")
    return ImageBenchmark(seeds, distractors, dropped + tile_dropped)


# -- texts -----------------------------------------------------------------------------------

_TEXT_MODULES = (
    "numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma", "scipy.stats",
    "scipy.signal", "scipy.ndimage", "scipy.optimize", "scipy.sparse", "scipy.spatial",
    "scipy.interpolate", "skimage.filters", "skimage.transform", "skimage.feature",
    "skimage.measure", "skimage.morphology", "skimage.segmentation", "skimage.exposure",
    "sklearn.linear_model", "sklearn.cluster", "sklearn.decomposition", "sklearn.metrics",
    "sklearn.ensemble", "sklearn.preprocessing", "sklearn.model_selection", "sklearn.svm",
    "json", "os", "os.path", "collections", "itertools", "functools", "re", "string",
    "textwrap", "argparse", "logging", "asyncio", "subprocess", "shutil", "pathlib",
    "datetime", "decimal", "fractions", "statistics", "random", "heapq", "bisect", "csv",
    "sqlite3", "email", "http.client", "urllib.parse", "zipfile", "tarfile", "threading",
    "multiprocessing", "socket", "ssl", "hashlib", "hmac", "secrets", "uuid", "typing",
    "dataclasses", "enum", "contextlib", "inspect", "unittest", "doctest", "pdb", "pickle",
)
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[a-z]+")


def _docstrings() -> list[str]:
    """Docstrings of _TEXT_MODULES, read in a fresh interpreter.

    Libraries patch each other when imported (one replaces an ``inspect`` helper, say), so the
    same modules read in this process would give a corpus that depends on what ran before.
    """
    import json
    import subprocess
    import sys

    code = "import json, tools.eval.dataset as d; print(json.dumps(d._docstrings_here()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    return json.loads(proc.stdout.splitlines()[-1])


def _docstrings_here() -> list[str]:
    docs = []
    for modname in _TEXT_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        docs.append(inspect.getdoc(mod) or "")
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            try:
                obj = getattr(mod, attr, None)
            except Exception:  # lazy modules raise on experimental names (sklearn)
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
                docs.append(inspect.getdoc(obj) or "")
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this  # rot13-encoded in the module
    docs.append("".join(this.d.get(ch, ch) for ch in this.s))
    return docs


def _sentences(doc: str) -> list[str]:
    out = []
    # Paragraphs; numpydoc section headers ("Parameters\n----------") end the prose part.
    for para in re.split(r"\n\s*\n", doc.split("\n----")[0]):
        text = " ".join(para.split())
        for s in _SENT_SPLIT.split(text):
            if (50 <= len(s) <= 220 and s[0].isupper() and s[-1] in ".!?"
                    and not re.search(r">>>|::|`|\|\||\$|\\|==|\[\d|[{}<>]|http", s)
                    and sum(ch.isalpha() or ch == " " for ch in s) >= 0.9 * len(s)
                    and len(s.split()) >= 8):
                out.append(s)
    return out


def collect_sentences() -> list[str]:
    """Unique prose sentences from installed packages' docstrings, in a fixed order."""
    seen, out = set(), []
    for doc in _docstrings():
        for s in _sentences(doc):
            key = " ".join(_WORD.findall(s.lower()))
            if key not in seen:
                seen.add(key)
                out.append(s)
    return sorted(out, key=lambda s: hashlib.sha256(s.encode()).hexdigest())


def dedup_sentences(sentences: list[str], max_overlap: float = 0.5) -> list[str]:
    """Drop a sentence whose word-set Jaccard overlap with an earlier kept one exceeds max_overlap."""
    import scipy.sparse as sp

    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sentences):
        for w in set(_WORD.findall(s.lower())):
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                      shape=(len(sentences), max(len(vocab), 1)))
    inter = (x @ x.T).tocsr()  # |a & b| for every pair sharing a word
    size = np.asarray(x.sum(1)).ravel()
    keep = np.ones(len(sentences), bool)
    for i in range(len(sentences)):
        if not keep[i]:
            continue
        row = inter.getrow(i)
        j, n = row.indices, row.data
        jac = n / np.maximum(size[i] + size[j] - n, 1)
        later = j[(j > i) & (jac > max_overlap)]
        keep[later] = False
    return [s for s, k in zip(sentences, keep) if k]


def build_text_benchmark(seed: int = 0, n_seeds: int = 300, n_distractors: int = 1500,
                         quick: bool = False) -> TextBenchmark:
    """Seed and distractor sentences, disjoint and without near-duplicates between them."""
    cands = collect_sentences()
    uniq = dedup_sentences(cands)
    if quick:
        n_seeds, n_distractors = min(n_seeds, 30), min(n_distractors, 60)
    rng = np.random.default_rng(seed)
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    if len(order) < n_seeds + 50:
        raise InvalidArgument(f"only {len(order)} unique sentences found; need > {n_seeds + 50}")
    return TextBenchmark(order[:n_seeds], order[n_seeds:n_seeds + n_distractors], len(cands))
