"""Baseline for the MM-LG benchmark: TLEG (Xia et al., AAAI 2024) applied to each CLIP tower.

Per tower a base theta_A and a slope theta_B (``tleg.{tower}.A.<key>``, ``tleg.{tower}.B.<key>``);
block l of a depth-L tower is theta_A + (l / L) theta_B (TLEG's rule, ``methods._linear_expand``);
stems, heads and logit scale kept as in MM-LG. Condensed with MM-LG's auxiliary-CLIP training
(same loss, data and budget), so the two differ only in the block rule.
Departure (ours): theta_A/theta_B start from the least-squares line through the ancestry's
blocks (the reference starts from random and needs ~100 distillation epochs; at CPU scale
both learngenes start from the ancestry so the comparison is about the rule, not the budget).
"""

from __future__ import annotations

from typing import Any

import torch

from ...clip.model import load_clip_ancestry
from ...clip.open_clip_adapter import stack_to_open_clip
from ...clip.stack import TOWERS, ClipStack
from ...registry import config_to_dict
from .._common import pack, unpack
from .._linear_expand import linear_expand
from .condense import CondensedClip, build_stack, condense, shell_tensors
from .config import MmlgConfig
from .method import clip_arch_of, make_learngene

Tensors = dict[str, torch.Tensor]


def tleg_tower_blocks(tensors: Tensors, tower: str, depth: int) -> list[Tensors]:
    return linear_expand(unpack(f"tleg.{tower}.A", tensors), unpack(f"tleg.{tower}.B", tensors), depth)


def init_tensors(stack: ClipStack) -> Tensors:
    """Least squares per tensor: theta_A + (l/L) theta_B ~ block l of the ancestry tower."""
    tensors = shell_tensors(stack)
    for tower in TOWERS:
        blocks = stack.tower(tower).blocks
        L = len(blocks)
        x = torch.arange(L, dtype=torch.float64) / L  # [L]
        design = torch.stack([torch.ones_like(x), x], 1)  # [L, 2]
        solve = torch.linalg.pinv(design)  # [2, L]
        A, B = {}, {}
        for key in blocks[0]:
            y = torch.stack([b[key].double().flatten() for b in blocks])  # [L, n]
            coef = solve @ y  # [2, n]
            A[key] = coef[0].view_as(blocks[0][key]).float()
            B[key] = coef[1].view_as(blocks[0][key]).float()
        tensors.update(pack(f"tleg.{tower}.A", A))
        tensors.update(pack(f"tleg.{tower}.B", B))
    return tensors


def extract_tleg_towers(ancestry: Any, config: MmlgConfig, pairs):
    stack, _ = load_clip_ancestry(ancestry)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        aux = CondensedClip(stack.arch, init_tensors(stack), tleg_tower_blocks)
        cost = condense(aux, stack_to_open_clip(stack), pairs, config)
    learned = {k: v.detach().cpu().contiguous() for k, v in aux.learngene_tensors().items()}
    return make_learngene("tleg-towers", config_to_dict(config), learned, stack, cost, len(pairs.images))


def expand_tleg_towers(gene, *, image_layers: int, text_layers: int) -> ClipStack:
    arch = clip_arch_of(gene)
    arch["image"]["layers"], arch["text"]["layers"] = image_layers, text_layers
    return build_stack(gene.tensors, tleg_tower_blocks, arch).clone()
