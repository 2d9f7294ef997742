"""ShardedIndex against brute-force numpy references on seeded, clustered synthetic data."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dedup.errors import InvalidArgument
from dedup.index import ShardedIndex, hamming_to_similarity, resolve_factory, similarity_to_hamming

DIM = 64


def clustered(n: int, dim: int = DIM, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    """L2-normalised Gaussian-mixture vectors (near-duplicates cluster, like real embeddings)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, n_clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def brute_force(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int):
    """Exact inner-product top-k: (Dref, Iref)."""
    sims = xq @ xb.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


@pytest.fixture(scope="module")
def data():
    xb = clustered(3000, seed=1)
    xq = clustered(50, seed=2)
    ids = np.random.default_rng(3).permutation(10**6)[:3000].astype(np.int64)
    return xb, ids, xq


@pytest.mark.parametrize("n_shards", [1, 4])
def test_flat_search_equals_brute_force(data, n_shards):
    xb, ids, xq = data
    index = ShardedIndex(DIM, "auto", n_shards=n_shards)
    index.add(ids, xb)
    Dref, Iref = brute_force(xb, ids, xq, 10)
    Dnew, Inew = index.search(xq, 10)
    assert Dnew.dtype == np.float32 and Inew.dtype == np.int64
    np.testing.assert_allclose(Dnew, Dref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(Inew, Iref)


@pytest.mark.parametrize("n_shards", [1, 3])
def test_ivf_with_nprobe_equal_nlist_is_exact(data, n_shards):
    xb, ids, xq = data
    index = ShardedIndex(DIM, "IVF32,Flat", n_shards=n_shards, nprobe=32)
    assert not index.is_trained
    index.train(xb)
    assert index.is_trained
    index.add(ids, xb)
    Dref, Iref = brute_force(xb, ids, xq, 10)
    Dnew, Inew = index.search(xq, 10)
    np.testing.assert_allclose(Dnew, Dref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(Inew, Iref)


def test_ivf_low_nprobe_loses_some_recall_but_stays_sane(data):
    xb, ids, xq = data
    index = ShardedIndex(DIM, "IVF32,Flat", n_shards=2, nprobe=1)
    index.train(xb)
    index.add(ids, xb)
    _, Iref = brute_force(xb, ids, xq, 10)
    _, Inew = index.search(xq, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(Iref, Inew)])
    assert 0.3 < recall <= 1.0
    index.nprobe = 32
    _, Inew = index.search(xq, 10)
    np.testing.assert_array_equal(Inew, Iref)


def test_sharded_merge_equals_unsharded(data):
    xb, ids, xq = data
    one, four = ShardedIndex(DIM, n_shards=1), ShardedIndex(DIM, n_shards=4)
    one.add(ids, xb)
    four.add(ids, xb)
    D1, I1 = one.search(xq, 25)
    D4, I4 = four.search(xq, 25)
    np.testing.assert_array_equal(I1, I4)
    np.testing.assert_allclose(D1, D4, rtol=1e-6)
    assert [s.ntotal for s in four.shards] == [int((ids % 4 == i).sum()) for i in range(4)]


def test_k_larger_than_index_is_padded(data):
    xb, ids, xq = data
    index = ShardedIndex(DIM, n_shards=3)
    index.add(ids[:5], xb[:5])
    D, I = index.search(xq[:2], 8)
    assert D.shape == I.shape == (2, 8)
    assert (I[:, :5] >= 0).all() and (I[:, 5:] == -1).all()
    assert np.isneginf(D[:, 5:]).all()
    assert set(I[0, :5]) == set(ids[:5])


def test_empty_index_returns_padding():
    D, I = ShardedIndex(DIM, n_shards=2).search(clustered(3), 4)
    assert (I == -1).all() and np.isneginf(D).all()


@pytest.mark.parametrize("factory", ["auto", "IVF16,Flat", "HNSW32"])
def test_removed_id_never_in_search(data, factory):
    xb, ids, xq = data
    index = ShardedIndex(DIM, factory, n_shards=2, nprobe=16)
    index.train(xb)  # a no-op for factories that need no training
    index.add(ids, xb)
    _, before = index.search(xb[:20], 5)
    gone = ids[:20]
    assert (before[:, 0] == gone).all()
    assert index.remove(np.concatenate([gone, [-5, 10**7]])) == 20
    assert index.remove(gone) == 0
    assert index.ntotal == len(ids) - 20
    assert not index.contains(gone).any() and index.contains(ids[20:]).all()
    _, after = index.search(xb[:20], 50)
    assert not np.isin(after, gone).any()
    assert (after[:, 0] >= 0).all()


def test_hnsw_uses_tombstones_and_flat_removes_natively(data):
    xb, ids, _ = data
    hnsw, flat = ShardedIndex(DIM, "HNSW32"), ShardedIndex(DIM, "auto")
    for index in (hnsw, flat):
        index.add(ids[:100], xb[:100])
        index.remove(ids[:10])
    assert hnsw.shards[0].n_tombstones == 10 and not hnsw.shards[0].native_remove
    assert flat.shards[0].native_remove and flat.shards[0].index.ntotal == 90


def test_tombstones_do_not_starve_top_k(data):
    xb, ids, _ = data
    index = ShardedIndex(DIM, "HNSW32")
    index.add(ids[:300], xb[:300])
    near = np.argsort(-(xb[:300] @ xb[0]))[:40]  # the query's 40 nearest, all removed
    index.remove(ids[near])
    D, I = index.search(xb[:1], 10)
    assert (I >= 0).all() and not np.isin(I, ids[near]).any()
    assert (np.diff(D[0]) <= 1e-6).all()


@pytest.mark.parametrize("factory", ["auto", "HNSW32"])
def test_readding_an_id_replaces_its_vector(data, factory):
    xb, ids, _ = data
    index = ShardedIndex(DIM, factory, n_shards=2)
    index.add(ids[:200], xb[:200])
    index.add(ids[:1], xb[500:501])  # same id, new content
    assert index.ntotal == 200
    _, I = index.search(xb[500:501], 3)
    assert I[0, 0] == ids[0] and list(I[0]).count(ids[0]) == 1
    D, I = index.search(xb[:1], 3)
    assert I[0, 0] != ids[0] or D[0, 0] < 0.999
    index.remove(ids[:1])
    index.add(ids[:1], xb[:1])  # removed then re-added comes back
    assert index.search(xb[:1], 1)[1][0, 0] == ids[0]


def test_duplicate_ids_in_one_batch_keep_the_last(data):
    xb, _, _ = data
    index = ShardedIndex(DIM, "HNSW32")
    index.add(np.array([7, 8, 7]), xb[:3])
    assert index.ntotal == 2
    _, I = index.search(xb[2:3], 3)
    assert I[0, 0] == 7 and list(I[0]).count(7) == 1


def test_binary_space_similarity_matches_hamming_reference():
    rng = np.random.default_rng(5)
    bits = 256
    xb = rng.integers(0, 256, (800, bits // 8), dtype=np.uint8)
    xq = xb[:10].copy()
    xq[:, 0] ^= 0b111  # 3 bits flipped: a near duplicate
    ids = np.arange(800, dtype=np.int64) * 3
    index = ShardedIndex(bits, "auto", n_shards=2, metric="hamming")
    index.add(ids, xb)
    D, I = index.search(xq, 5)
    ham = np.unpackbits(xq[:, None, :] ^ xb[None, :, :], axis=2).sum(axis=2)
    Dref = np.sort(hamming_to_similarity(ham, bits), axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(D, Dref, rtol=1e-6)
    assert (I[:, 0] == ids[:10]).all()
    np.testing.assert_allclose(D[:, 0], 1 - 3 / bits, rtol=1e-6)
    assert index.remove(ids[:10]) == 10
    assert not np.isin(index.search(xq, 5)[1], ids[:10]).any()


def test_hamming_similarity_helpers_round_trip():
    bits = 256
    d = np.arange(0, bits + 1)
    s = hamming_to_similarity(d, bits)
    assert s[0] == 1.0 and s[-1] == 0.0 and (np.diff(s) < 0).all()
    np.testing.assert_array_equal(similarity_to_hamming(s, bits), d)
    assert similarity_to_hamming(0.9, bits) == 25  # 1 - 25/256 = 0.902 >= 0.9; 26 is below


def test_auto_factory_resolves_by_expected_size():
    assert resolve_factory("auto", 10_000, 1, "ip") == "IDMap2,Flat"
    assert resolve_factory("auto", 1_000_000, 1, "ip") == "IVF4096,Flat"
    assert resolve_factory("auto", 1_000_000, 4, "ip") == "IVF2048,Flat"
    assert resolve_factory("auto", 10, 1, "hamming") == "BFlat"
    assert resolve_factory("auto", 100_000, 1, "ip") == "IVF1024,Flat"
    assert resolve_factory("auto", 100_000, 1, "hamming") == "BFlat"  # binary: exact longer
    assert resolve_factory("auto", 1_000_000, 1, "hamming") == "BIVF4096"
    assert resolve_factory("PQ8", 10, 1, "ip") == "PQ8"
    assert ShardedIndex(DIM, expected_size=200_000).factory == "IVF2048,Flat"


def test_bad_arguments_raise_invalid_argument(data):
    xb, ids, _ = data
    index = ShardedIndex(DIM)
    with pytest.raises(InvalidArgument):
        index.add(ids[:3], xb[:2])
    with pytest.raises(InvalidArgument):
        index.add(ids[:2], xb[:2, :10])
    with pytest.raises(InvalidArgument):
        index.add(np.array([-1]), xb[:1])
    with pytest.raises(InvalidArgument):
        index.search(xb[:1], 0)
    with pytest.raises(InvalidArgument):
        ShardedIndex(DIM, "NotAFactory")
    with pytest.raises(InvalidArgument, match="not trained"):
        ShardedIndex(DIM, "IVF64,Flat").add(ids[:10], xb[:10])  # adding never trains
    with pytest.raises(InvalidArgument, match="at least 64 training vectors"):
        ShardedIndex(DIM, "IVF64,Flat").train(xb[:10])


def test_concurrent_add_and_search_finds_what_was_added(data):
    xb, ids, xq = data
    index = ShardedIndex(DIM, n_shards=4)
    index.add(ids[:1000], xb[:1000])
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                D, I = index.search(xq, 10)
                assert (I[:, 0] >= 0).all()
        except BaseException as e:  # reported to the main thread below
            errors.append(e)

    def writer(lo: int, hi: int):
        try:
            for start in range(lo, hi, 50):
                index.add(ids[start:start + 50], xb[start:start + 50])
                index.remove(ids[start:start + 5])
        except BaseException as e:
            errors.append(e)

    searchers = [threading.Thread(target=searcher) for _ in range(3)]
    writers = [threading.Thread(target=writer, args=(lo, lo + 1000)) for lo in (1000, 2000)]
    for t in searchers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in searchers:
        t.join()
    assert not errors, errors
    removed = np.concatenate([ids[s:s + 5] for s in range(1000, 3000, 50)])
    kept = np.setdiff1d(ids[1000:], removed)
    assert index.ntotal == 1000 + len(kept)
    _, I = index.search(xb[np.isin(ids, kept)][:100], 1)
    np.testing.assert_array_equal(I[:, 0], ids[np.isin(ids, kept)][:100])


@pytest.mark.parametrize("factory", ["auto", "IVF16,Flat", "HNSW32"])
def test_save_load_round_trip_keeps_results_and_removals(tmp_path, data, factory):
    xb, ids, xq = data
    index = ShardedIndex(DIM, factory, n_shards=2, nprobe=16)
    index.train(xb)  # a no-op for factories that need no training
    index.add(ids, xb)
    index.remove(ids[:30])
    files = index.save(tmp_path)
    assert "shard-000.faiss" in files and "shard-001.faiss" in files
    loaded = ShardedIndex.load(tmp_path, index.meta())
    assert loaded.ntotal == index.ntotal and loaded.factory == index.factory
    assert loaded.nprobe == 16
    D0, I0 = index.search(xq, 10)
    D1, I1 = loaded.search(xq, 10)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_allclose(D0, D1)
    assert not loaded.contains(ids[:30]).any()
    loaded.add(ids[:1], xb[:1])
    assert loaded.search(xb[:1], 1)[1][0, 0] == ids[0]


# -- shards cost no speed: both search strategies give the same answers ------------------------
@pytest.mark.parametrize("n_shards", [2, 4, 8])
@pytest.mark.parametrize("nq", [1, 3, 50])
def test_every_shard_count_and_batch_size_equals_brute_force(data, n_shards, nq):
    # Small batches spread shards over single-threaded workers, large ones search the shards
    # one after another with all of FAISS's threads: both must give the exact top-k.
    import faiss

    xb, ids, xq = data
    threads = faiss.omp_get_max_threads()
    index = ShardedIndex(DIM, "Flat", n_shards=n_shards)
    index.add(ids, xb)
    D, I = index.search(xq[:nq], 10)
    Dref, Iref = brute_force(xb, ids, xq[:nq], 10)
    np.testing.assert_array_equal(I, Iref)
    np.testing.assert_allclose(D, Dref, atol=1e-5)
    assert faiss.omp_get_max_threads() == threads  # workers' one-thread setting stays theirs
    index.close()


def test_auto_shard_count_fits_the_hardware():
    from dedup.config import IndexPlan
    from dedup.index.shard import num_gpus
    from dedup.index.sharded import resolve_shards

    assert resolve_shards("auto") == max(1, num_gpus())  # a CPU: one shard, all cores in it
    assert resolve_shards("auto", use_gpu=False) == 1
    assert resolve_shards("auto", metric="hamming") == 1  # binary indexes stay on the CPU
    assert resolve_shards(4) == 4
    assert IndexPlan().n_shards == IndexPlan(n_shards="auto").n_shards == max(1, num_gpus())
    assert IndexPlan(n_shards="auto", use_gpu=False).n_shards == 1
    assert IndexPlan(n_shards=3).n_shards == 3
    for bad in (0, -1, "two", True):
        with pytest.raises(InvalidArgument):
            resolve_shards(bad)
