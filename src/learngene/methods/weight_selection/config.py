from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError

SELECTIONS = ("uniform", "head-aware")


@dataclass
class WeightSelectionConfig:
    """What the weight-selection learngene keeps, and how descendants select from it.

    ``selection="uniform"`` is the paper's (Xu et al., ICLR 2024); ``"head-aware"`` is ours.
    See ``learngene.methods.weight_selection.method`` for the exact index rule.
    """

    selection: str = "uniform"    # "uniform" (the paper's, mixes heads) | "head-aware" (whole heads, then dims)
    max_depth: int | None = None  # store the first N blocks = the deepest descendant served; None: all
    keep_head: bool = False       # store the classifier too (copied when labels match); the reference never does

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ConfigError(f"weight-selection selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.max_depth is not None and (isinstance(self.max_depth, bool) or not isinstance(self.max_depth, int)
                                           or self.max_depth < 1):
            raise ConfigError(f"max_depth must be a positive integer (or None for all blocks), got {self.max_depth!r}")
        if not isinstance(self.keep_head, bool):
            raise ConfigError(f"keep_head must be true or false, got {self.keep_head!r}")
