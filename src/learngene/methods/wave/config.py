from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from .._checks import check_distillation, check_training, is_int, is_num

INITS = ("random", "ancestry")


@dataclass
class WaveConfig:
    """How the WAVE weight templates are learned, and which sizes get trained weight scalers.

    Paper (Feng et al., CVPR 2025): templates learned by distilling the ancestry into an
    auxiliary model whose every weight matrix is a sum of Kronecker products of per-layer weight
    scalers and the shared templates (their Eq. 4); then, for each target size, new scalers trained
    on a little data with the templates frozen. The training defaults are the library's
    small-ViT defaults (tleg's: 10 epochs, batch 128, AdamW lr 1e-3); the paper distils on
    ImageNet with DeiT's recipe.
    """

    num_templates: int = 12       # N_t templates per weight kind (q, k, v, proj, fc1, fc2); a layer's matrix
    #                               is sum_n S_n (x) T_n over them (ours: the text we could read gives no count)
    template_size: int | None = None  # side m of each square template [m, m]; None = the ancestry's head_dim
    #                                   (DeiT: 64), so one template block row of q/k/v is one head. Widths and MLP
    #                                   sizes of every model built must be multiples of m
    aux_depth: int | None = None  # depth of the auxiliary model (None = the ancestry's, as in the paper)
    init: str = "random"          # "random": templates trunc_normal(.02), scalers N(0, 1/N_t), the rest timm's
    #                               init (the paper trains from scratch); "ancestry" (ours): templates and
    #                               scalers from the nearest shared Kronecker sum of the ancestry's weights
    #                               (one SVD per kind), norms/biases/stem/head copied from the ancestry
    epochs: int = 10              # distillation epochs of the auxiliary model over `data`; 0 only with
    #                               init="ancestry" (the SVD fit alone)
    batch_size: int = 128         # global batch of the distillation and of the scaler training
    lr: float = 1e-3              # AdamW peak lr of the distillation (warmup then cosine)
    weight_decay: float = 0.05    # AdamW decay on the templates and the stem/head matrices (scalers never decay)
    warmup_epochs: float = 1.0    # linear warmup length in epochs (distillation)
    distill_alpha: float = 1.0    # loss = (1 - alpha) CE(labels) + alpha KD; pure KD (1.0), as the paper distils
    distill_tau: float = 1.0      # softmax temperature of the soft KD term
    sizes: list[list[int]] | None = None  # target sizes [depth, embed_dim, num_heads] whose scalers are trained
    #                                       at extraction (templates frozen); other sizes start from the auxiliary
    #                                       model's scalers selected by depth and width, untrained
    scaler_samples: int = 2048    # images (drawn from `data`) each size's scalers train on: the paper's
    #                               "small amount of data"
    scaler_epochs: int = 1        # passes over those images per size
    scaler_lr: float = 1e-2       # AdamW peak lr of the scalers (a few thousand parameters; warmup 0, cosine)
    seed: int = 0                 # seeds the initialisation, the scaler-training sample and every training run
    holdout: float = 0.0          # fraction of `data` held out to report the auxiliary model's eval accuracy
    device: str = "auto"          # where training runs: "auto" (CUDA if available), "cpu", "cuda:0"...

    def __post_init__(self) -> None:
        if not is_int(self.num_templates) or self.num_templates < 1:
            raise ConfigError(f"wave num_templates must be an integer >= 1, got {self.num_templates!r}")
        if self.template_size is not None and (not is_int(self.template_size) or self.template_size < 1):
            raise ConfigError(f"wave template_size must be a positive integer (or None for the ancestry's head_dim), "
                              f"got {self.template_size!r}")
        if self.aux_depth is not None and (not is_int(self.aux_depth) or self.aux_depth < 1):
            raise ConfigError(f"wave aux_depth must be an integer >= 1 (or None for the ancestry's depth), "
                              f"got {self.aux_depth!r}")
        if self.init not in INITS:
            raise ConfigError(f"wave init must be one of {list(INITS)}, got {self.init!r}")
        check_training("wave", self, min_epochs=0)
        if self.epochs == 0 and self.init == "random":
            raise ConfigError("wave epochs=0 leaves random templates untrained; set epochs >= 1, or init='ancestry' "
                              "to fit the templates to the ancestry's weights without distillation")
        check_distillation("wave", self)
        if self.sizes is not None:
            if not isinstance(self.sizes, list) or not all(
                    isinstance(s, (list, tuple)) and len(s) == 3 and all(is_int(v) and v >= 1 for v in s)
                    for s in self.sizes):
                raise ConfigError(f"wave sizes must be a list of [depth, embed_dim, num_heads] triples of positive "
                                  f"integers, e.g. [[6, 48, 3]], got {self.sizes!r}")
            self.sizes = [[int(v) for v in s] for s in self.sizes]
            for depth, width, heads in self.sizes:
                if width % heads:
                    raise ConfigError(f"wave sizes: embed_dim {width} is not divisible by num_heads {heads}; "
                                      f"choose num_heads among {[h for h in range(1, width + 1) if width % h == 0][:12]}")
            if len({tuple(s) for s in self.sizes}) != len(self.sizes):
                raise ConfigError(f"wave sizes has duplicates: {self.sizes}")
        for name in ("scaler_samples", "scaler_epochs"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ConfigError(f"wave {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not is_num(self.scaler_lr) or self.scaler_lr <= 0:
            raise ConfigError(f"wave scaler_lr must be a number > 0, got {self.scaler_lr!r}")
        self.scaler_lr = float(self.scaler_lr)
