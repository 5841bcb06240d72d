from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from .._checks import check_training, check_widths, is_int as _is_int, is_num as _is_num

@dataclass
class LearngenePoolConfig:
    """How the pool's students are distilled from the ancestry (Shi et al., AAAI 2024).

    Paper and reference code (superselll/learngenepool, MindSpore): 2-3 students of 6 or 9
    blocks at DeiT-Ti/S/B widths distilled from DeiT-B, loss a*CE + (1-a)*(KD + MSE on
    matched block outputs + MSE on matched attention outputs) through learnable
    teacher->student linear maps, a = 0.1, T = 1, students' blocks (2, 5, 8) matched to the
    teacher's (3, 7, 11); 100 ImageNet epochs. The training defaults here are the library's
    small-ViT defaults (as for tleg/peg), not DeiT's recipe.
    """

    widths: list[int] | None = None     # students' widths, narrowest first; None = D/4, D/2, D (DeiT-Ti/S/B from DeiT-B)
    num_heads: list[int] | None = None  # heads per student; None = the ancestry's head size, as near as divides
    depth: int | None = None            # blocks per student (one depth for all: the stitching window needs it); None = L/2
    matches: list[list[int]] | None = None  # [[student block, teacher block], ...]; None = the paper's rule, scaled
    loss_alpha: float = 0.1             # a: loss = a CE + (1 - a) (KD + block MSE + attention MSE) (paper: 0.1)
    distill_tau: float = 1.0            # T of the soft KD term (paper: 1)
    epochs: int = 10                    # distillation epochs per student over `data` (0 = untrained students, for tests)
    batch_size: int = 128               # global batch of each distillation run
    lr: float = 1e-3                    # AdamW peak lr (warmup then cosine, learngene.train's schedule)
    weight_decay: float = 0.05          # AdamW decay on matrices (students and maps)
    warmup_epochs: float = 1.0          # linear warmup length in epochs
    seed: int = 0                       # seeds the students' and maps' initialisation and the runs
    device: str = "auto"                # "auto" (CUDA if available), "cpu", "cuda:0"...

    def __post_init__(self) -> None:
        check_widths("learngene-pool", self.widths, self.num_heads)
        if self.depth is not None and (not _is_int(self.depth) or self.depth < 1):
            raise ConfigError(f"learngene-pool depth must be a positive integer, got {self.depth!r}")
        if self.matches is not None:
            ok = isinstance(self.matches, list) and len(self.matches) >= 1 and all(
                isinstance(m, list) and len(m) == 2 and all(_is_int(i) and i >= 0 for i in m) for m in self.matches)
            if not ok:
                raise ConfigError("learngene-pool matches must be a non-empty list of [student block, teacher block] "
                                  f"pairs of integers >= 0, e.g. [[2, 3], [5, 7], [8, 11]]; got {self.matches!r}")
            if len({m[0] for m in self.matches}) != len(self.matches):
                raise ConfigError(f"learngene-pool matches repeat a student block: {self.matches}")
        if not _is_num(self.loss_alpha) or not 0 <= self.loss_alpha <= 1:
            raise ConfigError(f"learngene-pool loss_alpha must be a number in [0, 1], got {self.loss_alpha!r}")
        if not _is_num(self.distill_tau) or self.distill_tau <= 0:
            raise ConfigError(f"learngene-pool distill_tau must be a number > 0, got {self.distill_tau!r}")
        self.loss_alpha, self.distill_tau = float(self.loss_alpha), float(self.distill_tau)
        check_training("learngene-pool", self)

    @property
    def needs_data(self) -> bool:
        return self.epochs > 0
