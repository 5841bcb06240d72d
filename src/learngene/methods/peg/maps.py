"""PEG's expansion maps, and the rule that grows L_b x H_b learngene layers into L_d x H_d blocks.

The paper expands with learned non-linear maps along two axes:
  - layers: ``Linear(L_b -> L_d) -> ReLU -> Linear(L_d -> L_d)`` along the layer axis;
  - heads:  ``Linear(H_b -> H_d) -> ReLU -> Linear(H_d -> H_d)`` along the head axis.
Here both act on *weights* (every element's vector over the L_b layers, or over the H_b
heads, is mapped), so the expanded descendant is an ordinary ViT and can be folded into
plain timm weights (``method.fold``). The paper applies the head map to attention logits
and to V instead, which is not foldable; see ``method.py`` for this and the other departures.
Each map is a ``methods._weight_maps.mlp_map`` run with ``along`` (shared with Cluster-Learngene).

Which tensors go through which map (canonical block keys, stacked over layers):
  - ``layer_attn``: norm1, q/k/v, proj, ls1  (the attention sub-layer; ours, the paper has no
    layer map for attention because its descendants keep the ancestry's depth);
  - ``layer_ffn``:  norm2, fc1, fc2, ls2     (the FFN sub-layer: the paper's layer map);
  - per descendant layer l: ``head_qk[l]`` on q and k, ``head_v[l]`` on v (the reference's
    two head maps, for QK^T and V), ``head_o[l]`` on proj's input columns (ours: the
    reference keeps the ancestry's full proj, which has H_a = H_d head slices).

Map forms (``PegConfig.map_form``):
  - ``"split"`` (default, ours): hidden width 2 n_out, initialised so the map is exactly
    the linear interpolation ``M x``: W1 = [M; -M], W2 = [I, -I], biases 0, and
    relu(z) - relu(-z) = z. The ReLU is there and training can make it bite; at init the
    map copies (n_out = n_in: the identity, bitwise), interpolates (layers) or mixes
    neighbouring heads. A shift (b1 = c, b2 = -c) would keep the paper's hidden width n_out
    but make Adam's per-step moves of W2 scale with c, so we widen instead.
  - ``"paper"``: hidden width n_out, PyTorch's default Linear init, as the reference builds
    them (so the learngene passes through random maps until they are trained).
"""

from __future__ import annotations

import torch
from torch import nn

from .._indices import uniform_indices
from .._weight_maps import along, along_layers, mlp_map, set_split

Tensors = dict[str, torch.Tensor]

ATTN_KEYS = ("norm1.weight", "norm1.bias", "q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias",
             "proj.weight", "proj.bias", "ls1.gamma")
