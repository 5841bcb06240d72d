from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError
from .._checks import check_distillation, check_training, is_int

MAX_AUX_DEPTH = 64  # the auxiliary model runs every layer each step: deeper only multiplies the distillation cost


@dataclass
class SwsConfig:
    """How the SWS learngene is learned: a staged auxiliary ViT, weights shared within each stage,
    distilled from the ancestry.

    Paper (Xia et al., IJCAI 2024) and reference code (AlphaXia/SWS): a 16-layer auxiliary model
    of 5 stages of 3, 3, 4, 3, 3 layers (``aux_deit_*_L16_33433``), every layer of a stage one and
    the same block; pure soft distillation (alpha 1, tau 1) from LeViT-384, 150 (S) / 100 (B)
    ImageNet epochs with DeiT's recipe. The training defaults here are the library's
    small-ViT-from-scratch defaults (as for tleg: 10 epochs, batch 128, AdamW lr 1e-3).
    """

    stages: list[int] = field(default_factory=lambda: [3, 3, 4, 3, 3])  # layers per stage of the auxiliary model, first stage first (the reference's 3,3,4,3,3: 16 layers); one learngene block per stage
    epochs: int = 10              # distillation epochs over `data` (paper: 150 S / 100 B on ImageNet)
    batch_size: int = 128         # global batch of the distillation run
    lr: float = 1e-3              # AdamW peak lr (warmup then cosine, learngene.train's schedule); the reference: 5e-4 at batch 512
    weight_decay: float = 0.05    # AdamW decay on Linear/conv weights (as the reference: 0.05)
    warmup_epochs: float = 1.0    # linear warmup length in epochs (reference: 5 of 150)
    distill_alpha: float = 1.0    # loss = (1 - alpha) CE(labels) + alpha KD; the paper uses pure KD (1.0)
    distill_tau: float = 1.0      # softmax temperature of the soft KD term (paper: 1.0)
    seed: int = 0                 # seeds the learngene's initialisation and the training run
    inherit_stem: bool = False    # start patch/pos embeddings from the ancestry's (ours; the reference starts them fresh)
    holdout: float = 0.0          # fraction of `data` held out to report the auxiliary model's eval accuracy (0 = none)
    device: str = "auto"          # where the distillation runs: "auto" (CUDA if available), "cpu", "cuda:0"...

    def __post_init__(self) -> None:
        if not isinstance(self.stages, (list, tuple)) or not self.stages or not all(
                is_int(n) and n >= 1 for n in self.stages):
            raise ConfigError(f"sws stages must be a non-empty list of layer counts >= 1 (the reference's "
                              f"[3, 3, 4, 3, 3]), got {self.stages!r}")
        self.stages = [int(n) for n in self.stages]
        if sum(self.stages) > MAX_AUX_DEPTH:
            raise ConfigError(f"sws stages add up to an auxiliary model of {sum(self.stages)} layers; keep the total "
                              f"<= {MAX_AUX_DEPTH} (the reference's is 16)")
        check_training("sws", self, min_epochs=1)
        check_distillation("sws", self)
        if not isinstance(self.inherit_stem, bool):
            raise ConfigError(f"sws inherit_stem must be true or false, got {self.inherit_stem!r}")
