"""TrainConfig (what to do) and TrainResult (what happened).

Defaults suit small ViTs trained from scratch on 28x28 grey images (Fashion-MNIST):
AdamW lr 1e-3, weight decay 0.05, one warmup epoch, cosine to 1e-5, label smoothing 0.1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from learngene.errors import ConfigError
from learngene.train.precision import ATTENTION_MODES, resolve_amp

DISTILL_MODES = ("none", "soft", "hard")
AMP_MODES = ("auto", "off", "bf16")

# Fields that may differ between a run and its resumption without changing the trajectory.
RESUME_FREE_FIELDS = ("eval_every", "checkpoint", "num_workers", "device", "compile", "attention")
# Fields that change only the speed, not what is trained (up to float rounding): left out of
# cache keys (``key_dict``), so switching one on reuses cached runs, and keys recorded before
# such a field existed stay valid (the committed benchmark results name their cells by key).
SPEED_ONLY_FIELDS = ("compile", "attention")


@dataclass
class TrainConfig:
    # Number of passes over train_data. The cosine schedule spans all of them.
    epochs: int = 10
    # GLOBAL batch size: summed over all ranks (each of N ranks takes batch_size // N).
    # The last incomplete global batch of each epoch is dropped.
    batch_size: int = 128
    # Peak learning rate of AdamW, reached at the end of warmup.
    lr: float = 1e-3
    # AdamW decoupled weight decay; never applied to norms, biases, tokens, pos embeddings.
    weight_decay: float = 0.05
    # Linear warmup length in epochs (may be fractional); 0 starts at the peak lr.
    warmup_epochs: float = 1.0
    # Learning rate at the very last step (cosine floor).
    min_lr: float = 1e-5
    # Label smoothing of the classification cross-entropy (0 disables).
    label_smoothing: float = 0.1
    # Max global grad-norm (after the DDP all-reduce); None disables clipping.
    clip_grad: float | None = 1.0
    # Seeds the data order, augmentation and dropout/drop-path, per epoch.
    seed: int = 0
    # Knowledge distillation from `teacher`: "none", "soft" (KL on tau-softened logits)
    # or "hard" (CE on the teacher's argmax), with DeiT's definitions.
    distill: str = "none"
    # Weight of the distillation term: loss = (1 - alpha) * CE + alpha * KD.
    distill_alpha: float = 0.5
    # Softmax temperature of soft distillation.
    distill_tau: float = 1.0
    # Mixed precision: "auto" = bf16 autocast on CPUs with native bf16 (AVX512-BF16, AMX) and on
    # CUDA for ViTs from DeiT-Tiny's size up, fp32 elsewhere (train/precision.py: the measured
    # rule); "off"; "bf16" (any device).
    amp: str = "auto"
    # Attention kernel: "auto" (fused on CUDA, timm's explicit attention on CPU: faster there,
    # and the only one that gains from bf16), "fused" (scaled_dot_product_attention), "explicit".
    attention: str = "auto"
    # Evaluate on eval_data every this many epochs (and always after the last one).
    eval_every: int = 1
    # Write out_dir/checkpoint.pt after every epoch (needed for resume).
    checkpoint: bool = True
    # DataLoader workers, only for datasets without pre-tensorized .images/.labels.
    num_workers: int = 0
    # "auto" (CUDA if available, else CPU) or a torch device string like "cuda:1", "cpu".
    device: str = "auto"
    # Run the training forward/backward through torch.compile (inductor). The first steps
    # compile (tens of seconds); it pays off on long runs of a fixed shape, mostly on GPU.
    # Evaluation, the teacher and FLOP counting stay eager. Off by default.
    compile: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name} must be {want}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return (is_int(v) or isinstance(v, float)) and math.isfinite(v)

        for name in ("epochs", "batch_size", "eval_every"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        for name in ("seed", "num_workers"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "an integer >= 0")
        if not is_num(self.lr) or self.lr <= 0:
            raise bad("lr", "a number > 0")
        for name in ("weight_decay", "min_lr", "warmup_epochs"):
            if not is_num(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a number >= 0")
        if self.min_lr > self.lr:
            raise ConfigError(f"TrainConfig.min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})"
            )
        if not is_num(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if self.clip_grad is not None and (not is_num(self.clip_grad) or self.clip_grad <= 0):
            raise bad("clip_grad", "a number > 0, or None to disable clipping")
        if self.distill not in DISTILL_MODES:
            raise bad("distill", f"one of {', '.join(map(repr, DISTILL_MODES))}")
        if not is_num(self.distill_alpha) or not 0 <= self.distill_alpha <= 1:
            raise bad("distill_alpha", "a number in [0, 1]")
        if not is_num(self.distill_tau) or self.distill_tau <= 0:
            raise bad("distill_tau", "a number > 0")
        if self.amp not in AMP_MODES:
            raise bad("amp", f"one of {', '.join(map(repr, AMP_MODES))}")
        if self.attention not in ATTENTION_MODES:
            raise bad("attention", f"one of {', '.join(map(repr, ATTENTION_MODES))}")
        if not isinstance(self.checkpoint, bool):
            raise bad("checkpoint", "True or False")
        if not isinstance(self.compile, bool):
            raise bad("compile", "True or False")
        if not isinstance(self.device, str) or not self.device:
            raise bad("device", "'auto' or a torch device string such as 'cpu' or 'cuda:0'")
        # Normalise int-valued floats that came from YAML/JSON (e.g. lr: 1 -> 1.0).
        for name in ("lr", "weight_decay", "min_lr", "warmup_epochs", "label_smoothing",
                     "distill_alpha", "distill_tau"):
            setattr(self, name, float(getattr(self, name)))
        if self.clip_grad is not None:
            self.clip_grad = float(self.clip_grad)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict[str, Any]:
        """``to_dict`` without ``SPEED_ONLY_FIELDS``: what cache keys (ancestry, bench cells) hash.

        ``amp="auto"`` that resolves to bf16 on a CPU is keyed as "bf16" (a different
        computation from the fp32 runs keyed "auto" on CPUs without native bf16).
        """
        out = {k: v for k, v in self.to_dict().items() if k not in SPEED_ONLY_FIELDS}
        on_cpu = self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available())
        if self.amp == "auto" and on_cpu and resolve_amp("auto", torch.device("cpu")) == "bf16":
            out["amp"] = "bf16"
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a plain dict (YAML preset, checkpoint); unknown keys are a ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"a TrainConfig must be a mapping of field: value, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {', '.join(names)}")
        return cls(**d)


@dataclass
class TrainResult:
    # Metrics of the last epoch: train_loss, train_acc, eval_loss, eval_acc (None if never evaluated).
    train_loss: float
    train_acc: float
    eval_loss: float | None
    eval_acc: float | None
    # One dict per epoch, the same records as the lines of out_dir/metrics.jsonl.
    history: list[dict[str, Any]] = field(default_factory=list)
    # Cost: optimizer steps, training samples (all ranks), wall seconds of training
    # (summed over resumed segments), and FLOPs estimates (multiply-add = 2 FLOPs).
    steps: int = 0
    samples_seen: int = 0
    wall_time_s: float = 0.0
    forward_flops_per_sample: int = 0
    forward_flops_per_step: int = 0  # batch-independent: weights computed from parameters each forward (PEG maps)
    teacher_flops_per_sample: int = 0
    train_flops: int = 0
    # Where files went (None if fit ran without out_dir).
    out_dir: str | None = None
    # The precision and attention kernel the run used, and why (train/precision.py).
    compute_path: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
