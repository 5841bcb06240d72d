"""TrainConfig (what to do) and TrainResult (what happened).

Defaults suit small ViTs trained from scratch on 28x28 grey images (Fashion-MNIST):
AdamW lr 1e-3, weight decay 0.05, one warmup epoch, cosine to 1e-5, label smoothing 0.1.

DeiT's training recipe (Touvron et al., 2021) is a set of further fields, every one off by
default: Mixup/CutMix with soft-target cross-entropy, RandAugment, random erasing, repeated
augmentation, model EMA, gradient accumulation and layer-wise lr decay. ``DEIT_RECIPE`` names
DeiT's values; ``configs/ancestry-deit-tiny.yaml`` uses them.
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
MIXUP_MODES = ("batch", "pair", "elem")

# DeiT's recipe (the reference repo's main.py defaults for DeiT-Ti/S/B from scratch):
# Mixup 0.8, CutMix 1.0 (one of the two per batch, 50/50), RandAugment rand-m9-mstd0.5-inc1,
# random erasing 0.25, repeated augmentation x3, EMA 0.99996 (and label smoothing 0.1, lr
# 5e-4 * batch / 512, weight decay 0.05, 5 warmup epochs, 300 epochs: fields above).
DEIT_RECIPE: dict[str, Any] = dict(
    mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch",
    rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25, repeated_aug=3, ema_decay=0.99996,
)


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
    # Run the training forward/backward through torch.compile (inductor): True, False, or "auto"
    # (compile when the run has enough steps left to pay back the compilation, tens of seconds,
    # and inductor can build kernels here: train/precision.py). Evaluation, the teacher and FLOP
    # counting stay eager.
    compile: bool | str = "auto"

    # ---- DeiT's recipe: every field below is off at its default, and a field at its default is
    # left out of key_dict (cache keys of runs recorded before these fields existed stay valid).
    # Mixup alpha: images and one-hot targets blend with lam ~ Beta(alpha, alpha); DeiT 0.8, 0 off.
    # With mixup or cutmix on, the loss is soft-target cross-entropy on timm's Mixup targets (which
    # carry label_smoothing), and the train accuracy counts the dominant class of each mixed target.
    mixup: float = 0.0
    # CutMix alpha: a box of the flipped batch is pasted in, lam = the area kept; DeiT 1.0, 0 off.
    cutmix: float = 0.0
    # Probability that a batch (or pair/element, see mixup_mode) is mixed at all.
    mixup_prob: float = 1.0
    # With both mixup and cutmix on: the probability of CutMix rather than Mixup.
    mixup_switch_prob: float = 0.5
    # timm's Mixup mode: "batch" (one lam per batch, DeiT), "pair" or "elem" (one per sample).
    mixup_mode: str = "batch"
    # timm RandAugment config string (e.g. DeiT's "rand-m9-mstd0.5-inc1"), applied to every
    # training image; None off. Needs the images' normalisation (learngene datasets' .info).
    rand_augment: str | None = None
    # Random-erasing probability per training image (timm RandomErasing, "pixel" mode: one box
    # of normal noise); DeiT 0.25, 0 off.
    random_erasing: float = 0.0
    # Repeated augmentation (DeiT's RASampler): each epoch's stream repeats every sample this
    # many times, the copies spread over the ranks; the epoch keeps its length. DeiT 3, 1 off.
    repeated_aug: int = 1
    # Decay of the model EMA (timm ModelEmaV3) updated after every optimizer step; it is evaluated
    # beside the model (eval_acc_ema) and saved as ema.safetensors. DeiT 0.99996; None off.
    ema_decay: float | None = None
    # Gradient accumulation: each optimizer step averages the gradients of accum_steps micro-batches.
    # batch_size stays the GLOBAL effective batch = world_size x micro-batch x accum_steps.
    accum_steps: int = 1
    # Layer-wise lr decay for fine-tuning (BEiT/timm): block i of L gets lr x layer_decay^(L - i);
    # the head gets the full lr. Needs timm's group_matcher(). Typical 0.65-0.75; None off.
    layer_decay: float | None = None
    # Stop after this many optimizer steps, before epochs x steps per epoch are done (the last
    # epoch is cut short and still evaluated); the cosine schedule ends at this step. None: run
    # every epoch. (The benchmark's distillation baseline sets it to match other cells' FLOPs.)
    max_steps: int | None = None

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
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise bad("compile", "True, False or 'auto'")
        if not isinstance(self.device, str) or not self.device:
            raise bad("device", "'auto' or a torch device string such as 'cpu' or 'cuda:0'")
        for name in ("mixup", "cutmix"):
            if not is_num(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a number >= 0 (the Beta distribution's alpha; 0 disables)")
        for name in ("mixup_prob", "mixup_switch_prob", "random_erasing"):
            if not is_num(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise bad(name, "a probability in [0, 1]")
        if self.mixup_mode not in MIXUP_MODES:
            raise bad("mixup_mode", f"one of {', '.join(map(repr, MIXUP_MODES))}")
        if self.rand_augment is not None and (not isinstance(self.rand_augment, str)
                                              or not self.rand_augment.startswith("rand")):
            raise bad("rand_augment", "None or a timm RandAugment string such as 'rand-m9-mstd0.5-inc1'")
        for name in ("repeated_aug", "accum_steps"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1 (1 disables)")
        if self.ema_decay is not None and (not is_num(self.ema_decay) or not 0 < self.ema_decay < 1):
            raise bad("ema_decay", "a number in (0, 1) such as DeiT's 0.99996, or None to disable the EMA")
        if self.max_steps is not None and (not is_int(self.max_steps) or self.max_steps < 1):
            raise bad("max_steps", "an integer >= 1, or None to run every epoch")
        if self.layer_decay is not None and (not is_num(self.layer_decay) or not 0 < self.layer_decay <= 1):
            raise bad("layer_decay", "a number in (0, 1] such as 0.65-0.75, or None to disable")
        # Normalise int-valued floats that came from YAML/JSON (e.g. lr: 1 -> 1.0).
        for name in ("lr", "weight_decay", "min_lr", "warmup_epochs", "label_smoothing",
                     "distill_alpha", "distill_tau", "mixup", "cutmix", "mixup_prob", "mixup_switch_prob",
                     "random_erasing"):
            setattr(self, name, float(getattr(self, name)))
        for name in ("clip_grad", "ema_decay", "layer_decay"):
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))

    @property
    def mixes(self) -> bool:
        """True when Mixup or CutMix is on (targets become soft)."""
        return self.mixup > 0 or self.cutmix > 0

    def batch_split(self, world_size: int) -> tuple[int, int]:
        """(per-rank batch of one optimizer step, per-rank micro-batch of one forward/backward).

        ``batch_size`` is the global effective batch: world_size x micro x accum_steps. A
        ConfigError names the numbers when it does not divide.
        """
        if self.batch_size % (world_size * self.accum_steps):
            raise ConfigError(
                f"batch_size {self.batch_size} is the global effective batch (processes x micro-batch x accum_steps) "
                f"and must be divisible by {world_size} process(es) x accum_steps {self.accum_steps} = "
                f"{world_size * self.accum_steps}; change batch_size or accum_steps"
            )
        per_rank = self.batch_size // world_size
        return per_rank, per_rank // self.accum_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict[str, Any]:
        """``to_dict`` without ``SPEED_ONLY_FIELDS``: what cache keys (ancestry, bench cells) hash.

        DeiT-recipe fields at their defaults are left out too: a run that uses none of them keys
        exactly as before they existed. ``amp="auto"`` that resolves to bf16 on a CPU is keyed as "bf16" (a different
        computation from the fp32 runs keyed "auto" on CPUs without native bf16).
        """
        out = {k: v for k, v in self.to_dict().items()
               if k not in SPEED_ONLY_FIELDS and not (k in RECIPE_DEFAULTS and v == RECIPE_DEFAULTS[k])}
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


# The DeiT-recipe fields and their (off) defaults: left out of key_dict at these values, and read
# as these values from checkpoints written before the fields existed.
RECIPE_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(TrainConfig)
    if f.name in ("mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "mixup_mode", "rand_augment",
                  "random_erasing", "repeated_aug", "ema_decay", "accum_steps", "layer_decay", "max_steps")
}


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
