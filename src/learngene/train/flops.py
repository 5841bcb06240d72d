"""Forward-FLOP estimate of a model on one sample (counted once per fit, never per step).

Counts with torch.utils.flop_counter.FlopCounterMode (a multiply-add = 2 FLOPs). Fused
attention kernels (scaled_dot_product_attention) are not counted on every backend, so
timm's ``fused_attn`` switch is turned off while counting: attention then runs as
explicit matmuls that the counter sees. If counting fails, falls back to
2 x parameters x tokens (tokens = the input's spatial positions / patch area when the
model has a ``patch_embed``, else 1).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def _fallback(model: nn.Module, sample: torch.Tensor) -> int:
    params = sum(p.numel() for p in model.parameters())
    tokens = 1
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "num_patches", None):
        tokens = int(pe.num_patches) + 1
    return 2 * params * tokens


def forward_flops_per_sample(model: nn.Module, sample: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``sample`` ([C,H,W] or [1,C,H,W]); model state is untouched."""
    return count_forward(model, sample)[0]


def count_forward(model: nn.Module, sample: torch.Tensor) -> tuple[int, object]:
    """(forward FLOPs, the eval-mode output on ``sample``): one forward serves both the count
    and fit's check of the output's kind and class count."""
    x = sample if sample.dim() == 4 else sample.unsqueeze(0)
    x = x[:1].to(next(model.parameters()).device)
    was_training = model.training
    fused = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    rng = torch.get_rng_state()  # eval mode should not draw randomness, but be sure
    model.eval()
    try:
        try:
            from torch.utils.flop_counter import FlopCounterMode

            for m, _ in fused:
                m.fused_attn = False
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                out = model(x)
            flops = int(counter.get_total_flops())
            if flops <= 0:
                raise RuntimeError("flop counter saw no operations")
        except Exception as e:  # an op the counter cannot trace, an odd model
            log.info("FLOP counting failed (%s); using 2 x params x tokens", e)
            for m, v in fused:
                m.fused_attn = v
            with torch.no_grad():
                out = model(x)  # errors of the model itself surface here, as in training
            flops = _fallback(model, x)
    finally:
        for m, v in fused:
            m.fused_attn = v
        model.train(was_training)
        torch.set_rng_state(rng)
    return flops, out
