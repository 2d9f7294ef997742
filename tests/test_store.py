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
from dedup.types import Label, OpFilter, OpKind, RemoveResult, RemoveStatus, SeedFilter

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


def removed(results: list[RemoveResult]) -> list[int]:
    """The ids a removal removed now."""
    return [r.seed_id for r in results if r.status is RemoveStatus.REMOVED]


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
        assert removed(s.remove_seeds([2])) == [2]
    with SeedStore(path) as s:
        [(sid, created)] = s.add_seeds([seed(2)])  # same content as the removed seed
        assert (sid, created) == (3, True)
        assert s.find_sha256(sha(2)) == 3
        assert s.get(2).removed and not s.get(3).removed


def test_removed_seed_gone_from_embeddings_sha_and_labels_but_kept_as_history(store):
    store.add_seeds([seed(i, Label("violence.graphic", 4)) for i in range(1, 4)])
    assert removed(store.remove_seeds([2], actor="ana")) == [2]
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


def test_remove_reports_each_id_and_an_unknown_one_fails_only_itself(store):
    store.add_seeds([seed(1), seed(2)])
    assert store.remove_seeds([1, 999, 1]) == [
        RemoveResult(1, RemoveStatus.REMOVED), RemoveResult(999, RemoveStatus.NOT_FOUND),
        RemoveResult(1, RemoveStatus.ALREADY_REMOVED)]
    assert store.get(1).removed and not store.get(2).removed
    seq = store.last_seq
    assert removed(store.remove_seeds([1, 1])) == []
    assert store.last_seq == seq  # nothing removed: nothing logged


def test_relabel_moves_seed_between_label_listings(store):
    store.add_seeds([seed(1, Label("a", 1))])
    new = store.relabel(1, [Label("b", 3)], actor="ana")
    assert new.labels == (Label("b", 3),) and store.get(1) == new
    assert store.list_seeds(label="a")[0] == [] and store.list_seeds(label="b")[0] == [new]
    op = list(store.ops_after(0))[-1]
    assert (op.kind, op.seed_id, op.labels, op.actor) == (OpKind.RELABEL, 1, (Label("b", 3),), "ana")


