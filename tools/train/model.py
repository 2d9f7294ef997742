"""The network in training: ImageNet initialisation, frozen trunk, losses, weights export."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dedup.embed.copydet import GEM_P, CopyDetNet, region_slices


def from_imagenet(dim: int = 512, split: int = 11, seed: int = 0) -> CopyDetNet:
    """A CopyDetNet with the packaged ImageNet Lite0 weights and an orthogonal projection.

    An orthogonal projection keeps cosine similarities of the pooled features close to what
    they were (Johnson-Lindenstrauss), so training starts from the ImageNet descriptor.
    """
    from dedup.embed.effnet import weights_path

    net = CopyDetNet(dim=dim, split=split)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    net.net.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(seed)
    w = torch.empty(dim, net.proj.in_features)
    nn.init.orthogonal_(w, generator=g)
    net.proj.weight.data.copy_(w)
    return net


def trainable_modules(net: CopyDetNet, train_from: int | None = None) -> list[nn.Module]:
    """What training changes: the blocks from ``train_from`` (default: the split) on, the head
    and the projection; ``train_from`` past the last block (17) leaves only the projection."""
    start = net.split if train_from is None else train_from
    n = len(net.net._blocks)
    mods: list[nn.Module] = list(net.net._blocks[start:]) if start <= n else []
    if start <= n:
        mods += [net.net._conv_head, net.net._bn1]
    return mods + [net.proj]


def freeze_trunk(net: CopyDetNet, train_from: int | None = None) -> list[nn.Parameter]:
    """Stop gradients into everything but ``trainable_modules``; returns their parameters."""
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for m in trainable_modules(net, train_from) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def set_train_mode(net: CopyDetNet, train_from: int | None = None) -> None:
    """Trained part in train mode (batch-norm statistics adapt), the frozen rest in eval mode."""
    net.eval()
    for m in trainable_modules(net, train_from):
        m.train()


def info_nce(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR/SSCD InfoNCE over all views: each view's positives are the other views of its
    picture, every other view in the batch is a negative."""
    sim = z @ z.t() / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    pos = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -(log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp(min=1)).mean()


def koleo(z: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo entropy estimate (Sablayrolles et al.), as SSCD: minus the mean log distance of each
    view to its nearest neighbour among the other pictures' views."""
    with torch.no_grad():
        sim = z @ z.t()
        same = labels[:, None] == labels[None, :]
        nn_idx = sim.masked_fill(same, float("-inf")).argmax(1)
    dist = (z - z[nn_idx]).norm(dim=1)
    return -torch.log(dist + eps).mean()


def describe_boxes(net: CopyDetNet, fmap: torch.Tensor, boxes: list | None) -> torch.Tensor:
    """(n, dim) descriptors; where a box is given, pooled over the feature cells covering it
    (the source picture's panel in a collage), else over the whole map."""
    if boxes is None or all(b is None for b in boxes):
        return net.describe(fmap)
    powered = fmap.float().clamp(min=1e-6).pow(GEM_P)
    rows = []
    for i, b in enumerate(boxes):
        r, c = region_slices(fmap.shape[2], fmap.shape[3], [b or (0.0, 0.0, 1.0, 1.0)])[0]
        rows.append(powered[i, :, r, c].mean((1, 2)))
    return F.normalize(net.proj(torch.stack(rows).pow(1.0 / GEM_P)), dim=-1)


def export_weights(net: CopyDetNet, path: str | Path, meta: dict | None = None) -> Path:
    """Write the shipped weights: fp16 state dict + dim/split (+ a small recipe record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "dim": net.dim, "split": net.split, "meta": meta or {}}, path)
    return path
