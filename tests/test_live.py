"""The live index under real load: trainable plans, repairs, and lookups that never see a
half-swapped set, stall, or miss an acknowledged seed while writes, reloads and rebuilds run.

Real FAISS indexes, real LMDB, real embedders: PDQ (binary, hash-only seeds are cheap) and
MiniLM (text). Faults are injected into a dependency only where the behaviour under test is the
recovery from that fault.
"""

from __future__ import annotations

import threading
import time
import traceback

import numpy as np
import pytest

from dedup.config import IndexPlan, load_config
from dedup.embed import create_embedder
from dedup.embed.pdq import to_hex
from dedup.engine import Engine
from dedup.errors import ModelMismatch, NotFound
from dedup.index.snapshot import current_version, read_manifest
from dedup.types import Item, Label
from index_builder.build import rebuild

BANK = Label("bank.partner", 3)


@pytest.fixture(scope="module")
def embedders():
    return {"pdq": create_embedder("pdq"), "text:minilm-l6": create_embedder("text:minilm-l6")}


def random_hashes(n: int, seed: int) -> list[str]:
    codes = np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)
    return to_hex(codes)


def pdq_config(tmp_path, factory: str = "auto", n_shards: int = 1, **space):
    return load_config(None, data_dir=str(tmp_path / "data"), spaces={
        "pdq": {"model": "pdq", "threshold": 0.9,
                "index": {"factory": factory, "n_shards": n_shards, "nprobe": 16}, **space}})


def found(engine: Engine, hexes: list[str]) -> list[int | None]:
    """The seed id each hash finds at rank 1 (None when it finds nothing)."""
    results = engine.lookup([Item(pdq=h) for h in hexes], top_k=1)
    return [r.neighbors[0].seed_id if r.neighbors else None for r in results]


def test_trainable_plan_takes_its_first_seeds_and_keeps_them_after_restart(tmp_path, embedders):
    cfg = pdq_config(tmp_path, factory="BIVF16")
    first = random_hashes(3, 1)
    with Engine.open(cfg, embedders=embedders) as eng:
        ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in first], [BANK])]
        assert found(eng, first) == ids  # searchable at once, though 3 < 16 lists to train
        note = eng.stats().spaces["pdq"].plan_note
        assert "BIVF16 needs training" in note and "exact search" in note
    with Engine.open(cfg, embedders=embedders) as eng:  # restart: nothing refused, nothing lost
        assert found(eng, first) == ids
        more = random_hashes(600, 2)
        more_ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in more[:64]], [BANK])]
        for start in range(64, 600, 64):
            more_ids += [r.seed_id for r in eng.add_seeds(
                [Item(pdq=h) for h in more[start:start + 64]], [BANK])]
        # dedup-build trains the planned factory from LMDB; Reload swaps it in
        report = rebuild(eng.store, eng.live.root, {"pdq": cfg.spaces["pdq"].index})
        assert report.notes == {} and report.recall["pdq"] >= 0.9
        eng.reload()
        index = eng.live.current.indexes["pdq"]
        assert index.factory == "BIVF16" and index.ntotal == 603
        assert eng.stats().spaces["pdq"].plan_note == ""
        assert found(eng, first + more[:50]) == ids + more_ids[:50]


def test_a_snapshot_built_by_another_plan_is_reported_not_silently_preferred(tmp_path, embedders):
    hexes = random_hashes(20, 3)
    with Engine.open(pdq_config(tmp_path), embedders=embedders) as eng:
        ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes], [BANK])]
        eng.publish_snapshot()
    with Engine.open(pdq_config(tmp_path, n_shards=2), embedders=embedders) as eng:
        space = eng.stats().spaces["pdq"]
        assert space.n_shards == 1  # the snapshot serves, and says how it departs from the plan
        assert "x1" in space.plan_note and "x2" in space.plan_note and "dedup-build" in space.plan_note
        assert found(eng, hexes) == ids


