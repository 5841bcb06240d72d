"""Adapter: timm ``VisionTransformer`` <-> ``VitStack``, exact in both directions.

Key names live in the tables below; the only reshapes are the fused ``attn.qkv`` (split
into per-head q, k, v) and ``attn.proj`` (its input split per head). Both are views, so
the round trip is bitwise.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from ..arch import ViTArch, arch_of
from .canonical import VitStack

# canonical name -> timm key (``{i}`` is the block index). Tensors that need a reshape
# (q/k/v from the fused qkv, and proj.weight) are handled by _split/_fuse below.
TIMM_STEM = {
    "patch.weight": "patch_embed.proj.weight",
    "patch.bias": "patch_embed.proj.bias",
    "pos_embed": "pos_embed",
    "cls_token": "cls_token",
    "norm_pre.weight": "norm_pre.weight",  # only with pre_norm=True (CLIP-style ViTs; timm then drops patch.bias)
    "norm_pre.bias": "norm_pre.bias",
}
TIMM_BLOCK = {
    "norm1.weight": "blocks.{i}.norm1.weight",
    "norm1.bias": "blocks.{i}.norm1.bias",
    "proj.bias": "blocks.{i}.attn.proj.bias",
    "norm2.weight": "blocks.{i}.norm2.weight",
    "norm2.bias": "blocks.{i}.norm2.bias",
    "fc1.weight": "blocks.{i}.mlp.fc1.weight",
    "fc1.bias": "blocks.{i}.mlp.fc1.bias",
    "fc2.weight": "blocks.{i}.mlp.fc2.weight",
    "fc2.bias": "blocks.{i}.mlp.fc2.bias",
    "ls1.gamma": "blocks.{i}.ls1.gamma",
    "ls2.gamma": "blocks.{i}.ls2.gamma",
}
TIMM_QKV_WEIGHT = "blocks.{i}.attn.qkv.weight"  # [3*D, D], rows ordered [q; k; v], heads contiguous
TIMM_QKV_BIAS = "blocks.{i}.attn.qkv.bias"      # [3*D]
TIMM_PROJ_WEIGHT = "blocks.{i}.attn.proj.weight"  # [D, D], columns grouped by head
# The final norm is `fc_norm` when the model pools by averaging, else `norm` (timm's rule).
TIMM_HEAD = {
    False: {"norm.weight": "norm.weight", "norm.bias": "norm.bias", "head.weight": "head.weight", "head.bias": "head.bias"},
    True: {"norm.weight": "fc_norm.weight", "norm.bias": "fc_norm.bias", "head.weight": "head.weight", "head.bias": "head.bias"},
}


def _head_table(arch: ViTArch) -> dict[str, str]:
    return TIMM_HEAD[arch.uses_fc_norm]


def state_dict_to_stack(state: dict[str, torch.Tensor], arch: ViTArch) -> VitStack:
    """Split a timm ViT state dict into the canonical stack (views, no copies)."""
    D, H, hd = arch.embed_dim, arch.num_heads, arch.head_dim
    stem = {c: state[t] for c, t in TIMM_STEM.items() if t in state}
    blocks = []
    for i in range(arch.depth):
        block = {c: state[t.format(i=i)] for c, t in TIMM_BLOCK.items() if t.format(i=i) in state}
        qkv_w = state[TIMM_QKV_WEIGHT.format(i=i)].view(3, H, hd, D)  # [3*D, D] -> [3, H, hd, D]
        block["q.weight"], block["k.weight"], block["v.weight"] = qkv_w.unbind(0)
        if TIMM_QKV_BIAS.format(i=i) in state:
            qkv_b = state[TIMM_QKV_BIAS.format(i=i)].view(3, H, hd)
            block["q.bias"], block["k.bias"], block["v.bias"] = qkv_b.unbind(0)
        block["proj.weight"] = state[TIMM_PROJ_WEIGHT.format(i=i)].view(D, H, hd)  # [D, D] -> [D, H, hd]
        blocks.append(block)
    head = {c: state[t] for c, t in _head_table(arch).items() if t in state}
    return VitStack(arch=arch, stem=stem, blocks=blocks, head=head)


def _block_state(block: dict[str, torch.Tensor], i: int, D: int) -> dict[str, torch.Tensor]:
    """One canonical block as timm keys of block ``i`` (q/k/v fused into new tensors)."""
    state = {TIMM_BLOCK[c].format(i=i): t for c, t in block.items() if c in TIMM_BLOCK}
    # [H, hd, D] x3 -> [3*D, D]: rows [q; k; v], heads contiguous (timm's order).
    state[TIMM_QKV_WEIGHT.format(i=i)] = torch.stack([block["q.weight"], block["k.weight"], block["v.weight"]]).reshape(3 * D, D)
    if "q.bias" in block:
        state[TIMM_QKV_BIAS.format(i=i)] = torch.stack([block["q.bias"], block["k.bias"], block["v.bias"]]).reshape(3 * D)
    state[TIMM_PROJ_WEIGHT.format(i=i)] = block["proj.weight"].reshape(D, D)
    return state


def stack_to_state_dict(stack: VitStack) -> dict[str, torch.Tensor]:
    """Fuse the canonical stack back into a timm ViT state dict."""
    state: dict[str, torch.Tensor] = {TIMM_STEM[c]: t for c, t in stack.stem.items()}
    for i, block in enumerate(stack.blocks):
        state.update(_block_state(block, i, stack.embed_dim))
    table = _head_table(stack.arch)
    state.update({table[c]: t for c, t in stack.head.items()})
    return state


def to_stack(model: VisionTransformer) -> VitStack:
    """View a timm ViT as a canonical stack. Tensors alias the model's parameters."""
    arch = arch_of(model)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return state_dict_to_stack(state, arch)
