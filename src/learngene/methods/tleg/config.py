from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError


@dataclass
class TlegConfig:
    """How the TLEG learngene is learned: an auxiliary ViT built from it, distilled from the ancestry.

    Paper (Xia et al., AAAI 2024) and reference code (AlphaXia/TLEG): depth-12 auxiliary
    model, pure soft distillation (alpha 1, tau 1), 100-150 ImageNet epochs with DeiT's
    recipe. The training defaults here are the library's small-ViT-from-scratch defaults
    (the vit-mini ancestry preset's budget: 10 epochs, batch 128, AdamW lr 1e-3).
    """

    aux_depth: int = 12           # depth of the auxiliary model (the paper's 12): layer l gets A + l/aux_depth * B
    epochs: int = 10              # distillation epochs over `data` (paper: 150 S / 100 B on ImageNet)
    batch_size: int = 128         # global batch of the distillation run
    lr: float = 1e-3              # AdamW peak lr (warmup then cosine, learngene.train's schedule)
    weight_decay: float = 0.05    # AdamW decay on >=2-D tensors (theta_A/theta_B Linear weights included, as in the reference)
    warmup_epochs: float = 1.0    # linear warmup length in epochs
    distill_alpha: float = 1.0    # loss = (1 - alpha) CE(labels) + alpha KD; the paper uses pure KD (1.0)
    distill_tau: float = 1.0      # softmax temperature of the soft KD term (paper: 1.0)
    seed: int = 0                 # seeds the learngene's initialisation and the training run
    inherit_stem: bool = False    # start patch/pos embeddings from the ancestry's (ours; the reference starts them fresh)
    holdout: float = 0.0          # fraction of `data` held out to report the auxiliary model's eval accuracy (0 = none)
    device: str = "auto"          # where the distillation runs: "auto" (CUDA if available), "cpu", "cuda:0"...

    def __post_init__(self) -> None:
        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return (is_int(v) or isinstance(v, float)) and math.isfinite(v)

        for name in ("aux_depth", "epochs", "batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ConfigError(f"tleg {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"tleg seed must be an integer >= 0, got {self.seed!r}")
        if not is_num(self.lr) or self.lr <= 0:
            raise ConfigError(f"tleg lr must be a number > 0, got {self.lr!r}")
        for name in ("weight_decay", "warmup_epochs"):
            if not is_num(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"tleg {name} must be a number >= 0, got {getattr(self, name)!r}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"tleg warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})")
        if not is_num(self.distill_alpha) or not 0 <= self.distill_alpha <= 1:
            raise ConfigError(f"tleg distill_alpha must be a number in [0, 1], got {self.distill_alpha!r}")
        if not is_num(self.distill_tau) or self.distill_tau <= 0:
            raise ConfigError(f"tleg distill_tau must be a number > 0, got {self.distill_tau!r}")
        if not isinstance(self.inherit_stem, bool):
            raise ConfigError(f"tleg inherit_stem must be true or false, got {self.inherit_stem!r}")
        if not is_num(self.holdout) or not 0 <= self.holdout < 1:
            raise ConfigError(f"tleg holdout must be a fraction in [0, 1), got {self.holdout!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"tleg device must be 'auto' or a torch device such as 'cpu', got {self.device!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "distill_alpha", "distill_tau", "holdout"):
            setattr(self, name, float(getattr(self, name)))  # JSON/YAML ints -> floats
