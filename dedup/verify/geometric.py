"""Geometric verification of close calls: SIFT keypoints matched and fitted by RANSAC.

A global descriptor cannot tell a crop or a screenshot of a seed from an unrelated picture of the
same kind; a consistent geometric transform between many local features can. The pipeline:

  extract:  grey image, longer side resized to ``MAX_SIDE`` (a query: ``QUERY_MAX_SIDE``) ->
            OpenCV SIFT -> the strongest keypoints spread over a grid -> RootSIFT descriptors
            quantised to uint8
  mirror:   derived from the features, not extracted again: SIFT is exactly mirror-equivariant
            up to keypoint selection (x -> W - 0.5 - x, angle -> 180 - angle, descriptor rows
            reversed and orientation bins negated), so the flipped query costs nothing
            Keypoints on caption bars and screenshot UI bars (flat bands along the top or
            bottom edge) are dropped: unrelated memes share caption text.
  verify:   nearest neighbours (ratio test) -> at most one match per seed keypoint and per
            location (many query points on one seed point give degenerate fits with hundreds of
            false inliers) -> RANSAC affine fit -> reject reflections, scale outside [0.1, 10]
            and strong anisotropy, inliers whose keypoint orientation or size disagree with the
            fit, and inliers that are collinear or clustered -> count inliers; the mirror is
            tried when the direct fit fails
  check:    a fit of AGREE_MIN_INLIERS to AGREE_STRONG_INLIERS - 1 inliers (a flat, blurred or
            small picture keeps few keypoints) lays the query's greyscale picture onto the
            seed's stored 64-px thumbnail; pixels that correlate (AGREE_NCC) count as
            INLIER_FLOOR inliers, pixels that correlate strongly (AGREE_STRONG) as
            AGREE_STRONG_INLIERS
  explain:  of one query's fits, one counting under a third (EXPLAIN_RATIO) of another's, over
            the same part of the upload, is explained away (``explained``): not fused
  fuse:     score + ALPHA * log1p(inliers) when inliers >= INLIER_FLOOR

Figures behind the constants (``OPENBLAS_NUM_THREADS=1 python -m tools.measure_verify``;
222 benchmark-side pictures in 39 groups, 148 seeds x 12 edits = 1,776 true pairs, 76,960
unrelated pairs across groups, 5,920 captioned-query x captioned-seed pairs; CPU ms of one
thread on a shared 2-core machine):

  max_keypoints                      256       512      1024
  true pairs: inliers p50             39        70        92.5
  true pairs: share >= INLIER_FLOOR  0.744     0.822     0.829
  unrelated pairs: max inliers         6         6         6
  shared caption: max inliers          7         7         7
  verify 10 candidates, ms p50        10.2      20.1      32.3
  bytes per seed, 4-bit (max)       17,927    35,847    71,687

  extract ~45-50 ms p50 at any count (detection dominates); recompute from a stored JPEG ~50 ms.
  4-bit descriptors lose nothing measurable (512: true p50 70 vs 71 with 8-bit, same share);
  the affine fit beats the similarity on perspective (p50 117 vs 95) and aspect changes, with
  the same unrelated maximum. On 148 mirrored copies the derived mirror reaches the floor on
  0.858 (inliers p50 125), a second SIFT pass on 0.878 (p50 150) for ~48 ms more per query:
  ``extract_query(..., mirror_mode="extract")`` buys it where the time is there.
  Seeds that fail are feature-poor (flat artwork): verification cannot help them.

  CONTRAST = 0.005 (OpenCV's default is 0.04) because most misses on the image benchmark were
  small or flat pictures whose true seed was shortlisted but verified with too few inliers. An
  offline probe of the held-out half re-extracted seeds and queries (320 misses whose seed was in
  the copydet top 10, 25 per edit type; 150 calibration lookups with the worst wrong pairs and
  300 random ones with a candidate in the band), with each variant's threshold set so that its
  calibration false matches stayed at 0.1%. Misses turned into matches: 21 with 0.04, 48 with
  0.03, 69 with 0.02 and 85 with 0.01. Other variants turned fewer: 1024 keypoints at 0.02 gave
  64, and upscaling small pictures to 512 px gave 20 at 0.04 and 39 at 0.02. Upscaling adds
  inliers to wrong pairs of shared artwork more than to copies. A second probe, on the 270
  misses left at 0.01 (fusion weight 0.5), recovered 20 at 0.01, 39 at 0.005, 36 with query
  features at QUERY_MAX_SIDE / QUERY_MAX_KEYPOINTS (seeds unchanged) and 54 with both (collage
  4 -> 10 of 25, screenshot 6 -> 15 of 25). A homography fit tried beside the affine one in that
  probe recovered fewer (44): its extra freedom gave wrong pairs of shared artwork more inliers
  than it gave phone photos. Raw inlier counts of unrelated pairs rise a little (the most on 300
  random band lookups: 9 at 0.01, 10 at 0.005 with 1024-px queries; the floor is 12).
  The benchmark's own near-duplicate check keeps its own pinned settings
  (``tools.eval.dataset.NEAR_DUP_SIFT``).
  The whole benchmark then ran again through the server with both changes (and the benchmark's
  stricter near-duplicate check, ``tools/eval/dataset.py``): held-out verdict recall at the
  jointly calibrated threshold 0.980 / 0.916 / 0.859 (easy / medium / hard), before collage
  panels were embedded on their own (README, Quality, has the shipped figures).
  A 1024-px query costs more to extract only when it is larger than 512 px: ~56 -> ~226 ms for a
  1920 x 1080 upload on a busy core, paid only by lookups with a candidate in the band.
  The table above was measured at 0.04 with 512-px queries. Seeds stored before a change keep
  their features, in the same format: they still verify, with fewer keypoints on flat pictures,
  until they are re-added.

  COARSE = 0.25: a quarter of a seed's keypoints are its largest ones, the rest picked as
  before. Fine keypoints have the strongest responses and took nearly the whole budget, but a
  blurred, downscaled or photographed copy keeps only coarse structure. Probe on the
  calibration half (seeds re-extracted, queries unchanged; 49 hard crop, blur, grey+blur and
  phone-photo copies whose seed was in the band but not verified): copies with >= 15 inliers
  6 -> 15 (1024 keypoints: 11, at twice the storage); 200 random true pairs that verified:
  177 -> 178; the 19 wrong pairs that verified: 11 -> 11 at >= 15. Same storage per seed.

  QUERY_MIN_SIDE = 384: a query smaller than this is enlarged (bicubic) before detection. A
  heavy crop arrives as small as 68 x 51 to 150 x 150 px, with 0-145 keypoints. Probe on the
  calibration half (152 copies whose seed was in the band but not matched; 323 wrong in-band
  pairs): copies with >= 15 inliers 9 -> 17 (512 px: 17); wrong pairs with >= 15 13 -> 13.
  Seeds are not enlarged: an earlier probe found that it adds inliers to wrong pairs of shared
  artwork more than to copies.

  The pixel check (AGREE_*; a seed keeps its greyscale picture at 64 px, 4 KB more per seed).
  Most copies left unmatched had their seed shortlisted at a high similarity but too few
  keypoints to verify: smooth icons, gradients, blurred or shrunk copies. A fit of a few inliers
  is cheap to confirm with the pixels themselves: the query's 256-px greyscale copy, blurred
  to the seed thumbnail's scale, is warped onto it by the fit, and their correlation over the
  covered part (at least a fifth of the seed: a crop) is the ``agreement``. Probe on the
  calibration half of the benchmark (every in-band candidate at similarity >= 0.45 that had not
  verified in the previous full run, 4,321 pairs, 119 of them copies): 49 copies and 4 wrong
  pairs reached 0.9 (the 4: mirrored tiles of one symmetric texture, two mirrored sprites and
  one mascot in two renderings, which the benchmark's near-duplicate check does not look for).
  With those counted at the floor, the calibration half's joint verdict recall at 0.1% went
  0.925 -> 0.939 (easy 0.966 -> 0.974, medium 0.924 -> 0.944, hard 0.886 -> 0.898). Counting
  them at 16-30 inliers added <= 0.004; requiring 0.95 gave 0.933; covering half the seed
  instead of a fifth, 3 crops fewer. Cost: one 64-px warp per checked candidate, and RANSAC
  from 4 tentative matches where both sides have a picture (10 candidates, in-process: +1-2 ms
  on ~50 ms for re-encoded uploads, +0.1-0.6 ms for blurred ones).
  Seeds stored without a thumbnail (before it was kept) verify as before: nothing rewrites a
  stored seed's features yet.

  AGREE_STRONG = 0.95 -> AGREE_STRONG_INLIERS = 30. Probe on the calibration half (every pair
  that verified at the floor and fused under 1.6 in the previous full run: 161 copies, 30 wrong
  pairs; ``agreement`` now checked under any fit below 30 inliers): the wrong pairs' agreement
  reached 0.942 at most, so 0.95 sits above all of them; 16 copies reached it, most of them
  blurred, grey+blurred or noisy copies fitted with 12-24 inliers at similarity 0.3-0.55, which
  the threshold (above any similarity) kept out. Counting them at 30 (fused = similarity +
  1.03 at weight 0.3) lifts simulated calibration recall at the old threshold 0.939 -> 0.942
  (hard 0.898 -> 0.900), with no wrong pair lifted; counts of 20 / 50 / 100 gave 0.940 /
  0.942 / 0.942, and a threshold of 0.9 lifted 2 wrong pairs. A homography laid over the same fits
  agreed less often than the affine fit (copies 14 vs 16 at 0.95; phone photos did not gain).

  EXPLAIN_RATIO = 3, EXPLAIN_OVERLAP = 0.5. Most wrong matches of the full benchmark were
  copies of one seed matching a second seed that shares part of its pixels (tiles of one
  texture, icon variants) with a weak fit: the copy's own seed fitted 66-336 inliers, the
  second 12-40. Re-verified with the regions (calibration half: the 20 lookups with two or more
  fits at the floor), the second fit lay inside the first's box in all but one, at a sixth of
  its inliers or less in 16. Explaining those away removed 7 of the calibration half's 11
  wrong lookups at the old threshold, so the jointly calibrated threshold came down (simulated
  calibration recall at 0.1%: 0.942 -> 0.948, the same for ratios 3 and 4; 2 and 2.5 brought the
  threshold under 1, where unverified similarities match, which the shipped cascade keeps
  out). A collage keeps each seed's fit in its own part of the upload, so both match; a seed
  that is a crop of another keeps a large share of the other's inliers on a copy of it.

  INLIER_FLOOR = 12 is about twice the most inliers any unrelated or shared-caption pair got
  here (6-7). ALPHA = 0.1 comes from an independent set, where ``cosine + 0.1 * log1p(inliers)``
  over the top-10 candidates moved recall at 0.1% FMR from 1.00/0.84/0.65 to 0.96/0.85/0.94
  (easy/medium/hard); the script's fusion part re-checks it with the effnet cosine.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from threadpoolctl import ThreadpoolController

from dedup.errors import InvalidArgument

# -- constants (chosen by tools/measure_verify.py; figures in its report) ---------------------

MAX_SIDE = 512          # longer side seed features are extracted at (pixels)
MAX_KEYPOINTS = 512     # kept per seed, spread over a GRID x GRID grid
QUERY_MAX_SIDE = 1024   # a query keeps more detail: a seed may be one panel of a collage or a
QUERY_MAX_KEYPOINTS = 1024  # small part of a screenshot (module docstring)
CONTRAST = 0.005        # SIFT's contrast threshold (OpenCV's default 0.04): module docstring
COARSE = 0.25           # share of a seed's keypoints kept for its largest ones (blur survivors)
QUERY_COARSE = 0.0      # a query's are all picked by ``_spread`` (module docstring)
QUERY_MIN_SIDE = 384    # a smaller query is enlarged to this first (module docstring)
GRID = 4
RATIO = 0.8             # Lowe's ratio test on descriptor distances
RANSAC_THRESHOLD = 0.012  # reprojection threshold, fraction of the seed's longer side
RANSAC_ITERS = 2000
MODEL = "affine"        # "affine" (6 dof: also aspect-ratio changes) or "similarity" (4 dof)
MIN_SCALE, MAX_SCALE = 0.1, 10.0  # a fit outside this is degenerate (points collapsed)
BAND_MAX = 0.35         # caption bars / screenshot UI may take this share of the height per edge
MAX_ANISOTROPY = 2.0    # ratio of the affine fit's singular values
MAX_ANGLE_DIFF = 30.0   # degrees between a match's keypoint rotation and the fit's rotation
MAX_SIZE_RATIO = 2.0    # a match's keypoint size ratio may differ from the fit's scale by this
MIN_SPREAD = 0.03       # inliers' smaller principal std, fraction of the longer side
INLIER_FLOOR = 12       # below this nothing is added to the score
MIN_MATCHES = 8         # fewer tentative matches: no RANSAC at all (the cheap early exit)
ALPHA = 0.1             # fused = score + ALPHA * log1p(inliers)
MAX_CANDIDATES = 64     # per verify_many call: the cost of one lookup stays bounded
THUMB_SIDE = 64         # a seed keeps its greyscale picture at this longer side (pixel check)
QUERY_THUMB_SIDE = 256  # ... a query its own at this one, in memory only
AGREE_MIN_INLIERS = 4   # a fit with this many inliers, below the floor, gets the pixel check
AGREE_NCC = 0.9         # aligned pixels correlating this well count as INLIER_FLOOR inliers
AGREE_STRONG = 0.95     # ... and this well, as at least AGREE_STRONG_INLIERS (any fit)
AGREE_STRONG_INLIERS = 30
EXPLAIN_RATIO = 3.0     # a fit counting this many times another's, over the same part of the
EXPLAIN_OVERLAP = 0.5   # upload (share of the weaker fit's inlier box), explains it away
AGREE_MIN_COVER = 0.2   # share of the seed's picture the aligned query must cover
AGREE_MIN_STD = 2.0     # grey levels: a flat footprint has no pattern to correlate

# Wire format: FORMAT_8BIT keeps the full uint8 RootSIFT, FORMAT_4BIT its high nibble.
FORMAT_8BIT = 1
FORMAT_4BIT = 2
DEFAULT_FORMAT = FORMAT_4BIT
WITH_THUMB = 0x80       # flag on the format byte: the seed's thumbnail follows the descriptors
_HEADER = struct.Struct("<BHHH")  # format, n keypoints, width, height
_THUMB = struct.Struct("<BB")     # thumbnail width, height
_ROOT_SCALE = 768.0     # RootSIFT elements are <= ~0.33; x768 fills uint8 without clipping


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints and descriptors of one image, in the frame it was extracted at."""

    xy: np.ndarray          # float32 (n, 2), pixels of the resized image
    size: np.ndarray        # float32 (n,), SIFT keypoint diameter in pixels
    angle: np.ndarray       # float32 (n,), SIFT orientation in degrees [0, 360)
    desc: np.ndarray        # uint8 (n, 128), RootSIFT x _ROOT_SCALE
    width: int              # of the resized image
    height: int
    # uint8 greyscale picture of the frame, at any size proportional to it (a seed's stored
    # thumbnail, a query's in-memory copy): the pixel check of fits with few inliers. None for
    # seeds stored before thumbnails were kept.
    thumb: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.desc.shape[0])