def test_a_failed_index_update_after_commit_is_repaired_from_the_store(tmp_path, embedders,
                                                                        monkeypatch):
    hexes = random_hashes(4, 4)
    with Engine.open(pdq_config(tmp_path), embedders=embedders) as eng:
        index = eng.live.current.indexes["pdq"]

        def broken_add(ids, x):  # the fault: the index update fails after the LMDB commit
            raise RuntimeError("simulated device failure")

        monkeypatch.setattr(index, "add", broken_add)
        ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes], [BANK])]
        assert all(i > 0 for i in ids)  # acknowledged: the write landed
        assert eng.live.current.indexes["pdq"] is not index  # the space was rebuilt from LMDB
        assert found(eng, hexes) == ids
        assert not index.shards  # the replaced index was closed


def test_replaced_sets_are_closed_once_their_last_lookup_lets_go(tmp_path, embedders):
    with Engine.open(pdq_config(tmp_path), embedders=embedders) as eng:
        eng.add_seeds([Item(pdq=h) for h in random_hashes(5, 5)], [BANK])
        eng.publish_snapshot()
        with eng.live.acquire() as held:
            old_index = held.indexes["pdq"]
            eng.reload()
            assert old_index.shards  # still in use by this lookup
            assert held.search  # and usable
        assert not old_index.shards  # closed when the lookup let go
        assert eng.live.current.indexes["pdq"] is not old_index


def test_an_index_shared_by_sets_stays_open_while_any_set_holding_it_is_searched(
        tmp_path, embedders):
    hexes = random_hashes(5, 11)
    with Engine.open(pdq_config(tmp_path), embedders=embedders) as eng:
        ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes], [BANK])]
        with eng.live.acquire() as held:  # a lookup in progress on set C
            shared = held.indexes["pdq"]
            eng.publish_snapshot()  # set P: a new manifest over C's very indexes
            assert eng.live.current.indexes["pdq"] is shared
            eng.reload()  # set R from the files: P is done, but C still holds `shared`
            assert shared.shards and shared.ntotal == 5
            codes = np.stack([eng.spaces["pdq"].embedder.parse_hash(h) for h in hexes])
            _, found_ids = shared.search(codes, 1)
            assert found_ids[:, 0].tolist() == ids
        assert not shared.shards  # closed once the last set holding it let go


def test_a_snapshot_of_other_weights_is_refused_on_reload(tmp_path, embedders):
    with Engine.open(pdq_config(tmp_path), embedders=embedders) as eng:
        eng.add_seeds([Item(pdq=h) for h in random_hashes(3, 6)], [BANK])
        version = eng.publish_snapshot()
        path = eng.live.root / "snapshots" / version / "manifest.json"
        path.write_text(path.read_text().replace(eng.spaces["pdq"].model_id, "pdq@other-weights"))
        with pytest.raises(ModelMismatch, match="other-weights"):
            eng.reload()
        assert eng.snapshot_version == version  # still serving what it had


