from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from .._checks import check_distillation, check_training, is_int, is_num

# How a descendant smaller than the auxiliary model picks rows of the transformation matrices
# (the paper's Table 3 compares these five; "continuous" is listed first there and is ours by default).
SELECTIONS = ("continuous", "l2-top", "l2-bottom", "l1-top", "l1-bottom")
SIZE_FIELDS = ("gene_depth", "gene_embed_dim", "gene_heads", "aux_depth", "aux_embed_dim", "aux_heads")


@dataclass
class LetsConfig:
    """How the LeTs learngene and its transformation matrices are learned.

    The sizes left at None are resolved against the ancestry at extraction (learngene: half
    the ancestry's depth and heads, heads of the ancestry's head_dim; auxiliary model: the
    ancestry's shape) and stored
    resolved. The paper's ViT-B-scale setting (a 15.0M-parameter learngene, 37.7M stored with
    the matrices) and its ImageNet recipe do not fit a CPU; the training defaults are the
    library's small-ViT defaults, as for tleg.
    """

    gene_depth: int | None = None        # learngene layers L_g (None: ancestry depth // 2; paper: a 15.0M-parameter learngene at ViT-B scale, sizes not in the text we had)
    gene_embed_dim: int | None = None    # learngene width D_g (None: gene_heads x the ancestry's head_dim)
    gene_heads: int | None = None        # learngene heads H_g (None: ancestry heads // 2, at least 1; or gene_embed_dim // head_dim)
    gene_mlp_ratio: float | None = None  # learngene MLP hidden / width (None: the ancestry's mlp_ratio)
    aux_depth: int | None = None         # auxiliary model depth L_a = rows of G = deepest descendant (None: ancestry depth; paper: not stated in the text we had)
    aux_embed_dim: int | None = None     # auxiliary width D_a = rows of the embed matrix = widest descendant (None: ancestry's)
    aux_heads: int | None = None         # auxiliary heads H_a = most heads a descendant may have (None: ancestry's)
    aux_mlp_ratio: float | None = None   # auxiliary MLP hidden / width (None: the ancestry's)
    selection: str = "continuous"        # rows a smaller descendant takes: continuous (the first n) or l1/l2-top/bottom by row norm (the paper's five; its default not stated)
    noise: float = 0.01                  # std of the noise on the width matrices' initial copy pattern, breaking the copies' symmetry (ours: the paper's init is not stated)
    epochs: int = 10                     # distillation epochs over `data`; 0 = untrained init, no data (paper: ImageNet, fewer than its 200-epoch ablation)
    batch_size: int = 128                # global batch of the distillation run
    lr: float = 1e-3                     # AdamW peak lr (warmup then cosine, learngene.train's schedule)
    weight_decay: float = 0.05           # AdamW decay on the learngene's weight matrices (never on the transformation matrices)
    warmup_epochs: float = 1.0           # linear warmup length in epochs
    distill_alpha: float = 1.0           # loss = (1 - alpha) CE(labels) + alpha KD; pure soft KD as in tleg (paper: distillation, weights not stated)
    distill_tau: float = 1.0             # softmax temperature of the soft KD term
    seed: int = 0                        # seeds the initialisation and the training run
    holdout: float = 0.0                 # fraction of `data` held out to report the auxiliary model's eval accuracy (0 = none)
    device: str = "auto"                 # where the distillation runs: "auto" (CUDA if available), "cpu", "cuda:0"...

    def __post_init__(self) -> None:
        for name in SIZE_FIELDS:
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ConfigError(f"lets {name} must be a positive integer (or null for the default), got {value!r}")
        for name in ("gene_mlp_ratio", "aux_mlp_ratio"):
            value = getattr(self, name)
            if value is not None:
                if not is_num(value) or value <= 0:
                    raise ConfigError(f"lets {name} must be a number > 0 (or null for the ancestry's), got {value!r}")
                setattr(self, name, float(value))
        for prefix in ("gene", "aux"):
            dim, heads = getattr(self, f"{prefix}_embed_dim"), getattr(self, f"{prefix}_heads")
            if dim is not None and heads is not None and dim % heads:
                raise ConfigError(f"lets {prefix}_embed_dim {dim} is not divisible by {prefix}_heads {heads}: choose "
                                  f"{prefix}_heads among {[h for h in range(1, dim + 1) if dim % h == 0][:12]}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"lets selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if not is_num(self.noise) or self.noise < 0:
            raise ConfigError(f"lets noise must be a number >= 0, got {self.noise!r}")
        self.noise = float(self.noise)
        check_training("lets", self, min_epochs=0)
        check_distillation("lets", self)

    @property
    def needs_data(self) -> bool:
        """Distillation reads data; the untrained initialisation (epochs=0) reads none."""
        return self.epochs > 0
