"""A small demo seed bank from real images that ship in scikit-image, with demo labels.

It exists so that `dedup serve` with no config answers a real Lookup seconds after the models
load. The labels are made up for the demo; nothing here is real violating content.
"""

from __future__ import annotations

from pathlib import Path

from dedup.types import Item, Label

# (file in skimage/data, labels): photographs a newcomer can re-post and see matched.
DEMO_IMAGES = (
    ("astronaut.png", (Label("demo.impersonation", 3),)),
    ("chelsea.png", (Label("demo.animal_cruelty", 4),)),
    ("coffee.png", (Label("demo.spam", 1),)),
    ("rocket.jpg", (Label("demo.terror_propaganda", 5),)),
    ("motorcycle_left.png", (Label("demo.stolen_goods", 2), Label("demo.spam", 1))),
)

DEMO_TEXTS = (
    ("Congratulations! You won a $1000 gift card. Claim now at bit.ly/claim-prize",
     (Label("demo.scam", 3),)),
    ("Send 0.1 BTC to this wallet and receive 1 BTC back within 24 hours, guaranteed",
     (Label("demo.scam", 4),)),
    ("Buy followers cheap!!! 10k followers for $5, DM now", (Label("demo.spam", 1),)),
)


def demo_items() -> list[tuple[Item, tuple[Label, ...]]]:
    """The demo bank's items with their labels, read from the installed scikit-image."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    out = [(Item(image=(root / name).read_bytes()), labels) for name, labels in DEMO_IMAGES]
    out += [(Item(text=text), labels) for text, labels in DEMO_TEXTS]
    return out


def seed_demo_bank(engine) -> int:
    """Add the demo seeds when the store is empty; returns how many were added."""
    if engine.store.stats()["seeds_active"] or engine.store.last_seq > 0:
        return 0
    added = 0
    for item, labels in demo_items():
        if not any(s.accepts(_modalities(item)) for s in engine.spaces.values()):
            continue
        (result,) = engine.add_seeds([item], labels, source="demo", note="demo seed bank",
                                     actor="demo")
        added += int(isinstance(result, tuple) and result[1])
    return added


def _modalities(item: Item) -> list[str]:
    return [m for m, v in (("image", item.image), ("text", item.text)) if v is not None]
