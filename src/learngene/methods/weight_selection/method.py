"""Weight selection: a smaller ViT initialised with a subset of a larger one's weights.

Xu et al., "Initializing Models with Larger Ones", ICLR 2024; reference code
OscarXZQ/weight-selection (``weight_selection.py``, ``uniform_element_selection``).

Learngene: the ancestry's first ``max_depth`` blocks (all by default), its stem and its
final norm, unchanged; the classifier too with ``keep_head=True``. It is as large as the
part of the ancestry it serves: weight selection is an *initialisation* baseline, not a
storage saving.

Expansion to depth L, width d, h heads (head_dim hd' = d / h), MLP hidden f:

- **Layers**: descendant block l is ancestry block l, l < L ("first-N layer selection",
  the paper's choice; the reference gets it by looking up the student's own key names).
- **Elements**: a dimension of size n kept to size m takes ``uniform_indices(n, m)``
  (``methods/_indices.py``, shared with the methods that thin an axis the same way)::

      n % m == 0:  [0, s, 2s, ..., (m-1)s]  with s = n // m
      otherwise:   round(linspace(0, n-1, m))  (ends kept; float32 torch.linspace, then
                   torch.round, which rounds halves to even)

  e.g. 8 -> 4: [0, 2, 4, 6];  6 -> 4: [0, 2, 3, 5];  4 -> 3: [0, 2, 3];  n -> n: all.
  This is the reference's rule as of its Sept 2024 fix (commit 8bbb7a0; before it, the
  non-divisible case used linspace(0, n, m), which could index n, one past the end).
- **Residual stream**: the embedding axis takes ``e = uniform_indices(D, d)`` in every
  tensor that reads or writes it (patch-embedding rows, position embedding and class
  token, norms, layer scale, q/k/v input columns, proj rows and bias, fc1 columns, fc2
  rows and bias, classifier columns), in both modes. The MLP hidden axis takes
  ``uniform_indices(F, f)`` in fc1 rows/bias and fc2 columns.
- ``selection="uniform"`` (the paper's): attention is selected in timm's fused layout, as
  the reference does: ``attn.qkv.weight [3D, D]`` (rows [q; k; v], heads contiguous) keeps
  rows ``uniform_indices(3D, 3d)`` and columns ``e``; ``qkv.bias`` rows likewise;
  ``attn.proj.weight [D, D]`` keeps rows ``e`` and columns ``e``. The kept rows are spaced
  over all heads, so **one descendant head mixes dims of several ancestry heads** (D=384
  -> 192 with head_dim 64 keeps every 2nd row: descendant head 0 holds half of ancestry
  heads 0 and 1). When 3D is not a multiple of 3d the linspace rows also fall at
  different offsets inside the q, k and v blocks (64 -> 24: q keeps dims 0, 3, 5, 8, ...,
  k keeps 1, 3, 6, 9, ...), so descendant q dim i and k dim i come from different
  ancestry dims, and proj's columns (``e``) do not follow the v rows. The head count
  plays no part in this mode, so any num_heads dividing d is allowed (also more heads
  than the ancestry: the same d dims, regrouped).
- ``selection="head-aware"`` (ours, not in the paper): heads ``uniform_indices(H, h)``,
  then dims within each kept head ``uniform_indices(hd, hd')``, the same within-head
  indices for q, k, v (weights and biases) and for proj's input columns: descendant head
  j is a sub-head of exactly one ancestry head. Needs h <= H and hd' <= hd.
- No tensor is rescaled (as in the reference): selected weights keep their values, so
  e.g. fewer dims per head give smaller attention scores (timm's 1/sqrt(hd') scale
  offsets part of it).

Departures from the reference, all at the edges:

- The stem is not selected along the token or pixel axes: a different image grid
  resamples the position embeddings (bicubic, timm's ``resample_abs_pos_embed``), a
  different channel count adapts the patch filter (timm's ``adapt_input_conv``), and the
  patch size must be the ancestry's (see ``methods._common.fit_stem``).
- The reference never copies the classifier; here it is stored with ``keep_head=True``
  and copied (its columns selected) only when the label space is the ancestry's. The
  final norm is always selected and copied, as in the reference.
- Descendants larger than the ancestry along any selected axis (depth beyond the stored
  blocks, embed_dim, MLP hidden size; with head-aware also num_heads and head_dim) are a
  ConfigError naming the axis (the reference asserts). qkv_bias and layer scale must
  match the ancestry's.
"""

from __future__ import annotations


import torch

