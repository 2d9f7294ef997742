"""GPU tests: skipped where FAISS sees no GPU (faiss-cpu, or a machine without CUDA)."""

from __future__ import annotations

import pytest


def _faiss_gpus() -> int:
    try:
        import faiss
    except ImportError:
        return 0
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def pytest_collection_modifyitems(config, items):
    if _faiss_gpus() > 0:
        return
    skip = pytest.mark.skip(reason="FAISS sees no GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