@dataclass(frozen=True)
class Match:
    """Outcome of verifying one query against one seed."""

    inliers: int            # 0 when no acceptable fit
    kind: str               # MODEL of the fit, or "none"
    scale: float            # seed pixels per query pixel (resized frames); 0.0 without a fit
    rotation: float         # degrees; 0.0 without a fit
    mirrored: bool          # the fit used the mirrored query
    tentative: int          # matches after the ratio test and the one-per-seed-point rule
    ms: float               # wall time of this verification
    agreement: float = 0.0  # pixel correlation under the fit (0.0: not checked, or no fit)
    # Bounding box (x0, y0, x1, y1) of the fit's inliers in the query's own (unmirrored) frame,
    # as fractions of its width and height: the part of the upload the fit explains. None
    # without a fit.
    region: tuple[float, float, float, float] | None = None

    @property
    def counted(self) -> int:
        """Inliers the fused score counts: at least AGREE_STRONG_INLIERS for a fit whose
        aligned pixels agree strongly (``AGREE_STRONG``), INLIER_FLOOR for a fit below the
        floor whose pixels agree (``AGREE_NCC``), else the fit's own."""
        if self.agreement >= AGREE_STRONG:
            return max(self.inliers, AGREE_STRONG_INLIERS)
        if self.inliers < INLIER_FLOOR and self.agreement >= AGREE_NCC:
            return INLIER_FLOOR
        return self.inliers