from ...arch import ViTArch
from ...artifact import Artifact
from ...errors import ConfigError
from ...stack import from_stack, to_stack
from ...stack.init import blank_stack
from .._common import Tensors, copy_head_if_same_labels, fit_stem, pack, unpack
from .._indices import uniform_indices
from .config import WeightSelectionConfig

# Canonical tensors whose every axis is the embedding axis D (selected with ``e``).
_RESIDUAL_VECTORS = ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "proj.bias", "fc2.bias",
                     "ls1.gamma", "ls2.gamma")


def take(t: torch.Tensor, *indices: torch.Tensor | None) -> torch.Tensor:
    """Index ``t`` along its leading dims (one index tensor per dim; None keeps the dim whole)."""
    for dim, idx in enumerate(indices):
        if idx is not None:
            t = t.index_select(dim, idx)
    return t


# -- extraction ----------------------------------------------------------------------


def extract(ancestry, config: WeightSelectionConfig, data=None) -> Artifact:
    stack = to_stack(ancestry)
    depth = stack.depth if config.max_depth is None else config.max_depth
    if depth > stack.depth:
        raise ConfigError(f"max_depth={depth} but the ancestry has only {stack.depth} blocks; "
                          f"choose max_depth <= {stack.depth}")
    tensors = pack("stem", stack.stem)
    for i in range(depth):
        tensors.update(pack(f"blocks.{i}", stack.blocks[i]))
    head = stack.head if config.keep_head else {k: v for k, v in stack.head.items() if k.startswith("norm.")}
    tensors.update(pack("head", head))
    method_config = {"selection": config.selection, "max_depth": depth, "keep_head": config.keep_head}
    return Artifact(method="weight-selection", config=method_config, tensors=tensors)


def stored_depth(gene: Artifact) -> int:
    return int(gene.config["max_depth"])


def validate(gene: Artifact) -> None:
    depth = stored_depth(gene)
    for i in range(depth):
        if f"blocks.{i}.q.weight" not in gene.tensors:
            raise ConfigError(f"config says the first {depth} blocks are stored but block {i} is missing")
    stored = {int(k.split(".")[1]) for k in gene.tensors if k.startswith("blocks.")}
    if stored != set(range(depth)):
        raise ConfigError(f"tensors hold blocks {sorted(stored)} but the config says blocks 0..{depth - 1}")
    if "stem.patch.weight" not in gene.tensors:
        raise ConfigError("the stem (patch embedding) is missing")


def _ancestry_sizes(gene: Artifact) -> tuple[int, int, int, int]:
    """(D, H, hd, F) of the stored ancestry blocks."""
    q = gene.tensors["blocks.0.q.weight"]  # [H, hd, D]
    H, hd, D = (int(s) for s in q.shape)
    F = int(gene.tensors["blocks.0.fc1.weight"].shape[0])
    return D, H, hd, F


def describe_shapes(gene: Artifact) -> str:
    D, H, hd, F = _ancestry_sizes(gene)
    if gene.config["selection"] == "head-aware":
        heads = f"num_heads <= {H} with head_dim <= {hd}"
    else:
        heads = "any num_heads dividing embed_dim"
    return (f"depth <= {stored_depth(gene)}, embed_dim <= {D} ({heads}), MLP hidden size <= {F} "
            f"({gene.config['selection']} selection)")


# -- expansion -----------------------------------------------------------------------


def _check_fits(gene: Artifact, depth: int, d: int, h: int, f: int) -> None:
    D, H, hd, F = _ancestry_sizes(gene)
    N = stored_depth(gene)
    axes = [("depth", depth, f"the learngene stores {N} blocks", N,
             f"choose depth <= {N} (or extract with a larger max_depth)"),
            ("embed_dim", d, f"the ancestry's is {D}", D, f"choose embed_dim <= {D}"),
            ("MLP hidden size (embed_dim * mlp_ratio)", f, f"the ancestry's is {F}", F,
             "choose a smaller mlp_ratio or embed_dim")]
    if gene.config["selection"] == "head-aware":
        axes += [("num_heads", h, f"the ancestry's is {H}", H, f"choose num_heads <= {H}"),
                 ("head_dim (embed_dim / num_heads)", d // h, f"the ancestry's is {hd}", hd,
                  f"choose num_heads >= embed_dim / {hd}, or selection='uniform'")]
    for name, want, limit, have, fix in axes:
        if want > have:
            raise ConfigError(f"weight-selection only shrinks: the descendant's {name} is {want} but {limit}; {fix}")


