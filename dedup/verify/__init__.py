"""Verification of close calls: the cascade stage after the shortlist.

A candidate whose score lands in its space's uncertain band is checked against the seed's own
content (local features + RANSAC for images, exact shingle containment for texts) and gets a
fused score; unrelated items, most of the traffic, never reach this stage.
"""
