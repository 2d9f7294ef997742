"""Embedders behind one door: ``create_embedder(spec)`` looks the spec up in a registry.

Specs: ``image:effnet-lite0``, ``image:copydet-lite0``, ``text:minilm-l6``, ``text:exact``,
``text:minhash``, ``clip:<arch>/<pretrained>`` (pretrained is an open_clip tag, a local
checkpoint path or ``none``), ``pdq``. A spec may carry the expected model id (``image:effnet-lite0@1a2b3c4d5e6f``);
the embedder is then checked against it, so a snapshot built with other weights is refused
(DESIGN invariant 5). Backends are imported lazily: importing this package pulls in no torch.
"""

from __future__ import annotations

from typing import Callable

from dedup.embed.base import Embedder, l2_normalize, pick_device
from dedup.errors import InvalidArgument, ModelMismatch

__all__ = ["Embedder", "create_embedder", "register", "registered", "l2_normalize", "pick_device"]

Factory = Callable[..., Embedder]  # (spec, device, **kw) -> Embedder
_EXACT: dict[str, Factory] = {}
_PREFIX: dict[str, Factory] = {}


def register(name: str, factory: Factory, prefix: bool = False) -> None:
    """Add a named constructor; ``prefix=True`` matches every spec starting with ``name``."""
    (_PREFIX if prefix else _EXACT)[name] = factory


def registered() -> list[str]:
    """The known spec names (prefixes end with ``*``)."""
    return sorted(_EXACT) + sorted(f"{p}*" for p in _PREFIX)


def create_embedder(spec: str, device: str | None = None, **kw) -> Embedder:
    """Build the embedder for ``spec`` (optionally ``spec@digest``) on ``device`` (default: auto)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgument(f"embedder spec must be a non-empty string, got {spec!r}")
    name, _, expected = spec.strip().partition("@")
    factory = _EXACT.get(name)
    if factory is None:
        factory = next((f for p, f in _PREFIX.items() if name.startswith(p)), None)
    if factory is None:
        raise InvalidArgument(f"unknown embedder {name!r}; known: {', '.join(registered())}")
    embedder = factory(name, device, **kw)
    if expected and embedder.model_id != f"{name}@{expected}":
        raise ModelMismatch(f"wanted model {spec}, but the installed weights give {embedder.model_id}")
    return embedder


def _effnet(spec: str, device: str | None, **kw) -> Embedder:
    from dedup.embed.effnet import EffnetLite0Embedder

    return EffnetLite0Embedder(device=device, **kw)


def _copydet(spec: str, device: str | None, **kw) -> Embedder:
    from dedup.embed.copydet import CopyDetEmbedder

    return CopyDetEmbedder(device=device, **kw)


def _minilm(spec: str, device: str | None, **kw) -> Embedder:
    from dedup.embed.minilm import MiniLMEmbedder

    return MiniLMEmbedder(device=device, **kw)


def _textexact(spec: str, device: str | None, **kw) -> Embedder:
    from dedup.embed.textexact import TextExactEmbedder

    return TextExactEmbedder(device=device, **kw)


def _minhash(spec: str, device: str | None, **kw) -> Embedder:
    from dedup.embed.minhash import MinHashEmbedder

    return MinHashEmbedder(device=device, **kw)


def _clip(spec: str, device: str | None, **kw) -> Embedder:
    from dedup.embed.openclip import OpenClipEmbedder

    return OpenClipEmbedder(spec, device=device, **kw)


def _pdq(spec: str, device: str | None, **kw) -> Embedder:
    from dedup.embed.pdq import PdqEmbedder

    return PdqEmbedder(device=device, **kw)


register("image:effnet-lite0", _effnet)
register("image:copydet-lite0", _copydet)
register("text:minilm-l6", _minilm)
register("text:exact", _textexact)
register("text:minhash", _minhash)
register("clip:", _clip, prefix=True)
register("pdq", _pdq)
