"""The training pictures: collected from training-side packages, filtered, deduplicated, cached.

``prepare`` reads every picture of the training-side Debian packages (``tools/datasources.py``,
installed with apt when missing), including the PNG/DDS members of game archives (0 A.D.'s
``public.zip``, Warzone 2100's ``base.wz``), and keeps the natural-ish ones:

* files under icon/cursor/font/UI folders are skipped, and so are pictures whose shorter side is
  under ``MIN_SIDE`` px, banners (aspect > ``MAX_ASPECT``), mostly transparent sprites (less than
  ``MIN_OPAQUE`` of the pixels opaque) and flat pictures (grey std < ``MIN_STD``, fewer than
  ``MIN_COLOURS`` distinct colours in a 64 px thumbnail, or PDQ quality < ``MIN_PDQ_QUALITY``);
* transparency is flattened onto white, as the service decodes uploads (``dedup.items``);
* a large picture (shorter side >= ``TILE_SOURCE_MIN``) also gives non-overlapping tiles;
* at most ``MAX_PER_FAMILY`` pictures per folder (one sprite folder must not dominate);
* PDQ near-duplicates (Hamming <= ``DUP_HAMMING``) of a kept picture go.

Kept pictures are shrunk to ``MAX_SIDE`` px on the long side and written as JPEG (quality 95)
with a ``manifest.jsonl`` (one row per picture: id, package, version, source, family, split).
Whole folders ("families") go to the validation split, so validation pictures are not near
copies of training ones.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from dedup.errors import InvalidArgument

MIN_SIDE = 96
MAX_SIDE = 512
MAX_ASPECT = 4.0
MIN_OPAQUE = 0.3
MIN_STD = 10.0
MIN_COLOURS = 48
MIN_PDQ_QUALITY = 30
TILE_SOURCE_MIN = 1024
TILE = 512
MAX_TILES = 6
MAX_PER_FAMILY = 250
DUP_HAMMING = 40
VAL_PERCENT = 12  # of the families
# Archives whose picture members count as the package's files.
ARCHIVE_EXTS = (".zip", ".wz")
ARCHIVE_MEMBER_EXTS = (".png", ".jpg", ".jpeg", ".dds", ".bmp")
_SKIP_DIRS = re.compile(r"/(icons?|cursors?|fonts?|gui|ui|hud|buttons?|menu|portraits?/small|"
                        r"alphamaps|normal|normals|spec|specular|masks?)/", re.I)
_SKIP_NAME = re.compile(r"(_norm|_normal|_spec|_nm|_ao|_mask|_gloss|_bump|_height)\.", re.I)

Image.MAX_IMAGE_PIXELS = 64_000_000


@dataclass
class Source:
    """One picture file, or one member of an archive file."""

    package: str
    path: str
    member: str = ""

    @property
    def family(self) -> str:
        """The folder the picture lives in: pictures of one folder go to one split."""
        name = f"{self.path}!{self.member}" if self.member else self.path
        return f"{self.package}:{os.path.dirname(name)}"

    def read(self) -> bytes:
        if not self.member:
            return Path(self.path).read_bytes()
        return _archive(self.path).read(self.member)


@functools.lru_cache(maxsize=4)
def _archive(path: str) -> zipfile.ZipFile:
    """An open archive, kept per process: reading its directory once costs more than a member."""
    return zipfile.ZipFile(path)


def list_sources(packages: list[str] | tuple[str, ...]) -> list[Source]:
    """Every picture file (and archive member) of the given training-side packages."""
    from tools.datasources import package_files

    out: list[Source] = []
    for pkg in packages:
        for f in package_files(pkg, "train"):
            out.append(Source(pkg, str(f)))
        for f in package_files(pkg, "train", exts=ARCHIVE_EXTS):
            try:
                with zipfile.ZipFile(f) as zf:
                    names = [n for n in zf.namelist() if n.lower().endswith(ARCHIVE_MEMBER_EXTS)]
            except zipfile.BadZipFile:
                continue
            out.extend(Source(pkg, str(f), n) for n in sorted(names))
    return [s for s in out if not _SKIP_DIRS.search("/" + (s.member or s.path))
            and not _SKIP_NAME.search(s.member or s.path)]


def flatten(img: Image.Image) -> tuple[Image.Image, float]:
    """RGB with transparency composited onto white, and the fraction of opaque pixels."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        opaque = float(np.mean(np.asarray(rgba.getchannel("A")) > 127))
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), opaque
    if img.mode.startswith("I;16") or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB"), 1.0


