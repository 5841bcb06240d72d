"""Adapter: ``open_clip.CLIP`` <-> ``ClipStack``, exact in both directions (key table, no branches).

open_clip's layout (open_clip_torch 3.x, ``open_clip.model.CLIP`` with the default
VisionTransformer / TextTransformer towers): residual blocks under
``[visual.]transformer.resblocks.{i}`` with ``nn.MultiheadAttention`` (fused ``in_proj`` rows
[q; k; v], heads contiguous), ``mlp.c_fc`` / ``mlp.c_proj``; projections stored as ``x @ proj``
([D, E], transposed here). Refused: layer-scale, attentional pooling, custom text towers (HF
text encoders inside open_clip), in_chans other than 3 (open_clip's conv is fixed at 3).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ._tables import Table, clip_stack_to_state_dict, load_exact, state_dict_to_clip_stack
from .stack import ClipStack, clip_arch


def _block_table(prefix: str) -> dict[str, tuple[str, str]]:
    block = f"{prefix}transformer.resblocks.{{i}}."
    return {
        "norm1.weight": (block + "ln_1.weight", "view"), "norm1.bias": (block + "ln_1.bias", "view"),
        "q.weight": (block + "attn.in_proj_weight", "chunk:0"), "k.weight": (block + "attn.in_proj_weight", "chunk:1"),
        "v.weight": (block + "attn.in_proj_weight", "chunk:2"),
        "q.bias": (block + "attn.in_proj_bias", "chunk:0"), "k.bias": (block + "attn.in_proj_bias", "chunk:1"),
        "v.bias": (block + "attn.in_proj_bias", "chunk:2"),
        "proj.weight": (block + "attn.out_proj.weight", "view"), "proj.bias": (block + "attn.out_proj.bias", "view"),
        "norm2.weight": (block + "ln_2.weight", "view"), "norm2.bias": (block + "ln_2.bias", "view"),
        "fc1.weight": (block + "mlp.c_fc.weight", "view"), "fc1.bias": (block + "mlp.c_fc.bias", "view"),
        "fc2.weight": (block + "mlp.c_proj.weight", "view"), "fc2.bias": (block + "mlp.c_proj.bias", "view"),
    }


OPEN_CLIP_TABLE: Table = {
    ("image.stem", "patch.weight"): ("visual.conv1.weight", "view"),
    ("image.stem", "cls_token"): ("visual.class_embedding", "view"),          # [D] <-> [1, 1, D]
    ("image.stem", "pos_embed"): ("visual.positional_embedding", "view"),     # [T, D] <-> [1, T, D]
    ("image.stem", "norm_pre.weight"): ("visual.ln_pre.weight", "view"),
    ("image.stem", "norm_pre.bias"): ("visual.ln_pre.bias", "view"),
    ("image.head", "norm.weight"): ("visual.ln_post.weight", "view"),
    ("image.head", "norm.bias"): ("visual.ln_post.bias", "view"),
    ("image.head", "proj.weight"): ("visual.proj", "t"),                      # [D, E] <-> [E, D]
    ("text.stem", "token_embed.weight"): ("token_embedding.weight", "view"),
    ("text.stem", "pos_embed"): ("positional_embedding", "view"),             # [S, D] <-> [1, S, D]
    ("text.head", "norm.weight"): ("ln_final.weight", "view"),
    ("text.head", "norm.bias"): ("ln_final.bias", "view"),
    ("text.head", "proj.weight"): ("text_projection", "t"),                   # [D, E] <-> [E, D]
    ("top", "logit_scale"): ("logit_scale", "view"),
    **{("image.block", k): v for k, v in _block_table("visual.").items()},
    **{("text.block", k): v for k, v in _block_table("").items()},
}


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise ConfigError("open_clip is not installed: pip install 'learngene-kit[clip]' "
                          "(or pip install open_clip_torch)") from None
    return open_clip


def open_clip_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    """``open_clip.CLIP(**kwargs)`` for a canonical CLIP arch."""
    arch = clip_arch(arch)
    img, txt = arch["image"], arch["text"]
    if img["in_chans"] != 3:
        raise ConfigError(f"open_clip image towers take 3 channels, the arch has in_chans={img['in_chans']}; "
                          "use in_chans=3 (grey images are repeated to 3 channels by learngene.clip)")
    return dict(
        embed_dim=arch["embed_dim"],
        vision_cfg=dict(image_size=img["image_size"], patch_size=img["patch_size"], width=img["width"],
                        layers=img["layers"], head_width=img["width"] // img["heads"], mlp_ratio=img["mlp_ratio"]),
        text_cfg=dict(context_length=txt["context_length"], vocab_size=txt["vocab_size"], width=txt["width"],
                      heads=txt["heads"], layers=txt["layers"], mlp_ratio=txt["mlp_ratio"]),
        quick_gelu=arch["act"] == "quick_gelu",
    )


def open_clip_arch(model: torch.nn.Module) -> dict[str, Any]:
    """The canonical arch of an ``open_clip.CLIP``; ConfigError for layouts the table does not map."""
    open_clip = _open_clip()
    if not isinstance(model, open_clip.CLIP):
        raise ConfigError(f"expected an open_clip.CLIP, got {type(model).__name__} (CustomTextCLIP / CoCa are not mapped)")
    visual = model.visual
    if not isinstance(visual, open_clip.transformer.VisionTransformer):
        raise ConfigError(f"the image tower is a {type(visual).__name__}; only open_clip's VisionTransformer is mapped")
    block = visual.transformer.resblocks[0] if len(visual.transformer.resblocks) else None
    problems = {
        "attentional pooling": getattr(visual, "attn_pool", None) is not None,
        "layer-scale": block is not None and not isinstance(block.ls_1, torch.nn.Identity),
        "a logit bias (SigLIP)": getattr(model, "logit_bias", None) is not None,
        "a text projection Linear": not isinstance(model.text_projection, torch.nn.Parameter),
        "image pooling other than the class token": getattr(visual, "pool_type", "tok") != "tok",
        "text pooling other than argmax": getattr(model, "text_pool_type", "argmax") != "argmax",
    }
    found = [name for name, present in problems.items() if present]
    if found:
        raise ConfigError(f"this open_clip model uses {', '.join(found)}, which the CLIP adapter does not map")
    text_block = model.transformer.resblocks[0]
    act = "quick_gelu" if type(text_block.mlp.gelu).__name__ == "QuickGELU" else "gelu"
    width = int(visual.conv1.out_channels)
    t_width = int(model.token_embedding.weight.shape[1])
    return clip_arch({
        "embed_dim": int(visual.proj.shape[1]), "act": act,
        "image": {"image_size": int(visual.image_size[0]), "patch_size": int(visual.patch_size[0]),
                  "in_chans": int(visual.conv1.in_channels), "width": width, "layers": len(visual.transformer.resblocks),
                  "heads": int(block.attn.num_heads) if block is not None else 1,
                  "mlp_ratio": block.mlp.c_fc.out_features / width if block is not None else 4.0},
        "text": {"context_length": int(model.context_length), "vocab_size": int(model.vocab_size), "width": t_width,
                 "layers": len(model.transformer.resblocks), "heads": int(text_block.attn.num_heads),
                 "mlp_ratio": text_block.mlp.c_fc.out_features / t_width},
    })


def open_clip_to_stack(model: torch.nn.Module) -> ClipStack:
    """View an ``open_clip.CLIP`` as a canonical stack; tensors alias the model's parameters."""
    arch = open_clip_arch(model)
    return state_dict_to_clip_stack({k: v.detach() for k, v in model.state_dict().items()}, arch, OPEN_CLIP_TABLE)


def build_open_clip(arch: dict[str, Any]) -> torch.nn.Module:
    """A freshly initialised ``open_clip.CLIP`` for a canonical arch (open_clip's own init)."""
    return _open_clip().CLIP(**open_clip_kwargs(arch))


def stack_to_open_clip(stack: ClipStack) -> torch.nn.Module:
    """An ``open_clip.CLIP`` holding exactly the stack's tensors (copied)."""
    model = build_open_clip(stack.arch)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    return load_exact(model, clip_stack_to_state_dict(stack, OPEN_CLIP_TABLE, shapes))
