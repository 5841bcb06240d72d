"""The stitched configurations (SN-Net's ``get_stitch_configs``, one stitch per model).

Anchors are ViTs of one depth L, ordered by width, narrowest first. The configurations:

  - each anchor alone;
  - for each stitched pair (f, e), f narrower than e (``pairs="nearest"``: neighbouring
    widths only, SN-Net's default; ``"all"``: every narrower -> wider pair, as the
    Learngene Pool reference stitches tiny -> base), and each position (j, k) of the
    sliding window (kernel 2, stride 1): blocks 0..j of f, a stitching layer
    ``Linear(d_f, d_e)``, blocks k..L-1 of e, then e's final norm and head. Window
    [i, i+1] holds the positions (j, k) in {i, i+1}^2; positions first found in one window
    share that window's stitching layer, so a pair has L-1 layers and 4 + 3 (L-2)
    positions (34 for L = 12: with DeiT-Ti/S/B, "nearest", 3 + 2 x 34 = SN-Net's 71).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError

PAIRS = ("nearest", "all")


@dataclass(frozen=True)
class Stitch:
    """One configuration: an anchor alone (``front == end``), or front blocks 0..j + layer + end blocks k..L-1."""

    front: int                    # anchor whose stem (and first blocks) run
    end: int                      # anchor whose last blocks and head run
    front_last: int | None = None  # j: blocks 0..j of `front` (None: the anchor alone)
    end_first: int | None = None   # k: blocks k..L-1 of `end`
    layer: int | None = None       # index of the pair's stitching layer (shared within a window)

    @property
    def stitched(self) -> bool:
        return self.front_last is not None

    def depth(self, anchor_depth: int) -> int:
        """Number of transformer blocks this configuration runs."""
        return anchor_depth if not self.stitched else self.front_last + 1 + anchor_depth - self.end_first

    def describe(self, anchor_depth: int) -> str:
        if not self.stitched:
            return f"anchor {self.front}"
        return (f"{self.front}[0..{self.front_last}] -> {self.end}[{self.end_first}..{anchor_depth - 1}] "
                f"(layer {self.layer})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_stitching(depth: int, kernel_size: int = 2, stride: int = 1) -> list[tuple[int, int, int]]:
    """SN-Net's sliding window over two anchors of ``depth`` blocks: [(j, k, layer), ...] in window order."""
    for name, value in (("depth", depth), ("kernel_size", kernel_size), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    positions: list[tuple[int, int, int]] = []
    seen: set[tuple[int, int]] = set()
    layer = -1
    for start in range(0, depth, stride):
        window = range(start, min(start + kernel_size, depth))
        new = [(j, k) for j in window for k in window if (j, k) not in seen]
        if new:
            layer += 1
        for j, k in new:
            seen.add((j, k))
            positions.append((j, k, layer))
    return positions


def stitch_pairs(num_anchors: int, pairs: str) -> list[tuple[int, int]]:
    """The stitched (front, end) anchor pairs, narrower -> wider."""
    if pairs not in PAIRS:
        raise ConfigError(f"pairs must be one of {PAIRS}, got {pairs!r}")
    if pairs == "nearest":
        return [(a, a + 1) for a in range(num_anchors - 1)]
    return list(itertools.combinations(range(num_anchors), 2))


def enumerate_stitches(num_anchors: int, depth: int, *, pairs: str = "nearest", kernel_size: int = 2,
                       stride: int = 1) -> list[Stitch]:
    """Every configuration: the anchors alone first, then each pair's window positions."""
    configs = [Stitch(front=a, end=a) for a in range(num_anchors)]
    positions = paired_stitching(depth, kernel_size, stride)
    for front, end in stitch_pairs(num_anchors, pairs):
        configs += [Stitch(front, end, j, k, layer) for j, k, layer in positions]
    return configs
