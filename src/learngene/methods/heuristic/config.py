from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError

RULES = ("first", "last", "spread")


@dataclass
class HeuristicConfig:
    """Which ancestry layers form the learngene.

    The later learngene papers' baselines are ``rule="last", k=3`` ("heuristic-learngene")
    and ``rule="first", k=6`` ("auto-learngene") on a 12-block DeiT.
    """

    rule: str = "last"            # "first" | "last" | "spread": which k layers to inherit
    k: int = 3                    # how many layers (ignored when `layers` is given)
    layers: list[int] | None = None  # explicit ancestry layer indices (0-based), e.g. [0, 5, 11]
    keep_stem: bool = True        # also inherit patch/position embeddings and class token
    keep_head: bool = False       # also inherit the final norm and classifier (used if labels match)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"heuristic rule must be one of {RULES}, got {self.rule!r}")
        if self.layers is not None:
            self.layers = list(self.layers)
            if not self.layers or not all(isinstance(i, int) and i >= 0 for i in self.layers):
                raise ConfigError(f"layers must be a non-empty list of layer indices >= 0, got {self.layers!r}")
            if len(set(self.layers)) != len(self.layers):
                raise ConfigError(f"layers has duplicates: {self.layers}")
            self.layers = sorted(self.layers)
        elif not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k must be a positive integer, got {self.k!r}")
