"""The LMDB seed store against real LMDB files: source of truth, op log, durability, one writer."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedup.errors import InvalidArgument, ModelMismatch, NotFound, StoreError
from dedup.store import NewSeed, SeedStore
from dedup.types import Label, OpKind

ROOT = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).with_name("_store_writer.py")
DIM = 8
SPACE = "image:test"
MODEL = "image:test@0001"


def vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def sha(i: int) -> str:
    return hashlib.sha256(f"item-{i}".encode()).hexdigest()


def seed(i: int, *labels: Label, content: bytes | None = None, **kw) -> NewSeed:
    return NewSeed(
        labels=labels or (Label("spam.scam", 2),),
        sha256=sha(i),
        modalities=("image",),
        embeddings={SPACE: vec(i)},
        content=content,
        **kw,
    )


@pytest.fixture
def store(tmp_path):
    s = SeedStore(tmp_path / "store")
    s.register_space(SPACE, MODEL, DIM, "float32")
    yield s
    s.close()


def child(mode: str, path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(WRITER), mode, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# ---- round trip -----------------------------------------------------------------------------


def test_add_get_list_round_trip_keeps_labels_severities_and_fields(store):
    labels = (Label("violence.graphic", 5), Label("spam.scam", 1))
    [(sid, created)] = store.add_seeds(
        [seed(1, *labels, content=b"png-bytes", source="case-7", note="n", text="hello", actor="ana")]
    )
    assert (sid, created) == (1, True)
    got = store.get(sid)
    assert got.labels == labels and got.source == "case-7" and got.note == "n" and got.text == "hello"
    assert got.sha256 == sha(1) and got.modalities == ("image",) and got.has_content and not got.removed
    assert store.content(sid) == b"png-bytes"
    assert store.find_sha256(sha(1).upper()) == sid
    np.testing.assert_array_equal(store.embeddings(SPACE, [sid]), vec(1)[None])
    page, cursor = store.list_seeds(label="violence.graphic")
    assert [s.seed_id for s in page] == [sid] and cursor is None
    assert store.get_many([sid, 99]) == {sid: got}
    assert store.stats()["labels"] == {"violence.graphic": 1, "spam.scam": 1}


def test_ids_start_at_one_and_follow_batch_order(store):
    out = store.add_seeds([seed(i) for i in range(5)])
    assert out == [(i + 1, True) for i in range(5)]
    ids, vecs = next(store.iter_embeddings(SPACE))
    assert ids.dtype == np.int64 and vecs.dtype == np.float32 and vecs.flags.c_contiguous
    np.testing.assert_array_equal(vecs, np.stack([vec(i) for i in range(5)]))


def test_binary_space_round_trips_packed_bits(store):
    store.register_space("pdq", "pdq@1", 256, "uint8")
    bits = np.random.default_rng(0).integers(0, 256, 32, dtype=np.uint8)
    [(sid, _)] = store.add_seeds([NewSeed((Label("x"),), sha(1), ("image",), {"pdq": bits})])
    ids, codes = next(store.iter_embeddings("pdq"))
    assert ids.tolist() == [sid] and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes[0], bits)
    assert store.spaces()["pdq"] == {"model_id": "pdq@1", "dim": 256, "dtype": "uint8", "count": 1}


# ---- duplicates, removal, ids -----------------------------------------------------------------


def test_exact_duplicate_returns_existing_id_and_writes_no_op(store):
    [(sid, _)] = store.add_seeds([seed(1)])
    seq = store.last_seq
    assert store.add_seeds([seed(1, Label("other"))]) == [(sid, False)]
    assert store.last_seq == seq
    assert store.get(sid).label_names == ("spam.scam",)


def test_duplicate_within_one_batch_gets_one_id(store):
    out = store.add_seeds([seed(1), seed(2), seed(1)])
    assert out == [(1, True), (2, True), (1, False)]
    assert [op.kind for op in store.ops_after(0)] == [OpKind.ADD, OpKind.ADD]
    assert store.stats()["seeds_active"] == 2


def test_ids_never_reused_after_removal_even_across_reopen(tmp_path):
    path = tmp_path / "s"
    with SeedStore(path) as s:
        s.register_space(SPACE, MODEL, DIM, "float32")
        s.add_seeds([seed(1), seed(2)])
        assert s.remove_seeds([2]) == [2]
    with SeedStore(path) as s:
        [(sid, created)] = s.add_seeds([seed(2)])  # same content as the removed seed
        assert (sid, created) == (3, True)
        assert s.find_sha256(sha(2)) == 3
        assert s.get(2).removed and not s.get(3).removed


def test_removed_seed_gone_from_embeddings_sha_and_labels_but_kept_as_history(store):
    store.add_seeds([seed(i, Label("violence.graphic", 4)) for i in range(1, 4)])
    assert store.remove_seeds([2], actor="ana") == [2]
    ids = np.concatenate([i for i, _ in store.iter_embeddings(SPACE)])
    assert ids.tolist() == [1, 3]
    assert store.find_sha256(sha(2)) is None
    assert [s.seed_id for s in store.list_seeds(label="violence.graphic")[0]] == [1, 3]
    assert [s.seed_id for s in store.list_seeds()[0]] == [1, 3]
    assert [s.seed_id for s in store.list_seeds(label="violence.graphic", include_removed=True)[0]] == [1, 2, 3]
    gone = store.get(2)
    assert gone.removed and gone.removed_at >= gone.created_at
    with pytest.raises(NotFound):
        store.embeddings(SPACE, [2])
    st_ = store.stats()
    assert (st_["seeds_active"], st_["seeds_removed"], st_["labels"], st_["spaces"]) == (
        2, 1, {"violence.graphic": 2}, {SPACE: 2},
    )


def test_remove_unknown_id_aborts_whole_call_and_repeat_removal_is_noop(store):
    store.add_seeds([seed(1), seed(2)])
    with pytest.raises(NotFound):
        store.remove_seeds([1, 999])
    assert not store.get(1).removed  # the whole call was one aborted transaction
    assert store.remove_seeds([1]) == [1]
    seq = store.last_seq
    assert store.remove_seeds([1, 1]) == []
    assert store.last_seq == seq


def test_relabel_moves_seed_between_label_listings(store):
    store.add_seeds([seed(1, Label("a", 1))])
    new = store.relabel(1, [Label("b", 3)], actor="ana")
    assert new.labels == (Label("b", 3),) and store.get(1) == new
    assert store.list_seeds(label="a")[0] == [] and store.list_seeds(label="b")[0] == [new]
    op = list(store.ops_after(0))[-1]
    assert (op.kind, op.seed_id, op.labels, op.actor) == (OpKind.RELABEL, 1, (Label("b", 3),), "ana")


@pytest.mark.parametrize(
    "labels", [[], [Label("")], [Label("a", 0)], [Label("a", 6)], [Label("a"), Label("a", 2)]]
)
def test_bad_labels_are_invalid_argument(store, labels):
    store.add_seeds([seed(1)])
    with pytest.raises(InvalidArgument):
        store.relabel(1, labels)
    with pytest.raises(InvalidArgument):
        store.add_seeds([NewSeed(tuple(labels), sha(2), ("image",), {})])


def test_relabel_of_removed_or_unknown_seed_is_not_found(store):
    store.add_seeds([seed(1)])
    store.remove_seeds([1])
    for sid in (1, 42):
        with pytest.raises(NotFound):
            store.relabel(sid, [Label("b")])


def test_op_log_is_monotonic_with_right_kinds_and_resumable(store):
    store.add_seeds([seed(1), seed(2)])
    store.relabel(1, [Label("b")])
    store.remove_seeds([2])
    ops = list(store.ops_after(0))
    assert [o.seq for o in ops] == [1, 2, 3, 4] and store.last_seq == 4
    assert [(o.kind, o.seed_id) for o in ops] == [
        (OpKind.ADD, 1), (OpKind.ADD, 2), (OpKind.RELABEL, 1), (OpKind.REMOVE, 2),
    ]
    assert [o.seq for o in store.ops_after(2)] == [3, 4]
    assert list(store.ops_after(4)) == []


def test_ops_after_pages_through_a_long_log(store):
    store.add_seeds([seed(i) for i in range(2500)])  # more than one internal chunk of 1024
    seqs = [o.seq for o in store.ops_after(10)]
    assert seqs == list(range(11, 2501))


# ---- atomicity and validation -------------------------------------------------------------------


def test_model_mismatch_refused(store):
    store.register_space(SPACE, MODEL, DIM, "float32")  # same model again: fine
    with pytest.raises(ModelMismatch):
        store.register_space(SPACE, "image:test@ffff", DIM, "float32")
    with pytest.raises(ModelMismatch):
        store.register_space(SPACE, MODEL, DIM * 2, "float32")


def test_dim_mismatch_refused_and_batch_is_all_or_nothing(store):
    bad = NewSeed((Label("a"),), sha(2), ("image",), {SPACE: np.ones(DIM + 1, np.float32)})
    with pytest.raises(InvalidArgument):
        store.add_seeds([seed(1), bad])
    assert store.get(1) is None and store.last_seq == 0 and store.find_sha256(sha(1)) is None
    assert store.add_seeds([seed(1)]) == [(1, True)]  # the aborted batch consumed no id


@pytest.mark.parametrize(
    "embeddings",
    [{"image:unregistered": np.ones(DIM)}, {SPACE: np.ones((1, DIM))}, {SPACE: np.full(DIM, np.nan)},
     {SPACE: np.ones(DIM, np.int64)}],
)
def test_bad_embeddings_are_invalid_argument(store, embeddings):
    with pytest.raises(InvalidArgument):
        store.add_seeds([NewSeed((Label("a"),), sha(1), ("image",), embeddings)])


def test_bad_sha_and_modalities_are_invalid_argument(store):
    with pytest.raises(InvalidArgument):
        store.add_seeds([NewSeed((Label("a"),), "abc", ("image",), {})])
    with pytest.raises(InvalidArgument):
        store.add_seeds([NewSeed((Label("a"),), sha(1), ("video",), {})])


# ---- listing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 7, 100])
def test_pagination_with_label_filter_covers_every_seed_exactly_once(store, limit):
    labels = [(Label("a"),), (Label("b"),), (Label("a"), Label("b", 3))]
    store.add_seeds([seed(i, *labels[i % 3]) for i in range(40)])
    store.remove_seeds([5, 6])
    for label, include_removed in [("a", False), ("b", False), (None, False), ("a", True), (None, True)]:
        seen, cursor = [], 0
        while cursor is not None:
            page, cursor = store.list_seeds(label, after=cursor, limit=limit, include_removed=include_removed)
            assert len(page) <= limit
            seen += [s.seed_id for s in page]
        want = [
            sid for sid in range(1, 41)
            if (label is None or label in {lb.name for lb in labels[(sid - 1) % 3]})
            and (include_removed or sid not in (5, 6))
        ]
        assert seen == want, (label, include_removed)


def test_list_seeds_rejects_bad_limit(store):
    with pytest.raises(InvalidArgument):
        store.list_seeds(limit=0)


# ---- persistence and growth ---------------------------------------------------------------------


def test_reopened_store_has_everything(tmp_path):
    path = tmp_path / "s"
    with SeedStore(path) as s:
        s.register_space(SPACE, MODEL, DIM, "float32")
        s.add_seeds([seed(i, content=b"c%d" % i) for i in range(10)])
        s.remove_seeds([3])
        s.relabel(4, [Label("b", 5)])
        before = (s.list_seeds(include_removed=True), list(s.ops_after(0)), s.spaces(), s.last_seq)
    with SeedStore(path, readonly=True) as s:
        after = (s.list_seeds(include_removed=True), list(s.ops_after(0)), s.spaces(), s.last_seq)
        assert after == before
        assert s.content(10) == b"c9"
        with pytest.raises(StoreError):
            s.add_seeds([seed(99)])


def test_lmdb_is_opened_to_fsync_every_commit(store):
    # kill -9 alone cannot tell fsync from page cache; power loss needs these flags
    flags = store._env.flags()
    assert flags["sync"] and flags["metasync"]


def test_map_grows_when_full_and_nothing_is_lost(tmp_path):
    with SeedStore(tmp_path / "s", map_size=64 * 1024) as s:
        s.register_space(SPACE, MODEL, DIM, "float32")
        start = s.stats()["map_size"]
        for b in range(10):  # batches of 20 x 8 KiB content: several doublings
            s.add_seeds([seed(b * 20 + i, content=os.urandom(8192)) for i in range(20)])
        st_ = s.stats()
        assert st_["map_size"] >= 2 * 1024 * 1024 > start
        assert st_["seeds_active"] == 200 and st_["last_seq"] == 200 and st_["spaces"] == {SPACE: 200}
        assert st_["used_bytes"] > 200 * 8192
        assert len(s.content(200)) == 8192


def test_readers_in_threads_during_map_growth(tmp_path):
    with SeedStore(tmp_path / "s", map_size=64 * 1024) as s:
        s.register_space(SPACE, MODEL, DIM, "float32")
        s.add_seeds([seed(0)])
        stop, errors, reads = threading.Event(), [], [0]

        def reader() -> None:
            try:
                while not stop.is_set():
                    assert 1 in s.get_many([1, 2, 3])
                    sum(len(i) for i, _ in s.iter_embeddings(SPACE, batch=16))
                    reads[0] += 1
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for b in range(10):
            s.add_seeds([seed(1 + b * 10 + i, content=os.urandom(16384)) for i in range(10)])
        stop.set()
        for t in threads:
            t.join()
        assert not errors and reads[0] > 0
        assert s.stats()["seeds_active"] == 101 and s.stats()["map_size"] > 64 * 1024


def test_read_view_is_one_consistent_snapshot(store):
    store.add_seeds([seed(i) for i in range(3)])
    with store.read_view() as view:
        store.add_seeds([seed(10)])
        store.remove_seeds([1])
        assert view.last_seq == 3
        ids = np.concatenate([i for i, _ in view.iter_embeddings(SPACE, batch=2)])
        assert ids.tolist() == [1, 2, 3]
        assert not view.get_many([1])[1].removed and 4 not in view.get_many([4])
    assert store.last_seq == 5


# ---- one writer, readers beside it --------------------------------------------------------------


def test_second_writer_is_refused_while_first_lives(tmp_path):
    path = tmp_path / "s"
    p = child("hold", path)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        with pytest.raises(StoreError, match="already open for writing"):
            SeedStore(path)
        with SeedStore(path, readonly=True) as ro:  # readers are welcome beside the writer
            assert ro.spaces()[SPACE]["model_id"] == MODEL
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    with SeedStore(path) as s:  # the lock died with its holder
        assert s.last_seq == 0


def test_readonly_store_sees_commits_made_after_it_opened(tmp_path):
    path = tmp_path / "s"
    p = child("serve", path)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        with SeedStore(path, readonly=True) as ro:
            assert ro.last_seq == 0
            for n, want in [(3, 3), (200, 203)]:  # 200 x 4 KiB: the writer grows its map past ours
                p.stdin.write(f"add {n}\n")
                p.stdin.flush()
                assert p.stdout.readline().split() == ["ok", str(want)]
                assert ro.last_seq == want
                assert ro.stats()["seeds_active"] == want
                ids = np.concatenate([i for i, _ in ro.iter_embeddings(SPACE)])
                assert ids.tolist() == list(range(1, want + 1))
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def test_kill9_keeps_every_acknowledged_write(tmp_path):
    path = tmp_path / "s"
    p = child("crash", path)
    added: dict[int, int] = {}
    removed: set[int] = set()
    try:
        while len(added) < 60:
            line = p.stdout.readline().split()
            assert line, p.stderr.read()
            if line[0] == "A":
                added[int(line[1])] = int(line[2])
            else:
                removed.add(int(line[1]))
        p.send_signal(signal.SIGKILL)  # mid-stream: the child is writing the next seed right now
    finally:
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    with SeedStore(path) as s:
        for sid, i in added.items():
            got = s.get(sid)
            assert got is not None and got.sha256 == sha(i)
            assert got.removed == (sid in removed)
        active = [sid for sid in added if sid not in removed]
        np.testing.assert_array_equal(s.embeddings(SPACE, active), np.stack([vec(added[sid]) for sid in active]))
        for sid in removed:
            assert s.find_sha256(s.get(sid).sha256) is None
        # after restart, ids continue past everything the dead writer committed
        [(new_id, _)] = s.add_seeds([seed(10_000)])
        assert new_id > max(added) and new_id == s.stats()["seeds_active"] + s.stats()["seeds_removed"]


# ---- errors -----------------------------------------------------------------------------------


def test_missing_or_corrupt_store_raises_store_error_with_path(tmp_path):
    with pytest.raises(StoreError, match="nothing-here"):
        SeedStore(tmp_path / "nothing-here", readonly=True)
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreError, match="corrupt"):
        SeedStore(bad)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StoreError, match="afile"):
        SeedStore(afile)


def test_closed_store_raises_store_error(tmp_path):
    s = SeedStore(tmp_path / "s")
    s.close()
    with pytest.raises(StoreError):
        s.get(1)


# ---- property: the store behaves like a dict --------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, 6), min_size=1, max_size=3),
                  st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("remove"), st.lists(st.integers(1, 12), min_size=1, max_size=2)),
        st.tuples(st.just("relabel"), st.integers(1, 12), st.sampled_from(["a", "b", "c"])),
    ),
    max_size=25,
)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops)
def test_random_ops_match_a_dict_model(ops):
    # model: id -> [item, label, removed]; ids are counted like the store's
    model: dict[int, list] = {}
    n_ops = 0
    with tempfile.TemporaryDirectory() as d, SeedStore(d) as s:
        s.register_space(SPACE, MODEL, DIM, "float32")
        for op in ops:
            if op[0] == "add":
                want = []
                for item in op[1]:
                    live = [k for k, v in model.items() if v[0] == item and not v[2]]
                    if live:
                        want.append((live[0], False))
                    else:
                        model[len(model) + 1] = [item, op[2], False]
                        want.append((len(model), True))
                        n_ops += 1
                assert s.add_seeds([seed(item, Label(op[2])) for item in op[1]]) == want
            elif op[0] == "remove":
                if any(i not in model for i in op[1]):
                    with pytest.raises(NotFound):
                        s.remove_seeds(op[1])
                    continue
                want = []
                for i in op[1]:
                    if not model[i][2]:
                        model[i][2] = True
                        want.append(i)
                n_ops += len(want)
                assert s.remove_seeds(op[1]) == want
            else:
                sid, label = op[1], op[2]
                if sid not in model or model[sid][2]:
                    with pytest.raises(NotFound):
                        s.relabel(sid, [Label(label)])
                    continue
                model[sid][1] = label
                n_ops += 1
                assert s.relabel(sid, [Label(label)]).labels == (Label(label),)
        assert s.last_seq == n_ops == len(list(s.ops_after(0)))
        for sid, (item, label, removed) in model.items():
            got = s.get(sid)
            assert (got.sha256, got.label_names, got.removed) == (sha(item), (label,), removed)
        active = sorted(k for k, v in model.items() if not v[2])
        ids = [int(i) for b, _ in s.iter_embeddings(SPACE, batch=4) for i in b]
        assert ids == active
        for item in range(7):
            live = [k for k in active if model[k][0] == item]
            assert s.find_sha256(sha(item)) == (live[0] if live else None)
        for label in "abc":
            listed = [x.seed_id for x in s.list_seeds(label=label, limit=1000)[0]]
            assert listed == [k for k in active if model[k][1] == label]
        assert s.stats()["seeds_active"] == len(active)
