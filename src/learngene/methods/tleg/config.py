from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from .._checks import check_distillation, check_training, is_int


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
        if not is_int(self.aux_depth) or self.aux_depth < 1:
            raise ConfigError(f"tleg aux_depth must be an integer >= 1, got {self.aux_depth!r}")
        check_training("tleg", self, min_epochs=1)
        check_distillation("tleg", self)
        if not isinstance(self.inherit_stem, bool):
            raise ConfigError(f"tleg inherit_stem must be true or false, got {self.inherit_stem!r}")
