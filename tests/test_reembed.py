"""Re-embedding a bank with a second model: real images, real models, real LMDB, a real Ray.

The bank's first model is ``pdq``; the second is ``image:effnet-lite0`` (a packaged, trained
model). A killed run resumes from the progress it committed; the Ray Data path (a small local
Ray, 2 actors) gives the same vectors as the in-process path; a manifest bootstraps a bank and
reports what it could not read.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.config import SpaceConfig, load_config
from dedup.embed import create_embedder
from dedup.engine import Engine
from dedup.store import SeedStore
from dedup.errors import InvalidArgument
from dedup.types import Item, Label, OpKind
from index_builder.build import list_builds
from index_builder.reembed import StoreTarget, bootstrap, reembed_store, runner_factory

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NEW = "image:effnet-lite0"
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "motorcycle_left", "brick",
          "grass")
SCAM = Label("spam.scam", 2)


def photo(name: str, size: int = 256) -> bytes:
    import skimage.data

    (path,) = Path(skimage.data.__file__).parent.glob(f"{name}.*")
    img = Image.open(path).convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pdq_config(data_dir: Path):
    return load_config(None, data_dir=str(data_dir), spaces={
        "pdq": {"model": "pdq", "threshold": 0.67578125, "min_quality": 50}})


@pytest.fixture(scope="module")
def effnet():
    return create_embedder(NEW, device="cpu")


def make_bank(data_dir: Path, names=PHOTOS) -> dict[str, int]:
    """A pdq bank of real photos: name -> seed id."""
    ids = {}
    with Engine.open(pdq_config(data_dir)) as engine:
        for name in names:
            (r,) = engine.add_seeds([Item(image=photo(name))], [SCAM], actor="t")
            ids[name] = r.seed_id
    return ids


def vectors(data_dir: Path, space: str) -> dict[int, np.ndarray]:
    with SeedStore(data_dir / "store", readonly=True) as store:
        out = {}
        for ids, vecs in store.iter_embeddings(space):
            out.update(zip(ids.tolist(), vecs))
        return out


def test_reembed_writes_every_seed_in_the_new_space_and_serves_it_in_shadow(tmp_path, effnet):
    ids = make_bank(tmp_path / "d", PHOTOS[:4])
    target = StoreTarget(tmp_path / "d", actor="tester")
    try:
        report = reembed_store(target.store, target, runner_factory("local"),
                               SpaceConfig(model=NEW, threshold=0.682, replaces="pdq"),
                               window=3, reason="try effnet", progress_bar=False)
        target.finish(report, {}, 0.9)
    finally:
        target.close()
    assert (report.read, report.written, report.rejected) == (4, 4, 0)
    got = vectors(tmp_path / "d", NEW)
    assert sorted(got) == sorted(ids.values())
    want = effnet.embed_images([Image.open(io.BytesIO(photo(n))).convert("RGB") for n in ids])
    for (name, sid), w in zip(ids.items(), want):
        assert np.allclose(got[sid], w, atol=1e-4), name
    # the report is stored in the published snapshot's manifest, stages named
    (newest, *_) = list_builds(tmp_path / "d" / "index")
    assert newest["report"]["reembed"]["written"] == 4
    assert {"read", "embed", "write", f"{NEW}:train", f"{NEW}:validate"} <= set(
        newest["report"]["reembed"]["timings"]) | set(newest["report"]["timings"])
    assert {"read", "embed", "write", f"{NEW}:add", "publish"} <= set(report.timings)
    # the service opens it in shadow: searched, never in a verdict
    with Engine.open(pdq_config(tmp_path / "d")) as engine:
        assert engine.roles == {"pdq": "live", NEW: "shadow"}
        (res,) = engine.lookup([Item(image=photo("chelsea"))])
        assert res.spaces == ("pdq",)
        assert all(n.space != NEW for n in res.neighbors)
        ops, _ = engine.ops()
        shadow_op = next(op for op in ops if op.kind is OpKind.SHADOW)
        assert (shadow_op.space, shadow_op.replaces, shadow_op.actor) == (NEW, "pdq", "tester")


def test_a_paced_reembed_keeps_to_its_rate(tmp_path):
    make_bank(tmp_path / "d", PHOTOS[:4])
    target = StoreTarget(tmp_path / "d")
    try:
        with pytest.raises(InvalidArgument):
            reembed_store(target.store, target, runner_factory("local"), SpaceConfig(model=NEW),
                          window=1, progress_bar=False, max_rate=0)
        t0 = time.monotonic()
        report = reembed_store(target.store, target, runner_factory("local"),
                               SpaceConfig(model=NEW), window=1, progress_bar=False, max_rate=8)
        elapsed = time.monotonic() - t0
    finally:
        target.close()
    assert report.written == 4
    # Four windows of one item at 8 items/s: the fourth starts no earlier than 3/8 s in.
    loop = sum(report.timings[k] for k in ("read", "embed", "write", "throttle"))
    assert report.timings["throttle"] > 0 and loop >= 0.37 and elapsed >= 0.37, report.timings


def test_killed_reembed_resumes_where_it_stopped(tmp_path, effnet):
    data = tmp_path / "d"
    ids = make_bank(data)
    cmd = [sys.executable, "-m", "index_builder.cli", "reembed", "--data-dir", str(data),
           "--model", NEW, "--engine", "local", "--window", "1", "--batch-size", "1",
           "--no-progress", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Paced at 4 items/s: the kill lands between windows however quick the machine is (unpaced,
    # the last items followed the third within one 0.2 s poll on a quiet machine).
    proc = subprocess.Popen(cmd + ["--max-rate", "4"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            with SeedStore(data / "store", readonly=True) as store:
                done = (store.reembed_progress(NEW) or {}).get("sent", 0)
        except Exception:  # the space's db may not exist yet
            continue
        if done >= 3:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = vectors(data, NEW)
    assert 3 <= len(before) < len(ids)
    with SeedStore(data / "store", readonly=True) as store:
        progress = store.reembed_progress(NEW)
    assert progress["done"] is False and progress["sent"] == len(before)

    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["resumed_after"] == progress["after"] > 0
    assert report["read"] == len(ids) - len(before)  # nothing done twice
    after = vectors(data, NEW)
    assert sorted(after) == sorted(ids.values())
    for sid, vec in before.items():
        assert np.array_equal(after[sid], vec)
    want = effnet.embed_images([Image.open(io.BytesIO(photo(n))).convert("RGB") for n in ids])
    for (name, sid), w in zip(ids.items(), want):
        assert np.allclose(after[sid], w, atol=1e-4), name


def test_ray_data_path_gives_the_in_process_vectors(tmp_path):
    ray = pytest.importorskip("ray")
    make_bank(tmp_path / "local", PHOTOS[:4])
    make_bank(tmp_path / "ray", PHOTOS[:4])
    reports = {}
    for name, engine in (("local", "local"), ("ray", "ray")):
        target = StoreTarget(tmp_path / name)
        try:
            reports[name] = reembed_store(
                target.store, target,
                runner_factory(engine, workers=2, batch_size=2,
                               log_dir=str(tmp_path / "raylogs")),
                SpaceConfig(model=NEW), window=4, progress_bar=False)
        finally:
            target.close()
    assert not ray.is_initialized()  # the run's own local Ray is shut down
    assert reports["ray"].engine.startswith("ray (2 workers")
    assert reports["ray"].written == reports["local"].written == 4
    a, b = vectors(tmp_path / "local", NEW), vectors(tmp_path / "ray", NEW)
    assert sorted(a) == sorted(b)
    for sid in a:
        assert np.allclose(a[sid], b[sid], atol=1e-5)


def test_manifest_bootstraps_a_bank_and_reports_what_it_cannot_read(tmp_path):
    files = tmp_path / "items"
    files.mkdir()
    for name in ("chelsea", "coffee"):
        (files / f"{name}.png").write_bytes(photo(name))
    (files / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = [{"path": "items/chelsea.png", "labels": ["spam.scam"], "severity": 2,
             "source": "CASE-1"},
            {"path": "items/coffee.png", "labels": "spam.scam,violence.graphic"},
            {"path": "items/broken.jpg", "labels": ["spam.scam"]},
            {"path": "items/missing.png", "labels": ["spam.scam"]},
            {"text": "Buy cheap pills now", "labels": ["spam.scam"]}]
    manifest = tmp_path / "bank.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(None, data_dir=str(tmp_path / "d"), spaces={
        "pdq": {"model": "pdq", "threshold": 0.67578125, "min_quality": 50},
        "text:exact": {"model": "text:exact", "threshold": 1.0}})
    target = StoreTarget(tmp_path / "d", actor="importer")
    try:
        report = bootstrap(manifest, target, runner_factory("local"), config.enabled_spaces,
                           window=2, actor="importer", progress_bar=False)
        target.finish(report, {}, 0.9)
        again = bootstrap(manifest, target, runner_factory("local"), config.enabled_spaces,
                          window=2, progress_bar=False)
    finally:
        target.close()
    assert (report.read, report.written, report.rejected) == (5, 3, 2)
    rejected = dict(report.rejects)
    assert "missing.png" in rejected[3] and rejected[2]  # unreadable, undecodable: reported
    assert again.read == 0  # the finished manifest is not read again
    with Engine.open(config) as engine:
        stats = engine.stats()
        assert stats.seeds_active == 3
        assert (stats.spaces["pdq"].ntotal, stats.spaces["text:exact"].ntotal) == (2, 1)
        (hit,) = engine.lookup([Item(image=photo("chelsea"))])
        assert hit.exact_match is not None and hit.verdicts[0].matched
        (txt,) = engine.lookup([Item(text="buy CHEAP pills now")])
        assert [v.label for v in txt.verdicts if v.matched] == ["spam.scam"]
        seed = engine.get_seed(hit.exact_match)
        assert (seed.source, seed.added_by) == ("CASE-1", "importer")


def test_config_shadow_space_is_compared_but_decides_nothing_until_promoted(tmp_path):
    config = load_config(None, data_dir=str(tmp_path / "d"), spaces={
        "text:exact": {"model": "text:exact", "threshold": 1.0},
        "text:minhash": {"model": "text:minhash", "threshold": 0.74, "role": "shadow",
                         "replaces": "text:exact"}})
    post = "limited offer: buy cheap watches at shop-42.example, free shipping worldwide"
    edited = post.replace("free shipping worldwide", "free shipping to all countries")
    with Engine.open(config) as engine:
        (seed,) = engine.add_seeds([Item(text=post)], [SCAM], actor="t")
        assert engine.store.embeddings("text:minhash", [seed.seed_id]).shape[0] == 1
        (res,) = engine.lookup([Item(text=edited)])
        assert not any(v.matched for v in res.verdicts)
        assert res.spaces == ("text:exact",)
        counts = engine.shadow.counts()["text:minhash"]
        assert counts["shadow_only"] == 1 and engine.shadow.new_seeds() == {
            "text:minhash": 1}
        with pytest.raises(InvalidArgument):
            engine.retire("text:exact", actor="admin")  # live
        assert engine.promote("text:minhash", actor="admin", reason="r") == "text:exact"
        (res,) = engine.lookup([Item(text=edited)])
        assert [v.label for v in res.verdicts if v.matched] == ["spam.scam"]
        assert engine.shadow.counts()["text:exact"]["live_only"] == 1
    # the store's role outlives the config's
    with Engine.open(config) as engine:
        assert engine.roles == {"text:exact": "shadow", "text:minhash": "live"}
        assert engine.rollback(actor="admin") == "text:exact"
        assert engine.roles == {"text:exact": "live", "text:minhash": "shadow"}
