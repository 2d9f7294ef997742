"""Exact text matching after disguise (space ``text:exact``): a BINARY space of 64 bits.

Each text's code is a 64-bit BLAKE2b hash of its aggressive form (``dedup.text``: lookalikes,
leetspeak, case, spaces, punctuation, emoji and zero-width characters all folded away), so
``FREE iPhone!!!`` and ``fr33 i-ph0ne`` get the same code. Scores are ``1 - hamming/64``: 1.0
for equal forms, about 0.5 for any two different ones (never above 1 - 1/64 by chance, with
probability 2**-64 per pair), so the space's threshold is 1.0: exact equality.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from dedup.errors import InvalidArgument
from dedup.text.normalize import FORM_VERSION, aggressive_form

SPACE = "text:exact"
BITS = 64
THRESHOLD = 1.0  # exact equality of the aggressive forms
_PERSON = b"dedup-text-exact"  # BLAKE2b personalisation: these codes are no other hash's


class TextExactEmbedder:
    """Hash of the aggressive form; equal forms, equal codes."""

    binary = True
    metric = "hamming"
    space = SPACE
    dim = BITS  # bits; each row is dim // 8 bytes
    modalities = frozenset({"text"})

    def __init__(self, device: str | None = None):
        self.device = "cpu"  # hashing runs on the CPU whatever the device
        self.model_id = f"{SPACE}@{FORM_VERSION}-blake2b{BITS}"

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 8) uint8 C-contiguous codes for (normalised) texts."""
        out = np.zeros((len(texts), BITS // 8), dtype=np.uint8)
        for i, t in enumerate(texts):
            digest = hashlib.blake2b(aggressive_form(t).encode("utf-8"), digest_size=BITS // 8,
                                     person=_PERSON).digest()
            out[i] = np.frombuffer(digest, dtype=np.uint8)
        return out

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise InvalidArgument(f"{SPACE} hashes texts only, not images")
