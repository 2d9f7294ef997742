"""`dedup backup` beside a live writer, and `dedup restore` into a new data dir that a fresh
engine opens with every seed searchable."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from dedup.config import load_config
from dedup.embed import create_embedder
from dedup.embed.pdq import to_hex
from dedup.engine import Engine
from dedup.types import Item, Label
from tools.localserver import REPO

LABEL = Label("backup.test", 2)


def _config(data_dir):
    return load_config(None, data_dir=str(data_dir), spaces={"pdq": {"model": "pdq",
                                                                     "threshold": 0.9}})


def _run(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _dedup(*args) -> subprocess.CompletedProcess:
    return _run("dedup.cli", *args)


def _admin(*args) -> subprocess.CompletedProcess:
    return _run("tools.analyst", *args)


def test_backup_beside_a_live_writer_restores_every_seed(tmp_path):
    pdq = {"pdq": create_embedder("pdq")}
    hexes = to_hex(np.random.default_rng(3).integers(0, 256, (30, 32), dtype=np.uint8))
    with Engine.open(_config(tmp_path / "live"), embedders=pdq) as eng:
        ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes[:20]], [LABEL])]
        eng.publish_snapshot()
        ids += [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes[20:]], [LABEL])]
        eng.remove_seeds([ids[0]])
        # the service keeps its store open for writing: the backup reads beside it
        done = _dedup("backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "live"))
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert info["op_seq"] == eng.store.last_seq and info["snapshot"] == eng.snapshot_version
    again = _dedup("backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "live"))
    assert again.returncode == 1 and "already exists" in again.stderr
    done = _dedup("restore", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "restored"))
    assert done.returncode == 0, done.stderr
    refused = _dedup("restore", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "restored"))
    assert refused.returncode == 1 and "not empty" in refused.stderr
    with Engine.open(_config(tmp_path / "restored"), embedders=pdq) as eng:
        results = eng.lookup([Item(pdq=h) for h in hexes], top_k=1)
        assert results[0].exact_match is None  # removed before the backup: stays removed
        assert [r.exact_match for r in results[1:]] == ids[1:]
        assert eng.stats().seeds_active == 29


def test_dedup_admin_backup_and_restore_need_no_server(tmp_path):
    pdq = {"pdq": create_embedder("pdq")}
    hexes = to_hex(np.random.default_rng(4).integers(0, 256, (5, 32), dtype=np.uint8))
    with Engine.open(_config(tmp_path / "live"), embedders=pdq) as eng:
        ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes], [LABEL])]
        done = _admin("backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "live"),
                      "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["op_seq"] == eng.store.last_seq
    missing = _admin("backup", str(tmp_path / "bk2"), "--data-dir", str(tmp_path / "nothing"))
    assert missing.returncode == 3 and "no seed store" in missing.stderr
    done = _admin("restore-backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "new"))
    assert done.returncode == 0, done.stderr
    with Engine.open(_config(tmp_path / "new"), embedders=pdq) as eng:
        assert [r.exact_match for r in eng.lookup([Item(pdq=h) for h in hexes])] == ids