@pytest.mark.parametrize(
    "labels", [[], [Label("")], [Label("a", 0)], [Label("a", 6)], [Label("a"), Label("a", 2)],
               [Label("Spam.Scam")], [Label("spam scam")], [Label("spam:scam")],
               [Label(".hidden")], [Label("x" * 129)], [Label(f"l{i}") for i in range(33)]]
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


def test_list_seeds_pages_by_bytes_as_well_as_count(store):
    store.add_seeds([seed(i, note="n" * 3000) for i in range(10)])
    page, cursor = store.list_seeds(limit=100, max_bytes=10_000)
    assert len(page) == 3 and cursor == page[-1].seed_id  # ~3.1 KB a record
    everything, after = list(page), cursor
    while after is not None:
        page, after = store.list_seeds(after=after, limit=100, max_bytes=10_000)
        everything += page
    assert [s.seed_id for s in everything] == sorted({s.seed_id for s in everything})
    assert len(everything) == 10
    # a record larger than the bound still comes back, alone
    [big], cursor = store.list_seeds(limit=100, max_bytes=10)
    assert cursor == big.seed_id


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

    def acknowledged(line: list[str]) -> None:
        if line[0] == "A":
            added[int(line[1])] = int(line[2])
        else:
            removed.add(int(line[1]))

    try:
        while len(added) < 60:
            line = p.stdout.readline().split()
            assert line, p.stderr.read()
            acknowledged(line)
        p.send_signal(signal.SIGKILL)  # mid-stream: the child is writing the next seed right now
    finally:
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    # what the child acknowledged after our last read but before the kill is in the pipe still
    # (a line the kill cut short, without its newline, was not acknowledged)
    for rest in p.stdout.read().split("\n")[:-1]:
        if rest.split():
            acknowledged(rest.split())
    with SeedStore(path) as s:
        for sid, i in added.items():
            got = s.get(sid)
            assert got is not None and got.sha256 == sha(i)
            if sid in removed:  # an acknowledged removal survives
                assert got.removed, sid
            else:  # only the write in flight at the kill may have landed unacknowledged:
                # the removal of the seed before the last one acknowledged
                assert not got.removed or sid == max(added) - 1, sid
        active = [sid for sid in added if not s.get(sid).removed]
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
                want = []
                for i in op[1]:
                    if i not in model:
                        want.append(RemoveResult(i, RemoveStatus.NOT_FOUND))
                    elif model[i][2]:
                        want.append(RemoveResult(i, RemoveStatus.ALREADY_REMOVED))
                    else:
                        model[i][2] = True
                        want.append(RemoveResult(i, RemoveStatus.REMOVED))
                        n_ops += 1
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


# ---- the audit trail, restore, label merge ----------------------------------------------------


def test_every_write_is_logged_with_actor_and_reason_and_readable_per_seed(store):
    store.add_seeds([seed(1, actor="alice", reason="case 7"), seed(2, actor="alice")])
    store.relabel(1, [Label("spam.phishing", 4)], actor="bob", reason="it is phishing")
    store.remove_seeds([1], actor="carol", reason="false positive")
    history = store.history(1)
    assert [(o.kind, o.actor, o.reason) for o in history] == [
        (OpKind.ADD, "alice", "case 7"), (OpKind.RELABEL, "bob", "it is phishing"),
        (OpKind.REMOVE, "carol", "false positive")]
    assert history[1].previous_labels == (Label("spam.scam", 2),)
    assert history[1].labels == (Label("spam.phishing", 4),)
    assert store.get(1).added_by == "alice"
    assert [o.seed_id for o in store.history(2)] == [2] and store.history(99) == []


def test_restore_brings_back_the_same_id_with_the_kept_vectors(store):
    store.add_seeds([seed(1), seed(2)])
    before = store.embeddings(SPACE, [1])
    store.remove_seeds([1], reason="mistake?")
    assert store.retired_spaces(1) == [SPACE] and store.kept_on_removal(1)
    back, restored, vectors = store.restore_seed(1, actor="dan", reason="it was right")
    assert restored and not back.removed and back.removed_at is None
    np.testing.assert_array_equal(vectors[SPACE], before[0])
    np.testing.assert_array_equal(store.embeddings(SPACE, [1]), before)
    assert store.find_sha256(sha(1)) == 1
    assert [s.seed_id for s in store.list_seeds(label="spam.scam")[0]] == [1, 2]
    assert store.retired_spaces(1) == [] and not store.kept_on_removal(1)
    assert store.history(1)[-1].kind == OpKind.RESTORE
    # an active seed is returned as it is, and nothing is logged
    seq = store.last_seq
    assert store.restore_seed(1)[1] is False and store.last_seq == seq
    with pytest.raises(NotFound):
        store.restore_seed(42)


def test_restore_refused_when_the_content_is_active_as_another_seed(store):
    store.add_seeds([seed(1)])
    store.remove_seeds([1])
    [(again, created)] = store.add_seeds([seed(1)])
    assert created and again == 2
    with pytest.raises(InvalidArgument, match="active as seed 2"):
        store.restore_seed(1)
    assert store.get(1).removed


def test_restore_of_a_seed_removed_without_kept_vectors_needs_vectors(tmp_path):
    import lmdb

    path = tmp_path / "s"
    with SeedStore(path) as s:
        s.register_space(SPACE, MODEL, DIM, "float32")
        s.add_seeds([seed(1)])
        s.remove_seeds([1])
    # what a store written before vectors were kept looks like: nothing put aside
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"retired", txn=txn), delete=False)
    env.close()
    with SeedStore(path) as s:
        assert not s.kept_on_removal(1)
        with pytest.raises(InvalidArgument, match="no stored content"):
            s.restore_seed(1)
        seed_back, restored, vectors = s.restore_seed(1, vectors={SPACE: vec(1)})
        assert restored and s.embeddings(SPACE, [1]).shape == (1, DIM)


def test_exact_duplicate_keeps_its_labels_unless_merge_is_asked(store):
    [first] = store.add_seeds([seed(1, Label("spam.scam", 2))])
    assert (first.created, first.labels) == (True, (Label("spam.scam", 2),))
    [dup] = store.add_seeds([seed(1, Label("fraud.crypto", 3))])
    assert (dup.seed_id, dup.created, dup.labels_merged) == (1, False, False)
    assert dup.labels == (Label("spam.scam", 2),) == store.get(1).labels
    seq = store.last_seq
    [merged] = store.add_seeds([seed(1, Label("fraud.crypto", 3), Label("spam.scam", 4),
                                     actor="erin")], merge_labels=True)
    assert merged.labels_merged
    assert merged.labels == (Label("spam.scam", 4), Label("fraud.crypto", 3))
    assert store.get(1).labels == merged.labels
    assert [s.seed_id for s in store.list_seeds(label="fraud.crypto")[0]] == [1]
    op = store.history(1)[-1]
    assert (op.seq, op.kind, op.actor, op.previous_labels) == (
        seq + 1, OpKind.RELABEL, "erin", (Label("spam.scam", 2),))
    # merging what it already has changes nothing and logs nothing
    [same] = store.add_seeds([seed(1, Label("spam.scam", 1))], merge_labels=True)
    assert not same.labels_merged and store.last_seq == seq + 1