def why_rejected(img: Image.Image, opaque: float) -> str | None:
    """The filter a picture fails, or None when it is kept."""
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        return "small"
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return "banner"
    if opaque < MIN_OPAQUE:
        return "sprite"
    thumb = img.copy()
    thumb.thumbnail((64, 64))
    arr = np.asarray(thumb)
    if float(np.asarray(thumb.convert("L"), dtype=np.float32).std()) < MIN_STD:
        return "flat"
    if len(np.unique(arr.reshape(-1, 3), axis=0)) < MIN_COLOURS:
        return "flat"
    return None


def _shrink(img: Image.Image, side: int = MAX_SIDE) -> Image.Image:
    if max(img.size) > side:
        img = img.copy()
        img.thumbnail((side, side), Image.LANCZOS)
    return img


def _pieces(img: Image.Image) -> list[tuple[str, Image.Image]]:
    """The whole picture and, for a large one, up to MAX_TILES non-overlapping tiles."""
    out = [("", _shrink(img))]
    w, h = img.size
    if min(w, h) >= TILE_SOURCE_MIN:
        tile = max(TILE, min(w, h) // 3)
        nx, ny = w // tile, h // tile
        for k, (ix, iy) in enumerate((ix, iy) for iy in range(ny) for ix in range(nx)):
            if k >= MAX_TILES:
                break
            box = (ix * tile, iy * tile, (ix + 1) * tile, (iy + 1) * tile)
            out.append((f"#tile{ix},{iy}", _shrink(img.crop(box))))
    return out


def _process(args: tuple[int, Source]) -> list[dict]:
    """Decode, filter and shrink one source; rows with the encoded JPEG and PDQ hash."""
    import pdqhash

    idx, src = args
    try:
        img = Image.open(io.BytesIO(src.read()))
        img.load()
        img, opaque = flatten(img)
    except Exception as e:  # a broken or unsupported file is one rejection, not a failure
        return [{"idx": idx, "reject": f"decode:{type(e).__name__}"}]
    reason = why_rejected(img, opaque)
    if reason:
        return [{"idx": idx, "reject": reason}]
    rows = []
    for suffix, piece in _pieces(img):
        if suffix and why_rejected(piece, 1.0):
            continue
        bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(piece)))
        if quality < MIN_PDQ_QUALITY:
            rows.append({"idx": idx, "reject": "flat"})
            continue
        buf = io.BytesIO()
        piece.save(buf, "JPEG", quality=95)
        rows.append({"idx": idx, "suffix": suffix, "jpeg": buf.getvalue(), "size": piece.size,
                     "pdq": np.packbits(bits.astype(np.uint8)).tobytes().hex()})
    return rows


def _split_of(family: str) -> str:
    h = int(hashlib.sha256(family.encode()).hexdigest()[:8], 16)
    return "val" if h % 100 < VAL_PERCENT else "train"


