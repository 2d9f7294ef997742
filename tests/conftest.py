"""Shared fixtures: real images from skimage.data, as PIL images and as encoded bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

# Distinct real images bundled with scikit-image (no download). ``cat`` is the same photo as
# ``chelsea`` and the motorcycle's right view is a near-duplicate of its left, so neither is here.
SKIMAGE_NAMES = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page",
    "retina", "rocket", "stereo_motorcycle", "text", "cell",
)


def skimage_image(name: str) -> Image.Image:
    """One skimage.data image as an RGB PIL image (alpha dropped, greys expanded)."""
    import skimage.data

    arr = getattr(skimage.data, name)()
    if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
        arr = arr[0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3 and arr.shape[2] == 4:
        return Image.fromarray(arr, "RGBA").convert("RGB")
    return Image.fromarray(arr).convert("RGB")


def encode_image(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """Encode a PIL image to bytes in ``fmt`` (PNG, JPEG, WEBP, GIF, BMP, TIFF)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def skimage_images() -> dict[str, Image.Image]:
    """Twenty distinct real RGB images, by skimage name."""
    return {name: skimage_image(name) for name in SKIMAGE_NAMES}


@pytest.fixture(scope="session")
def cat_image() -> Image.Image:
    """skimage.data.chelsea(): a tabby cat, 451x300 RGB."""
    return skimage_image("chelsea")


@pytest.fixture(scope="session")
def coffee_image() -> Image.Image:
    """skimage.data.coffee(): a cup of coffee, 600x400 RGB."""
    return skimage_image("coffee")


@pytest.fixture(scope="session")
def encode():
    """The ``encode_image(img, fmt, **kw) -> bytes`` helper, for tests that need bytes."""
    return encode_image


@pytest.fixture(scope="session")
def cat_jpeg(cat_image) -> bytes:
    return encode_image(cat_image, "JPEG", quality=90)


@pytest.fixture(scope="session")
def cat_png(cat_image) -> bytes:
    return encode_image(cat_image, "PNG")
