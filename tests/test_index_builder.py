"""dedup-build in its own process beside a live writer: consistent view, publish, reload."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dedup.config import load_config
from dedup.engine import Engine
from dedup.types import Item, Label

pytestmark = pytest.mark.slow

SCAM = Label("spam.scam", 2)
TEXTS = [f"limited offer number {i}: send your bank password to claim prize {i * 7}" for i in range(40)]


@pytest.fixture(scope="module")
def text_embedder():
    from dedup.embed import create_embedder

    return create_embedder("text:minilm-l6")


def config_file(tmp_path, factory: str, n_shards: int, nprobe: int) -> str:
    """The TOML config the service and the builder share: one index plan for the text space."""
    path = tmp_path / "dedup.toml"
    path.write_text(f"""
[spaces."text:minilm-l6"]
model = "text:minilm-l6"
threshold = 0.9
index = {{ factory = "{factory}", n_shards = {n_shards}, nprobe = {nprobe} }}
""")
    return str(path)


def run_builder(data_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "index_builder.cli", "--data-dir", str(data_dir), "--json", *args],
        capture_output=True, text=True, timeout=300,
    )


def test_builder_process_publishes_a_snapshot_the_live_engine_reloads(tmp_path, text_embedder):
    cfg = load_config(None, data_dir=str(tmp_path / "data"), spaces={
        "text:minilm-l6": {"model": "text:minilm-l6", "threshold": 0.9}})
    with Engine.open(cfg, embedders={"text:minilm-l6": text_embedder}) as eng:
        added = [r[0] for r in eng.add_seeds([Item(text=t) for t in TEXTS], [SCAM])]
        eng.remove_seeds(added[:5])
        proc = run_builder(cfg.data_dir, "--config", config_file(tmp_path, "IVF4,Flat", 2, 4))
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["sizes"] == {"text:minilm-l6": 35}
        assert report["recall"]["text:minilm-l6"] == 1.0
        assert set(report["timings"]) >= {f"text:minilm-l6:{s}" for s in
                                          ("read", "train", "add", "validate")} | {"publish"}
        assert report["op_seq"] == eng.store.last_seq
        # a write the builder did not see; Reload must replay it
        [(late, _)] = eng.add_seeds([Item(text="a brand new scam text about lottery winnings")], [SCAM])
        assert eng.reload() == report["version"]
        index = eng.live.current.indexes["text:minilm-l6"]
        assert (index.n_shards, index.ntotal) == (2, 36)
        assert eng.live.current.manifest.report["recall"] == {"text:minilm-l6": 1.0}
        assert "IVF4" in index.factory
        [r] = eng.lookup([Item(text="A brand new SCAM text about lottery winnings!")])
        assert r.neighbors[0].seed_id == late
        [gone] = eng.lookup([Item(text=TEXTS[0])])
        assert added[0] not in {n.seed_id for n in gone.neighbors}


def test_builder_refuses_to_publish_below_min_recall(tmp_path, text_embedder):
    cfg = load_config(None, data_dir=str(tmp_path / "data"), spaces={
        "text:minilm-l6": {"model": "text:minilm-l6", "threshold": 0.9}})
    with Engine.open(cfg, embedders={"text:minilm-l6": text_embedder}) as eng:
        eng.add_seeds([Item(text=t) for t in TEXTS], [SCAM])
    proc = run_builder(cfg.data_dir, "--config", config_file(tmp_path, "IVF8,Flat", 1, 1),
                       "--min-recall", "0.999")
    assert proc.returncode == 1
    assert "recall@10" in proc.stderr and "not publishing" in proc.stderr


def test_builder_on_a_missing_store_fails_cleanly(tmp_path):
    proc = run_builder(tmp_path / "nothing-here")
    assert proc.returncode == 1
    assert "dedup-build:" in proc.stderr and "Traceback" not in proc.stderr
