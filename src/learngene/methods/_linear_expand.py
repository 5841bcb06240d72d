"""TLEG's expansion rule (Xia et al., AAAI 2024): block l of a depth-L model is
theta_A + (l / L) theta_B. Used by the ``tleg`` method and by MM-LG's TLEG-per-tower baseline.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

Tensors = dict[str, torch.Tensor]


def linear_expand(theta_a: Tensors, theta_b: Tensors, depth: int) -> list[Tensors]:
    """Blocks 0..depth-1 of a depth-``depth`` model: ``theta_A + (l / depth) * theta_B``."""
    if not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"depth must be a positive integer, got {depth!r}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*theta_a.values(), *theta_b.values())):
        return [{k: a + (l / depth) * theta_b[k] for k, a in theta_a.items()} for l in range(depth)]
    # No autograd (expansion): the same arithmetic, bit for bit, with (l / depth) * theta_B written
    # into one reused buffer per key, so no block-sized temporary is left behind for every block
    # (freed temporaries stay in the allocator's heap: +40% resident memory at DeiT-B).
    scaled = {k: torch.empty_like(b) for k, b in theta_b.items()}
    blocks = []
    for l in range(depth):
        for k, b in theta_b.items():
            torch.mul(b, l / depth, out=scaled[k])
        blocks.append({k: a + scaled[k] for k, a in theta_a.items()})
    return blocks
