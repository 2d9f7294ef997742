"""Snapshots: round trip, atomic publish behind CURRENT, checksums, model ids, pruning."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dedup.errors import NotFound, SnapshotError
from dedup.index import ShardedIndex
from dedup.index.snapshot import (
    Manifest,
    current_version,
    list_snapshots,
    load_snapshot,
    prune_snapshots,
    publish_snapshot,
    space_dirname,
)

CLIP = "clip:ViT-B-32/laion2b_s34b_b79k"
TEXT = "text:minilm-l6"
MODELS = {CLIP: f"{CLIP}@aaaaaaaaaaaa", TEXT: f"{TEXT}@bbbbbbbbbbbb"}


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True))


@pytest.fixture()
def indexes():
    clip = ShardedIndex(32, "HNSW32", n_shards=2)
    clip.add(np.arange(500), unit(500, 32, 1))
    clip.remove(np.arange(10))
    text = ShardedIndex(16, "IVF8,Flat", n_shards=3, nprobe=8)
    text.train(unit(400, 16, 2))
    text.add(np.arange(1000, 1400), unit(400, 16, 2))
    return {CLIP: clip, TEXT: text}


def test_round_trip_gives_identical_search_results(tmp_path, indexes):
    manifest = publish_snapshot(tmp_path, indexes, MODELS, op_seq=42)
    assert current_version(tmp_path) == manifest.version
    assert manifest.version.startswith("v000000000042-")
    loaded_manifest, loaded = load_snapshot(tmp_path)
    assert loaded_manifest == manifest
    assert loaded_manifest.spaces[CLIP].ntotal == 490
    for space, index in indexes.items():
        xq = unit(20, index.dim, 9)
        D0, I0 = index.search(xq, 10)
        D1, I1 = loaded[space].search(xq, 10)
        np.testing.assert_array_equal(I0, I1)
        np.testing.assert_allclose(D0, D1)
    assert not loaded[CLIP].contains(np.arange(10)).any()


def test_space_dirs_are_filesystem_safe_and_distinct(tmp_path, indexes):
    manifest = publish_snapshot(tmp_path, indexes, MODELS, op_seq=1)
    for space in manifest.spaces.values():
        assert "/" not in space.dirname and ":" not in space.dirname
        assert all(f.startswith(space.dirname + "/") for f in space.files)
        assert (tmp_path / "snapshots" / manifest.version / space.dirname).is_dir()
    assert space_dirname("a:b") != space_dirname("a/b")


def test_manifest_json_round_trip(tmp_path, indexes):
    manifest = publish_snapshot(tmp_path, indexes, MODELS, op_seq=3)
    text = (tmp_path / "snapshots" / manifest.version / "manifest.json").read_text()
    assert Manifest.from_json(text) == manifest
    assert json.loads(text)["spaces"][CLIP]["model_id"] == MODELS[CLIP]
    with pytest.raises(SnapshotError):
        Manifest.from_json("{not json")


def test_crashed_publish_leaves_current_on_last_complete_snapshot(tmp_path, indexes):
    first = publish_snapshot(tmp_path, indexes, MODELS, op_seq=1)
    # A publish that died before its rename: a half-written temp dir, CURRENT untouched.
    crashed = tmp_path / "snapshots" / ".tmp-deadbeef"
    (crashed / "x").mkdir(parents=True)
    (crashed / "x" / "shard-000.faiss").write_bytes(b"partial")
    # And one that died between rename and the CURRENT swap: its CURRENT.tmp is left behind.
    (tmp_path / "CURRENT.tmp").write_text("v999-bogus\n")
    assert current_version(tmp_path) == first.version
    assert list_snapshots(tmp_path) == [first.version]
    manifest, loaded = load_snapshot(tmp_path)
    assert manifest.version == first.version and loaded[TEXT].ntotal == 400
    second = publish_snapshot(tmp_path, indexes, MODELS, op_seq=2)
    assert current_version(tmp_path) == second.version
    assert list_snapshots(tmp_path) == [first.version, second.version]


def test_publish_failure_keeps_current_and_cleans_up(tmp_path, indexes):
    first = publish_snapshot(tmp_path, indexes, MODELS, op_seq=1)
    with pytest.raises(SnapshotError):
        publish_snapshot(tmp_path, indexes, {CLIP: MODELS[CLIP]}, op_seq=2)  # no model id
    broken = dict(indexes)
    broken["bad"] = "not an index"
    with pytest.raises(AttributeError):
        publish_snapshot(tmp_path, broken, {**MODELS, "bad": "bad@0"}, op_seq=3)
    assert current_version(tmp_path) == first.version
    assert not [p for p in (tmp_path / "snapshots").iterdir() if p.name.startswith(".tmp-")]


def test_corrupted_shard_file_is_refused(tmp_path, indexes):
    manifest = publish_snapshot(tmp_path, indexes, MODELS, op_seq=1)
    shard = tmp_path / "snapshots" / manifest.version / manifest.spaces[TEXT].files[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        load_snapshot(tmp_path)


def test_missing_shard_file_is_refused(tmp_path, indexes):
    manifest = publish_snapshot(tmp_path, indexes, MODELS, op_seq=1)
    os.remove(tmp_path / "snapshots" / manifest.version / manifest.spaces[CLIP].files[-1])
    with pytest.raises(SnapshotError, match="missing"):
        load_snapshot(tmp_path)


def test_only_the_spaces_asked_for_are_loaded(tmp_path, indexes):
    publish_snapshot(tmp_path, indexes, MODELS, op_seq=1, report={"recall": {TEXT: 1.0}})
    manifest, loaded = load_snapshot(tmp_path, spaces=[TEXT, "not-in-snapshot"])
    assert set(loaded) == {TEXT} and set(manifest.spaces) == {CLIP, TEXT}
    assert manifest.report == {"recall": {TEXT: 1.0}}


def test_no_snapshot_is_not_found(tmp_path):
    assert current_version(tmp_path) is None
    with pytest.raises(NotFound):
        load_snapshot(tmp_path)
    with pytest.raises(NotFound):
        load_snapshot(tmp_path, version="v000000000001-x")


def test_prune_keeps_newest_and_never_current(tmp_path, indexes):
    small = {TEXT: indexes[TEXT]}
    versions = [publish_snapshot(tmp_path, small, MODELS, op_seq=i).version for i in range(5)]
    assert list_snapshots(tmp_path) == versions  # sortable: publish order
    # Roll CURRENT back to the oldest (an operator's rollback); prune must keep it.
    (tmp_path / "CURRENT").write_text(versions[0] + "\n")
    removed = prune_snapshots(tmp_path, keep=2)
    assert removed == versions[1:3]
    assert list_snapshots(tmp_path) == [versions[0], *versions[3:]]
    assert load_snapshot(tmp_path)[0].version == versions[0]
    # A protected version (the one a service is serving) survives too.
    assert prune_snapshots(tmp_path, keep=1, protect=[versions[3]]) == []
    assert prune_snapshots(tmp_path, keep=0, protect=[versions[4]]) == [versions[3]]
