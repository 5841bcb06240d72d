from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError


@dataclass
class MmlgConfig:
    """How the MM-LG learngene is condensed from a CLIP ancestry (see ``method.py``).

    Condensation trains an auxiliary CLIP of the ancestry's depths built from the learngene
    with the contrastive loss plus embedding distillation from the ancestry, through
    ``learngene.train.fit``. Defaults are CPU-scale (the clip-mini ancestry).
    """

    num_layers: int = 2           # K: multimodal blocks (shared by both towers) = unimodal blocks per tower
    epochs: int = 1               # condensation epochs over the caption pairs
    batch_size: int = 128         # global batch
    lr: float = 5e-4              # AdamW peak lr (warmup then cosine)
    weight_decay: float = 0.05
    warmup_epochs: float = 0.1
    distill_weight: float = 1.0   # weight of (1 - cos) between auxiliary and ancestry embeddings, per tower
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("num_layers", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"mm-lg {name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "distill_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"mm-lg {name} must be a finite number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if self.lr == 0:
            raise ConfigError("mm-lg lr must be > 0")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"mm-lg warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"mm-lg seed must be an integer >= 0, got {self.seed!r}")