def test_damaged_newest_snapshot_falls_back_to_an_older_one(tmp_path, embedders):
    hexes = random_hashes(6, 7)
    with Engine.open(pdq_config(tmp_path), embedders=embedders) as eng:
        ids = [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes[:3]], [BANK])]
        older = eng.publish_snapshot()
        ids += [r.seed_id for r in eng.add_seeds([Item(pdq=h) for h in hexes[3:]], [BANK])]
        newest = eng.publish_snapshot()
    root = tmp_path / "data" / "index"
    shard = root / "snapshots" / newest / read_manifest(root, newest).spaces["pdq"].files[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with Engine.open(pdq_config(tmp_path), embedders=embedders) as eng:
        assert eng.snapshot_version == older and current_version(root) == newest
        assert found(eng, hexes) == ids  # the op log after the older snapshot was replayed


def test_lookups_never_see_a_missing_seed_or_stall_during_writes_reloads_and_rebuilds(
        tmp_path, embedders):
    """Probe seeds are never removed: every lookup must find each at rank 1 in BOTH spaces (a
    half-swapped or half-built set would miss one), within a bound, while other threads add,
    remove (some removals of unknown ids, which abort their LMDB write), publish, reload, and
    rebuild in process (a long read view of the store)."""
    cfg = load_config(None, data_dir=str(tmp_path / "data"), spaces={
        "pdq": {"model": "pdq", "threshold": 0.9},
        "text:minilm-l6": {"model": "text:minilm-l6", "threshold": 0.8}})
    probe_hashes = random_hashes(4, 8)
    probe_texts = [f"probe {i}: wire the fee to claim your parcel number {i * 91}" for i in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []
    latencies: list[float] = []
    counts = {"lookups": 0, "writes": 0, "reloads": 0, "rebuilds": 0}

    def guarded(fn):
        def run():
            try:
                while not stop.is_set():
                    fn()
            except BaseException as e:  # surfaced below, with its traceback on stderr
                traceback.print_exc()
                errors.append(e)
                stop.set()
        return run

    with Engine.open(cfg, embedders=embedders) as eng:
        probes = [eng.add_seeds([Item(pdq=h), Item(text=t)], [BANK])
                  for h, t in zip(probe_hashes, probe_texts)]
        want = [(a.seed_id, b.seed_id) for a, b in probes]
        churn = iter(random_hashes(10_000, 9))

        def lookup():
            t0 = time.perf_counter()
            results = eng.lookup([Item(pdq=h) for h in probe_hashes]
                                 + [Item(text=t) for t in probe_texts], top_k=3)
            latencies.append(time.perf_counter() - t0)
            for (pdq_id, text_id), r_pdq, r_text in zip(want, results[:4], results[4:]):
                # the exact (sha256) match comes first; the index's own best must be there too
                assert [n.seed_id for n in r_pdq.neighbors if n.space == "pdq"][0] == pdq_id
                assert [n.seed_id for n in r_text.neighbors if n.space == "text:minilm-l6"][0] == text_id
            counts["lookups"] += 1

        def write():
            added = [r.seed_id for r in eng.add_seeds([Item(pdq=next(churn)) for _ in range(8)],
                                                      [BANK])]
            eng.remove_seeds(added[:4])
            with pytest.raises(NotFound):
                eng.relabel(10**9, [BANK])  # fails inside the LMDB write txn: an abort
            counts["writes"] += 1

        def reload():
            eng.publish_snapshot()
            eng.reload()
            counts["reloads"] += 1

        def rebuild_in_process():
            rebuild(eng.store, eng.live.root)
            eng.reload()
            counts["rebuilds"] += 1

        threads = [threading.Thread(target=guarded(f)) for f in
                   (lookup, lookup, write, reload, rebuild_in_process)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not stop.is_set() and (
                counts["rebuilds"] < 3 or counts["lookups"] < 20):
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]
    assert counts["lookups"] >= 10 and counts["writes"] >= 3 and counts["rebuilds"] >= 1, counts
    assert max(latencies) < 10.0, f"a lookup stalled {max(latencies):.1f} s ({counts})"
    print(f"counts {counts}, lookup p50 {np.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")


def test_retention_keeps_the_newest_snapshots_and_start_clears_leftovers(tmp_path, embedders):
    import subprocess

    from dedup.index.snapshot import list_snapshots

    cfg = pdq_config(tmp_path)
    hexes = random_hashes(12, 10)
    with Engine.open(cfg, embedders=embedders) as eng:
        versions = []
        for h in hexes[:8]:
            eng.add_seeds([Item(pdq=h)], [BANK])
            versions.append(eng.publish_snapshot())
        assert list_snapshots(eng.live.root) == versions[-3:]  # keep 3 (the newest serves)
        root = eng.live.root
    dead = subprocess.Popen(["true"])  # a process that has exited: its pid is free
    dead.wait()
    leftovers = [root / "snapshots" / f".tmp-{dead.pid}-abcdef012345",
                 root / "snapshots" / ".trash-0123456789ab"]
    alive = root / "snapshots" / f".tmp-{__import__('os').getpid()}-fedcba987654"
    for d in leftovers + [alive]:
        (d / "sub").mkdir(parents=True)
    with Engine.open(cfg, embedders=embedders) as eng:
        assert not any(d.exists() for d in leftovers)  # a killed publish's temp dir, a trash
        assert alive.exists()  # a publish still running in a live process is left alone
        assert found(eng, hexes[:8]) == list(range(1, 9))
