"""tools/bench_text end to end on a small bank: a real server, real adds, real lookups; the
figures it prints are the ones the README quotes at 100k seeds."""

from __future__ import annotations

import json

import pytest

from tools import bench_text

pytestmark = pytest.mark.slow


def test_bench_text_measures_a_real_server_and_keeps_its_answers(tmp_path, capsys):
    answers = tmp_path / "answers.json"
    rc = bench_text.main(["--seeds", "300", "--lookups", "24", "--concurrency", "1",
                          "--factory", "exact", "--data-dir", str(tmp_path / "bank"),
                          "--answers", str(answers), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seeds"] == 300 and result["factory"] == "exact"
    assert result["index"] == {s: 300 for s in bench_text.SPACES}
    [run] = result["runs"]
    assert run["n"] == 24  # refused lookups wait the hint and are asked again
    assert 0 < run["p50_ms"] <= run["p99_ms"]
    per_query = json.loads(answers.read_text())
    assert len(per_query) == run["n"]
    # Half the lookups are edited copies of seeds: most find a neighbour in some space.
    found = sum(any(ids for ids in spaces.values()) for spaces in per_query.values())
    assert found >= run["n"] // 3

    # A rerun on the kept bank adds nothing and measures again.
    rc = bench_text.main(["--seeds", "300", "--lookups", "8", "--concurrency", "1",
                          "--data-dir", str(tmp_path / "bank"), "--json"])
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and "add_seconds" not in again and again["seeds"] == 300
