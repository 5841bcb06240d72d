from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from .._checks import check_training, check_widths


@dataclass
class SnNetConfig:
    """The anchors of SN-Net (Pan et al., CVPR 2023), trained here from scratch, independently.

    SN-Net stitches pre-trained DeiT-Ti/S/B (12 blocks each). This library has no pre-trained
    small ViTs, so ``extract`` trains anchors of the given shapes on ``data`` with plain
    cross-entropy (no distillation, no ancestry weights), each with ``learngene.train.fit``
    and this recipe; or build the learngene from anchors you have with ``sn_net.from_anchors``.
    """

    widths: list[int] | None = None     # anchors' widths, narrowest first; None = D/4, D/2, D (DeiT-Ti/S/B ratios)
    num_heads: list[int] | None = None  # heads per anchor; None = the ancestry's head size, as near as divides
    depth: int | None = None            # blocks per anchor (one depth for all); None = the ancestry's (SN-Net: 12)
    epochs: int = 10                    # training epochs per anchor over `data` (0 = untrained anchors, for tests)
    batch_size: int = 128               # global batch
    lr: float = 1e-3                    # AdamW peak lr (warmup then cosine)
    weight_decay: float = 0.05          # AdamW decay on matrices
    warmup_epochs: float = 1.0          # linear warmup length in epochs
    seed: int = 0                       # seeds the anchors' initialisation and the runs
    device: str = "auto"                # "auto" (CUDA if available), "cpu", "cuda:0"...

    def __post_init__(self) -> None:
        check_widths("sn-net", self.widths, self.num_heads)
        if self.depth is not None and (not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 1):
            raise ConfigError(f"sn-net depth must be a positive integer, got {self.depth!r}")
        check_training("sn-net", self)

    @property
    def needs_data(self) -> bool:
        return self.epochs > 0
