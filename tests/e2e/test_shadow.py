"""Changing the model on a live service: re-embed -> shadow -> promote -> roll back -> retire.

A real ``dedup serve`` holds a bank of real photos in ``pdq``. ``dedup-build reembed --server``
re-embeds it into ``image:effnet-lite0`` (a second packaged, trained model) through the
service's admin RPCs while an analyst adds and removes seeds. In shadow the new space's matches
are counted (Stats, Prometheus) but never change a verdict; promoted, it decides verdicts with
every acknowledged seed present and no removed one back; a rollback restores pdq; a retired
space stays retired across a restart.
"""

from __future__ import annotations

import io
import re
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from dedup.config import SpaceConfig
from dedup.errors import InvalidArgument, PermissionDenied
from dedup.store import SeedStore
from dedup.types import Item, Label, OpFilter, OpKind
from index_builder.reembed import ServiceTarget, reembed_store, runner_factory
from tools.localserver import TOKENS

pytestmark = pytest.mark.slow

NEW = "image:effnet-lite0"
CONFIG = """demo = false
[spaces."pdq"]
model = "pdq"
threshold = 0.67578125
min_quality = 50
"""
SCAM = Label("spam.scam", 2)
BANK = ("astronaut", "camera", "chelsea", "coffee", "coins", "motorcycle_left")
ADDED = ("brick", "grass")  # added while the re-embed runs


def photo(name: str, variant: str = "") -> bytes:
    """A real photograph; ``crop_rot``: a re-post cropped and turned 8 degrees, which PDQ
    misses and a learned descriptor still finds."""
    import skimage.data

    (path,) = Path(skimage.data.__file__).parent.glob(f"{name}.*")
    img = Image.open(path).convert("RGB")
    img.thumbnail((256, 256))
    if variant == "crop_rot":
        w, h = img.size
        img = img.crop((int(w * .15), int(h * .15), int(w * .9), int(h * .9))).rotate(8)
    buf = io.BytesIO()
    img.save(buf, "PNG" if not variant else "JPEG", **({"quality": 90} if variant else {}))
    return buf.getvalue()


def matched(result) -> list[str]:
    return sorted(v.label for v in result.verdicts if v.matched)


def shadow_metric(port: int, outcome: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r'dedup_shadow_lookups_total\{outcome="%s",space="%s"\} (\S+)'
                  % (outcome, re.escape(NEW)), text)
    return float(m.group(1)) if m else 0.0


class Interleaved(ServiceTarget):
    """The service target, with an analyst's writes landing while the run is between windows:
    before the second window is written one of its seeds is removed, another seed (not read
    yet) is removed, and new seeds are added."""

    def __init__(self, server, on_second_write):
        super().__init__(server.target, TOKENS["admin"], server.data_dir)
        self.calls = 0
        self.on_second_write = on_second_write

    def write(self, space, model_id, ids, vectors, progress) -> int:
        self.calls += 1
        if self.calls == 2:
            self.on_second_write(list(ids))
        return super().write(space, model_id, ids, vectors, progress)


