"""Copy-detection image descriptor (space ``image:copydet-lite0``), trained by ``dedup-train``.

EfficientNet-Lite0 (``dedup.embed.effnet``), its late stages fine-tuned SSCD-style for copy
detection: two strongly edited views of one picture are a positive pair, the rest of the batch
negatives (InfoNCE), with a KoLeo spreading term. Recipe, data and figures:
``dedup/embed/weights/copydet-lite0.md``.

Embedding (``EMBED_VERSION``): the whole picture squashed to 224x224 (aspect not kept, so
nothing at the edges is lost: caption bars, collage panels) -> Lite0 features (1280 x 7 x 7)
-> GeM pooling, p=3 -> linear projection to 512 -> L2. One view: mirror invariance is learnt
from flipped training views, not bought with a second forward pass.

``embed_regions`` pools the same feature map over the whole picture and 8 parts (left, right,
top and bottom halves, four quadrants) in one forward pass; the maximum similarity over a
query's regions finds a seed that is one panel of a collage. ``embed_parts`` embeds the parts
``query_parts`` finds on their own (panels of a wide or tall picture, cells of a grid collage, a
photographed screen rectified); their vectors join the regions' for a query.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dedup.embed import layout
from dedup.embed.base import file_digest, pick_device
from dedup.embed.effnet import FEATURE_DIM, EfficientNetLite0, fold
from dedup.errors import InvalidArgument

SPACE = "image:copydet-lite0"
EMBED_VERSION = "v1-squash224-gem3-proj"  # bump on any preprocessing/pooling change
INPUT_SIZE = 224
GEM_P = 3.0
# Region boxes as fractions (x0, y0, x1, y1); the first is the whole picture.
REGIONS = (
    (0.0, 0.0, 1.0, 1.0),
    (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0),
    (0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0),
)

# A query this wide or tall (long side / short side) is also cut into halves and thirds along
# its long side, each embedded on its own: a row or column of collage panels, squashed into one
# square input, leaves each panel too few pixels (README, Quality: 3-panel rows were shortlisted
# 18 of 63 times with the regions above, 63 of 63 with these crops).
PANEL_ASPECT = 1.8
PANEL_SPLITS = (2, 3)


def panel_crops(img: Image.Image) -> list[Image.Image]:
    """Halves and thirds along the long side of a wide or tall picture; none for other shapes."""
    w, h = img.size
    if max(w, h) < PANEL_ASPECT * min(w, h):
        return []
    out = []
    for n in PANEL_SPLITS:
        for i in range(n):
            a, b = round(i * max(w, h) / n), round((i + 1) * max(w, h) / n)
            out.append(img.crop((a, 0, b, h) if w >= h else (0, a, w, b)))
    return out


def query_parts(img: Image.Image) -> list[Image.Image]:
    """The parts of an upload embedded on their own beside it (query side only): the panels of a
    wide or tall picture or else the cells of a grid collage, and a photographed screen warped
    back to a rectangle where no grid was found (``dedup.embed.layout``); none for most uploads."""
    small = layout.grey(img)
    panels = panel_crops(img)
    if not panels:
        cells = layout.grid_cells(img, small)
        if cells:
            return cells  # each cell is itself a rectangle: no screen to look for
    screen = layout.screen_view(img, small)
    return panels + ([screen] if screen is not None else [])


def weights_path() -> Path:
    """The packaged trained weights."""
    return Path(__file__).with_name("weights") / "copydet-lite0.pt"


def preprocess(images: Sequence[Image.Image], size: int = INPUT_SIZE) -> torch.Tensor:
    """(n, 3, size, size) float32 in [-1, 1]: each RGB picture squashed whole to size x size."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC))
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(0.5).div_(0.5)


def fit_size(w: int, h: int, area: int = INPUT_SIZE * INPUT_SIZE, max_aspect: float = 3.0) -> tuple[int, int]:
    """Input size for a w x h picture: about ``area`` pixels, its aspect ratio kept (clamped to
    ``max_aspect``), both sides multiples of 32 (the network's stride), at least 64."""
    aspect = min(max(w / h, 1 / max_aspect), max_aspect)
    tw, th = math.sqrt(area * aspect), math.sqrt(area / aspect)
    return max(64, int(round(tw / 32)) * 32), max(64, int(round(th / 32)) * 32)


def preprocess_keep_aspect(img: Image.Image) -> torch.Tensor:
    """(1, 3, h, w) float32 in [-1, 1]: one RGB picture at ``fit_size``, aspect ratio kept."""
    img = img.convert("RGB")
    arr = np.asarray(img.resize(fit_size(*img.size), Image.BICUBIC))
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div_(255.0)
    return x.sub_(0.5).div_(0.5)


def gem(fmap: torch.Tensor, p: float = GEM_P) -> torch.Tensor:
    """(n, c, h, w) -> (n, c) generalised-mean pooling, in float32."""
    return fmap.float().clamp(min=1e-6).pow(p).mean((2, 3)).pow(1.0 / p)


def region_slices(h: int, w: int, regions=REGIONS) -> list[tuple[slice, slice]]:
    """Feature-map rows/columns covering each region box (a half of 7 cells takes 4)."""
    out = []
    for x0, y0, x1, y1 in regions:
        r0, r1 = int(np.floor(y0 * h + 1e-6)), int(np.ceil(y1 * h - 1e-6))
        c0, c1 = int(np.floor(x0 * w + 1e-6)), int(np.ceil(x1 * w - 1e-6))
        out.append((slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))))
    return out


