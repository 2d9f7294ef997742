"""Training stages: cache the frozen trunk on edited views, fit the top, validate, export.

On a CPU the early, high-resolution blocks cost most of a forward pass, and they stay frozen.
So ``cache_views`` runs them once per edited view and stores the activations at the split
(fp16 shards), and ``fit`` trains the late blocks, head and projection on pairs of cached
views of one picture for as many epochs as the budget allows. ``fit`` without a cache edits
and runs the trunk online (a GPU, or the small test run); with ``split=0`` it trains the whole
network. Each step's batch is a pure function of (seed, step), so a resumed run draws the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dedup.embed.copydet import INPUT_SIZE, CopyDetNet, preprocess
from dedup.errors import InvalidArgument
from tools.train.augment import FAMILIES, Augmenter
from tools.train.data import load_rgb, read_manifest
from tools.train.model import (describe_boxes, export_weights, freeze_trunk, from_imagenet,
                               info_nce, koleo, set_train_mode)

# A view whose source picture fills less than this of the frame (a collage panel) is described
# by the feature cells under its box when ``region_positives`` is on.
REGION_MAX_AREA = 0.5


@dataclass
class FitConfig:
    """Everything that decides a run; saved in every checkpoint."""

    data: str
    out: str
    cache: str | None = None
    steps: int = 1000
    batch: int = 64  # pictures per step; two views each
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup: int = 50
    temperature: float = 0.05
    koleo_weight: float = 10.0
    dim: int = 512
    split: int = 15
    train_from: int | None = None  # first trained block (default: split); 17 = projection only
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    workers: int = 0
    region_positives: bool = True
    checkpoint_every: int = 100
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much wall time; 0 = no limit


# -- cached views -----------------------------------------------------------------------------
class _Pictures:
    """Training pictures by index, with a small cache for collage/sticker partners."""

    def __init__(self, data: str, split: str | None = "train"):
        self.data = data
        self.rows = read_manifest(data, split)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, i: int) -> Image.Image:
        return load_rgb(self.data, self.rows[i])

    def other_fn(self, rng: np.random.Generator):
        return lambda: self.get(int(rng.integers(len(self.rows))))


def _shard_paths(cache: Path, s: int) -> tuple[Path, Path]:
    return cache / f"shard-{s:05d}.npy", cache / f"shard-{s:05d}.json"


def cache_views(data: str, cache: str, views: int = 4, shard_size: int = 128, seed: int = 0,
                split: int = 15, worker: int = 0, n_workers: int = 1, threads: int = 1,
                max_shards: int | None = None, batch: int = 16) -> int:
    """Edit every training picture ``views`` times, run the frozen trunk, write fp16 shards.

    Shard ``s`` holds pictures ``perm[s*shard_size:(s+1)*shard_size]``; workers take every
    ``n_workers``-th shard and skip finished ones, so the stage resumes and parallelises.
    Returns the number of shards written by this call."""
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    pics = _Pictures(data)
    out = Path(cache)
    out.mkdir(parents=True, exist_ok=True)
    perm = np.random.default_rng([seed, 1]).permutation(len(pics))
    n_shards = math.ceil(len(pics) / shard_size)
    if max_shards:
        n_shards = min(n_shards, max_shards)
    net = from_imagenet(split=split, seed=seed).eval().to(memory_format=torch.channels_last)
    mine = [s for s in range(n_shards) if s % n_workers == worker and not _shard_paths(out, s)[1].exists()]
    written = 0
    for s in tqdm(mine, desc=f"cache worker {worker}", mininterval=30):
        if _shard_paths(out, s)[1].exists():  # finished meanwhile by another run
            continue
        idx = perm[s * shard_size:(s + 1) * shard_size]
        rng = np.random.default_rng([seed, 2, s])
        aug = Augmenter(rng, other=pics.other_fn(rng))
        meta = {"pictures": [], "views": views, "ops": [], "boxes": []}
        tensors = []
        for i in idx:
            img = pics.get(int(i))
            meta["pictures"].append(pics.rows[int(i)]["id"])
            for _ in range(views):
                v = aug.view(img)
                tensors.append(preprocess([v.image])[0])
                meta["ops"].append(v.ops)
                meta["boxes"].append([round(b, 4) for b in v.box])
        acts = []
        with torch.inference_mode():
            for k in range(0, len(tensors), batch):
                x = torch.stack(tensors[k:k + batch]).contiguous(memory_format=torch.channels_last)
                acts.append(net.trunk(x).to(torch.float16).contiguous().numpy())
        npy, js = _shard_paths(out, s)
        np.save(str(npy) + ".tmp.npy", np.concatenate(acts))
        os.replace(str(npy) + ".tmp.npy", npy)
        js.write_text(json.dumps(meta))  # written last: its presence marks the shard done
        written += 1
    return written


class _ViewCache:
    """The finished shards of a cache directory, memory-mapped."""

    def __init__(self, cache: str):
        self.dir = Path(cache)
        self.shards: list[tuple[np.ndarray, dict]] = []
        self.index: list[tuple[int, int]] = []  # picture -> (shard, position)
        self.refresh()

    def refresh(self) -> None:
        done = sorted(self.dir.glob("shard-*.json"))
        for js in done[len(self.shards):]:
            meta = json.loads(js.read_text())
            arr = np.load(js.with_suffix(".npy"), mmap_mode="r")
            k = len(self.shards)
            self.shards.append((arr, meta))
            self.index.extend((k, j) for j in range(len(meta["pictures"])))

    def __len__(self) -> int:
        return len(self.index)

    def pair(self, pic: int, rng: np.random.Generator):
        """Two distinct cached views of one picture: activations and boxes."""
        s, j = self.index[pic]
        arr, meta = self.shards[s]
        v = meta["views"]
        a, b = rng.choice(v, 2, replace=False)
        rows = [j * v + int(a), j * v + int(b)]
        return [torch.from_numpy(np.asarray(arr[r], dtype=np.float32)) for r in rows], \
               [meta["boxes"][r] for r in rows]


# -- fitting ----------------------------------------------------------------------------------
def _lr_at(step: int, cfg: FitConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _box_or_none(box, use: bool):
    if not use:
        return None
    x0, y0, x1, y1 = box
    return tuple(box) if (x1 - x0) * (y1 - y0) < REGION_MAX_AREA else None


def _online_batch(pics: _Pictures, net: CopyDetNet, cfg: FitConfig, step: int):
    """Edit two views of ``batch`` pictures and run the frozen trunk on them."""
    rng = np.random.default_rng([cfg.seed, 3, step])
    idx = rng.choice(len(pics), min(cfg.batch, len(pics)), replace=False)
    aug = Augmenter(rng, other=pics.other_fn(rng))
    imgs, boxes = [], []
    for i in idx:
        img = pics.get(int(i))
        for _ in range(2):
            v = aug.view(img)
            imgs.append(v.image)
            boxes.append(v.box)
    x = preprocess(imgs).to(cfg.device).contiguous(memory_format=torch.channels_last)
    if cfg.split > 0:
        with torch.no_grad():
            x = net.trunk(x)
    return x, boxes


def _cached_batch(cache: _ViewCache, cfg: FitConfig, step: int):
    rng = np.random.default_rng([cfg.seed, 4, step])
    idx = rng.choice(len(cache), min(cfg.batch, len(cache)), replace=False)
    acts, boxes = [], []
    for i in idx:
        a, b = cache.pair(int(i), rng)
        acts.extend(a)
        boxes.extend(b)
    return torch.stack(acts).to(cfg.device).contiguous(memory_format=torch.channels_last), boxes


def _save(path: Path, net, opt, scaler, step: int, cfg: FitConfig, history: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "opt": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler else None, "step": step,
                "config": asdict(cfg), "history": history}, tmp)
    os.replace(tmp, path)


def fit(cfg: FitConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; writes ``out/last.pt`` every ``checkpoint_every`` steps and at the end."""
    from tqdm import tqdm

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgument("--device cuda asked for, but torch sees no GPU")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    net = from_imagenet(cfg.dim, cfg.split, cfg.seed)
    if cfg.train_from is not None and cfg.train_from < cfg.split:
        raise InvalidArgument(f"train_from {cfg.train_from} lies inside the frozen trunk (split {cfg.split})")
    params = freeze_trunk(net, cfg.train_from) if cfg.split > 0 else list(net.parameters())
    net = net.to(cfg.device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    start, history = 0, []
    if resume:
        if not ckpt_path.exists():
            raise InvalidArgument(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location=cfg.device, weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if scaler and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        start, history = int(ck["step"]), list(ck["history"])
    cache = _ViewCache(cfg.cache) if cfg.cache else None
    pics = None if cache else _Pictures(cfg.data)
    if cache is not None and len(cache) < 2:
        raise InvalidArgument(f"the view cache {cfg.cache} has fewer than 2 pictures")
    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="fit",
               disable=not progress, mininterval=10)
    step = start
    for step in bar:
        if cache is not None and step % 50 == 0:
            cache.refresh()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        x, boxes = _cached_batch(cache, cfg, step) if cache else _online_batch(pics, net, cfg, step)
        set_train_mode(net, cfg.train_from) if cfg.split > 0 else net.train()
        labels = torch.arange(len(x) // 2, device=cfg.device).repeat_interleave(2)
        with torch.autocast("cuda", enabled=use_amp):
            fmap = net.top(x) if cfg.split > 0 else net.top(net.trunk(x))
        z = describe_boxes(net, fmap.float(), [_box_or_none(b, cfg.region_positives) for b in boxes])
        l_nce = info_nce(z, labels, cfg.temperature)
        l_kol = koleo(z, labels)
        loss = l_nce + cfg.koleo_weight * l_kol
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        history.append({"step": step, "loss": loss.item(), "infonce": l_nce.item(),
                        "koleo": l_kol.item(), "lr": _lr_at(step, cfg)})
        bar.set_postfix(loss=f"{loss.item():.3f}", nce=f"{l_nce.item():.3f}")
        done = step + 1
        over_time = cfg.max_minutes and (time.time() - t0) / 60 > cfg.max_minutes
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or over_time:
            _save(ckpt_path, net, opt, scaler, done, cfg, history)
        if over_time:
            break
    return {"steps_done": len(history) and history[-1]["step"] + 1, "history": history,
            "checkpoint": str(ckpt_path)}


def load_checkpoint(path: str | Path) -> CopyDetNet:
    """The network of a training checkpoint, in eval mode on the CPU."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ck["config"]
    net = CopyDetNet(dim=cfg["dim"], split=cfg["split"])
    net.load_state_dict(ck["model"])
    return net.eval()


def export(checkpoint: str | Path, path: str | Path, meta: dict | None = None) -> Path:
    """Shipped weights (fp16) from a training checkpoint."""
    return export_weights(load_checkpoint(checkpoint), path, meta)


# -- validation -------------------------------------------------------------------------------
SEED_FOLDER_MAX = 40  # seeds come from small folders, so no one texture family dominates them
SEED_PER_FOLDER = 10
THUMB_CORR_MAX = 0.85


def _thumbs(data: str, rows: list[dict], idx) -> np.ndarray:
    """Zero-mean, unit-norm 32x32 grey thumbnails (rows of a matrix)."""
    t = np.stack([np.asarray(load_rgb(data, rows[int(i)]).convert("L").resize((32, 32), Image.BILINEAR),
                             dtype=np.float32).ravel() for i in idx])
    t -= t.mean(1, keepdims=True)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-6)


def _split_val(data: str, rows: list[dict], n_seeds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeds from some folders, negatives from the others, so that no negative is a sibling
    (same texture set, tile of the same picture) of a seed; negatives whose thumbnail (or its
    mirror) correlates >= THUMB_CORR_MAX with a seed's are dropped too."""
    rng = np.random.default_rng([seed, 5])
    folders: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        folders.setdefault(r["family"], []).append(i)
    names = sorted(folders)
    seed_pool, seed_folders = [], set()
    for j in rng.permutation(len(names)):
        ids = folders[names[j]]
        if len(ids) > SEED_FOLDER_MAX:
            continue
        seed_folders.add(names[j])
        seed_pool += list(rng.permutation(ids)[:SEED_PER_FOLDER])
        if len(seed_pool) >= 1.5 * n_seeds:
            break
    if len(seed_pool) < n_seeds:
        raise InvalidArgument(f"only {len(seed_pool)} validation pictures can be seeds; want {n_seeds}")
    seeds = rng.permutation(seed_pool)[:n_seeds]
    others = np.array([i for i, r in enumerate(rows) if r["family"] not in seed_folders])
    ts, to = _thumbs(data, rows, seeds), _thumbs(data, rows, others)
    mirrored = ts.reshape(-1, 32, 32)[:, :, ::-1].reshape(len(ts), -1)
    corr = np.maximum(to @ ts.T, to @ mirrored.T).max(1)
    return seeds, rng.permutation(others[corr < THUMB_CORR_MAX])


def build_val(data: str, out: str, n_seeds: int = 300, neg_per_picture: int = 2,
              min_negatives: int = 5000, seed: int = 1) -> dict:
    """Validation queries from held-out (``val`` split) pictures: every seed edited once per
    edit family (positives), every held-out picture of other folders (``_split_val``) edited
    ``neg_per_picture`` times or more, to reach ``min_negatives`` (negatives, random families). Writes PNGs and ``val.json``
    under ``out``; each item has its own generator, so an interrupted build resumes."""
    from tqdm import tqdm

    rows = read_manifest(data, "val")
    seeds, others = _split_val(data, rows, n_seeds, seed)
    per = max(neg_per_picture, math.ceil(min_negatives / max(1, len(others))))
    outp = Path(out)
    (outp / "img").mkdir(parents=True, exist_ok=True)

    def augmenter(*key):
        rng = np.random.default_rng([seed, *key])
        return rng, Augmenter(rng, other=lambda: load_rgb(data, rows[int(rng.choice(others))]))

    items = []
    for k, i in enumerate(tqdm(seeds, desc="val seeds", mininterval=30)):
        names = [f"seed-{k:04d}.png"] + [f"q-{k:04d}-{fam}.png" for fam in FAMILIES]
        items.append({"file": names[0], "kind": "seed", "seed": k, "family": ""})
        items += [{"file": n, "kind": "query", "seed": k, "family": f} for n, f in zip(names[1:], FAMILIES)]
        if all((outp / "img" / n).exists() for n in names):
            continue
        img = load_rgb(data, rows[int(i)])
        img.save(outp / "img" / names[0])
        _, aug = augmenter(6, k)
        for name, fam in zip(names[1:], FAMILIES):
            aug.edit(img, fam).image.save(outp / "img" / name)
    for k, i in enumerate(tqdm(others, desc="val negatives", mininterval=30)):
        img = None
        for j in range(per):
            name = f"n-{k:05d}-{j}.png"
            items.append({"file": name, "kind": "query", "seed": -1, "family": "random"})
            if (outp / "img" / name).exists():
                continue
            img = img or load_rgb(data, rows[int(i)])
            rng, aug = augmenter(7, k, j)
            aug.edit(img, FAMILIES[int(rng.integers(len(FAMILIES)))]).image.save(outp / "img" / name)
    meta = {"n_seeds": int(n_seeds), "n_positive": int(n_seeds * len(FAMILIES)),
            "n_negative": int(len(others) * per), "items": items}
    (outp / "val.json").write_text(json.dumps(meta))
    return {k: v for k, v in meta.items() if k != "items"}


def _val_items(val: str) -> tuple[list[dict], Path]:
    meta = json.loads((Path(val) / "val.json").read_text())
    return meta["items"], Path(val) / "img"


def cache_val(val: str, split: int = 15, threads: int = 1, batch: int = 16) -> Path:
    """Trunk activations of every validation image (fixed), so a checkpoint is scored fast."""
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    items, img_dir = _val_items(val)
    path = Path(val) / f"trunk-{split}.npy"
    if path.exists():
        return path
    net = from_imagenet(split=split).eval().to(memory_format=torch.channels_last)
    acts = None
    with torch.inference_mode():
        for k in tqdm(range(0, len(items), batch), desc="val trunk", mininterval=30):
            imgs = [Image.open(img_dir / it["file"]).convert("RGB") for it in items[k:k + batch]]
            a = net.trunk(preprocess(imgs).contiguous(memory_format=torch.channels_last))
            if acts is None:
                acts = np.lib.format.open_memmap(str(path) + ".tmp.npy", "w+", np.float16,
                                                 (len(items), *a.shape[1:]))
            acts[k:k + len(imgs)] = a.to(torch.float16).numpy()
    acts.flush()
    del acts
    os.replace(str(path) + ".tmp.npy", path)
    return path


def score(items: list[dict], seed_vecs: np.ndarray, query_vecs: np.ndarray, fmr: float = 0.001) -> dict:
    """Recall at ``fmr`` false-match rate, overall and per family.

    ``seed_vecs`` (n_seeds, d); ``query_vecs`` (n_queries, d) or (n_queries, R, d) where a
    query's score against a seed is its best region's similarity."""
    from tools.eval.metrics import recall_at_threshold, threshold_at_fmr

    queries = [it for it in items if it["kind"] == "query"]
    q = query_vecs if query_vecs.ndim == 3 else query_vecs[:, None, :]
    sims = np.einsum("qrd,sd->qrs", q, seed_vecs).max(1)  # (nq, n_seeds)
    truth = np.array([it["seed"] for it in queries])
    neg = truth < 0
    thr, achieved = threshold_at_fmr(sims[neg].max(1), fmr)
    pos_scores = sims[~neg, truth[~neg]]
    fams = np.array([it["family"] for it in queries])[~neg]
    per = {f: recall_at_threshold(pos_scores[fams == f], thr) for f in sorted(set(fams))}
    r1 = float(np.mean(sims[~neg].argmax(1) == truth[~neg]))
    return {"recall": recall_at_threshold(pos_scores, thr), "threshold": thr, "fmr": achieved,
            "recall_at_1": r1, "per_family": per, "n_pos": int((~neg).sum()), "n_neg": int(neg.sum())}


@torch.inference_mode()
def evaluate_net(net: CopyDetNet, val: str, threads: int = 0, batch: int = 64) -> dict:
    """Recall at 0.1% FMR of a network on the validation set: global and best-region."""
    if threads:
        torch.set_num_threads(threads)
    items, _ = _val_items(val)
    acts = np.load(cache_val(val, net.split, threads or 1), mmap_mode="r")
    net = net.eval()
    glob, regs = [], []
    for k in range(0, len(items), batch):
        x = torch.from_numpy(np.asarray(acts[k:k + batch], dtype=np.float32))
        fmap = net.top(x.contiguous(memory_format=torch.channels_last))
        r = net.describe_regions(fmap)
        regs.append(r.numpy())
        glob.append(r[:, 0].numpy())
    glob, regs = np.concatenate(glob), np.concatenate(regs)
    is_seed = np.array([it["kind"] == "seed" for it in items])
    order = np.argsort([it["seed"] for it in items if it["kind"] == "seed"])
    seed_vecs = glob[is_seed][order]
    return {"global": score(items, seed_vecs, glob[~is_seed]),
            "regions": score(items, seed_vecs, regs[~is_seed])}


def evaluate_embedder(embedder, val: str, batch: int = 1) -> dict:
    """The same figures for any registered embedder (the baseline), run on the PNGs."""
    from tqdm import tqdm

    items, img_dir = _val_items(val)
    vecs = []
    for k in tqdm(range(0, len(items), batch), desc="val embed", mininterval=30):
        imgs = [Image.open(img_dir / it["file"]).convert("RGB") for it in items[k:k + batch]]
        vecs.append(embedder.embed_images(imgs))
    vecs = np.concatenate(vecs)
    is_seed = np.array([it["kind"] == "seed" for it in items])
    order = np.argsort([it["seed"] for it in items if it["kind"] == "seed"])
    return {"global": score(items, vecs[is_seed][order], vecs[~is_seed])}


@torch.inference_mode()
def evaluate_images(nets: dict[str, CopyDetNet], val: str, keep_aspect: bool = True,
                    threads: int = 0) -> dict:
    """Figures of several networks that share one frozen trunk, run on the validation PNGs
    one by one (any input size): the trunk runs once per picture for all of them."""
    from tqdm import tqdm

    from dedup.embed.copydet import preprocess_keep_aspect

    if threads:
        torch.set_num_threads(threads)
    items, img_dir = _val_items(val)
    first = next(iter(nets.values())).eval()
    glob = {k: [] for k in nets}
    regs = {k: [] for k in nets}
    for it in tqdm(items, desc="val images", mininterval=30):
        img = Image.open(img_dir / it["file"]).convert("RGB")
        x = preprocess_keep_aspect(img) if keep_aspect else preprocess([img])
        h = first.trunk(x.contiguous(memory_format=torch.channels_last))
        for k, net in nets.items():
            r = net.eval().describe_regions(net.top(h))
            regs[k].append(r.numpy())
            glob[k].append(r[:, 0].numpy())
    is_seed = np.array([it["kind"] == "seed" for it in items])
    order = np.argsort([it["seed"] for it in items if it["kind"] == "seed"])
    out = {}
    for k in nets:
        g, r = np.concatenate(glob[k]), np.concatenate(regs[k])
        out[k] = {"global": score(items, g[is_seed][order], g[~is_seed]),
                  "regions": score(items, g[is_seed][order], r[~is_seed])}
    return out