def test_reembed_shadow_promote_rollback_retire_on_a_live_service(server_factory,
                                                                   tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("shadow") / "data"
    server = server_factory("shadow", CONFIG, data_dir=data_dir)
    query = photo("chelsea", "crop_rot")
    with server.client("analyst", timeout=120) as analyst, \
            server.client("admin", timeout=600) as admin:
        ids = {}
        for name in BANK:
            (r,) = analyst.add_seeds([Item(image=photo(name))], [SCAM])
            ids[name] = r.seed_id
        before = analyst.lookup(image=query)
        assert matched(before) == [], "pdq should miss a cropped, rotated copy"

        # an analyst may not change the model
        with pytest.raises(PermissionDenied):
            analyst.promote_space(NEW)

        # -------- re-embed through the service while seeds are added and removed
        removed: list[int] = []

        def writes(window_ids: list[int]) -> None:
            removed.extend(analyst.remove_seeds([window_ids[-1], ids["motorcycle_left"]]))
            for name in ADDED:
                (r,) = analyst.add_seeds([Item(image=photo(name))], [SCAM])
                ids[name] = r.seed_id

        target = Interleaved(server, writes)
        source = SeedStore(data_dir / "store", readonly=True)
        try:
            report = reembed_store(source, target, runner_factory("local"),
                                   SpaceConfig(model=NEW, threshold=0.682, replaces="pdq"),
                                   window=2, reason="try a learned descriptor",
                                   progress_bar=False)
            target.finish(report, {}, 0.9)
        finally:
            source.close()
            target.close()
        assert len(removed) == 2
        assert report.skipped == 1  # read before its removal, written after: no vector kept
        active = {n: i for n, i in ids.items() if i not in removed}
        stats = admin.stats()
        assert stats["spaces"][NEW]["role"] == "shadow"
        assert stats["spaces"][NEW]["ntotal"] == stats["spaces"]["pdq"]["ntotal"] == len(active)

        # -------- shadow: counted, never in a verdict
        shadowed = analyst.lookup(image=query)
        assert matched(shadowed) == matched(before) == []
        assert shadowed.spaces == ("pdq",)
        assert {n.space for n in shadowed.neighbors} <= {"pdq"}
        assert shadow_metric(server.metrics_port, "shadow_only") >= 1
        outcomes = admin.stats()["spaces"][NEW]["shadow_outcomes"]
        assert outcomes["shadow_only"] >= 1 and admin.stats()["spaces"][NEW]["shadow_new_seeds"] >= 1

        # -------- promote: the new space decides, with every acknowledged seed and no removed one
        assert admin.promote_space(NEW, reason="better recall on crops") == "pdq"
        promoted = analyst.lookup(image=query)
        assert matched(promoted) == ["spam.scam"]
        assert promoted.spaces == (NEW,)
        evidence = {n.seed_id for v in promoted.verdicts for n in v.evidence}
        assert ids["chelsea"] in evidence
        for name, sid in active.items():
            res = analyst.lookup(image=photo(name, "crop_rot"), top_k=20)
            assert sid in {n.seed_id for n in res.neighbors if n.space == NEW}, name
        for sid in removed:
            name = next(n for n, i in ids.items() if i == sid)
            res = analyst.lookup(image=photo(name))
            assert res.exact_match is None
            assert sid not in {n.seed_id for n in res.neighbors}
            assert sid not in {n.seed_id for v in res.verdicts for n in v.evidence}

        # -------- roll back: pdq decides again
        assert admin.rollback_space(reason="false matches on screenshots") == "pdq"
        rolled = analyst.lookup(image=query)
        assert matched(rolled) == [] and rolled.spaces == ("pdq",)
        with pytest.raises(InvalidArgument):
            admin.retire_space("pdq")  # live: must be replaced first

        # -------- promote again, retire pdq; audited with actor and reason
        admin.promote_space(NEW)
        admin.retire_space("pdq", reason="effnet proven")
        ops, _ = analyst.list_ops(OpFilter(kinds=(OpKind.SHADOW, OpKind.PROMOTE,
                                                  OpKind.ROLLBACK, OpKind.RETIRE)))
        kinds = [(op.kind, op.space, op.replaces) for op in reversed(ops)]
        assert kinds == [(OpKind.SHADOW, NEW, "pdq"), (OpKind.PROMOTE, NEW, "pdq"),
                         (OpKind.ROLLBACK, "pdq", NEW), (OpKind.PROMOTE, NEW, "pdq"),
                         (OpKind.RETIRE, "pdq", "")]
        assert all(op.actor.startswith("admin") for op in ops)
        assert ops[0].reason == "effnet proven"

    # -------- a restart keeps the change (the config still lists pdq: it stays retired)
    assert server.terminate() == 0
    again = server_factory("shadow", CONFIG, data_dir=data_dir)
    with again.client("reader", timeout=120) as reader:
        stats = reader.stats()
        assert set(stats["spaces"]) == {NEW} and stats["spaces"][NEW]["role"] == "live"
        assert stats["spaces"][NEW]["ntotal"] == len(active)
        assert matched(reader.lookup(image=query)) == ["spam.scam"]
