"""Adapter: timm ``VisionTransformer`` <-> ``VitStack``, exact in both directions.

Key names live in the tables below; the only reshapes are the fused ``attn.qkv`` (split
into per-head q, k, v) and ``attn.proj`` (its input split per head). Both are views, so
the round trip is bitwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from timm.layers import LayerScale
from timm.models.vision_transformer import VisionTransformer

from ..errors import ConfigError
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


def vit_arch(model: VisionTransformer) -> dict[str, Any]:
    """Read the VisionTransformer kwargs that rebuild ``model``; refuse features we don't map."""
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"expected a timm VisionTransformer, got {type(model).__name__}")
    unsupported = {
        "register tokens": getattr(model, "num_reg_tokens", 0) > 0,
        "attention-pool head": getattr(model, "attn_pool", None) is not None,
        "dynamic image size": getattr(model, "dynamic_img_size", False),
    }
    if len(model.blocks):
        attn = model.blocks[0].attn
        unsupported["qk-norm"] = not isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity)
        unsupported["attention scale-norm"] = not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity)
        unsupported["MLP scale-norm"] = not isinstance(getattr(model.blocks[0].mlp, "norm", nn.Identity()), nn.Identity)
        unsupported["attention without proj bias"] = attn.proj.bias is None
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ConfigError(f"this ViT uses {', '.join(found)}, which the canonical stack does not map yet")
    patch = model.patch_embed
    block0 = model.blocks[0] if len(model.blocks) else None
    embed_dim = model.embed_dim
    has_fc_norm = not isinstance(model.fc_norm, nn.Identity)
    has_norm = not isinstance(model.norm, nn.Identity)
    arch = dict(
        img_size=int(patch.img_size[0]) if patch.img_size[0] == patch.img_size[1] else tuple(patch.img_size),
        patch_size=int(patch.patch_size[0]) if patch.patch_size[0] == patch.patch_size[1] else tuple(patch.patch_size),
        in_chans=int(patch.proj.in_channels),
        num_classes=int(model.num_classes),
        global_pool=model.global_pool,
        embed_dim=int(embed_dim),
        depth=len(model.blocks),
        num_heads=int(block0.attn.num_heads) if block0 is not None else 1,
        mlp_ratio=(block0.mlp.fc1.out_features / embed_dim) if block0 is not None else 4.0,
        qkv_bias=(block0.attn.qkv.bias is not None) if block0 is not None else True,
        init_values=float(block0.ls1.init_values) if block0 is not None and isinstance(block0.ls1, LayerScale) else None,
        class_token=model.cls_token is not None,
        no_embed_class=bool(model.no_embed_class),
        fc_norm=has_fc_norm,
        final_norm=has_fc_norm or has_norm,
    )
    if not isinstance(model.norm_pre, nn.Identity):  # only when set, so plain ViTs keep their arch dicts (cache keys)
        arch["pre_norm"] = True
    return arch


def _head_table(arch: dict[str, Any]) -> dict[str, str]:
    return TIMM_HEAD[bool(arch.get("fc_norm"))]


def state_dict_to_stack(state: dict[str, torch.Tensor], arch: dict[str, Any]) -> VitStack:
    """Split a timm ViT state dict into the canonical stack (views, no copies)."""
    D, H = int(arch["embed_dim"]), int(arch["num_heads"])
    hd = D // H
    stem = {c: state[t] for c, t in TIMM_STEM.items() if t in state}
    blocks = []
    for i in range(int(arch["depth"])):
        block = {c: state[t.format(i=i)] for c, t in TIMM_BLOCK.items() if t.format(i=i) in state}
        qkv_w = state[TIMM_QKV_WEIGHT.format(i=i)].view(3, H, hd, D)  # [3*D, D] -> [3, H, hd, D]
        block["q.weight"], block["k.weight"], block["v.weight"] = qkv_w.unbind(0)
        if TIMM_QKV_BIAS.format(i=i) in state:
            qkv_b = state[TIMM_QKV_BIAS.format(i=i)].view(3, H, hd)
            block["q.bias"], block["k.bias"], block["v.bias"] = qkv_b.unbind(0)
        block["proj.weight"] = state[TIMM_PROJ_WEIGHT.format(i=i)].view(D, H, hd)  # [D, D] -> [D, H, hd]
        blocks.append(block)
    head = {c: state[t] for c, t in _head_table(arch).items() if t in state}
    return VitStack(arch=dict(arch), stem=stem, blocks=blocks, head=head)


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
    arch = vit_arch(model)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return state_dict_to_stack(state, arch)


