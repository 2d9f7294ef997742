"""Layout finders on real pictures: the cells of grid collages and a photographed screen come
back as crops close to the pictures they hold; plain photos give none (they would pay for more
embeddings and risk more false matches)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from dedup.embed import layout
from dedup.embed.copydet import query_parts

TILES = ("astronaut", "coffee", "rocket", "chelsea")


def grid(images, cols: int, rows: int, cell=(300, 240), gap: int = 0, bg=(255, 255, 255)):
    """Pictures fitted into a grid of equal cells, ``gap`` pixels between and around them."""
    cw, ch = cell
    canvas = Image.new("RGB", (cols * cw + (cols + 1) * gap, rows * ch + (rows + 1) * gap), bg)
    tiles = [img.convert("RGB").resize(cell, Image.BICUBIC) for img in images]
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (gap + (i % cols) * (cw + gap), gap + (i // cols) * (ch + gap)))
    return canvas, tiles


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    b = b.resize(a.size, Image.BILINEAR)
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize("gap,bg", [(0, (255, 255, 255)), (8, (255, 255, 255)), (5, (0, 0, 0))])
def test_a_two_by_two_grid_gives_back_its_four_pictures(skimage_images, gap, bg):
    picture, tiles = grid([skimage_images[n] for n in TILES], 2, 2, gap=gap, bg=bg)
    cells = layout.grid_cells(picture)
    assert len(cells) == 4
    for cell, tile in zip(cells, tiles):
        # Each cell is its tile, gap trimmed: within a few pixels of its size, same content.
        assert abs(cell.width - tile.width) <= 6 and abs(cell.height - tile.height) <= 6, cell.size
        assert mean_diff(tile, cell) < 15, (cell.size, mean_diff(tile, cell))  # another: > 60
    assert len(query_parts(picture)) == 4


def test_two_pictures_stacked_give_two_cells(skimage_images):
    picture, tiles = grid([skimage_images["coffee"], skimage_images["chelsea"]], 1, 2,
                          cell=(360, 240), gap=6)
    cells = layout.grid_cells(picture)
    assert len(cells) == 2
    assert all(mean_diff(t, c) < 12 for t, c in zip(tiles, cells))


def test_a_jpeg_grid_still_splits(skimage_images):
    import io

    picture, tiles = grid([skimage_images[n] for n in TILES], 2, 2, gap=0)
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=40)
    cells = layout.grid_cells(Image.open(buf).convert("RGB"))
    assert len(cells) == 4 and all(mean_diff(t, c) < 16 for t, c in zip(tiles, cells))


@pytest.mark.parametrize("name", ["astronaut", "brick", "camera", "chelsea", "clock", "coffee",
                                  "coins", "grass", "gravel", "hubble_deep_field", "moon",
                                  "retina", "rocket", "stereo_motorcycle", "cell"])
def test_plain_photos_have_no_parts(skimage_images, name):
    img = skimage_images[name]
    assert layout.grid_cells(img) == []
    assert layout.find_screen(img) is None
    assert query_parts(img) == []


def photographed(img: Image.Image, corners: np.ndarray, size=(900, 700), bezel: int = 18,
                 blur: float = 1.5) -> Image.Image:
    """``img`` in a dark bezel, warped onto ``corners`` of a lit, noisy desk, then defocused."""
    rng = np.random.default_rng(0)
    framed = np.asarray(img.convert("RGB"))
    framed = cv2.copyMakeBorder(framed, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT,
                                value=(20, 20, 24))
    h, w = framed.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    m = cv2.getPerspectiveTransform(src, corners.astype(np.float32))
    W, H = size
    xx = np.linspace(0, 1, W, dtype=np.float32)[None, :, None]
    yy = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    desk = 120 + 60 * xx * np.array([1.0, 0.6, 0.3]) + 50 * yy * np.array([0.2, 0.5, 1.0])
    desk = desk + rng.normal(0, 4, (H, W, 3))
    warped = cv2.warpPerspective(framed, m, (W, H))
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (W, H)) > 127
    out = np.where(mask[..., None], warped.astype(np.float32), desk)
    out = cv2.GaussianBlur(np.clip(out, 0, 255).astype(np.uint8), (0, 0), blur)
    return Image.fromarray(out)


def test_a_photographed_screen_is_found_and_rectified(skimage_images):
    corners = np.array([[170, 90], [720, 130], [700, 610], [140, 560]], np.float32)
    photo = photographed(skimage_images["astronaut"], corners)
    found = layout.find_screen(photo)
    assert found is not None
    assert np.abs(found - corners).max() < 20, found  # the bezel's outer corners
    view = layout.screen_view(photo)
    # The astronaut is square: the rectified view is too, bezel trimmed or not.
    assert 0.85 < view.width / view.height < 1.18, view.size
    assert mean_diff(skimage_images["astronaut"].resize(view.size), view) < \
        mean_diff(skimage_images["astronaut"].resize(view.size), photo.resize(view.size))


def test_the_rectified_screen_embeds_closer_to_its_picture(skimage_images):
    from dedup.embed.copydet import CopyDetEmbedder

    emb = CopyDetEmbedder(device="cpu")
    corners = np.array([[220, 150], [700, 110], [760, 600], [190, 540]], np.float32)
    seeds = emb.embed_images([skimage_images[n] for n in ("chelsea", "coffee", "rocket")])
    photo = photographed(skimage_images["chelsea"], corners)
    [view] = query_parts(photo)
    whole, part = emb.embed_images([photo, view])
    assert part @ seeds[0] > whole @ seeds[0] + 0.05, (part @ seeds[0], whole @ seeds[0])
    assert int(np.argmax(seeds @ part)) == 0
