"""tools/gpu_check.sh runs end to end on a CPU with --dry-run (tiny sizes), so the script a GPU
machine runs has been exercised before any GPU time is spent on it."""

from __future__ import annotations

import json
import subprocess

import pytest

from dedup.index.shard import num_gpus
from tools.localserver import REPO

pytestmark = pytest.mark.slow  # imports torch, FAISS and one model: tens of seconds on 2 cores


def test_gpu_check_dry_run_runs_every_stage_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([str(REPO / "tools" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert set(stages) == {"env", "tests", "faiss", "embed"} and report["failed"] == []
    assert stages["env"]["result"]["dry_run"] is True
    assert stages["tests"]["result"]["ok"]
    rows = stages["faiss"]["result"]
    assert {(r["factory"].split(",")[0][:3], r["batch"]) for r in rows} == {
        ("Fla", 1), ("Fla", 64), ("IVF", 1), ("IVF", 64)}
    assert all(r["qps"] > 0 for r in rows)
    # exact search finds the exact top 10; IVF probing every list (dry run: 16 of 16) too
    assert all(r["recall_at_10"] == 1.0 for r in rows)
    assert all(r["items_s"] > 0 for r in stages["embed"]["result"])


@pytest.mark.skipif(num_gpus() > 0, reason="with a GPU this would run the whole check")
def test_gpu_check_without_a_gpu_refuses_with_a_hint(tmp_path):
    proc = subprocess.run([str(REPO / "tools" / "gpu_check.sh"), "--out",
                           str(tmp_path / "x.json")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr
