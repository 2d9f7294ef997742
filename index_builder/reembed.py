"""Re-embed: move a bank to a new model, or bootstrap a bank from a manifest of content.

Stages, each timed: read (seed content from one store, or manifest rows) -> embed (Ray Data:
``map_batches`` over an actor pool, one model per actor, GPUs when Ray has them; or in this
process) -> write (ONE writer: the store itself when no service holds it, else the live
service through its admin RPCs) -> train -> add -> validate -> publish (``build.rebuild``, the
report stored in the snapshot manifest).

The work goes in windows of rows: the driver reads a window, the embedder pool turns it into
vectors, the writer commits them with the run's progress record in the same LMDB transaction.
A killed run therefore resumes after the last committed window (``progress`` in LMDB), and a
window done twice is harmless (a vector is overwritten with the same one; a manifest row is an
exact duplicate of the seed it already made). Items the limits or the decoder refuse are
counted and reported, never fatal. A seed removed while the run goes gets no vector; a seed
added meanwhile is embedded by the service itself, since the new space is served in shadow
before the first window is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from dedup.config import IndexPlan, Limits, SpaceConfig
from dedup.errors import InvalidArgument
from dedup.store import NewSeed, SeedStore
from dedup.types import Label, OpKind, check_labels

log = logging.getLogger(__name__)

STAGES = ("read", "embed", "write", "train", "add", "validate", "publish")
MAX_REJECTS_LISTED = 100  # rejected items named in the report (all are counted)


# ---------------------------------------------------------------- the embedding stage
class EmbedBatch:
    """Rows -> vectors with one model per space; the callable Ray Data's actors run (and the
    in-process path runs alone). Rows: ``key`` (seed id or manifest row), ``kind`` ("image",
    "text" or "path"), ``data`` (image bytes, text, or a file path). Decoding goes through
    the service's own item limits (``dedup.embed.spaces.prepare``)."""

    def __init__(self, spaces: Mapping[str, Mapping[str, Any]], limits: Mapping[str, Any],
                 device: str | None = None, want_content: bool = False):
        import torch

        from dedup.embed import create_embedder
        from dedup.embed.spaces import Space

        if device is None and torch.cuda.is_available():
            device = "cuda"
        self.device = device
        self.limits = Limits.model_validate(dict(limits))
        self.spaces = {}
        for name, raw in spaces.items():
            sc = SpaceConfig.model_validate(dict(raw))
            self.spaces[name] = Space(name, create_embedder(sc.model, device=device), sc)
        self.want_content = want_content

    @property
    def model_ids(self) -> dict[str, str]:
        return {n: s.model_id for n, s in self.spaces.items()}

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from dedup.embed.spaces import embed, prepare
        from dedup.items import Prepared
        from dedup.types import Item

        n = len(batch["key"])
        errors = [""] * n
        items: list[Item | None] = []
        for i, (kind, data) in enumerate(zip(batch["kind"], batch["data"])):
            try:
                items.append(_item(str(kind), data))
            except OSError as e:
                errors[i] = f"unreadable: {e}"
                items.append(None)
        todo = [i for i, it in enumerate(items) if it is not None]
        prepared = prepare(self.spaces, [items[i] for i in todo], self.limits) if todo else []
        good: list[tuple[int, Prepared]] = []
        for i, p in zip(todo, prepared):
            if isinstance(p, Prepared):
                good.append((i, p))
            else:
                errors[i] = str(p)
        out: dict[str, np.ndarray] = {"key": np.asarray(batch["key"], dtype=np.int64)}
        vectors = {name: [b""] * n for name in self.spaces}
        if good:
            # fp16 where the model runs on a GPU; the vectors come back as float32
            autocast = (torch.autocast("cuda", dtype=torch.float16) if self.device == "cuda"
                        else _nothing())
            with torch.inference_mode(), autocast:
                embedded = embed(self.spaces, [p for _, p in good])
            for j, (i, _) in enumerate(good):
                for name, space in self.spaces.items():
                    v = embedded.vector(name, j)
                    if v is not None:
                        dtype = np.uint8 if space.metric == "hamming" else np.float32
                        vectors[name][i] = np.ascontiguousarray(v, dtype=dtype).tobytes()
                if not any(vectors[name][i] for name in self.spaces):
                    errors[i] = "no space of this run takes it (wrong kind, or hash quality)"
        for name, vecs in vectors.items():
            out[f"v:{name}"] = np.asarray(vecs, dtype=object)
        out["error"] = np.asarray(errors, dtype=object)
        if self.want_content:  # what a new seed keeps: digest, kinds, normalised text, bytes
            meta = [""] * n
            content = [b""] * n
            for i, p in good:
                meta[i] = json.dumps({"sha256": p.sha256, "modalities": list(p.modalities),
                                      "text": p.text})
                content[i] = bytes(p.raw_image) if p.raw_image is not None else b""
            out["meta"] = np.asarray(meta, dtype=object)
            out["content"] = np.asarray(content, dtype=object)
        return out


