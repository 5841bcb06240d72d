"""Forward-FLOP estimate of a model (counted once per fit, never per step).

Counts with torch.utils.flop_counter.FlopCounterMode (a multiply-add = 2 FLOPs). Fused
attention kernels (scaled_dot_product_attention) are not counted on every backend, so
timm's ``fused_attn`` switch is turned off while counting: attention then runs as
explicit matmuls that the counter sees. If counting fails, falls back to
2 x parameters x tokens (tokens = the input's spatial positions / patch area when the
model has a ``patch_embed``, else 1).

Per sample and per call: a forward's FLOPs are affine in the batch size, a + b x s.
Models that compute their weights from other parameters on every forward (PEG's maps,
Cluster-Learngene's FFN transforms) spend ``a`` once per call, whatever the batch; a plain
network has a = 0. ``count_forward`` runs one and two copies of the sample and returns
both parts (s = f(2) - f(1), a = f(1) - s), so that training costs count the weight
computation once per step and not once per sample.

Counting goes through Python for every op (about 0.1 s for vit-mini, 5% of a 16-step fit), so
counts are memoised per process, keyed by the model's structure: its class, its ``repr`` (which
names every module and its settings) and the names, shapes and dtypes of its parameters and
buffers, with the input's shape and dtype. A suite worker that fine-tunes many descendants of one
shape counts once.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

import torch
from torch import nn

log = logging.getLogger(__name__)

_COUNTS: OrderedDict[str, tuple[int, int]] = OrderedDict()  # structure key -> (per sample, per call)
_COUNTS_MAX = 256


def _describe(model: nn.Module) -> str:
    """``repr(model)``; for a model holding parameter-less templates (whose repr reads the
    parameters removed from them, e.g. LayerNorm's ``bias``), each submodule's name and class."""
    try:
        return repr(model)
    except AttributeError:
        return "\n".join(f"{name}:{type(m).__module__}.{type(m).__qualname__}" for name, m in model.named_modules())


def _structure_key(model: nn.Module, x: torch.Tensor) -> str:
    """Everything a forward's FLOP count depends on: module classes and settings (``repr``),
    parameter and buffer shapes and dtypes, the input's shape and dtype."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n{_describe(model)}\n".encode())
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
    h.update(f"input:{tuple(x.shape)}:{x.dtype}".encode())
    return h.hexdigest()


def _fallback(model: nn.Module, sample: torch.Tensor) -> int:
    params = sum(p.numel() for p in model.parameters())
    tokens = 1
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "num_patches", None):
        tokens = int(pe.num_patches) + 1
    return 2 * params * tokens


def forward_flops_per_sample(model: nn.Module, sample: torch.Tensor) -> int:
    """FLOPs of one forward pass per sample (the batch-independent part excluded; see the module
    docstring); ``sample`` is [C,H,W] or [1,C,H,W]; model state is untouched."""
    return count_forward(model, sample)[0]


def _counted(model: nn.Module, x: torch.Tensor):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x)
    return int(counter.get_total_flops()), out


def count_forward(model: nn.Module, sample: torch.Tensor) -> tuple[int, int, object]:
    """(forward FLOPs per sample, forward FLOPs per call independent of the batch, the eval-mode
    output on one sample): one pass serves the count and fit's check of the output's kind and
    class count."""
    x = sample if sample.dim() == 4 else sample.unsqueeze(0)
    x = x[:1].to(next(model.parameters()).device)
    was_training = model.training
    fused = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    rng = torch.get_rng_state()  # eval mode should not draw randomness, but be sure
    model.eval()
    key = _structure_key(model, x)
    try:
        if key in _COUNTS:  # counted before in this process: one plain forward for the output
            _COUNTS.move_to_end(key)
            with torch.no_grad():
                out = model(x)
            return (*_COUNTS[key], out)
        try:
            for m, _ in fused:
                m.fused_attn = False
            one, out = _counted(model, x)
            if one <= 0:
                raise RuntimeError("flop counter saw no operations")
            two, _ = _counted(model, torch.cat([x, x]))
            per_sample, per_call = two - one, 2 * one - two
            if per_sample <= 0 or per_call < 0:  # not affine in the batch (an odd model): all per sample
                per_sample, per_call = one, 0
        except Exception as e:  # an op the counter cannot trace, an odd model
            log.info("FLOP counting failed (%s); using 2 x params x tokens", e)
            for m, v in fused:
                m.fused_attn = v
            with torch.no_grad():
                out = model(x)  # errors of the model itself surface here, as in training
            per_sample, per_call = _fallback(model, x), 0
        _COUNTS[key] = (per_sample, per_call)
        if len(_COUNTS) > _COUNTS_MAX:
            _COUNTS.popitem(last=False)
    finally:
        for m, v in fused:
            m.fused_attn = v
        model.train(was_training)
        torch.set_rng_state(rng)
    return per_sample, per_call, out
