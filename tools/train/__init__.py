"""``dedup-train``: the copy-detection descriptor (space ``image:copydet-lite0``), its data and training."""
