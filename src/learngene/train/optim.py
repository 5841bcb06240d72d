"""AdamW with weight decay by rule (optionally layer-wise lr decay), and the per-step warmup +
cosine learning rate."""

from __future__ import annotations

import math

import torch
from torch import nn

from learngene.errors import ConfigError

# Parameter names (last dotted component) that never get weight decay, even if a model
# does not declare them in no_weight_decay(): learned tokens and position embeddings.
_NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token", "mask_token")
# Where torch.optim.AdamW(fused=True) runs: the devices and parameter dtypes of its kernel.
FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def no_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names that must not be decayed.

    Rule: every parameter with ndim <= 1 (norm scales, biases, layer-scale gammas), every
    name a (sub)module lists in its ``no_weight_decay()`` (timm convention, names relative
    to that submodule, so a wrapped timm model works too), and tokens / pos embeddings.
    """
    skip: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            try:
                names = fn()
            except Exception:  # a user module with an unrelated method of that name
                names = ()
            skip.update(f"{prefix}.{n}" if prefix else n for n in names)
    out = set()
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name in skip or name.rsplit(".", 1)[-1] in _NO_DECAY_NAMES:
            out.add(name)
    return out


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the *trainable* parameters: [decay, no-decay].

    Frozen parameters (requires_grad=False, e.g. inherited learngene layers kept fixed)
    are left out of the optimizer entirely.
    """
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups with layer-wise lr decay (BEiT; timm ``param_groups_layer_decay``).

    timm numbers the layers with the model's ``group_matcher(coarse=False)``: the stem
    (patch/pos embeddings, tokens) 0, block i i + 1, the final norm and head L + 1. A group's
    ``lr_scale`` is ``layer_decay ** (L + 1 - layer)``: the head trains at the full lr, the stem at
    ``layer_decay ** (L + 1)``. Weight decay keeps this module's rule (``no_decay_names``);
    frozen parameters stay out.
    """
    if not callable(getattr(model, "group_matcher", None)):
        raise ConfigError(
            f"TrainConfig.layer_decay needs a model with timm's group_matcher() to number its layers; a "
            f"{type(model).__name__} has none; use a timm ViT (learngene's models are) or set layer_decay=None"
        )
    from timm.optim import param_groups_layer_decay

    skip = no_decay_names(model)
    # timm matches no_weight_decay_list entries as patterns; exact full names match themselves.
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, no_weight_decay_list=sorted(skip),
                                      layer_decay=layer_decay)
    return [{"params": g["params"], "weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"]} for g in groups]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    layer_decay: float | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; each group's lr is ``lr x group.get("lr_scale", 1)``.

    PyTorch's fused kernel runs where every parameter allows it: it updates all tensors in one
    call, where PyTorch's CPU default loops over them in Python (a few percent of a bf16 step at
    vit-mini's ~150 small tensors). Same update rule; the last bit may round differently.
    """
    groups = param_groups(model, weight_decay) if layer_decay is None else \
        layer_decay_groups(model, weight_decay, layer_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError("the model has no trainable parameters (all requires_grad=False); nothing to train")
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based); a pure function, so resume is exact.

    Linear warmup over steps 0..warmup_steps-1 reaching ``lr`` at step warmup_steps-1
    (step 0 already gets lr/warmup_steps, never 0), then a half cosine from ``lr`` at step
    warmup_steps down to exactly ``min_lr`` at the final step total_steps-1.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