class CopyDetNet(nn.Module):
    """Lite0 trunk + GeM + linear projection; ``split`` blocks are the frozen trunk in training."""

    def __init__(self, dim: int = 512, split: int = 15):
        super().__init__()
        self.net = EfficientNetLite0()
        del self.net._fc  # no classifier: the descriptor replaces it
        self.proj = nn.Linear(FEATURE_DIM, dim, bias=False)
        self.dim, self.split = dim, split

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the first ``split`` blocks (frozen during training)."""
        x = F.relu6(self.net._bn0(self.net._conv_stem(x)))
        for block in self.net._blocks[: self.split]:
            x = block(x)
        return x

    def top(self, h: torch.Tensor) -> torch.Tensor:
        """The trained blocks and the head: (n, 1280, h', w') feature map."""
        for block in self.net._blocks[self.split:]:
            h = block(h)
        return F.relu6(self.net._bn1(self.net._conv_head(h)))

    def describe(self, fmap: torch.Tensor) -> torch.Tensor:
        """(n, dim) unit descriptors of whole feature maps."""
        return F.normalize(self.proj(gem(fmap)), dim=-1)

    def describe_regions(self, fmap: torch.Tensor, regions=REGIONS) -> torch.Tensor:
        """(n, R, dim) unit descriptors of each region of the feature maps."""
        powered = fmap.float().clamp(min=1e-6).pow(GEM_P)
        pooled = torch.stack([powered[:, :, r, c].mean((2, 3)) for r, c in
                              region_slices(fmap.shape[2], fmap.shape[3], regions)], 1)
        return F.normalize(self.proj(pooled.pow(1.0 / GEM_P)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.describe(self.top(self.trunk(x)))


def load_network(path: str | Path | None = None) -> CopyDetNet:
    """The trained network from a weights file (fp16 or fp32 state dict + its config), eval mode."""
    blob = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    net = CopyDetNet(dim=int(blob["dim"]), split=int(blob["split"]))
    net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()}, strict=True)
    return net.eval()


class CopyDetEmbedder:
    """Image-only embedder, inner-product metric; see the module docstring for the recipe."""

    binary = False
    metric = "ip"
    space = SPACE
    modalities = frozenset({"image"})
    regions = REGIONS

    def __init__(self, device: str | None = None, max_batch: int | None = None,
                 weights: str | Path | None = None):
        if max_batch is not None and max_batch < 1:
            raise InvalidArgument(f"max_batch must be >= 1, got {max_batch}")
        self.device = pick_device(device)
        # Small CPU batches keep the early 112x112 activations in cache (see effnet.py).
        self.max_batch = int(max_batch or (32 if self.device.startswith("cuda") else 1))
        path = Path(weights or weights_path())
        if not path.is_file():
            raise InvalidArgument(f"copy-detection weights not found: {path}")
        self._half = self.device.startswith("cuda")
        net = load_network(path).to(self.device, memory_format=torch.channels_last)
        # Inference runs the trunk with BatchNorm folded in float32 (``effnet.FoldedLite0``):
        # trunk + top in one, the same function within float rounding, about 2x faster on CPU.
        self.folded = fold(net.net)
        self.net = net.half() if self._half else net
        if self._half:
            self.folded = self.folded.half()
        self.dim = self.net.dim
        h = hashlib.sha256(file_digest(path, 64).encode())
        h.update(f"|{EMBED_VERSION}|{INPUT_SIZE}|{GEM_P}|".encode())
        self.model_id = f"{SPACE}@{h.hexdigest()[:12]}"

    @torch.inference_mode()
    def _maps(self, images: Sequence[Image.Image]):
        dtype = torch.float16 if self._half else torch.float32
        for start in range(0, len(images), self.max_batch):
            x = preprocess(images[start: start + self.max_batch]).to(self.device, dtype)
            yield self.folded.features(x.contiguous(memory_format=torch.channels_last))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32, C-contiguous, unit L2 rows."""
        images = list(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        k = 0
        for fmap in self._maps(images):
            with torch.inference_mode():
                d = self.net.describe(fmap).float().cpu().numpy()
            out[k: k + len(d)] = d
            k += len(d)
        return np.ascontiguousarray(out)

    def embed_regions(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, R, dim) float32 unit rows: row 0 is ``embed_images``' vector, then the 8 parts."""
        images = list(images)
        out = np.empty((len(images), len(REGIONS), self.dim), dtype=np.float32)
        k = 0
        for fmap in self._maps(images):
            with torch.inference_mode():
                d = self.net.describe_regions(fmap).float().cpu().numpy()
            out[k: k + len(d)] = d
            k += len(d)
        return np.ascontiguousarray(out)

    def embed_parts(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of ``query_parts`` of each picture, (m, dim), and the picture each is of."""
        crops, owner = [], []
        for i, img in enumerate(images):
            parts = query_parts(img)
            crops += parts
            owner += [i] * len(parts)
        if not crops:
            return np.empty((0, self.dim), np.float32), np.empty(0, np.int64)
        return self.embed_images(crops), np.asarray(owner, np.int64)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidArgument(f"{SPACE} embeds images only, not texts")
