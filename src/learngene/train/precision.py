"""The fastest correct compute path per device: mixed precision and the attention kernel.

``amp="auto"`` and ``attention="auto"`` resolve by a rule that ``benchmarks/perf.py --only paths``
measures (``benchmarks/results/perf-paths.json`` on a 2-core AVX512-BF16/AMX CPU,
``gpu-speed.json`` on an H200):

=======================  =====================  ==========================================
device                   amp="auto"             attention="auto"
=======================  =====================  ==========================================
CUDA, ViT of width x     bf16 autocast          fused (``scaled_dot_product_attention``)
tokens >= 8192
CUDA, smaller ViTs       off (fp32)             fused
CPU with native bf16     bf16 autocast          explicit (timm's matmul-softmax-matmul)
(AVX512-BF16 or AMX)
other CPUs               off (fp32)             explicit
=======================  =====================  ==========================================

Why: on CUDA the fused kernel is the fastest at every shape measured, in bf16 and fp32; bf16
pays from DeiT-Tiny at 224 px up (192 x 197 = 37,824: 7,867 against 2,911 images/s in fp32 on
an H200), while a model as small as vit-mini (96 x 17 = 1,632) is bound by kernel launches,
which autocast's casts only add to (fp32 21,643 against bf16 15,885 images/s; ``fit`` 9,483
against 4,568). Models the rule cannot size (not a timm ViT) take bf16 on CUDA. On
CPU, bf16 matrix products run on the bf16 units (AMX: several times the fp32 rate), but
PyTorch's fused CPU attention in bf16 is slower than in fp32 (its bf16 path is not
vectorised for these head sizes), so bf16 pays only with timm's explicit attention; in fp32
the explicit attention is as fast or faster at ViT token counts. A CPU without native bf16
emulates it, slower than fp32, so it stays in fp32. Master weights, optimizer state and
checkpoints stay fp32 in every case (autocast casts per operation).

Users force either choice: ``amp="off"|"bf16"``, ``attention="fused"|"explicit"``.

``compile="auto"`` compiles the training step (``torch.compile``, inductor) on CPU when the run
has at least ``COMPILE_AUTO_MIN_STEPS`` optimizer steps left and inductor can build kernels here
(a C++ compiler); on CUDA it stays eager (no gain measured at DeiT-Small on an H200).
``benchmarks/compile_breakeven.py`` measures the fixed cost (compilation, tens of seconds with a
cold cache) and the per-step gain of ``fit``; the threshold
sits a margin above the cold break-even it found (``benchmarks/results/compile-breakeven.json``):
short runs (every test, the suites' fine-tuning cells) stay eager, long ones (ancestry training,
distillation over many epochs) compile. ``compile=True``/``False`` force it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

ATTENTION_MODES = ("auto", "fused", "explicit")
CUDA_BF16_MIN_WIDTH_X_TOKENS = 8192  # between vit-mini (1,632: fp32 faster) and DeiT-Tiny (37,824: bf16 2.7x)
# Optimizer steps left in the run from which compile="auto" compiles: about 2.5x the cold-cache
# break-even measured on vit-mini (615 steps: +49 s to compile, 1.74x per step; compile-breakeven.json)
COMPILE_AUTO_MIN_STEPS = 1500


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16)."""
    flags = _cpu_flags()
    if flags is not None:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    try:  # not Linux: oneDNN's own check (true for AVX512-BF16, AMX and some AVX512 cores)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


@dataclass(frozen=True)
class ComputePath:
    """What a run computes with, and why (recorded in each run's summary)."""

    amp: str        # "bf16" or "off"
    attention: str  # "fused" or "explicit"
    reason: str
    compile: bool = False  # the training step runs through torch.compile (decided once steps are known)
    compile_reason: str = "not decided (evaluation only)"

    def to_dict(self) -> dict[str, str | bool]:
        return {"amp": self.amp, "attention": self.attention, "reason": self.reason, "compile": self.compile,
                "compile_reason": self.compile_reason}


def width_x_tokens(model: nn.Module | None) -> int | None:
    """embed_dim x tokens of a timm ViT (the size the CUDA rule reads), None for other modules."""
    patch = getattr(model, "patch_embed", None)
    if model is None or not isinstance(getattr(model, "embed_dim", None), int) or patch is None:
        return None
    return model.embed_dim * (int(patch.num_patches) + int(getattr(model, "num_prefix_tokens", 0)))


def resolve_amp(amp: str, device: torch.device, model: nn.Module | None = None) -> str:
    """"bf16" or "off" for ``amp`` ("auto", "off", "bf16") on ``device`` (for ``model``, on CUDA)."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        size = width_x_tokens(model)
        return "off" if size is not None and size < CUDA_BF16_MIN_WIDTH_X_TOKENS else "bf16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "off"


def choose_path(amp: str, attention: str, device: torch.device, model: nn.Module | None = None) -> ComputePath:
    """The compute path for ``amp`` and ``attention`` (each "auto" or forced) on ``device``."""
    precision = resolve_amp(amp, device, model)
    if attention != "auto":
        kernel = attention
    else:
        kernel = "fused" if device.type == "cuda" else "explicit"
    if amp == "auto" and attention == "auto":
        if device.type == "cuda":
            reason = (f"CUDA: {'bf16 autocast' if precision == 'bf16' else 'fp32 (a model this small is launch-bound)'}"
                      " with fused attention")
        elif precision == "bf16":
            reason = "CPU with native bf16 (AVX512-BF16/AMX): bf16 autocast with explicit attention"
        else:
            reason = "CPU without native bf16: fp32 with explicit attention"
    else:
        reason = f"forced: amp={amp}, attention={attention}"
    return ComputePath(precision, kernel, reason)


def cpp_compiler_available() -> bool:
    """True when torch.compile's inductor can build CPU kernels: a C++ compiler (``$CXX``, g++,
    c++ or clang++) on PATH."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in names)


def resolve_compile(compile: bool | str, device: torch.device, steps_left: int) -> tuple[bool, str]:
    """Whether the training step compiles, and why, for ``compile`` (True, False or "auto") on
    ``device`` with ``steps_left`` optimizer steps to run."""
    if compile is True or compile is False:
        return compile, f"forced: compile={compile}"
    if device.type != "cpu":
        return False, ("eager: on CUDA torch.compile gave no gain at DeiT-Small (H200, gpu-speed.json); "
                       "compile=True forces it")
    if steps_left < COMPILE_AUTO_MIN_STEPS:
        return False, (f"eager: {steps_left} steps left, compiling pays back from about "
                       f"{COMPILE_AUTO_MIN_STEPS} (compile=True forces it)")
    if not cpp_compiler_available():
        return False, "eager: torch.compile's inductor needs a C++ compiler (g++/clang++, or $CXX) on CPU, not found"
    return True, f"compiled: {steps_left} steps left >= {COMPILE_AUTO_MIN_STEPS}, where compiling pays back"


def autocast(precision: str, device: torch.device):
    """bf16 autocast when ``precision`` is "bf16" (a resolved amp), else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def attention_kernel(model: nn.Module, kernel: str):
    """Run timm attention modules of ``model`` with ``kernel`` ("fused" / "explicit"); restored after.

    timm's ``Attention`` reads its ``fused_attn`` attribute at every forward, so switching it
    changes the kernel without touching the weights.
    """
    modules = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    saved = [m.fused_attn for m in modules]
    for m in modules:
        m.fused_attn = kernel == "fused"
    try:
        yield
    finally:
        for m, value in zip(modules, saved):
            m.fused_attn = value
