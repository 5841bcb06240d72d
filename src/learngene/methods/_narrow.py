"""Head-aware width selection of a canonical stack: narrower descendants for the depth-only
methods TLEG and SWS (our extension to both; neither paper makes narrower models).

A narrower descendant (fewer heads, smaller embed_dim, smaller MLP) takes evenly spaced
slices of the wider stack: the head-aware mode of weight selection (Xu et al., ICLR 2024;
``learngene.methods.weight_selection``, whose index rule ``uniform_indices`` (``methods/_indices.py``)
is used here, so both methods keep the same indices):
  - heads:            H_d of the H_a heads (whole heads, never mixed);
  - dims in a head:   hd_d of the hd_a dims of each kept head (same dims for q, k, v, proj);
  - residual stream:  D_d of the D_a channels (norms, biases, patch and position
                      embeddings, q/k/v columns, proj rows, fc1 columns, fc2 rows, head columns);
  - MLP hidden:       F_d of the F_a units.
So descendant head h is one head of the source (its q/k/v rows and proj columns), sliced.

weight_selection applies the same per-block selection inside its own extraction; it has no
stack-level function that this module could call.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..stack import VitStack
from ._indices import uniform_indices


def spaced(n: int, k: int) -> torch.Tensor:
    """``k`` of ``range(n)`` evenly spaced: weight selection's ``uniform_indices`` (stride n // k
    when k divides n, else round(linspace(0, n - 1, k)))."""
    if not 1 <= k <= n:
        raise ConfigError(f"cannot select {k} of {n}")
    return uniform_indices(n, k)


def narrow_stack(stack: VitStack, embed_dim: int, num_heads: int, mlp_hidden: int) -> VitStack:
    """A narrower copy of ``stack``: ``num_heads`` heads of ``embed_dim // num_heads`` dims, MLP ``mlp_hidden``.

    Raises ConfigError if any target size exceeds the source's (selection cannot widen).
    The returned stack's arch has the new ``embed_dim``, ``num_heads`` and ``mlp_ratio``.
    """
    D, H, hd, F = stack.embed_dim, stack.num_heads, stack.head_dim, stack.mlp_hidden
    if embed_dim % num_heads:
        raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    hd_new = embed_dim // num_heads
    for name, new, old in (("embed_dim", embed_dim, D), ("num_heads", num_heads, H),
                           ("head_dim (embed_dim / num_heads)", hd_new, hd), ("MLP hidden size", mlp_hidden, F)):
        if new > old:
            raise ConfigError(f"the descendant's {name} is {new} but the learngene has {old}: width selection "
                              f"can only narrow; choose {name} <= {old}")
    res, heads, dims, hid = spaced(D, embed_dim), spaced(H, num_heads), spaced(hd, hd_new), spaced(F, mlp_hidden)

    def block(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, t in b.items():
            if key in ("q.weight", "k.weight", "v.weight"):      # [H, hd, D]
                out[key] = t[heads][:, dims][:, :, res]
            elif key in ("q.bias", "k.bias", "v.bias"):          # [H, hd]
                out[key] = t[heads][:, dims]
            elif key == "proj.weight":                           # [D, H, hd]
                out[key] = t[res][:, heads][:, :, dims]
            elif key == "fc1.weight":                            # [F, D]
                out[key] = t[hid][:, res]
            elif key == "fc1.bias":                              # [F]
                out[key] = t[hid]
            elif key == "fc2.weight":                            # [D, F]
                out[key] = t[res][:, hid]
            else:                                                # norms, proj.bias, fc2.bias, ls gammas: [D]
                out[key] = t[res]
        return out

    stem = {}
    for key, t in stack.stem.items():
        stem[key] = t[res] if key in ("patch.weight", "patch.bias") else t[..., res]  # tokens/pos: [1, T, D]
    head = {key: (t[:, res] if key == "head.weight" else t if key == "head.bias" else t[res])
            for key, t in stack.head.items()}
    arch = stack.arch.replace(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_hidden / embed_dim)
    return VitStack(arch=arch, stem=stem, blocks=[block(b) for b in stack.blocks], head=head)