def _select_attention(src: Tensors, selection: str, e: torch.Tensor, d: int, h: int,
                      H: int, hd: int) -> Tensors:
    out: Tensors = {}
    hd2 = d // h
    D = H * hd
    if selection == "uniform":
        # timm's fused layout: qkv [3D, D] (rows [q; k; v], heads contiguous), proj [D, D].
        rows = uniform_indices(3 * D, 3 * d)
        qkv = torch.stack([src["q.weight"], src["k.weight"], src["v.weight"]]).reshape(3 * D, D)
        out["q.weight"], out["k.weight"], out["v.weight"] = take(qkv, rows, e).reshape(3, h, hd2, d).unbind(0)
        if "q.bias" in src:
            bias = torch.stack([src["q.bias"], src["k.bias"], src["v.bias"]]).reshape(3 * D)
            out["q.bias"], out["k.bias"], out["v.bias"] = take(bias, rows).reshape(3, h, hd2).unbind(0)
        out["proj.weight"] = take(src["proj.weight"].reshape(D, D), e, e).reshape(d, h, hd2)
    else:
        heads, within = uniform_indices(H, h), uniform_indices(hd, hd2)
        for name in ("q", "k", "v"):
            out[f"{name}.weight"] = take(src[f"{name}.weight"], heads, within, e)  # [h, hd', d]
            if f"{name}.bias" in src:
                out[f"{name}.bias"] = take(src[f"{name}.bias"], heads, within)    # [h, hd']
        out["proj.weight"] = take(src["proj.weight"], e, heads, within)           # [d, h, hd']
    return {k: v.contiguous() for k, v in out.items()}


def _select_block(src: Tensors, selection: str, e: torch.Tensor, fi: torch.Tensor, d: int, h: int,
                  H: int, hd: int) -> Tensors:
    out = _select_attention(src, selection, e, d, h, H, hd)
    for key in _RESIDUAL_VECTORS:
        if key in src:
            out[key] = take(src[key], e)
    out["fc1.weight"] = take(src["fc1.weight"], fi, e)  # [f, d]
    out["fc1.bias"] = take(src["fc1.bias"], fi)         # [f]
    out["fc2.weight"] = take(src["fc2.weight"], e, fi)  # [d, f]
    return out


def expand(gene: Artifact, arch: ViTArch):
    ancestry = gene.ancestry_arch
    selection = gene.config["selection"]
    stack = blank_stack(arch)  # placeholders: from_stack initialises only what is not selected
    d, h, f = stack.embed_dim, stack.num_heads, stack.mlp_hidden
    _check_fits(gene, stack.depth, d, h, f)
    D, H, hd, F = _ancestry_sizes(gene)
    e, fi = uniform_indices(D, d), uniform_indices(F, f)
    for layer in range(stack.depth):
        src = unpack(f"blocks.{layer}", gene.tensors)
        if set(src) != set(stack.blocks[layer]):
            extra, missing = sorted(set(src) - set(stack.blocks[layer])), sorted(set(stack.blocks[layer]) - set(src))
            raise ConfigError(f"ancestry block {layer} and the descendant's differ (ancestry only: {extra}, "
                              f"descendant only: {missing}): keep the ancestry's qkv_bias and layer-scale settings")
        stack.blocks[layer] = _select_block(src, selection, e, fi, d, h, H, hd)

    stem = unpack("stem", gene.tensors)
    selected_stem: Tensors = {}
    if "patch.weight" in stem:
        selected_stem["patch.weight"] = take(stem["patch.weight"], e)            # [d, C, p, p]
    for key in ("patch.bias", "norm_pre.weight", "norm_pre.bias"):                  # [D] each
        if key in stem:
            selected_stem[key] = take(stem[key], e)
    for key in ("pos_embed", "cls_token"):                                        # [1, T, D], [1, 1, D]
        if key in stem:
            selected_stem[key] = take(stem[key], None, None, e).contiguous()
    stack.stem.update(fit_stem(selected_stem, ancestry.replace(embed_dim=d), arch))

    head = unpack("head", gene.tensors)
    selected_head: Tensors = {k: take(v, e) for k, v in head.items() if k.startswith("norm.")}
    if "head.weight" in head:
        selected_head["head.weight"] = take(head["head.weight"], None, e).contiguous()  # [K, d]
        selected_head["head.bias"] = head["head.bias"]
    copy_head_if_same_labels(stack, selected_head, ancestry)
    return from_stack(stack, consume=True, protect=gene.tensors.values())  # the selections go in uncopied