def prepare(out_dir: str | Path, packages: list[str] | tuple[str, ...] | None = None,
            workers: int = 2, limit: int | None = None) -> dict:
    """Build the cached training set under ``out_dir``; returns counts per package and filter."""
    import faiss
    from tqdm import tqdm

    from tools.datasources import TRAIN_PACKAGES, ensure_installed

    packages = tuple(packages or TRAIN_PACKAGES)
    versions = ensure_installed(packages, "train")
    sources = list_sources(packages)
    rng = np.random.default_rng(0)
    # Cap each folder at MAX_PER_FAMILY pictures, chosen at random but reproducibly.
    by_family: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        by_family.setdefault(s.family, []).append(i)
    keep_idx = sorted(j for ids in by_family.values()
                      for j in (ids if len(ids) <= MAX_PER_FAMILY * 3
                                else rng.choice(ids, MAX_PER_FAMILY * 3, replace=False)))
    if limit:
        keep_idx = keep_idx[:limit]
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    stats = {p: {"files": 0, "kept": 0, "rejected": {}} for p in packages}
    for s in sources:
        stats[s.package]["files"] += 1
    rows: list[dict] = []
    with Pool(workers) as pool:
        it = pool.imap(_process, ((i, sources[i]) for i in keep_idx), chunksize=8)
        for res in tqdm(it, total=len(keep_idx), desc="pictures", mininterval=10):
            for r in res:
                if "reject" in r:
                    rej = stats[sources[r["idx"]].package]["rejected"]
                    rej[r["reject"]] = rej.get(r["reject"], 0) + 1
                else:
                    rows.append(r)
    # Per-folder cap after filtering, then PDQ near-duplicate removal, first come first kept.
    per_family: dict[str, int] = {}
    capped = []
    for r in rows:
        fam = sources[r["idx"]].family
        if per_family.get(fam, 0) < MAX_PER_FAMILY:
            per_family[fam] = per_family.get(fam, 0) + 1
            capped.append(r)
        else:
            rej = stats[sources[r["idx"]].package]["rejected"]
            rej["folder_cap"] = rej.get("folder_cap", 0) + 1
    codes = np.stack([np.frombuffer(bytes.fromhex(r["pdq"]), np.uint8) for r in capped])
    index = faiss.IndexBinaryFlat(256)
    index.add(codes)
    lims, D, I = index.range_search(codes, DUP_HAMMING + 1)
    dropped = np.zeros(len(capped), bool)
    for i in range(len(capped)):
        if dropped[i]:
            continue
        nb = I[lims[i]:lims[i + 1]]
        dropped[nb[nb > i]] = True
    manifest = []
    for i, r in enumerate(capped):
        src = sources[r["idx"]]
        if dropped[i]:
            rej = stats[src.package]["rejected"]
            rej["near_duplicate"] = rej.get("near_duplicate", 0) + 1
            continue
        pid = f"{len(manifest):06d}"
        (out / "images" / f"{pid}.jpg").write_bytes(r["jpeg"])
        stats[src.package]["kept"] += 1
        manifest.append({"id": pid, "file": f"images/{pid}.jpg", "package": src.package,
                         "version": versions[src.package], "source": src.path,
                         "member": src.member + r["suffix"], "family": src.family,
                         "split": _split_of(src.family), "width": r["size"][0],
                         "height": r["size"][1], "pdq": r["pdq"]})
    with open(out / "manifest.jsonl", "w") as f:
        for m in manifest:
            f.write(json.dumps(m) + "\n")
    summary = {"versions": versions, "per_package": stats,
               "kept": len(manifest), "val": sum(m["split"] == "val" for m in manifest),
               "filters": {"min_side": MIN_SIDE, "max_side": MAX_SIDE, "max_aspect": MAX_ASPECT,
                           "min_opaque": MIN_OPAQUE, "min_std": MIN_STD,
                           "min_colours": MIN_COLOURS, "min_pdq_quality": MIN_PDQ_QUALITY,
                           "max_per_family": MAX_PER_FAMILY, "dup_hamming": DUP_HAMMING}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def read_manifest(data_dir: str | Path, split: str | None = None) -> list[dict]:
    """Rows of ``manifest.jsonl`` (optionally one split); a plain folder of pictures gives one
    row per picture file, all in the training split (what the tests use)."""
    data_dir = Path(data_dir)
    mf = data_dir / "manifest.jsonl"
    if mf.exists():
        rows = [json.loads(line) for line in mf.read_text().splitlines() if line.strip()]
    else:
        exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
        files = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in exts)
        rows = [{"id": p.stem, "file": p.name, "split": "train"} for p in files]
    if not rows:
        raise InvalidArgument(f"no pictures in {data_dir}")
    return [r for r in rows if split is None or r["split"] == split]


def load_rgb(data_dir: str | Path, row: dict) -> Image.Image:
    """One cached picture as RGB."""
    with Image.open(Path(data_dir) / row["file"]) as img:
        return flatten(img)[0]