def test_ops_newest_first_filtered_and_paged(store):
    store.add_seeds([seed(i, actor="alice" if i % 2 else "bob") for i in range(1, 11)])
    store.relabel(3, [Label("fraud.crypto")], actor="bob", reason="crypto")
    store.remove_seeds([4, 5], actor="alice", reason="dupes")
    everything, cursor = store.ops(limit=100)
    assert [o.seq for o in everything] == list(range(13, 0, -1)) and cursor is None
    page1, cursor = store.ops(limit=5)
    page2, cursor2 = store.ops(before=cursor, limit=5)
    page3, cursor3 = store.ops(before=cursor2, limit=5)
    assert [o.seq for o in page1 + page2 + page3] == list(range(13, 0, -1)) and cursor3 is None
    by_bob, _ = store.ops(OpFilter(actor="bob"))
    assert [(o.kind, o.seed_id) for o in by_bob] == [(OpKind.RELABEL, 3)] + [
        (OpKind.ADD, i) for i in (10, 8, 6, 4, 2)]
    removals, _ = store.ops(OpFilter(kinds=(OpKind.REMOVE,)))
    assert [(o.seed_id, o.reason) for o in removals] == [(5, "dupes"), (4, "dupes")]
    crypto, _ = store.ops(OpFilter(label="fraud.crypto"))
    assert [o.seed_id for o in crypto] == [3]
    old_label, _ = store.ops(OpFilter(label="spam.scam", kinds=(OpKind.RELABEL,)))
    assert [o.seed_id for o in old_label] == [3]  # the label it had before counts too
    t = everything[0].ts
    assert [o.seq for o in store.ops(OpFilter(since=t))[0]][0] == 13
    assert all(o.ts < t for o in store.ops(OpFilter(until=t))[0])
    assert [o.kind for o in store.ops(OpFilter(seed_id=3))[0]] == [OpKind.RELABEL, OpKind.ADD]
    # a page examines a bounded number of entries and hands back a cursor to go on from
    short, cursor = store.ops(OpFilter(kinds=(OpKind.RELABEL,)), max_scan=2)
    assert short == [] and cursor == 12
    found, _ = store.ops(OpFilter(kinds=(OpKind.RELABEL,)), before=cursor)
    assert [o.seed_id for o in found] == [3]


def test_list_seeds_filters_by_source_actor_and_date(store):
    store.add_seeds([seed(i, source=f"CASE-{i % 3}", actor="alice" if i < 5 else "bob")
                     for i in range(1, 9)])
    def ids(**kw):
        return [s.seed_id for s in store.list_seeds(where=SeedFilter(**kw), limit=100)[0]]
    assert ids(source="case-1") == [1, 4, 7]
    assert ids(added_by="bob") == [5, 6, 7, 8]
    assert ids(source="CASE-2", added_by="bob") == [5, 8]
    created = store.get(1).created_at
    assert ids(created_after=created) == list(range(1, 9)) and ids(created_before=created) == []
    page, cursor = store.list_seeds(where=SeedFilter(added_by="bob"), limit=2)
    assert [s.seed_id for s in page] == [5, 6] and cursor == 6
    page, cursor = store.list_seeds(where=SeedFilter(added_by="bob"), after=cursor, limit=2)
    assert [s.seed_id for s in page] == [7, 8] and cursor is None
    short, cursor = store.list_seeds(where=SeedFilter(added_by="bob"), limit=2, max_scan=3)
    assert short == [] and cursor == 3


def test_history_of_an_older_store_is_indexed_on_first_write_open(tmp_path):
    import lmdb

    path = tmp_path / "s"
    with SeedStore(path) as s:
        s.register_space(SPACE, MODEL, DIM, "float32")
        s.add_seeds([seed(1), seed(2)])
        s.relabel(1, [Label("b")])
    env = lmdb.open(str(path), max_dbs=16)  # drop the index and its marker, as before it existed
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"seedops", txn=txn), delete=True)
        txn.drop(env.open_db(b"retired", txn=txn), delete=True)
        txn.delete(b"seedops_built", db=env.open_db(b"meta", txn=txn))
    env.close()
    with SeedStore(path, readonly=True) as ro:  # read-only: scans the log instead
        assert [o.kind for o in ro.history(1)] == [OpKind.ADD, OpKind.RELABEL]
        assert ro.retired_spaces(1) == [] and not ro.kept_on_removal(1)
    with SeedStore(path) as s:
        assert [o.kind for o in s.history(1)] == [OpKind.ADD, OpKind.RELABEL]
        s.remove_seeds([1])
        assert [o.kind for o in s.history(1)][-1] == OpKind.REMOVE
