"""The engine's audited writes: restore brings a removed seed back under its id (from kept
vectors, or re-embedded from stored content for a seed removed before vectors were kept),
history and the audit trail read the op log, content comes back as stored. Real PDQ, real
LMDB, real FAISS; a PDQ-only config keeps it quick."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dedup.config import SpaceConfig, load_config
from dedup.engine import Engine
from dedup.errors import InvalidArgument, LimitExceeded, NotFound
from dedup.types import Item, Label, OpFilter, OpKind, RemoveStatus

SCAM = Label("spam.scam", 2)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def engine(tmp_path):
    config = load_config(None, data_dir=str(tmp_path / "data"), spaces={
        "pdq": SpaceConfig(model="pdq", threshold=0.85, min_quality=50).model_dump()},
        limits={"max_reason_chars": 50})
    with Engine.open(config) as eng:
        yield eng


def _pdq_ids(engine: Engine, data: bytes) -> set[int]:
    [r] = engine.lookup([Item(image=data)])
    return {n.seed_id for n in r.neighbors if n.space == "pdq" and n.score >= 0.99}


def test_removed_seed_comes_back_under_its_id_and_matches_at_once(engine, skimage_images):
    data = png(skimage_images["coffee"])
    [(sid, _)] = engine.add_seeds([Item(image=data)], [SCAM], actor="alice", reason="case 1")
    assert _pdq_ids(engine, data) == {sid}
    [removed] = engine.remove_seeds([sid], actor="bob", reason="mistake")
    assert removed.status is RemoveStatus.REMOVED
    assert _pdq_ids(engine, data) == set()
    seed, restored = engine.restore_seed(sid, actor="carol", reason="it was right")
    assert restored and not seed.removed and seed.seed_id == sid
    assert _pdq_ids(engine, data) == {sid}
    _, ops = engine.history(sid)
    assert [(o.kind, o.actor, o.reason) for o in ops] == [
        (OpKind.ADD, "alice", "case 1"), (OpKind.REMOVE, "bob", "mistake"),
        (OpKind.RESTORE, "carol", "it was right")]
    assert engine.restore_seed(sid)[1] is False  # active already: nothing changes
    with pytest.raises(NotFound):
        engine.restore_seed(10**9)


def test_a_seed_removed_before_vectors_were_kept_is_embedded_again(engine, skimage_images):
    data = png(skimage_images["astronaut"])
    [(sid, _)] = engine.add_seeds([Item(image=data)], [SCAM])
    engine.remove_seeds([sid])
    # what an older store holds for a removed seed: nothing put aside
    store = engine.store
    with store._env.begin(write=True) as txn:
        retired = store._db[b"retired"]
        for key in [k for k, _ in txn.cursor(db=retired)]:
            txn.delete(key, db=retired)
    assert not store.kept_on_removal(sid)
    seed, restored = engine.restore_seed(sid, reason="re-embedded from its content")
    assert restored and _pdq_ids(engine, data) == {sid}


def test_a_hash_only_seed_is_restored_from_its_kept_hash(engine):
    pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    [(sid, _)] = engine.add_seeds([Item(pdq=pdq)], [Label("partner.hash", 5)])
    engine.remove_seeds([sid])
    with pytest.raises(NotFound, match="hash only"):
        engine.content(sid)
    assert engine.restore_seed(sid)[1]
    [r] = engine.lookup([Item(pdq=pdq)])
    assert any(v.label == "partner.hash" and v.matched for v in r.verdicts)


def test_content_ops_and_text_limits(engine, skimage_images):
    data = png(skimage_images["rocket"])
    [(sid, _)] = engine.add_seeds([Item(image=data)], [SCAM], actor="alice")
    content = engine.content(sid)
    assert (content.data, content.media_type) == (data, "image/png")
    engine.remove_seeds([sid, 10**9], actor="bob", reason="dupe")
    page, cursor = engine.ops(OpFilter(actor="bob"))
    assert [(o.kind, o.seed_id, o.reason) for o in page] == [(OpKind.REMOVE, sid, "dupe")]
    assert cursor is None
    with pytest.raises(LimitExceeded, match="max_reason_chars=50"):
        engine.remove_seeds([sid], reason="x" * 51)
    with pytest.raises(LimitExceeded, match="max_source_chars"):
        engine.add_seeds([Item(image=data)], [SCAM], source="s" * 600)
    with pytest.raises(InvalidArgument, match="bad label name"):
        engine.add_seeds([Item(image=data)], [Label("Spam Scam", 3)])
