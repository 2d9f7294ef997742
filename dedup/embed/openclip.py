"""open_clip embedders (space ``clip:<arch>/<pretrained>``): images and texts in one space.

``pretrained`` is an open_clip registry tag (downloads on first use), a local checkpoint path,
or ``none`` for a deterministic random init (``torch.manual_seed(0)``), which with the tiny
``dedup-tiny`` config in model_configs/ lets tests run the real code path on CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from dedup.embed.base import file_digest, l2_normalize, pick_device
from dedup.errors import InvalidArgument

CONFIG_DIR = Path(__file__).with_name("model_configs")
_configs_added = False


def _add_configs() -> None:
    """Register our JSON configs with open_clip once (it rescans on every call)."""
    global _configs_added
    if not _configs_added:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _configs_added = True


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``clip:<arch>/<pretrained>`` -> (arch, pretrained or None for ``none``)."""
    body = spec.partition("@")[0]
    if not body.startswith("clip:") or "/" not in body:
        raise InvalidArgument(f"clip spec must be clip:<arch>/<pretrained>, got {spec!r}")
    arch, _, pretrained = body[len("clip:") :].partition("/")
    if not arch or not pretrained:
        raise InvalidArgument(f"clip spec must be clip:<arch>/<pretrained>, got {spec!r}")
    return arch, None if pretrained.lower() == "none" else pretrained


def state_dict_digest(model: torch.nn.Module, n_hex: int = 12) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in state_dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:n_hex]


class OpenClipEmbedder:
    """CLIP-style image+text embedder; one space for both modalities."""

    metric = "ip"
    modalities = frozenset({"image", "text"})

    def __init__(self, spec: str, device: str | None = None, max_batch: int = 32):
        if max_batch < 1:
            raise InvalidArgument(f"max_batch must be >= 1, got {max_batch}")
        arch, pretrained = parse_spec(spec)  # before the (slow) open_clip import
        import open_clip

        _add_configs()
        if arch not in open_clip.list_models():
            raise InvalidArgument(f"unknown open_clip architecture {arch!r}")
        self.space = spec.partition("@")[0]
        self.device = pick_device(device)
        self.max_batch = int(max_batch)
        if pretrained is None:
            torch.manual_seed(0)  # random init must be the same in every process
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        model.eval()
        if pretrained is not None and Path(pretrained).is_file():
            digest = file_digest(pretrained)
        else:
            # Registry tags and random init: digest the weights themselves (fp32, on CPU).
            digest = state_dict_digest(model)
        self.model = model.to(self.device)
        if self.device.startswith("cuda"):
            self.model = self.model.half()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.dim = int(getattr(model, "embed_dim", 0) or model.text_projection.shape[1])
        self.model_id = f"{self.space}@{digest}"

    def _dtype(self) -> torch.dtype:
        return torch.float16 if self.device.startswith("cuda") else torch.float32

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32, C-contiguous, unit L2 rows."""
        images = list(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            x = torch.stack([self.preprocess(im.convert("RGB")) for im in chunk])
            f = self.model.encode_image(x.to(self.device, self._dtype()))
            out[start : start + len(chunk)] = f.float().cpu().numpy()
        return l2_normalize(out)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, C-contiguous, unit L2 rows (texts truncated to the context length)."""
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.max_batch):
            chunk = texts[start : start + self.max_batch]
            f = self.model.encode_text(self.tokenizer(chunk).to(self.device))
            out[start : start + len(chunk)] = f.float().cpu().numpy()
        return l2_normalize(out)
