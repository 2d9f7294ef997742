"""GPU shards give the same answers as CPU shards, survive save/load, and honour removals."""

from __future__ import annotations

import numpy as np
import pytest

from dedup.index import ShardedIndex

pytestmark = pytest.mark.gpu
DIM = 128


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def data():
    return unit(5000, 1), np.arange(5000, dtype=np.int64) * 11, unit(64, 2)


@pytest.mark.parametrize("factory,n_shards", [("auto", 1), ("auto", 3), ("IVF64,Flat", 2)])
def test_gpu_search_equals_cpu_search(data, factory, n_shards):
    xb, ids, xq = data
    cpu = ShardedIndex(DIM, factory, n_shards, nprobe=64, use_gpu=False)
    gpu = ShardedIndex(DIM, factory, n_shards, nprobe=64, use_gpu=True)
    assert gpu.on_gpu and not cpu.on_gpu
    for index in (cpu, gpu):
        index.train(xb)
        index.add(ids, xb)
    Dc, Ic = cpu.search(xq, 10)
    Dg, Ig = gpu.search(xq, 10)
    np.testing.assert_array_equal(Ic, Ig)
    np.testing.assert_allclose(Dc, Dg, rtol=1e-4, atol=1e-4)


def test_gpu_fp16_search_is_close_to_cpu(data):
    xb, ids, xq = data
    cpu = ShardedIndex(DIM, "auto", 2, use_gpu=False)
    gpu = ShardedIndex(DIM, "auto", 2, use_gpu=True, fp16=True)
    cpu.add(ids, xb)
    gpu.add(ids, xb)
    Ic, Ig = cpu.search(xq, 10)[1], gpu.search(xq, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(Ic, Ig)])
    assert recall >= 0.95


def test_gpu_removed_id_never_returned_and_save_load_round_trip(tmp_path, data):
    xb, ids, xq = data
    gpu = ShardedIndex(DIM, "auto", 2, use_gpu=True)
    gpu.add(ids, xb)
    assert gpu.remove(ids[:50]) == 50
    _, I = gpu.search(xb[:50], 20)
    assert not np.isin(I, ids[:50]).any()
    gpu.save(tmp_path)
    for use_gpu in (False, True):
        loaded = ShardedIndex.load(tmp_path, gpu.meta(), use_gpu=use_gpu)
        assert loaded.on_gpu == use_gpu and loaded.ntotal == len(ids) - 50
        np.testing.assert_array_equal(loaded.search(xq, 10)[1], gpu.search(xq, 10)[1])
        assert not np.isin(loaded.search(xb[:50], 20)[1], ids[:50]).any()


def test_cpu_snapshot_loads_onto_gpu(tmp_path, data):
    xb, ids, xq = data
    cpu = ShardedIndex(DIM, "IVF64,Flat", 2, nprobe=64, use_gpu=False)
    cpu.add(ids, xb)
    cpu.save(tmp_path)
    gpu = ShardedIndex.load(tmp_path, cpu.meta(), use_gpu=True)
    assert gpu.on_gpu
    np.testing.assert_array_equal(gpu.search(xq, 10)[1], cpu.search(xq, 10)[1])
    assert gpu.remove(ids[:5]) == 5
    assert not np.isin(gpu.search(xb[:5], 10)[1], ids[:5]).any()
