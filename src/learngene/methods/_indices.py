"""Index rules shared by methods: which m of n elements to keep, and where inherited layers go.

- ``uniform_indices``: weight selection's evenly spaced indices (Xu et al., ICLR 2024). TLEG's
  narrowing, PEG's matched layers and Cluster-Learngene's layer spreading and head dims use
  the same rule, so every method that thins an axis keeps the same elements.
- ``place_layers``: the descendant positions of whole inherited layers (heuristic,
  auto-learngene).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def uniform_indices(n: int, m: int) -> torch.Tensor:
    """The m of n indices the paper's uniform selection keeps (int64, increasing).

    ``arange(m) * (n // m)`` when m divides n, else ``round(linspace(0, n - 1, m))``.
    """
    if not 1 <= m <= n:
        raise ValueError(f"cannot select {m} of {n} indices")
    if n % m == 0:
        return torch.arange(m) * (n // m)
    # float32, as the reference computes it (torch's default dtype): at exact halves float32
    # linspace and float64 linspace can round differently (e.g. 28 -> 27, index 13 vs 14).
    return torch.round(torch.linspace(0, n - 1, m, dtype=torch.float32)).long()


def place_layers(layers: list[int], placement: str, ancestry_depth: int, depth: int) -> list[int]:
    """Descendant positions (one per inherited layer) for a descendant of ``depth`` layers.

    "first": 0 .. k-1; "last": depth-k .. depth-1; otherwise ("spread") ancestry layer i goes
    to round(i * (depth-1) / (ancestry_depth-1)), made strictly increasing.
    """
    k = len(layers)
    if depth < k:
        raise ConfigError(f"this learngene holds {k} layers; the descendant needs depth >= {k}, got {depth}")
    if placement == "first":
        return list(range(k))
    if placement == "last":
        return list(range(depth - k, depth))
    scale = (depth - 1) / (ancestry_depth - 1) if ancestry_depth > 1 else 0.0
    positions = []
    for j, layer in enumerate(layers):
        p = round(layer * scale)
        p = max(p, positions[-1] + 1 if positions else 0)  # strictly increasing
        p = min(p, depth - (k - j))                        # leave room for the rest
        positions.append(p)
    return positions