def _storage_ptrs(tensors) -> set[int]:
    """Storage addresses of real tensors (meta placeholders have none)."""
    return {t.untyped_storage().data_ptr() for t in tensors if t.device.type != "meta"}


def _stack_tensors(stack: VitStack):
    return [t for part in (stack.stem, stack.head, *stack.blocks) for t in part.values()]


def _owns_its_storage(t: torch.Tensor) -> bool:
    """True when ``t`` spans its whole storage (not a view into a larger tensor)."""
    return (t.is_contiguous() and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())


def from_stack(stack: VitStack, *, requires_grad: bool = True, consume: bool = False,
               protect: Iterable[torch.Tensor] = ()) -> VisionTransformer:
    """Build a timm VisionTransformer holding exactly the stack's tensors.

    Meta placeholders left in the stack (see ``blank_stack``) are initialised first, with
    timm's distributions (``materialize``). The module is created on the meta device
    (without timm's init) and the tensors assigned, so no random initialisation is spent on
    weights that are overwritten at once.

    Copies, two modes:

    - default: the caller keeps its stack (placeholders stay placeholders); every tensor it
      holds is cloned into the model, tensors made here (fused q/k/v, fresh ones) are used
      as they are. Peak memory: the caller's tensors + the model.
    - ``consume=True``: the caller gives its stack away (a method that computed the
      descendant's tensors and has no further use for them). Tensors that own their whole
      storage go into the model as they are; views into larger tensors, and tensors sharing
      storage with anything in ``protect`` (the learngene's tensors, an ancestry) or with an
      earlier weight, are cloned. The stack is emptied block by block as q/k/v are fused,
      so peak memory is about one model (issue 11: nothing held twice).
    """
    from .init import materialize

    try:
        stack.validate()
    except ValueError as e:
        raise ConfigError(f"invalid stack: {e}") from None
    if consume:
        kept_apart = _storage_ptrs(protect)
        owner = stack
    else:
        kept_apart = _storage_ptrs(_stack_tensors(stack))
        owner = VitStack(dict(stack.arch), dict(stack.stem), [dict(b) for b in stack.blocks], dict(stack.head),
                         stack.init_seed)
    try:
        materialize(owner)  # only the placeholders (on the copy of the dicts unless consuming)
    except ValueError as e:
        raise ConfigError(f"invalid stack: {e}") from None

    used: set[int] = set()

    def own(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        ptr = t.untyped_storage().data_ptr()
        if ptr in kept_apart or ptr in used or (consume and not _owns_its_storage(t)):
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        used.add(ptr)
        return t

    table = _head_table(owner.arch)
    state = {TIMM_STEM[c]: own(t) for c, t in owner.stem.items()}
    for i, block in enumerate(owner.blocks):
        state.update({k: own(v) for k, v in _block_state(block, i, owner.embed_dim).items()})
        if consume:
            block.clear()  # the separate q/k/v are dropped as soon as they are fused
    state.update({table[c]: own(t) for c, t in owner.head.items()})
    if consume:
        owner.stem.clear()
        owner.head.clear()

    init_mode = stack.arch.get("weight_init", "")
    model = VisionTransformer(**{**stack.arch, "weight_init": "skip"}, device="meta")
    if hasattr(model, "weight_init_mode"):  # what a later model.init_weights() uses: as if built with arch
        model.weight_init_mode = "reset" if init_mode == "skip" else init_mode
    own_state = model.state_dict()
    missing = sorted(set(own_state) - set(state))
    unexpected = sorted(set(state) - set(own_state))
    if missing or unexpected:
        raise ConfigError(f"stack does not match its arch: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for k, v in state.items():  # the stem and head too (validate() checks the blocks)
        if tuple(v.shape) != tuple(own_state[k].shape):
            raise ConfigError(f"stack does not match its arch: {k} has shape {tuple(v.shape)}, the architecture "
                              f"needs {tuple(own_state[k].shape)}")
        if not v.is_floating_point():
            raise ConfigError(f"stack tensor {k} has dtype {v.dtype}; weights must be floating point")
    model.load_state_dict(state, strict=True, assign=True)
    for p in model.parameters():
        p.requires_grad_(requires_grad)
    return model
