"""The README's main job: `dedup serve` with no config serves the demo bank on loopback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from dedup.errors import Unauthenticated
from dedup.types import Item, Label

pytestmark = pytest.mark.slow


def test_demo_serves_lookups_without_a_token_but_refuses_anonymous_writes(server_factory):
    import skimage.data

    server = server_factory("demo")  # no --config: the demo
    assert server.target.startswith("127.0.0.1:")
    rocket = Image.open(Path(skimage.data.__file__).parent / "rocket.jpg").convert("RGB")
    buf = io.BytesIO()
    rocket.resize((rocket.width // 2, rocket.height // 2)).save(buf, "JPEG", quality=75)
    with server.client(role=None) as anonymous:
        result = anonymous.lookup(image=buf.getvalue())
        assert {v.label for v in result.verdicts if v.matched} == {"demo.terror_propaganda"}
        assert anonymous.stats()["seeds_active"] >= 5
        with pytest.raises(Unauthenticated):
            anonymous.add_seeds([Item(text="anonymous write")], [Label("demo.spam", 1)])
        # the bank's seeds (texts, notes, sources) are not for anonymous eyes
        seed_id = result.verdicts[0].evidence[0].seed_id
        with pytest.raises(Unauthenticated):
            anonymous.get_seed(seed_id)
        with pytest.raises(Unauthenticated):
            anonymous.list_seeds()