def _empty(width: int = 0, height: int = 0, thumb: np.ndarray | None = None) -> LocalFeatures:
    return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                         np.zeros(0, np.float32), np.zeros((0, 128), np.uint8), width, height,
                         thumb)


_NO_MATCH = {"inliers": 0, "kind": "none", "scale": 0.0, "rotation": 0.0, "mirrored": False,
             "region": None}


# -- extraction --------------------------------------------------------------------------------

def _grey(image: Image.Image, max_side: int, min_side: int = 0) -> np.ndarray:
    img = image.convert("L")
    w, h = img.size
    s = max_side / max(w, h)
    if s < 1.0:
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR,
                         reducing_gap=2.0)
    elif max(w, h) < min_side:
        s = min_side / max(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    return np.asarray(img)


def _bands(grey: np.ndarray) -> tuple[int, int]:
    """Rows [0, top) and [bottom, h) that are caption bars or screenshot UI: flat-coloured
    bands along the top or bottom edge (text allowed) that end where a picture starts sharply.

    Unrelated memes share caption text and unrelated screenshots share status bars; their
    keypoints would verify a match between different pictures, so they are dropped."""
    h, w = grey.shape
    top, bottom = 0, h
    if h < 32 or w < 32:
        return top, bottom
    g = grey.astype(np.int16)
    limit = int(BAND_MAX * h)
    for edge in ("top", "bottom"):
        rows = g if edge == "top" else g[::-1]
        ref = int(np.median(rows[0]))
        flat = (np.abs(rows[:limit + 4] - ref) <= 10).mean(axis=1)
        band = flat >= 0.35  # text rows of a bar still show mostly its background colour
        end = int(np.argmin(band)) if not band.all() else len(band)
        # A band is at least a few rows, stops within the limit, and a picture starts right after.
        if end < max(4, h // 50) or end >= limit or flat[end:end + 3].min() > 0.15:
            end = _text_block_end(flat[:limit], h)
            if end == 0:
                continue
        if edge == "top":
            top = end
        else:
            bottom = h - end
    return top, bottom


def _text_block_end(flat: np.ndarray, h: int) -> int:
    """End row of a caption on a picture whose background has the bar's colour (a sprite on
    white): clean rows, then a block of text-like rows, then clean rows again; 0 if none."""
    clean = flat >= 0.98
    gap = max(3, h // 100)
    start = int(np.argmin(clean)) if not clean.all() else len(flat)
    if start < 2 or start >= len(flat):
        return 0
    # The block ends at the first run of `gap` clean rows after it starts.
    runs = np.convolve(clean[start:].astype(np.int32), np.ones(gap, np.int32), "valid") == gap
    if not runs.any():
        return 0
    end = start + int(np.argmax(runs))
    if end - start > 0.2 * h or flat[start:end].min() < 0.35:
        return 0
    return end


def _spread(kps: list, width: int, height: int, n: int) -> list:
    """The ``n`` strongest keypoints, taken round-robin over a grid so no region hogs them."""
    if len(kps) <= n:
        return kps
    pts = np.array([k.pt for k in kps], np.float32)
    resp = np.array([k.response for k in kps], np.float32)
    cx = np.minimum((pts[:, 0] * GRID / max(width, 1)).astype(int), GRID - 1)
    cy = np.minimum((pts[:, 1] * GRID / max(height, 1)).astype(int), GRID - 1)
    cell = cy * GRID + cx
    order = np.lexsort((-resp, cell))  # by cell, strongest first within a cell
    rank = np.empty(len(kps), np.int64)
    sorted_cells = cell[order]
    starts = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank[order] = np.arange(len(kps)) - starts
    pick = np.lexsort((-resp, rank))[:n]  # every cell's best, then every cell's second, ...
    return [kps[i] for i in pick]


def _pick(kps: list, width: int, height: int, n: int, coarse: float) -> list:
    """``n`` keypoints: the ``coarse`` share of them the largest (a blurred or downscaled copy
    keeps only its coarse structure; fine keypoints win on response and would crowd these
    out), the rest by ``_spread``."""
    k = int(n * coarse)
    if len(kps) <= n or k == 0:  # a query's (QUERY_COARSE = 0): no sort by size to pay for
        return _spread(kps, width, height, n)
    order = np.argsort(-np.array([kp.size for kp in kps], np.float32), kind="stable")
    big = set(order[:k].tolist())
    rest = [kp for i, kp in enumerate(kps) if i not in big]
    return [kps[i] for i in order[:k]] + _spread(rest, width, height, n - k)


def _root(desc: np.ndarray) -> np.ndarray:
    x = desc.astype(np.float32)
    x /= np.maximum(x.sum(1, keepdims=True), 1e-6)
    return np.clip(np.rint(np.sqrt(x) * _ROOT_SCALE), 0, 255).astype(np.uint8)


def _thumbnail(grey: np.ndarray, side: int) -> np.ndarray:
    """``grey`` shrunk (area-averaged) to longer side ``side``, never enlarged."""
    h, w = grey.shape
    k = side / max(h, w)
    if k >= 1.0:
        return np.ascontiguousarray(grey)
    return cv2.resize(grey, (max(1, round(w * k)), max(1, round(h * k))),
                      interpolation=cv2.INTER_AREA)


def extract(image: Image.Image, max_keypoints: int = MAX_KEYPOINTS,
            max_side: int = MAX_SIDE, contrast: float = CONTRAST,
            coarse: float = COARSE, min_side: int = 0,
            thumb_side: int = THUMB_SIDE) -> LocalFeatures:
    """SIFT features of ``image``: at most ``max_keypoints`` (a ``coarse`` share of them the
    largest), longer side at most ``max_side`` (and enlarged to ``min_side`` when shorter),
    detected at SIFT contrast threshold ``contrast``; with the frame's greyscale picture at
    longer side ``thumb_side``."""
    if max_keypoints < 1 or max_keypoints > 65535 or max_side < 16 or max_side > 8192:
        raise InvalidArgument("max_keypoints must be in [1, 65535] and max_side in [16, 8192]")
    if not 0 <= min_side <= max_side:
        raise InvalidArgument("min_side must be in [0, max_side]")
    if not 0.0 < contrast < 1.0:
        raise InvalidArgument("contrast must be in (0, 1)")
    if not 0.0 <= coarse <= 1.0:
        raise InvalidArgument("coarse must be in [0, 1]")
    if not 8 <= thumb_side <= 1024:
        raise InvalidArgument("thumb_side must be in [8, 1024]")
    grey = _grey(image, max_side, min_side)
    h, w = grey.shape
    thumb = _thumbnail(grey, thumb_side)
    sift = cv2.SIFT_create(contrastThreshold=contrast)
    kps = sift.detect(grey, None)
    top, bottom = _bands(grey)
    kps = [k for k in kps if top <= k.pt[1] < bottom]
    if not kps:
        return _empty(w, h, thumb)
    kps = _pick(list(kps), w, h, max_keypoints, coarse)
    kps, desc = sift.compute(grey, kps)
    if desc is None or not kps:
        return _empty(w, h, thumb)
    return LocalFeatures(
        xy=np.array([k.pt for k in kps], np.float32).reshape(-1, 2),
        size=np.array([k.size for k in kps], np.float32),
        angle=np.array([k.angle for k in kps], np.float32) % 360.0,
        desc=_root(desc), width=w, height=h, thumb=thumb)


# Descriptor layout is (row, col, orientation) = 4 x 4 x 8, row across the keypoint's
# orientation: mirroring the image reverses rows and negates orientation bins.
_R, _C, _O = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
_MIRROR_PERM = (((3 - _R) * 4 + _C) * 8 + (8 - _O) % 8).reshape(-1)


def mirror(feats: LocalFeatures) -> LocalFeatures:
    """The features of the horizontally mirrored image, derived without extracting again."""
    xy = feats.xy.copy()
    xy[:, 0] = feats.width - 0.5 - xy[:, 0]
    thumb = None if feats.thumb is None else np.ascontiguousarray(feats.thumb[:, ::-1])
    return LocalFeatures(xy, feats.size.copy(), (180.0 - feats.angle) % 360.0,
                         np.ascontiguousarray(feats.desc[:, _MIRROR_PERM]),
                         feats.width, feats.height, thumb)


def extract_query(image: Image.Image, max_keypoints: int = QUERY_MAX_KEYPOINTS,
                  max_side: int = QUERY_MAX_SIDE,
                  mirror_mode: str = "derived") -> tuple[LocalFeatures, LocalFeatures]:
    """Features of a query and of its mirror: ``"derived"`` (one SIFT pass) or ``"extract"``
    (a second pass on the mirrored image: a little more recall on mirrored copies, ~2x cost)."""
    feats = extract(image, max_keypoints, max_side, coarse=QUERY_COARSE,
                    min_side=QUERY_MIN_SIDE, thumb_side=QUERY_THUMB_SIDE)
    if mirror_mode == "derived":
        return feats, mirror(feats)
    if mirror_mode == "extract":
        return feats, extract(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), max_keypoints,
                              max_side, coarse=QUERY_COARSE, min_side=QUERY_MIN_SIDE,
                              thumb_side=QUERY_THUMB_SIDE)
    raise InvalidArgument(f"mirror_mode must be 'derived' or 'extract', got {mirror_mode!r}")


# -- serialisation -----------------------------------------------------------------------------

def to_bytes(feats: LocalFeatures, fmt: int = DEFAULT_FORMAT) -> bytes:
    """Compact versioned encoding (format byte first); 4-bit descriptors by default; the
    thumbnail, when there is one, at longer side ``THUMB_SIDE`` after the descriptors."""
    n = len(feats)
    if n > 65535 or feats.width > 65535 or feats.height > 65535:
        raise InvalidArgument("too many keypoints or too large a frame to encode")
    w, h = max(feats.width, 1), max(feats.height, 1)
    # Positions as fractions of the frame in 1/65535 steps: finer than a pixel, 4 bytes a point.
    q = np.empty((n, 2), np.uint16)
    q[:, 0] = np.clip(np.rint(feats.xy[:, 0] / w * 65535), 0, 65535)
    q[:, 1] = np.clip(np.rint(feats.xy[:, 1] / h * 65535), 0, 65535)
    # Size on a log scale (1/16 octave steps from 1 px), angle in 256 steps.
    size = np.clip(np.rint(np.log2(np.maximum(feats.size, 1.0)) * 16), 0, 255).astype(np.uint8)
    angle = (np.rint(feats.angle / 360.0 * 256) % 256).astype(np.uint8)
    if fmt == FORMAT_8BIT:
        desc = feats.desc.tobytes()
    elif fmt == FORMAT_4BIT:
        hi = feats.desc >> 4
        desc = ((hi[:, 0::2] << 4) | hi[:, 1::2]).astype(np.uint8).tobytes()
    else:
        raise InvalidArgument(f"unknown feature format {fmt}")
    tail = b""
    if feats.thumb is not None and feats.thumb.size:
        t = _thumbnail(feats.thumb, THUMB_SIDE)
        fmt |= WITH_THUMB
        tail = _THUMB.pack(t.shape[1], t.shape[0]) + t.astype(np.uint8).tobytes()
    return (_HEADER.pack(fmt, n, feats.width, feats.height) + q.tobytes() + size.tobytes()
            + angle.tobytes() + desc + tail)


def from_bytes(data: bytes) -> LocalFeatures:
    """Decode ``to_bytes`` output; raises InvalidArgument on a foreign or truncated blob."""
    if len(data) < _HEADER.size:
        raise InvalidArgument("feature blob too short")
    fmt, n, w, h = _HEADER.unpack_from(data)
    has_thumb, fmt = bool(fmt & WITH_THUMB), fmt & ~WITH_THUMB
    if fmt not in (FORMAT_8BIT, FORMAT_4BIT):
        raise InvalidArgument(f"unknown feature format {fmt}")
    dlen = 128 if fmt == FORMAT_8BIT else 64
    end = _HEADER.size + n * (4 + 1 + 1 + dlen)
    thumb = None
    if has_thumb:
        if len(data) < end + _THUMB.size:
            raise InvalidArgument("feature blob has the wrong length")
        tw, th = _THUMB.unpack_from(data, end)
        if len(data) != end + _THUMB.size + tw * th:
            raise InvalidArgument("feature blob has the wrong length")
        thumb = np.frombuffer(data, np.uint8, tw * th, end + _THUMB.size).reshape(th, tw)
    elif len(data) != end:
        raise InvalidArgument("feature blob has the wrong length")
    off = _HEADER.size
    q = np.frombuffer(data, np.uint16, 2 * n, off).reshape(n, 2).astype(np.float32)
    off += 4 * n
    size = np.exp2(np.frombuffer(data, np.uint8, n, off).astype(np.float32) / 16)
    off += n
    angle = np.frombuffer(data, np.uint8, n, off).astype(np.float32) * (360.0 / 256)
    off += n
    raw = np.frombuffer(data, np.uint8, n * dlen, off).reshape(n, dlen)
    if fmt == FORMAT_8BIT:
        desc = raw.copy()
    else:  # a nibble decodes to the middle of its 16-wide bucket
        desc = np.empty((n, 128), np.uint8)
        desc[:, 0::2] = (raw >> 4) << 4 | 8
        desc[:, 1::2] = (raw & 15) << 4 | 8
        desc[(desc == 8)] = 0  # an empty bin stays empty: most RootSIFT bins are 0
    xy = np.stack([q[:, 0] / 65535 * max(w, 1), q[:, 1] / 65535 * max(h, 1)], 1)
    return LocalFeatures(xy.astype(np.float32), size, angle, desc, int(w), int(h), thumb)


# -- matching and fitting ----------------------------------------------------------------------

def _unit(desc: np.ndarray) -> np.ndarray:
    x = desc.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def _tentative(sims: np.ndarray, q: LocalFeatures, s: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Ratio-test matches (query idx, seed idx), at most one per seed point and location."""
    if sims.shape[1] < 2 or sims.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top2 = np.argpartition(-sims, 1, axis=1)[:, :2]
    rows = np.arange(sims.shape[0])
    a, b = sims[rows, top2[:, 0]], sims[rows, top2[:, 1]]
    best = np.where(a >= b, top2[:, 0], top2[:, 1])
    s1, s2 = np.maximum(a, b), np.minimum(a, b)
    # Unit vectors: squared distance = 2 - 2 cos.
    d1, d2 = np.maximum(2 - 2 * s1, 0), np.maximum(2 - 2 * s2, 0)
    ok = d1 < (RATIO ** 2) * d2
    qi, si, dist = rows[ok], best[ok], d1[ok]
    order = np.argsort(dist, kind="stable")
    qi, si = qi[order], si[order]
    # One match per seed keypoint, then per seed location and per query location (SIFT repeats
    # a point once per dominant orientation): each physical point votes once.
    _, first = np.unique(si, return_index=True)
    qi, si = qi[np.sort(first)], si[np.sort(first)]
    for side in ("seed", "query"):
        pts = s.xy[si] if side == "seed" else q.xy[qi]
        key = np.rint(pts).astype(np.int64)
        _, first = np.unique(key[:, 0] * 100003 + key[:, 1], return_index=True)
        first = np.sort(first)  # keep the closest match at each location
        qi, si = qi[first], si[first]
    return qi, si


def _spread_ok(pts: np.ndarray, side: float) -> bool:
    if len(pts) < 3:
        return False
    cov = np.cov(pts.T.astype(np.float64))
    smallest = float(np.linalg.eigvalsh(cov)[0])
    return np.sqrt(max(smallest, 0.0)) >= MIN_SPREAD * side


def _fit(q: LocalFeatures, s: LocalFeatures, qi: np.ndarray, si: np.ndarray,
         model: str | None = None, min_matches: int = MIN_MATCHES,
         ) -> tuple[dict, np.ndarray | None]:
    """RANSAC fit (``MODEL``) from query to seed points, with the degenerate-fit guards; and
    the fit's matrix (query to seed frame) when it has ``AGREE_MIN_INLIERS`` consistent
    inliers, however clustered (for the pixel check), else None."""
    model = model or MODEL
    if len(qi) < min_matches:
        return dict(_NO_MATCH), None
    src, dst = q.xy[qi], s.xy[si]
    side = float(max(s.width, s.height, 1))
    estimate = cv2.estimateAffine2D if model == "affine" else cv2.estimateAffinePartial2D
    m, mask = estimate(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD * side,
                       maxIters=RANSAC_ITERS, confidence=0.999, refineIters=10)
    if m is None or mask is None:
        return dict(_NO_MATCH), None
    a = m[:, :2].astype(np.float64)
    sv = np.linalg.svd(a, compute_uv=False)
    det = float(np.linalg.det(a))
    # A reflection is the mirror path's job; a collapsed or exploded fit is degenerate (many
    # query points onto one seed spot, or the reverse); strong anisotropy is a squashed line.
    if det <= 0 or not (MIN_SCALE <= np.sqrt(det) <= MAX_SCALE) or sv[0] > MAX_ANISOTROPY * sv[1]:
        return dict(_NO_MATCH), None
    scale = float(np.sqrt(det))
    # The rotation part of the fit (polar decomposition): a true match's keypoint orientation
    # turns with it (same sign convention, measured) and its size scales with it; matches that
    # disagree are no support for this fit.
    u, _, vt = np.linalg.svd(a)
    r = u @ vt
    rot = float(np.degrees(np.arctan2(r[1, 0], r[0, 0])))
    inl = mask.ravel().astype(bool)
    dang = (s.angle[si] - q.angle[qi] - rot + 180.0) % 360.0 - 180.0
    dsize = np.log(np.maximum(s.size[si], 1e-3) / np.maximum(q.size[qi], 1e-3) / scale)
    inl &= (np.abs(dang) <= MAX_ANGLE_DIFF) & (np.abs(dsize) <= np.log(MAX_SIZE_RATIO))
    n = int(inl.sum())
    matrix = m if n >= AGREE_MIN_INLIERS else None
    region = _region(src[inl], q) if matrix is not None else None
    if n < 3 or not _spread_ok(dst[inl], side) or not _spread_ok(
            src[inl], float(max(q.width, q.height, 1))):
        return dict(_NO_MATCH, region=region), matrix
    return {"inliers": n, "kind": model, "scale": scale, "rotation": rot, "mirrored": False,
            "region": region}, matrix


def _region(pts: np.ndarray, q: LocalFeatures) -> tuple[float, float, float, float]:
    """Bounding box of ``pts`` (query frame) as fractions of the query's width and height."""
    w, h = float(max(q.width, 1)), float(max(q.height, 1))
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (float(x0) / w, float(y0) / h, float(x1) / w, float(y1) / h)


def _unmirrored(region: tuple[float, float, float, float] | None
                ) -> tuple[float, float, float, float] | None:
    """A region found on the mirrored query, in the query's own frame."""
    if region is None:
        return None
    x0, y0, x1, y1 = region
    return (1.0 - x1, y0, 1.0 - x0, y1)


def explained(matches: Sequence[Match]) -> list[bool]:
    """Which of one query's matches (against different seeds) are explained away: a fit that
    counts at least the floor, while another counts ``EXPLAIN_RATIO`` times as many inliers
    over the same part of the upload (``EXPLAIN_OVERLAP`` of the weaker fit's inlier box lies
    in the stronger one's). A re-post of one seed then does not also carry the label of a
    seed that merely shares some of its pixels (tiles of one texture, a shared logo or
    watermark), while two seeds side by side in a collage, each in its own part, both match."""
    out = []
    for b in matches:
        out.append(b.counted >= INLIER_FLOOR and b.region is not None and any(
            a is not b and a.region is not None and a.counted >= EXPLAIN_RATIO * b.counted
            and _overlap(b.region, a.region) >= EXPLAIN_OVERLAP for a in matches))
    return out


def _overlap(inner: tuple[float, float, float, float],
             outer: tuple[float, float, float, float]) -> float:
    """Share of box ``inner`` inside box ``outer`` (a degenerate box counts as a small one)."""
    eps = 1e-3
    w = max(min(inner[2], outer[2]) - max(inner[0], outer[0]), 0.0)
    h = max(min(inner[3], outer[3]) - max(inner[1], outer[1]), 0.0)
    if inner[2] - inner[0] < eps:
        w = eps if outer[0] <= inner[0] <= outer[2] else 0.0
    if inner[3] - inner[1] < eps:
        h = eps if outer[1] <= inner[1] <= outer[3] else 0.0
    area = max(inner[2] - inner[0], eps) * max(inner[3] - inner[1], eps)
    return float(w * h / area)


def _agreement(q: LocalFeatures, s: LocalFeatures, matrix: np.ndarray | None) -> float:
    """Correlation of the seed's thumbnail with the query's picture aligned onto it by
    ``matrix`` (query to seed frame); 0.0 when either has no picture, the aligned query
    covers under ``AGREE_MIN_COVER`` of the seed, or either footprint is flat."""
    if matrix is None or q.thumb is None or s.thumb is None or not q.thumb.size \
            or not s.thumb.size or min(q.width, q.height, s.width, s.height) < 1:
        return 0.0
    th, tw = s.thumb.shape
    qh, qw = q.thumb.shape
    to_seed_thumb = np.diag([tw / s.width, th / s.height, 1.0])
    from_query_thumb = np.diag([q.width / qw, q.height / qh, 1.0])
    a = (to_seed_thumb @ np.vstack([matrix, [0.0, 0.0, 1.0]]) @ from_query_thumb)[:2]
    shrink = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))  # seed-thumbnail px per query px
    src = cv2.GaussianBlur(q.thumb.astype(np.float32), (0, 0), max(0.5, 0.5 / max(shrink, 1e-3)))
    warped = cv2.warpAffine(src, a, (tw, th), flags=cv2.INTER_LINEAR, borderValue=0.0)
    valid = cv2.warpAffine(np.ones_like(src), a, (tw, th), flags=cv2.INTER_NEAREST,
                           borderValue=0.0) > 0.5
    if valid.mean() < AGREE_MIN_COVER:
        return 0.0
    x = s.thumb[valid].astype(np.float64)
    y = warped[valid].astype(np.float64)
    if x.std() < AGREE_MIN_STD or y.std() < AGREE_MIN_STD:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


_BLAS = None


def _blas_single_thread():
    """A context in which BLAS runs one thread: small GEMMs on a busy machine are ~15x faster
    single-threaded (OpenBLAS threads spin-wait for cores other work holds)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _similarities(qu: np.ndarray, stacked: np.ndarray) -> np.ndarray:
    with _blas_single_thread():
        return qu @ stacked.T


def verify(query: LocalFeatures, seed: LocalFeatures,
           query_mirror: LocalFeatures | None = None) -> Match:
    """Inliers of the best fit from ``query`` (or its mirror) onto ``seed``."""
    return verify_many(query, [seed], query_mirror)[0]


def verify_many(query: LocalFeatures, candidates: list[LocalFeatures],
                query_mirror: LocalFeatures | None = None) -> list[Match]:
    """``verify`` against each candidate: one matrix product for all of them, RANSAC only
    where enough tentative matches survive, the mirror only where the direct fit fails."""
    t0 = time.perf_counter()
    if not candidates:
        return []
    if len(candidates) > MAX_CANDIDATES:
        raise InvalidArgument(f"at most {MAX_CANDIDATES} candidates per verification, "
                              f"got {len(candidates)}")
    bounds = np.cumsum([0] + [len(c) for c in candidates])
    stacked = np.concatenate([_unit(c.desc) for c in candidates])
    sims = _similarities(_unit(query.desc), stacked) if len(query) else None
    shared = (time.perf_counter() - t0) * 1000 / len(candidates)
    out = []
    msims = None
    for k, s in enumerate(candidates):
        t1 = time.perf_counter()
        lo, hi = bounds[k], bounds[k + 1]
        # With thumbnails on both sides a fit of a few inliers is worth the pixel check.
        least = AGREE_MIN_INLIERS if s.thumb is not None and query.thumb is not None \
            else MIN_MATCHES
        best = None
        for q, mirrored in ((query, False), (query_mirror, True)):
            if hi - lo < 2 or q is None or not len(q) or (
                    best is not None and best.counted >= INLIER_FLOOR):
                continue
            if mirrored:
                msims = _similarities(_unit(q.desc), stacked) if msims is None else msims
            qi, si = _tentative((msims if mirrored else sims)[:, lo:hi], q, s)
            res, matrix = _fit(q, s, qi, si, min_matches=least)
            agree = _agreement(q, s, matrix) if res["inliers"] < AGREE_STRONG_INLIERS else 0.0
            if mirrored:
                res["region"] = _unmirrored(res["region"])
            m = Match(tentative=len(qi), ms=0.0, agreement=agree, **dict(res, mirrored=mirrored))
            if best is None or (m.counted, m.inliers) > (best.counted, best.inliers):
                best = m
        best = best or Match(tentative=0, ms=0.0, **_NO_MATCH)
        out.append(dataclasses.replace(best, ms=shared + (time.perf_counter() - t1) * 1000))
    return out


def fuse(score: float, inliers: int, weight: float = ALPHA) -> float:
    """``score`` raised by ``weight * log1p(inliers)`` once inliers reach ``INLIER_FLOOR``
    (the weight is calibrated per space: ``verify.weight``)."""
    if inliers < INLIER_FLOOR:
        return float(score)
    return float(score + weight * np.log1p(inliers))
