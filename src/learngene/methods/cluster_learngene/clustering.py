"""Measuring the ancestry (mean attention distance per head, FFN behaviour) and clustering it.

Mean attention distance (the paper's Sec. 3.1, after Dosovitskiy et al.'s Fig. 7): for head
h, query patch i attends to key patch j with weight a_ij; its distance is
sum_j a_ij * ||pos_i - pos_j|| in pixels (patch size x grid distance), averaged over the
query patches and over the sample of images. Class-token rows and columns are removed and
the rest is not renormalised, exactly as the reference (``compute_mean_attention_dist``):
attention a patch pays to the class token counts as distance 0.

Heads of one layer are clustered by DBSCAN on these 1-D distances; each cluster is
represented by the head nearest its centroid (the mean distance of its members; ties: the
lower head index), and the clusters are ordered by size, largest first (ties: DBSCAN's
label order), which is the priority of weight sharing. Heads DBSCAN marks as noise
(possible with min_samples > 1) are dropped, as in the reference.

FFN behaviour: each layer's FFN is applied to the tokens every layer actually feeds its FFN
(the output of norm2) on the sample; similarity(a, b) is the cosine similarity of the two
FFNs' outputs on the same tokens, averaged over the two layers' token sets. Adjacent layers
are grouped, a layer joining the group above it when its similarity to every member reaches
the threshold (complete linkage along depth); each group keeps the FFN of its medoid, the
member most similar on average to the others (ties: the earlier layer).
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...stack import VitStack


# -- mean attention distance -------------------------------------------------------------------------
def patch_distances(grid: tuple[int, int], patch_size: tuple[int, int]) -> Tensor:
    """[N, N] pixel distances between the N = gh * gw patches (row-major, as the tokens are laid out)."""
    gh, gw = grid
    rows = torch.arange(gh, dtype=torch.float64).repeat_interleave(gw) * patch_size[0]  # [N]
    cols = torch.arange(gw, dtype=torch.float64).repeat(gh) * patch_size[1]              # [N]
    return torch.sqrt((rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2)


def mean_attention_distance(attn: Tensor, grid: tuple[int, int], patch_size: tuple[int, int],
                            num_prefix_tokens: int) -> Tensor:
    """Per image and head, the mean attention distance in pixels.

    attn: [B, H, T, T] attention weights (rows sum to 1) with T = prefix + gh * gw tokens.
    Returns [B, H] (float64). Prefix (class) tokens are removed from both axes, not renormalised.
    """
    patches = attn[..., num_prefix_tokens:, num_prefix_tokens:].double()  # [B, H, N, N]
    if patches.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"attention over {patches.shape[-1]} patch tokens does not fit a {grid} grid")
    per_query = (patches * patch_distances(grid, patch_size).to(patches.device)).sum(-1)  # [B, H, N]
    return per_query.mean(-1)


def attention_maps(block: dict[str, Tensor], x: Tensor) -> Tensor:
    """[B, H, T, T] softmax(q k^T / sqrt(hd)) of one canonical block on its attention input x [B, T, D]."""
    q = torch.einsum("btd,hed->bhte", x, block["q.weight"])  # [B, H, T, hd]
    k = torch.einsum("btd,hed->bhte", x, block["k.weight"])
    if "q.bias" in block:
        q = q + block["q.bias"][None, :, None, :]
        k = k + block["k.bias"][None, :, None, :]
    scale = q.shape[-1] ** -0.5
    return (q @ k.transpose(-1, -2) * scale).softmax(-1)


class _Inputs:
    """Forward hooks that record what every block feeds its attention (norm1's output) and
    its FFN (norm2's output), as timm's Block computes them."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.attn: dict[int, Tensor] = {}
        self.ffn: dict[int, Tensor] = {}

    def __enter__(self) -> "_Inputs":
        self._hooks = ExitStack()
        for i, block in enumerate(self.model.blocks):
            for name, store in (("norm1", self.attn), ("norm2", self.ffn)):
                handle = getattr(block, name).register_forward_hook(
                    lambda _m, _inp, out, i=i, store=store: store.__setitem__(i, out.detach()))
                self._hooks.callback(handle.remove)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.close()


@torch.no_grad()
def measure(model: nn.Module, stack: VitStack, images: Tensor, *, batch_size: int, ffn_tokens: int,
            generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
    """Run ``model`` on ``images``: (distances [L, H] mean over images, FFN inputs per layer).

    The FFN inputs are ``ffn_tokens`` tokens (or all, if fewer) drawn at random per layer
    from the images' norm2 outputs, a share from each batch: [n, D] each.
    """
    arch = stack.arch
    img, patch = arch.img_hw, arch.patch_hw
    grid = (int(img[0]) // int(patch[0]), int(img[1]) // int(patch[1]))
    prefix = int(getattr(model, "num_prefix_tokens", 1 if arch.class_token else 0))
    device = next(model.parameters()).device
    blocks = [{k: v.to(device) for k, v in b.items()} for b in stack.blocks]
    total = torch.zeros(stack.depth, stack.num_heads, dtype=torch.float64)
    ffn_inputs: list[list[Tensor]] = [[] for _ in range(stack.depth)]
    was_training = model.training
    model.eval()
    try:
        with _Inputs(model) as seen:
            for start in range(0, images.shape[0], batch_size):
                model(images[start:start + batch_size].to(device))
                for i, block in enumerate(blocks):
                    attn = attention_maps(block, seen.attn[i].float())
                    total[i] += mean_attention_distance(attn, grid, (int(patch[0]), int(patch[1])), prefix).sum(0).cpu()
                    tokens = seen.ffn[i].reshape(-1, seen.ffn[i].shape[-1])  # [b*T, D]
                    keep = math.ceil(ffn_tokens * seen.ffn[i].shape[0] / images.shape[0])  # this batch's share
                    pick = torch.randperm(tokens.shape[0], generator=generator)[:keep]
                    ffn_inputs[i].append(tokens[pick.to(tokens.device)].cpu())
    finally:
        model.train(was_training)
    return total / images.shape[0], [torch.cat(tokens)[:ffn_tokens] for tokens in ffn_inputs]


# -- clustering heads -----------------------------------------------------------------------------------
def cluster_heads(distances: list[float] | np.ndarray, eps: float, min_samples: int) -> list[list[int]]:
    """DBSCAN on one layer's head distances: clusters in priority order, each a list of
    member heads with the representative (nearest the centroid) first, then ascending."""
    from sklearn.cluster import DBSCAN

    x = np.asarray(distances, dtype=np.float64).reshape(-1, 1)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit(x).labels_
    clusters = []
    for label in np.unique(labels):
        if label == -1:  # noise heads: dropped, as the reference does
            continue
        members = [int(h) for h in np.flatnonzero(labels == label)]
        centroid = x[members, 0].mean()
        representative = min(members, key=lambda h: (abs(x[h, 0] - centroid), h))
        clusters.append((len(members), int(label), [representative] + [h for h in members if h != representative]))
    clusters.sort(key=lambda c: (-c[0], c[1]))  # largest first; ties in DBSCAN's label order (the reference's)
    return [members for _, _, members in clusters]


def random_clusters_like(clusters: list[list[int]], generator: torch.Generator) -> list[list[int]]:
    """The control for the clustering statistic: clusters of the same sizes, in the same
    priority order, over the same heads, with the heads assigned at random (seeded). The first
    member of each, the representative, is then a random head of it."""
    heads = sorted(h for members in clusters for h in members)
    shuffled = [heads[i] for i in torch.randperm(len(heads), generator=generator).tolist()]
    out, start = [], 0
    for members in clusters:
        out.append(shuffled[start:start + len(members)])
        start += len(members)
    return out


# -- clustering FFNs ------------------------------------------------------------------------------------
def ffn_output(block: dict[str, Tensor], x: Tensor) -> Tensor:
    """fc2(GELU(fc1(x))) of one canonical block (timm's Mlp with its default GELU)."""
    hidden = nn.functional.gelu(x @ block["fc1.weight"].T + block["fc1.bias"])
    return hidden @ block["fc2.weight"].T + block["fc2.bias"]


def _cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else float(torch.equal(a, b))


@torch.no_grad()
def ffn_similarity(stack: VitStack, ffn_inputs: list[Tensor], device: torch.device | str = "cpu") -> Tensor:
    """[L, L] symmetric: cosine similarity of FFN a's and FFN b's outputs on the same tokens,
    averaged over layer a's and layer b's token sets (the diagonal is 1). Runs on ``device``."""
    depth = stack.depth
    ffns = [{k: b[k].to(device) for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")} for b in stack.blocks]
    cross = torch.zeros(depth, depth, dtype=torch.float64)  # [t, f]: FFN t vs FFN f on layer t's tokens
    for t in range(depth):
        tokens = ffn_inputs[t].to(ffns[t]["fc1.weight"])
        own = ffn_output(ffns[t], tokens)  # [n, D]
        for f in range(depth):
            cross[t, f] = 1.0 if f == t else _cosine(own, ffn_output(ffns[f], tokens))
    sim = 0.5 * (cross + cross.T)
    return sim


def group_ffns(similarity: Tensor, threshold: float) -> tuple[list[list[int]], list[int]]:
    """(groups of adjacent layers, the kept layer of each).

    Walking down the layers, layer l joins the current group when its FFN's similarity to
    every member's is >= threshold (complete linkage, so a group never drifts along a chain
    of gradually changing layers); otherwise it starts a new group. Each group keeps its
    medoid: the member with the highest summed similarity to the group (ties: the earlier).
    """
    depth = similarity.shape[0]
    groups = [[0]]
    for layer in range(1, depth):
        if all(float(similarity[member, layer]) >= threshold for member in groups[-1]):
            groups[-1].append(layer)
        else:
            groups.append([layer])
    kept = [max(g, key=lambda l: (float(similarity[l, g].sum()), -l)) for g in groups]
    return groups, kept
