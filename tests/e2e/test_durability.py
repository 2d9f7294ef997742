"""Durability through real processes: `kill -9` during a stream of AddSeeds/RemoveSeeds loses no
acknowledged seed and resurrects no removed one; restart = newest snapshot + op-log replay;
Reload swaps snapshots; SIGTERM drains the call in flight and exits 0."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
import uuid

import pytest

from dedup.errors import DedupError
from dedup.types import Item, Label

pytestmark = pytest.mark.slow

CONFIG = "demo = false\n"


def _text(i: int, tag: str) -> str:
    return f"durability check {tag} seed number {i}: buy cheap watches at shop-{i}.example"


def test_kill9_during_writes_loses_no_ack_and_resurrects_no_removal(server_factory, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("crash") / "data"
    first = server_factory("crash", CONFIG, data_dir=data_dir)
    tag = uuid.uuid4().hex[:8]

    with first.client("admin") as admin:
        base = admin.add_seeds([Item(text=_text(i, tag)) for i in range(5)], [Label("crash.base")])
        base_ids = [r[0] for r in base]
        admin.publish_snapshot()  # restart must load this snapshot and replay the log after it

    acked: dict[int, str] = {sid: _text(i, tag) for i, sid in enumerate(base_ids)}
    removed: set[int] = set()
    in_doubt: set[int] = set()  # a removal the kill cut off before its answer: either outcome
    stop = threading.Event()

    def writer():
        with first.client("analyst", timeout=10) as analyst:
            i = 100
            while not stop.is_set():
                text = _text(i, tag)
                try:
                    (r,) = analyst.add_seeds([Item(text=text)], [Label("crash.test", 2)])
                    acked[r[0]] = text  # acknowledged: must survive
                    if i % 3 == 0:
                        victim = sorted(acked)[len(acked) // 2]
                        if victim not in removed:
                            in_doubt.add(victim)
                            if analyst.remove_seeds([victim]) == [victim]:
                                removed.add(victim)  # acknowledged removal: must stay removed
                            in_doubt.discard(victim)
                except DedupError:
                    return  # the server died under us; what was acknowledged is recorded
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 120
    while len(acked) < 35 and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(acked) >= 35 and removed, "the write stream did not get going"
    first.kill9()  # mid-stream: the writer is still sending
    stop.set()
    t.join(30)

    second = server_factory("crash-restart", CONFIG, data_dir=data_dir)
    with second.client("reader") as reader:
        # A removal in flight at the kill may have landed or not; whichever it did, the seed
        # must then behave that way everywhere below.
        removed |= {sid for sid in in_doubt if reader.get_seed(sid).removed}
        live = {sid: text for sid, text in acked.items() if sid not in removed}
        lost = [sid for sid in live if reader.get_seed(sid).removed]
        assert not lost, f"acknowledged seeds lost: {lost}"
        assert all(reader.get_seed(sid).removed for sid in removed)
        ids, texts = list(acked), list(acked.values())
        for start in range(0, len(ids), 32):
            chunk = ids[start:start + 32]
            results = reader.batch_lookup([Item(text=acked[s]) for s in chunk], top_k=20)
            for sid, res in zip(chunk, results):
                neighbor_ids = {n.seed_id for n in res.neighbors}
                if sid in removed:
                    assert res.exact_match is None and sid not in neighbor_ids, f"{sid} resurrected"
                else:
                    assert res.exact_match == sid and sid in neighbor_ids, f"{sid} not searchable"
                assert not (neighbor_ids & removed), "a removed seed is evidence again"
        assert len(texts) == len(ids)

    # Reload (admin): publish the recovered state, swap it in, nothing changes for readers.
    with second.client("admin") as admin:
        version = admin.publish_snapshot()
        assert admin.reload() == version
        assert admin.stats()["snapshot_version"] == version
    with second.client("reader") as reader:
        some = next(iter(live))
        assert reader.lookup(text=live[some]).exact_match == some


def test_sigterm_drains_the_call_in_flight_and_exits_zero(server_factory, skimage_images, encode):
    # A generous grace: the drain must finish the call even on a loaded CI machine.
    server = server_factory("sigterm", CONFIG + "[server]\ngrace_s = 90.0\n")
    items = [Item(image=encode(img.resize((640, 480)), "PNG")) for img in skimage_images.values()]
    items = items[:16]
    outcome: dict = {}

    def call():
        with server.client("reader", timeout=120) as reader:
            try:
                outcome["results"] = reader.batch_lookup(items)
            except DedupError as e:
                outcome["error"] = e

    t = threading.Thread(target=call)
    t.start()
    metrics_url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # SIGTERM only once the call is being served
        body = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        if re.search(r"^dedup_in_flight_requests 1\.0$", body, re.M):
            break
        time.sleep(0.01)
    else:
        pytest.fail("the BatchLookup never showed as in flight")
    rc = server.terminate(timeout=120)
    t.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert len(outcome["results"]) == 16
    assert not any(isinstance(r, DedupError) for r in outcome["results"])
    assert rc == 0, server.log_tail()
    assert '"msg": "stopped"' in server.log_text()


PDQ_ONLY = """
[spaces."pdq"]
model = "pdq"
threshold = 0.9
"""


def test_kill9_loop_during_adds_removes_and_publishes_keeps_every_acknowledgement(
        server_factory, tmp_path_factory):
    """Twenty-plus kill -9 rounds, each in the middle of concurrent adds, removes and snapshot
    publishes: every acknowledged seed is searchable after the last restart, every
    acknowledged removal stays removed."""
    import numpy as np

    from dedup.embed.pdq import to_hex

    data_dir = tmp_path_factory.mktemp("kill-loop") / "data"
    rng = np.random.default_rng(7)
    acked: dict[int, str] = {}  # seed id -> its hash, acknowledged added
    removed: set[int] = set()
    unsure: set[int] = set()  # a removal in flight when the server died: it may have landed
    rounds = 22
    for round_no in range(rounds):
        server = server_factory(f"kill-{round_no}", PDQ_ONLY, data_dir=data_dir)
        stop = threading.Event()

        def writer(analyst):
            while not stop.is_set():
                hexes = to_hex(rng.integers(0, 256, (4, 32), dtype=np.uint8))
                try:
                    results = analyst.add_seeds([Item(pdq=h) for h in hexes], [Label("kill.loop")])
                    for (sid, created), h in zip(results, hexes):
                        if created:
                            acked[sid] = h
                    victim = next((s for s in sorted(acked) if s not in removed | unsure), None)
                    if victim is not None and len(acked) % 3 == 0:
                        unsure.add(victim)
                        if analyst.remove_seeds([victim]) == [victim]:
                            removed.add(victim)
                            unsure.discard(victim)
                except DedupError:
                    return

        def publisher(admin):
            while not stop.is_set():
                try:
                    admin.publish_snapshot()
                except DedupError:
                    return
                time.sleep(0.05)

        with server.client("analyst", timeout=10) as analyst, \
                server.client("admin", timeout=10) as admin:
            threads = [threading.Thread(target=writer, args=(analyst,)),
                       threading.Thread(target=publisher, args=(admin,))]
            for t in threads:
                t.start()
            time.sleep(0.3 + 0.7 * rng.random())
            server.kill9()
            stop.set()
            for t in threads:
                t.join(30)
    final = server_factory("kill-final", PDQ_ONLY, data_dir=data_dir)
    assert len(acked) > 4 * rounds and removed
    with final.client("reader") as reader:
        ids = sorted(acked)
        for start in range(0, len(ids), 64):
            chunk = ids[start:start + 64]
            results = reader.batch_lookup([Item(pdq=acked[s]) for s in chunk], top_k=5)
            for sid, res in zip(chunk, results):
                if sid in removed:
                    assert res.exact_match is None, f"{sid} resurrected"
                    assert sid not in {n.seed_id for n in res.neighbors}
                elif sid not in unsure:
                    assert res.exact_match == sid, f"acknowledged seed {sid} lost"
                    assert sid in {n.seed_id for n in res.neighbors if n.space == "pdq"}