FFN_KEYS = ("norm2.weight", "norm2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "ls2.gamma")
# Per-head tensors of one block: where the head axis and the within-head dim axis are.
HEAD_AXIS = {"q.weight": 0, "k.weight": 0, "v.weight": 0, "q.bias": 0, "k.bias": 0, "v.bias": 0, "proj.weight": 1}
DIM_AXIS = {"q.weight": 1, "k.weight": 1, "v.weight": 1, "q.bias": 1, "k.bias": 1, "v.bias": 1, "proj.weight": 2}
HEAD_MAP = {"q": "head_qk", "k": "head_qk", "v": "head_v", "proj": "head_o"}


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in]: row i linearly interpolates position i (n_in - 1) / (n_out - 1) (align-corners).

    Rows at integer positions are one-hot, so n_out == n_in gives the identity; n_out == 1
    picks position 0. Computed with exact integer arithmetic for the positions.
    """
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        if n_out == 1 or n_in == 1:
            m[i, 0] = 1.0
            continue
        lo, rem = divmod(i * (n_in - 1), n_out - 1)
        w = rem / (n_out - 1)
        m[i, lo] += 1.0 - w
        if rem:
            m[i, lo + 1] += w
    return m.float()


class PegMaps(nn.Module):
    """The expansion maps of one descendant shape: L_b -> L_d layers, H_b -> H_d heads.

    ``layer_attn`` and ``layer_ffn`` act along the layer axis; ``head_qk[l]``, ``head_v[l]``
    and ``head_o[l]`` along the head axis of descendant layer l (one set per layer, as the
    reference has one pair per attention module).
    """

    def __init__(self, layers_in: int, layers_out: int, heads_in: int, heads_out: int, form: str = "split"):
        super().__init__()
        self.shape = (int(layers_in), int(layers_out), int(heads_in), int(heads_out))
        self.form = form
        self.layer_attn = mlp_map(layers_in, layers_out, form)
        self.layer_ffn = mlp_map(layers_in, layers_out, form)
        self.head_qk = nn.ModuleList(mlp_map(heads_in, heads_out, form) for _ in range(layers_out))
        self.head_v = nn.ModuleList(mlp_map(heads_in, heads_out, form) for _ in range(layers_out))
        self.head_o = nn.ModuleList(mlp_map(heads_in, heads_out, form) for _ in range(layers_out))
        if form == "split":
            self.reset_to_interpolation()

    def reset_to_interpolation(self) -> None:
        """Start as linear maps: layers and q/k/v heads interpolated; proj heads interpolated x H_b/H_d.

        The proj factor keeps the attention output's scale (a sum over heads) when H_d heads
        replace H_b; with H_d = H_b it is 1 and every map is the identity.
        """
        if self.form != "split":
            raise ValueError("only 'split' maps have an interpolation initialisation")
        l_in, l_out, h_in, h_out = self.shape
        layer, heads = interpolation_matrix(l_in, l_out), interpolation_matrix(h_in, h_out)
        set_split(self.layer_attn, layer)
        set_split(self.layer_ffn, layer)
        for l in range(l_out):
            set_split(self.head_qk[l], heads)
            set_split(self.head_v[l], heads)
            set_split(self.head_o[l], heads * (h_in / h_out))


def fit_head_dim(x: torch.Tensor, key: str, head_dim: int, extra: torch.Tensor | None) -> torch.Tensor:
    """Bring a per-head tensor of one block to ``head_dim`` dims per head.

    Fewer dims: evenly spaced dims of each head (weight selection's ``uniform_indices``,
    the same dims for q, k, v and proj). More dims: the learngene's dims first, then
    ``extra`` (the descendant's own, timm-initialised, trainable).
    """
    axis = DIM_AXIS[key]
    have = x.shape[axis]
    if head_dim == have:
        return x
    if head_dim < have:
        return x.index_select(axis, uniform_indices(have, head_dim).to(x.device))
    if extra is None:
        raise ValueError(f"{key}: {head_dim} dims per head requested, the learngene has {have} and no extra dims were given")
    return torch.cat([x, extra], dim=axis)


def expand_layers(layers: Tensors, maps: PegMaps, head_dim: int, extra: Tensors | None = None) -> list[Tensors]:
    """Learngene layers -> the descendant's canonical blocks (differentiable in everything).

    ``layers``: canonical block tensors stacked over the L_b learngene layers (heads
    ``[L_b, H_b, hd_b, D]``, proj ``[L_b, D, H_b, hd_b]``, vectors ``[L_b, D]``...).
    ``extra``: per-head dims beyond hd_b, stacked over the L_d descendant layers
    (needed only when ``head_dim > hd_b``). Returns L_d dicts of canonical block tensors.
    """
    folding = not torch.is_grad_enabled()
    blocks: list[Tensors] = [{} for _ in range(maps.shape[1])]
    for key, t in layers.items():
        layer_map = maps.layer_attn if key in ATTN_KEYS else maps.layer_ffn
        # Folding (no autograd): one tensor per layer, each its own memory (see along_layers).
        deep = along_layers(layer_map, t) if folding else along(layer_map, t, 0)  # L_d x [...]
        for l, block in enumerate(blocks):
            x = deep[l]
            if key in HEAD_AXIS:
                head_map = getattr(maps, HEAD_MAP[key.split(".")[0]])[l]
                x = along(head_map, x, HEAD_AXIS[key])
                x = fit_head_dim(x, key, head_dim, None if extra is None or key not in extra else extra[key][l])
                if folding:  # a strided view of the map's output: the block gets its own contiguous copy
                    x = x.clone(memory_format=torch.contiguous_format)
            block[key] = x
    return blocks
