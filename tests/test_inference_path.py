"""The fast inference path (BatchNorm folded into the convolutions) computes the same function
as the trained network, within float tolerance, for both Lite0 spaces: vectors stay comparable
with every vector already stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dedup.embed import copydet, effnet
from dedup.embed.base import l2_normalize


@pytest.fixture(scope="module")
def lite0():
    return effnet.load_network()


@pytest.fixture(scope="module")
def photos(skimage_images):
    return [skimage_images[n] for n in ("astronaut", "chelsea", "coffee", "rocket", "page")]


@pytest.mark.parametrize("size", [(224, 224), (160, 288), (225, 199)])
def test_folded_network_equals_the_network_on_real_images(lite0, photos, size):
    # (225, 199): odd sizes take the asymmetric TF-SAME padding path in every stride-2 layer
    h, w = size
    arr = np.stack([np.asarray(p.resize((w, h))) for p in photos])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = lite0.features(x)
        got = effnet.fold(lite0).features(x)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_folding_keeps_the_trained_network_untouched(lite0):
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    effnet.fold(lite0)
    assert all(torch.equal(before[k], v) for k, v in lite0.state_dict().items())


def test_effnet_embeddings_equal_the_unfolded_recipe(photos):
    emb = effnet.EffnetLite0Embedder(device="cpu")
    got = emb.embed_images(photos)
    with torch.inference_mode():
        x = effnet.preprocess(photos).contiguous(memory_format=torch.channels_last)
        f0 = effnet.pool(emb.net.features(x))
        f1 = effnet.pool(emb.net.features(x.flip(3).contiguous(memory_format=torch.channels_last)))
    want = l2_normalize((0.5 * (f0 + f1)).numpy())
    assert np.abs(got - want).max() < 1e-5
    assert (got * want).sum(1).min() > 1 - 1e-6


def test_copydet_vectors_and_regions_equal_the_trained_network(photos):
    emb = copydet.CopyDetEmbedder(device="cpu")
    got, regions = emb.embed_images(photos), emb.embed_regions(photos)
    with torch.inference_mode():
        x = copydet.preprocess(photos).contiguous(memory_format=torch.channels_last)
        fmap = emb.net.top(emb.net.trunk(x))
        want = emb.net.describe(fmap).numpy()
        want_regions = emb.net.describe_regions(fmap).numpy()
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(regions - want_regions).max() < 1e-5
    assert np.abs(regions[:, 0] - got).max() < 1e-5