@contextmanager
def _nothing():
    yield


def _item(kind: str, data):
    from dedup.types import Item

    if kind == "image":
        return Item(image=bytes(data))
    if kind == "text":
        return Item(text=str(data))
    if kind == "path":
        with open(str(data), "rb") as f:
            return Item(image=f.read())
    raise InvalidArgument(f"unknown row kind {kind!r}")


# ---------------------------------------------------------------- runners (in-process, Ray)
class Runner(Protocol):
    def run(self, rows: list[dict]) -> Iterator[dict[str, np.ndarray]]: ...

    def close(self) -> None: ...


class LocalRunner:
    """The embedding stage in this process: one model per space, batches in order."""

    def __init__(self, spaces: Mapping[str, Mapping], limits: Mapping, batch_size: int = 32,
                 want_content: bool = False):
        self.fn = EmbedBatch(spaces, limits, want_content=want_content)
        self.batch_size = batch_size

    def run(self, rows: list[dict]) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            yield self.fn({k: np.asarray([r[k] for r in chunk], dtype=object)
                           for k in ("key", "kind", "data")})

    def close(self) -> None:
        pass


class RayRunner:
    """The embedding stage on Ray Data: ``from_items`` -> ``map_batches`` over a pool of
    embedder actors (``concurrency`` actors, each holding its models; one GPU each when Ray
    has GPUs). Without an address a small local Ray is started for this run."""

    def __init__(self, spaces: Mapping[str, Mapping], limits: Mapping, workers: int = 2,
                 batch_size: int = 32, address: str | None = None, num_cpus: int | None = None,
                 log_dir: str | None = None, want_content: bool = False):
        try:
            import ray
        except ImportError as e:
            raise InvalidArgument("the Ray engine needs ray: pip install 'dedup[batch]' (or "
                                  "run with --engine local)") from e
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                kw: dict[str, Any] = {}
                if log_dir:
                    # Ray's session files (logs, sockets) go under the run's own directory,
                    # unless its path is too long for a Unix socket name (107 bytes)
                    temp = Path(log_dir).resolve()
                    if len(str(temp)) > 48:
                        temp = Path(tempfile.mkdtemp(prefix="dedup-ray-"))
                    log.info("local Ray: its logs are under %s", temp)
                    kw["_temp_dir"] = str(temp)
                ray.init(num_cpus=num_cpus or workers, include_dashboard=False,
                         object_store_memory=256 << 20, logging_level=logging.WARNING,
                         log_to_driver=False, configure_logging=False, **kw)
            self._started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours (tqdm) counts items
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self.spaces, self.limits = dict(spaces), dict(limits)
        self.workers, self.batch_size, self.want_content = workers, batch_size, want_content

    def run(self, rows: list[dict]) -> Iterator[dict[str, np.ndarray]]:
        ds = self.ray.data.from_items(rows, override_num_blocks=max(
            1, min(len(rows) // self.batch_size, 4 * self.workers)))
        ds = ds.map_batches(
            EmbedBatch, fn_constructor_kwargs={"spaces": self.spaces, "limits": self.limits,
                                               "want_content": self.want_content},
            batch_size=self.batch_size, batch_format="numpy",
            compute=self.ray.data.ActorPoolStrategy(size=self.workers),
            num_gpus=1 if self.gpus else 0, num_cpus=0 if self.gpus else 1)
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


# ---------------------------------------------------------------- writers (one per store)
class Target(Protocol):
    """Where a run's vectors go: the store directly, or the live service that owns it."""

    def add_shadow_space(self, sc: SpaceConfig, reason: str) -> tuple[str, str, str]:
        """Serve the model's space in shadow (idempotent); (space, model id, vector dtype)."""

    def write(self, space: str, model_id: str, ids: np.ndarray, vectors: np.ndarray,
              progress: tuple[str, Mapping]) -> int: ...

    def finish(self, report: "ReembedReport", plans: Mapping[str, IndexPlan],
               min_recall: float) -> None: ...


class StoreTarget:
    """Writes to the store itself: for a data dir no service is running on (it takes the
    store's one writer lock, and fails clearly when a service holds it)."""

    def __init__(self, data_dir: str | Path, actor: str = ""):
        self.data_dir = Path(data_dir)
        self.store = SeedStore(self.data_dir / "store")
        self.actor = actor

    def add_shadow_space(self, sc: SpaceConfig, reason: str) -> tuple[str, str, str]:
        from dedup.embed import create_embedder
        from dedup.embed.spaces import Space

        name = sc.model.split("@", 1)[0]
        space = Space(name, create_embedder(sc.model, device="cpu"), sc)
        info = self.store.spaces().get(name)
        self.store.register_space(name, space.model_id, space.dim, space.dtype)
        if info is None or info.get("role") is None:
            self.store.update_spaces(
                {name: {"role": "shadow", "model": sc.model,
                        "config": sc.model_copy(update={"role": "shadow"}).model_dump(mode="json"),
                        "replaces": sc.replaces}},
                OpKind.SHADOW, space=name, replaces=sc.replaces or "", actor=self.actor,
                reason=reason)
        return name, space.model_id, space.dtype

    def write(self, space, model_id, ids, vectors, progress) -> int:
        return len(self.store.put_embeddings(space, model_id, ids, vectors, progress))

    def finish(self, report, plans, min_recall) -> None:
        from index_builder.build import rebuild

        built = rebuild(self.store, self.data_dir / "index", plans, min_recall,
                        extra_report={"reembed": report.to_dict()})
        report.timings.update({k: v for k, v in built.timings.items()})
        report.snapshot = built.manifest.version if built.manifest else ""
        report.recall = built.recall

    def close(self) -> None:
        self.store.close()


class ServiceTarget:
    """Writes through the live service's admin RPCs (the service is the store's one writer):
    AddShadowSpace, WriteEmbeddings (with the progress record), then PublishSnapshot."""

    def __init__(self, address: str, token: str | None, data_dir: str | Path, **client_kw):
        from dedup.client import DedupClient

        self.client = DedupClient(address, token, **client_kw)
        self.data_dir = Path(data_dir)

    def add_shadow_space(self, sc: SpaceConfig, reason: str) -> tuple[str, str, str]:
        got = self.client.add_shadow_space(sc.model, replaces=sc.replaces,
                                           threshold=sc.threshold, reason=reason)
        return got["space"], got["model_id"], got["dtype"]

    def write(self, space, model_id, ids, vectors, progress) -> int:
        return self.client.write_embeddings(space, model_id, ids, vectors, progress)

    def finish(self, report, plans, min_recall) -> None:
        t0 = time.perf_counter()
        report.snapshot = self.client.publish_snapshot()
        report.timings["publish"] = time.perf_counter() - t0

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------- the run
@dataclass
class ReembedReport:
    """What a run did: counts, the items refused (why), stage timings, items per second."""

    space: str = ""
    model_id: str = ""
    engine: str = ""  # "local" or "ray (N workers)"
    read: int = 0
    embedded: int = 0
    written: int = 0
    rejected: int = 0
    skipped: int = 0  # removed (or duplicated) while the run went on: no vector written
    resumed_after: int = 0
    rejects: list[tuple[int, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    snapshot: str = ""
    recall: dict[str, float] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        t = self.timings.get("embed", 0.0)
        return self.read / t if t > 0 else 0.0

    def to_dict(self) -> dict:
        """The report as JSON and as stored in the snapshot manifest."""
        out = asdict(self)
        out["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        out["items_per_s"] = round(self.items_per_s, 2)
        return out


@contextmanager
def _timed(report: ReembedReport, stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        report.timings[stage] = report.timings.get(stage, 0.0) + time.perf_counter() - t0


def reembed_store(source: SeedStore, target: Target, runner_factory, sc: SpaceConfig,
                  window: int = 2048, reason: str = "", max_rejects_kept: int = 100_000,
                  progress_bar: bool = True, max_window_bytes: int = 128 << 20,
                  max_rate: float | None = None) -> ReembedReport:
    """Embed every active seed's stored content with ``sc.model`` into its own space (served
    in shadow from the start), resuming after the last window a killed run committed.
    ``source`` is read-only or the target's own store; ``runner_factory(spaces, limits)``
    makes the embedding stage. ``max_rate`` caps the pace (items read per second, averaged
    from the start of this run): a re-embed on the serving machine leaves the lookups their
    CPU. The caller runs ``target.finish`` (train..publish)."""
    if max_rate is not None and not max_rate > 0:
        raise InvalidArgument(f"max_rate must be above 0 items/s, got {max_rate}")
    report = ReembedReport()
    name, model_id, dtype = target.add_shadow_space(sc, reason)
    report.space, report.model_id = name, model_id
    prior = source.reembed_progress(name) or {}
    if prior.get("model_id") not in (None, model_id):
        prior = {}  # another model's run: start over
    # A finished run walks the bank again from the start: it only finds seeds that missed the
    # new space (restored meanwhile, say), and skips those it could not read before.
    after = 0 if prior.get("done") else int(prior.get("after", 0))
    rejected_ids: list[int] = list(prior.get("rejected_ids", ()))
    report.resumed_after = after
    # the report counts this run; the progress record counts every run of this model
    sent, rejected = int(prior.get("sent", 0)), int(prior.get("rejected", 0))
    started = prior.get("started") or time.time()
    modalities = _modalities(sc.model)
    runner = runner_factory({name: sc.model_copy(update={"role": "shadow"}).model_dump(mode="json")},
                            Limits().model_dump())
    report.engine = getattr(runner, "label", type(runner).__name__)
    total = _count_missing(source, name, modalities, after, rejected_ids)
    bar = tqdm(total=total, unit="item", desc=f"re-embed {name}", disable=not progress_bar,
               dynamic_ncols=True)
    t_start = time.monotonic()  # the pace counts from here: the model is loaded
    try:
        while True:
            with _timed(report, "read"):
                ids, cursor = source.missing_embeddings(name, modalities, after, window,
                                                        skip=rejected_ids)
                rows = _seed_rows(source, ids, max_window_bytes)
                if len(rows) < len(ids):  # the window's bytes are bounded: go on after them
                    ids, cursor = ids[:len(rows)], rows[-1]["key"]
            report.read += len(ids)
            if ids:
                keys, vecs, errs = [], [], []
                with _timed(report, "embed"):
                    for out in runner.run(rows):
                        for key, blob, err in zip(out["key"], out[f"v:{name}"], out["error"]):
                            if blob:
                                keys.append(int(key))
                                vecs.append(blob)
                            else:
                                errs.append((int(key), str(err) or "not embedded"))
                        bar.update(len(out["key"]))
                report.embedded += len(keys)
                for key, err in errs:
                    if len(report.rejects) < MAX_REJECTS_LISTED:
                        report.rejects.append((key, err))
                report.rejected += len(errs)
                rejected += len(errs)
                sent += len(keys)
                if len(rejected_ids) < max_rejects_kept:
                    rejected_ids.extend(k for k, _ in errs)
                after = ids[-1]
                with _timed(report, "write"):
                    arr = _vectors(vecs, dtype)
                    n = target.write(name, model_id, np.asarray(keys, dtype=np.int64), arr, (
                        name, {"model_id": model_id, "after": int(after), "sent": sent,
                               "rejected": rejected, "rejected_ids": rejected_ids,
                               "started": started, "updated": time.time(), "done": False}))
                report.written += n
                report.skipped += len(keys) - n
            if cursor is None:
                break
            if max_rate is not None:  # the next window waits until the pace allows it
                with _timed(report, "throttle"):
                    time.sleep(max(0.0, report.read / max_rate - (time.monotonic() - t_start)))
        target.write(name, model_id, np.empty(0, np.int64), np.empty((0, 0)), (
            name, {"model_id": model_id, "after": int(after), "sent": sent,
                   "rejected": rejected, "rejected_ids": rejected_ids,
                   "started": started, "updated": time.time(), "done": True}))
    finally:
        bar.close()
        runner.close()
    return report


def _modalities(spec: str) -> frozenset[str]:
    """What a model takes, without loading it (a clip space takes both)."""
    if spec.startswith("clip:"):
        return frozenset(("image", "text"))
    if spec.startswith("text:"):
        return frozenset(("text",))
    return frozenset(("image",))


def _count_missing(store: SeedStore, space: str, modalities, after: int, skip) -> int:
    n, cursor = 0, after
    while True:
        ids, cursor = store.missing_embeddings(space, modalities, cursor, 65536, skip)
        n += len(ids)
        if cursor is None:
            return n


def _seed_rows(store: SeedStore, ids: Sequence[int], max_bytes: int) -> list[dict]:
    """Each seed's content as a row (its image bytes, else its stored text), in order, until
    the rows hold ``max_bytes`` (at least one row)."""
    rows, size = [], 0
    seeds = store.get_many(ids)
    for i in ids:
        data = store.content(i) if seeds[i].has_content else None
        if data is not None:
            row = {"key": int(i), "kind": "image", "data": bytes(data)}
        else:
            row = {"key": int(i), "kind": "text", "data": seeds[i].text or ""}
        size += len(row["data"])
        if rows and size > max_bytes:
            break
        rows.append(row)
    return rows


def _vectors(blobs: list[bytes], dtype: str) -> np.ndarray:
    """Vectors from the embedding stage's bytes (float32, or packed bits for a hash space)."""
    dt = np.uint8 if dtype == "uint8" else np.float32
    if not blobs:
        return np.empty((0, 0), dt)
    return np.stack([np.frombuffer(b, dtype=dt) for b in blobs])


# ---------------------------------------------------------------- manifests (bootstrap a bank)
def read_manifest(path: str | Path) -> list[dict]:
    """Manifest rows (JSONL, or Parquet by its suffix): ``path`` or ``text``, ``labels``
    (a list, or "a,b"), ``severity`` (default 1), ``source``. A relative path is taken from
    the manifest's folder. InvalidArgument names the first bad row."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        raw = pq.read_table(path).to_pylist()
    else:
        raw = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        raw.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise InvalidArgument(f"{path}:{n}: not JSON: {e}") from e
    rows = []
    for n, r in enumerate(raw, 1):
        if bool(r.get("path")) == bool(r.get("text")):
            raise InvalidArgument(f"{path} row {n}: give exactly one of path, text")
        labels = r.get("labels") or []
        if isinstance(labels, str):
            labels = [x for x in labels.split(",") if x]
        if not labels:
            raise InvalidArgument(f"{path} row {n}: no labels")
        item_path = r.get("path")
        if item_path and not os.path.isabs(item_path):
            item_path = str(path.parent / item_path)
        rows.append({"kind": "path" if item_path else "text", "data": item_path or r["text"],
                     "labels": [str(x) for x in labels], "severity": int(r.get("severity") or 1),
                     "source": str(r.get("source") or "")})
    return rows


def bootstrap(manifest: str | Path, target: StoreTarget, runner_factory,
              spaces: Mapping[str, SpaceConfig], window: int = 2048, actor: str = "",
              reason: str = "", progress_bar: bool = True) -> ReembedReport:
    """Add a manifest's items as seeds, embedded in every given space, resuming after the
    last window a killed run committed (rows already added are exact duplicates anyway).
    Writes the store directly: run it while no service holds the data dir."""
    from dedup.embed import create_embedder

    report = ReembedReport(space=",".join(spaces))
    rows = read_manifest(manifest)
    key = "manifest:" + hashlib.sha256(Path(manifest).read_bytes()).hexdigest()[:16]
    for name, sc in spaces.items():  # the store must know each space's model first
        emb = create_embedder(sc.model, device="cpu")
        target.store.register_space(name, emb.model_id, emb.dim,
                                    "uint8" if emb.metric == "hamming" else "float32")
    infos = target.store.spaces()
    prior = target.store.reembed_progress(key) or {}
    done = int(prior.get("rows", 0))
    report.resumed_after = done
    runner = runner_factory({n: sc.model_dump(mode="json") for n, sc in spaces.items()},
                            Limits().model_dump(), want_content=True)
    report.engine = getattr(runner, "label", type(runner).__name__)
    bar = tqdm(total=len(rows) - done, unit="item", desc="bootstrap", disable=not progress_bar,
               dynamic_ncols=True)
    try:
        for start in range(done, len(rows), window):
            chunk = rows[start:start + window]
            report.read += len(chunk)
            batch = [{"key": start + i, "kind": r["kind"], "data": r["data"]}
                     for i, r in enumerate(chunk)]
            new: list[NewSeed] = []
            with _timed(report, "embed"):
                for out in runner.run(batch):
                    for j, key_ in enumerate(out["key"]):
                        r = rows[int(key_)]
                        if out["error"][j]:
                            report.rejected += 1
                            if len(report.rejects) < MAX_REJECTS_LISTED:
                                report.rejects.append((int(key_), str(out["error"][j])))
                            continue
                        meta = json.loads(out["meta"][j])
                        emb = {n: _vectors([out[f"v:{n}"][j]], infos[n]["dtype"])[0]
                               for n in spaces if out[f"v:{n}"][j]}
                        new.append(NewSeed(
                            labels=check_labels([Label(x, r["severity"]) for x in r["labels"]]),
                            sha256=meta["sha256"], modalities=tuple(meta["modalities"]),
                            embeddings=emb, source=r["source"],
                            content=out["content"][j] or None, text=meta["text"], actor=actor,
                            reason=reason))
                    bar.update(len(out["key"]))
            report.embedded += len(new)
            with _timed(report, "write"):
                results = target.store.add_seeds(new) if new else []
                target.store.put_progress(key, {"rows": start + len(chunk),
                                                "manifest": str(manifest),
                                                "updated": time.time()})
            created = sum(1 for r in results if r.created)
            report.written += created
            report.skipped += len(results) - created
    finally:
        bar.close()
        runner.close()
    return report


def runner_factory(engine: str, workers: int = 2, batch_size: int = 32,
                   address: str | None = None, log_dir: str | None = None):
    """A factory of the embedding stage: ``local`` (this process) or ``ray``."""
    def make(spaces, limits, want_content: bool = False):
        if engine == "local":
            r = LocalRunner(spaces, limits, batch_size, want_content)
            r.label = "local"
        else:
            r = RayRunner(spaces, limits, workers, batch_size, address, log_dir=log_dir,
                          want_content=want_content)
            r.label = f"ray ({workers} workers{', GPU' if r.gpus else ''})"
        return r
    return make
