"""Cluster-Learngene: Inheriting Adaptive Clusters for Vision Transformers (Wang et al., NeurIPS 2024;
code BruceQFWang/NeurIPS24-Cluster-Learngene).

Extraction (needs data). On ``sample_size`` images of the data (``clustering.py``):
  - every head's mean attention distance (pixels, class token excluded), per layer clustered
    by DBSCAN (``eps`` px, ``min_samples``); each cluster's representative is the head
    nearest its centroid; clusters are ordered by size, largest first: the priority
    (``head_grouping="random"``, a control of ours: the same cluster sizes, heads assigned
    at random);
  - every FFN's behaviour (its outputs on the tokens the layers feed their FFNs); adjacent
    layers whose FFNs behave alike form a group, and one FFN per group is kept.

Learngene (stored):
  - ``layers.<l>.{q,k,v}.weight`` [k_l, hd, D] and ``.bias`` [k_l, hd]: the k_l
    representatives of ancestry layer l, in priority order (true heads: the canonical
    per-head slices, biases included); ``layers.<l>.proj.weight`` [D, k_l, hd]: their
    output-projection columns; the layer's own small tensors (norm1, norm2, proj.bias,
    layer-scale gammas);
  - ``ffn.<l>.{fc1,fc2}.{weight,bias}``: the FFN each group keeps (l = its kept layer);
  - ``stem.*``; ``head.norm.*`` (the final norm), ``head.head.*`` only with ``keep_head``.
  The config holds the cluster structure (``head_clusters``, ``ffn_groups``, ``ffn_kept``)
  and the measurements (``distances``, ``ffn_similarity``).

Descendants (any depth, any ``num_heads`` dividing embed_dim; the ancestry's width and MLP
ratio). Descendant layer j reads ancestry layer a(j): evenly spaced (``placement="spread"``,
weight selection's ``uniform_indices``; deeper descendants repeat layers) or a(j) = j
(``"first"``, the reference's choice for shallower descendants).
  - Heads, priority weight-sharing: descendant head i takes representative i mod k of its
    layer. Its output-projection columns are the representative's times s_c / m_c (s_c: the
    cluster's size in the ancestry, m_c: how many descendant heads share representative c),
    so the attention output is preserved whenever the heads of a cluster are alike (exactly
    when they are identical, and always when every head is its own cluster). Head dims:
    with fewer dims per head (more heads than the ancestry) each head keeps evenly spaced
    dims (the same for q, k, v, proj); with more, the inherited dims come first, q is scaled
    by sqrt(hd_d / hd_a) (timm scales logits by 1/sqrt(head_dim)), the extra k dims and proj
    columns start at zero and the extra q and v dims are timm-initialised: the attention
    maps and the output are preserved exactly and every extra dim still gets gradients.
    Heads beyond a representative's first copy get Gaussian noise on q/k/v of
    ``share_noise`` x the representative's RMS (Net2Net's symmetry breaking: exact copies
    with equal projection columns would get equal gradients forever).
  - FFNs: the descendant layers whose source layers fall in one FFN group share its kept FFN
    through a learnable transformation along the layer axis, Linear(1 -> n) -> ReLU ->
    Linear(n -> n) (the reference's ``transform_mlp``), applied to every element of fc1/fc2
    weights and biases. It starts as an exact copy (PEG's "split" form: hidden width 2n,
    relu(x) - relu(-x) = x) and, unlike the reference (which writes the result through
    ``.data``), it trains: ``expand_trainable`` returns ``ClusterDescendant``, whose
    parameters are the descendant's attention tensors, the kept FFNs and the transforms;
    train it with ``learngene.train.fit`` and ``fold`` it into the plain timm ViT it
    computes. ``expand`` folds at once, at the transforms' start values.
  - stem fitted to the descendant (``fit_stem``), final norm copied, classifier copied only
    when stored and the label space is the ancestry's; the rest timm-initialised.

Departures from the reference code (its defects are not reproduced): q/k/v are sliced as
true heads (the reference reshapes timm's fused [q; k; v] rows as if interleaved per head,
so its "heads" mix q, k and v of different heads) with their biases (the reference drops
them); the proj columns follow the representatives (the reference keeps the first columns
or repeats them in place, unrelated to which heads were kept) and are scaled by cluster
size; the FFN transform trains; no epochs are skipped. Ours: FFN grouping by measured
behaviour (the reference hard-codes the groups per model), medoid kept (the reference keeps
the group's first layer), any depth via ``placement``, the noise on shared copies, exact
preservation for wider heads.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ...arch import ViTArch, arch_of
from ...artifact import Artifact
from ...data.tensors import sample_tensors
from ...errors import ConfigError
from ...registry import config_to_dict
from ...stack import VitStack, from_stack, to_stack
from ...stack.init import blank_stack, materialize
from ...train.distributed import resolve_device
from ...train.flops import forward_flops_per_sample
from .._common import check_images_fit, copy_head_if_same_labels, fit_stem, pack, unpack
from .._computed import ComputedViT, decay_matrices_only, fold_computed
from .._indices import uniform_indices
from .._weight_maps import along, along_layers, mlp_map, set_split
from .clustering import cluster_heads, ffn_similarity, group_ffns, measure, random_clusters_like
from .config import ClusterLearngeneConfig

Tensors = dict[str, torch.Tensor]

HEAD_KEYS = ("q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias")  # head axis 0, dim axis 1
LAYER_KEYS = ("norm1.weight", "norm1.bias", "proj.bias", "norm2.weight", "norm2.bias", "ls1.gamma", "ls2.gamma")
FFN_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


# -- extraction ---------------------------------------------------------------------------------
def extract(ancestry: VisionTransformer, config: ClusterLearngeneConfig, data: Any = None) -> Artifact:
    """Measure and cluster the ancestry's heads and FFNs on ``data``; store the representatives."""
    if config.has_outputs:
        raise ConfigError("cluster-learngene fills in distances, head_clusters, ffn_groups, ffn_kept and "
                          "ffn_similarity itself; leave them unset")
    if data is None:
        raise ConfigError("cluster-learngene measures attention distances on images: pass data='fashion-mnist' "
                          "(or --data on the CLI; any dataset at the ancestry's input size)")
    arch = arch_of(ancestry)
    generator = torch.Generator().manual_seed(config.seed)
    images, _ = sample_tensors(data, config.sample_size, generator, who="cluster-learngene")
    check_images_fit(images, arch)
    stack = to_stack(ancestry).clone()  # own copies: the ancestry is never modified
    device = resolve_device(config.device, field="cluster-learngene device")
    model_device = next(ancestry.parameters()).device
    try:
        ancestry.to(device)
        distances, ffn_inputs = measure(ancestry, stack, images, batch_size=config.batch_size,
                                        ffn_tokens=config.ffn_tokens, generator=generator)
    finally:
        ancestry.to(model_device)
    if not torch.isfinite(distances).all():
        raise ConfigError("a mean attention distance is NaN/inf: the ancestry's attention overflows on this data")
    head_clusters = []
    for layer in range(stack.depth):
        clusters = cluster_heads(distances[layer].numpy(), config.eps, config.min_samples)
        if not clusters:
            raise ConfigError(f"DBSCAN marked every head of layer {layer} as noise (eps={config.eps}, "
                              f"min_samples={config.min_samples}); lower min_samples or raise eps")
        if config.head_grouping == "random":
            clusters = random_clusters_like(clusters, generator)
        head_clusters.append(clusters)
    similarity = ffn_similarity(stack, ffn_inputs, device)
    ffn_groups, ffn_kept = group_ffns(similarity, config.ffn_threshold)

    tensors: Tensors = {}
    for layer, (block, clusters) in enumerate(zip(stack.blocks, head_clusters)):
        reps = torch.tensor([members[0] for members in clusters])  # priority order
        kept = {key: block[key].index_select(0, reps) for key in HEAD_KEYS if key in block}
        kept["proj.weight"] = block["proj.weight"].index_select(1, reps)  # [D, k, hd]
        kept.update({key: block[key] for key in LAYER_KEYS if key in block})
        tensors.update(pack(f"layers.{layer}", kept))
    for layer in ffn_kept:
        tensors.update(pack(f"ffn.{layer}", {key: stack.blocks[layer][key] for key in FFN_KEYS}))
    tensors.update(pack("stem", stack.stem))
    head = {k: v for k, v in stack.head.items() if k.startswith("norm.") or config.keep_head}
    tensors.update(pack("head", head))

    samples = int(images.shape[0])
    method_config = config_to_dict(dataclasses.replace(
        config, distances=_rounded(distances), head_clusters=head_clusters, ffn_groups=ffn_groups,
        ffn_kept=ffn_kept, ffn_similarity=_rounded(similarity)))
    cost = {"samples_seen": samples, "flops": float(forward_flops_per_sample(ancestry, images[:1]) * samples)}
    return Artifact(method="cluster-learngene", config=method_config, tensors=tensors, provenance={"cost": cost})


def _rounded(table: torch.Tensor, digits: int = 4) -> list[list[float]]:
    """A measurement table for the config: 4 decimals keep it readable (the clustering used full precision)."""
    return [[round(float(x), digits) for x in row] for row in table]


# -- descendants -----------------------------------------------------------------------------------
def source_layers(ancestry_depth: int, depth: int, placement: str) -> list[int]:
    """The ancestry layer each descendant layer reads.

    Deeper than the ancestry: each ancestry layer is repeated, in order (j * L_a // L_d).
    Otherwise "spread": evenly spaced (``uniform_indices``); "first": layers 0 .. L_d - 1.
    """
    if depth > ancestry_depth:
        return [j * ancestry_depth // depth for j in range(depth)]
    if placement == "first":
        return list(range(depth))
    return [int(i) for i in uniform_indices(ancestry_depth, depth)]


def _fit_head_dims(key: str, x: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """Bring shared heads x ([H_d, hd_a, ...], or proj [D, H_d, hd_a]) to the descendant's head_dim.

    ``fresh`` is the descendant's timm-initialised tensor of the same key ([H_d, hd_d, ...]).
    Fewer dims: evenly spaced ones. More: inherited dims first, then q and v from ``fresh``,
    k and proj zero, q scaled by sqrt(hd_d / hd_a): attention maps and output preserved.
    """
    axis = 2 if key == "proj.weight" else 1
    have, want = x.shape[axis], fresh.shape[axis]
    if want == have:
        return x
    if want < have:
        return x.index_select(axis, uniform_indices(have, want))
    if key.startswith("q."):
        x = x * math.sqrt(want / have)
    if key.startswith(("k.", "proj.")):
        extra = torch.zeros_like(fresh.narrow(axis, have, want - have))
    else:
        extra = fresh.narrow(axis, have, want - have)
    return torch.cat([x, extra], dim=axis)


def share_heads(stored: Tensors, cluster_sizes: list[int], fresh: Tensors, share_noise: float) -> Tensors:
    """Priority weight-sharing: the descendant block's q/k/v/proj from one ancestry layer's
    representatives (``stored``, priority order) for ``fresh``'s head count and head_dim."""
    k, num_heads = stored["q.weight"].shape[0], fresh["q.weight"].shape[0]
    reps = torch.tensor([i % k for i in range(num_heads)])
    copies = Counter(reps.tolist())  # m_c
    out = {}
    for key in HEAD_KEYS:
        if key not in stored:
            continue
        x = stored[key].index_select(0, reps).clone()  # [H_d, hd_a(, D)]
        if share_noise > 0:
            for i in range(k, num_heads):  # every copy after a representative's first
                source = stored[key][i % k]
                rms = source.pow(2).mean().sqrt()
                x[i] += share_noise * rms * torch.randn(source.shape, dtype=source.dtype)
        out[key] = _fit_head_dims(key, x, fresh[key])
    weights = torch.tensor([cluster_sizes[c] / copies[c] for c in reps.tolist()], dtype=stored["proj.weight"].dtype)
    proj = stored["proj.weight"].index_select(1, reps) * weights[None, :, None]  # [D, H_d, hd_a]
    out["proj.weight"] = _fit_head_dims("proj.weight", proj, fresh["proj.weight"])
    return out


def _check_compatible(gene: Artifact, arch: ViTArch, target: VitStack) -> None:
    d = gene.ancestry_arch.embed_dim
    if arch.embed_dim != d:
        raise ConfigError(f"cluster-learngene keeps the ancestry's width: embed_dim must be {d}, got "
                          f"{arch.embed_dim} (vary depth and num_heads; for a narrower model use weight-selection)")
    hidden = gene.tensors[f"ffn.{gene.config['ffn_kept'][0]}.fc1.weight"].shape[0]
    if target.mlp_hidden != hidden:
        raise ConfigError(f"cluster-learngene keeps the ancestry's MLP width {hidden}: mlp_ratio must be "
                          f"{hidden / d:g}, got {arch.mlp_ratio}")
    stored = set(unpack("layers.0", gene.tensors)) | set(FFN_KEYS)
    if stored != set(target.blocks[0]):
        raise ConfigError(f"the learngene's layers hold {sorted(stored)} but the descendant expects "
                          f"{sorted(target.blocks[0])}: keep the ancestry's qkv_bias and layer-scale (init_values)")


def _build(gene: Artifact, arch: ViTArch) -> "ClusterDescendant":
    return ClusterDescendant(arch, **_parts(gene, arch))


def _parts(gene: Artifact, arch: ViTArch) -> dict[str, Any]:
    """What a descendant of ``arch`` starts from: each block's attention tensors and norms, the
    kept FFNs (the stored tensors, not copies), which blocks share each, stem and head."""
    cfg = gene.config
    # Placeholders (no memory, no draws): blocks are built from the learngene; the stem and head are
    # drawn fresh, and the blocks too when the descendant's heads are wider (their extra q/v dims).
    target = blank_stack(arch)
    _check_compatible(gene, arch, target)
    materialize(target, blocks=target.head_dim > gene.ancestry_arch.embed_dim // gene.ancestry_arch.num_heads)
    sources = source_layers(gene.ancestry_arch.depth, target.depth, cfg.get("placement", "spread"))
    blocks = []
    for j, layer in enumerate(sources):
        stored = unpack(f"layers.{layer}", gene.tensors)
        sizes = [len(members) for members in cfg["head_clusters"][layer]]
        block = {key: stored[key] for key in LAYER_KEYS if key in stored}
        block.update(share_heads(stored, sizes, target.blocks[j], float(cfg.get("share_noise", 0.0))))
        blocks.append(block)
    group_of = {layer: kept for group, kept in zip(cfg["ffn_groups"], cfg["ffn_kept"]) for layer in group}
    members: dict[int, list[int]] = {}
    for j, layer in enumerate(sources):
        members.setdefault(group_of[layer], []).append(j)
    ffns = {kept: unpack(f"ffn.{kept}", gene.tensors) for kept in members}
    target.stem.update(fit_stem(unpack("stem", gene.tensors), gene.ancestry_arch, arch))
    copy_head_if_same_labels(target, unpack("head", gene.tensors), gene.ancestry_arch)
    return dict(blocks=blocks, ffns=ffns, members=members, stem=target.stem, head=target.head)


def start_transforms(members: dict[int, list[int]]) -> nn.ModuleDict:
    """One FFN transform (1 -> n layers) per kept FFN, each starting as an exact copy."""
    transforms = nn.ModuleDict()
    for kept, layers in members.items():
        transform = mlp_map(1, len(layers), "split")
        set_split(transform, torch.ones(len(layers), 1))  # start: every layer an exact copy
        transforms[str(kept)] = transform
    return transforms


def add_shared_ffns(blocks: list[Tensors], ffns: dict[int, Tensors], members: dict[int, list[int]],
                    transforms: nn.ModuleDict) -> None:
    """Put into ``blocks[j]`` the FFN tensors of descendant layer j: its group's kept FFN
    through the group's transform. Without autograd (folding) each layer's tensor is made on its
    own (``along_layers``), so no [n, ...] tensor of the group exists."""
    folding = not torch.is_grad_enabled()
    for kept, layers in members.items():
        transform = transforms[str(kept)]
        for key, tensor in ffns[kept].items():
            grow = along_layers(transform, tensor.unsqueeze(0)) if folding else along(transform, tensor.unsqueeze(0), 0)
            for position, j in enumerate(layers):  # [1, ...] -> n x [...] along the layer axis
                blocks[j][key] = grow[position]


class ClusterDescendant(ComputedViT):
    """A trainable Cluster-Learngene descendant: its own attention tensors and norms per block
    (``blocks.<j>.*``), the kept FFNs (``ffn.<l>.*``) and their layer transforms
    (``transforms.<l>``: 1 -> n layers), stem and head; it runs a parameter-less timm ViT of
    ``arch`` on the assembled weights (``torch.func.functional_call``); ``fold`` turns it into
    that ViT.
    """

    def __init__(self, arch: ViTArch, *, blocks: list[Tensors], ffns: dict[int, Tensors],
                 members: dict[int, list[int]], stem: Tensors, head: Tensors):
        groups = {**{f"blocks.{j}": b for j, b in enumerate(blocks)}, **{f"ffn.{l}": f for l, f in ffns.items()},
                  "stem": stem, "head": head}
        super().__init__(arch, groups)
        self.members = {int(kept): list(layers) for kept, layers in members.items()}
        self.transforms = start_transforms(self.members)

    def stack(self) -> VitStack:
        """The descendant's canonical stack (differentiable in every parameter)."""
        blocks = [self.group(f"blocks.{j}") for j in range(self.arch.depth)]
        ffns = {kept: self.group(f"ffn.{kept}") for kept in self.members}
        add_shared_ffns(blocks, ffns, self.members, self.transforms)
        return VitStack(arch=self.arch, stem=self.group("stem"), blocks=blocks, head=self.group("head"))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Decay only weight matrices (timm's rule for the ViT); never the transforms."""
        groups = [f"blocks.{j}" for j in range(self.arch.depth)] + [f"ffn.{kept}" for kept in self.members]
        return decay_matrices_only(self, groups)


def expand_trainable(gene: Artifact, arch: ViTArch) -> ClusterDescendant:
    """The trainable descendant (FFN layer transforms included): train it, then ``fold`` it."""
    return _build(gene, arch)


def fold(descendant: ClusterDescendant) -> VisionTransformer:
    """The plain timm VisionTransformer that computes exactly what ``descendant`` computes."""
    return fold_computed(descendant)


def expand(gene: Artifact, arch: ViTArch) -> VisionTransformer:
    """A timm ViT of ``arch``: the descendant with its FFN transforms at their start values, folded.

    The same numbers as ``fold(expand_trainable(gene, arch))``, computed straight from the
    learngene's tensors (no trainable module, so no copy of them) and handed to the model
    uncopied: about one model of memory at the peak.
    """
    parts = _parts(gene, arch)
    # The transforms start as exact copies (relu(x) - relu(-x) = x): folding them gives every
    # member layer its group's kept FFN, bit for bit (tested), so copy it instead of running them.
    for kept, layers in parts["members"].items():
        for j in layers:
            parts["blocks"][j].update({key: t.clone() for key, t in parts["ffns"][kept].items()})
    stack = VitStack(arch=arch, stem=parts["stem"], blocks=parts["blocks"], head=parts["head"])
    return from_stack(stack, consume=True, protect=gene.tensors.values())


# -- the artifact --------------------------------------------------------------------------------------
def validate(gene: Artifact) -> None:
    """The cluster structure in the config and the stored tensors agree with each other and the ancestry."""
    cfg, a = gene.config, gene.ancestry_arch
    depth, heads, d = a.depth, a.num_heads, a.embed_dim
    clusters, groups, kept = cfg.get("head_clusters"), cfg.get("ffn_groups"), cfg.get("ffn_kept")
    if clusters is None or groups is None or kept is None:
        raise ConfigError("the config must hold the extracted head_clusters, ffn_groups and ffn_kept")
    if len(clusters) != depth:
        raise ConfigError(f"head_clusters lists {len(clusters)} layers for an ancestry of {depth}")
    for layer, layer_clusters in enumerate(clusters):
        members = [h for c in layer_clusters for h in c]
        if len(set(members)) != len(members) or max(members) >= heads:
            raise ConfigError(f"head_clusters of layer {layer} must hold distinct heads < {heads}, "
                              f"got {layer_clusters}")
        q = gene.tensors.get(f"layers.{layer}.q.weight")
        if q is None or tuple(q.shape) != (len(layer_clusters), d // heads, d):
            raise ConfigError(f"layers.{layer}.q.weight must hold the layer's {len(layer_clusters)} representatives "
                              f"as [{len(layer_clusters)}, {d // heads}, {d}]")
    if [l for g in groups for l in g] != list(range(depth)):
        raise ConfigError(f"ffn_groups must split layers 0..{depth - 1} into runs of adjacent layers, got {groups}")
    if len(kept) != len(groups) or any(l not in g for l, g in zip(kept, groups)):
        raise ConfigError(f"ffn_kept must name one layer of each FFN group, got {kept} for {groups}")
    for name in ("distances", "ffn_similarity"):
        rows = cfg.get(name)
        width = heads if name == "distances" else depth
        if rows is not None and (len(rows) != depth or any(len(r) != width for r in rows)):
            raise ConfigError(f"{name} must be a [{depth}][{width}] table")
    required = {f"layers.{l}" for l in range(depth)} | {f"ffn.{l}" for l in kept} | {"stem"}
    present = {k.rsplit(".", 2)[0] if k.startswith(("layers.", "ffn.")) else k.split(".", 1)[0] for k in gene.tensors}
    if present - required - {"head"} or required - present:
        raise ConfigError(f"stored tensor groups {sorted(present - required - {'head'})} are unexpected or "
                          f"{sorted(required - present)} are missing")
    for layer in range(depth):
        stored = unpack(f"layers.{layer}", gene.tensors)
        k, hd = len(clusters[layer]), d // heads
        shapes = {"q.weight": (k, hd, d), "k.weight": (k, hd, d), "v.weight": (k, hd, d), "q.bias": (k, hd),
                  "k.bias": (k, hd), "v.bias": (k, hd), "proj.weight": (d, k, hd)}
        for key, tensor in stored.items():
            if tuple(tensor.shape) != shapes.get(key, (d,)):
                raise ConfigError(f"layers.{layer}.{key} has shape {tuple(tensor.shape)}, "
                                  f"expected {shapes.get(key, (d,))}")
    hidden = int(d * a.mlp_ratio)
    for l in kept:
        shapes = {"fc1.weight": (hidden, d), "fc1.bias": (hidden,), "fc2.weight": (d, hidden), "fc2.bias": (d,)}
        stored = unpack(f"ffn.{l}", gene.tensors)
        if {k: tuple(v.shape) for k, v in stored.items()} != shapes:
            raise ConfigError(f"ffn.{l} must hold fc1/fc2 of the ancestry's MLP width {hidden}")


def describe_shapes(gene: Artifact) -> str:
    a, cfg = gene.ancestry_arch, gene.config
    d = a.embed_dim
    reps = [len(c) for c in cfg["head_clusters"]]
    return (f"any depth >= 1 and num_heads dividing {d} (learngene: {sum(reps)} of {len(reps) * int(a.num_heads)} "
            f"heads, {len(cfg['ffn_kept'])} of {len(reps)} FFNs); embed_dim {d} and mlp_ratio {a.mlp_ratio} "
            f"fixed; head kept when num_classes = {a.num_classes}\n" + cluster_summary(gene))


def cluster_summary(gene: Artifact) -> str:
    """Per ancestry layer: the head clusters in priority order (representative first) with
    their mean attention distances, and the FFN group the layer belongs to."""
    cfg = gene.config
    distances = cfg.get("distances")
    group_of = {l: (tuple(g), k) for g, k in zip(cfg["ffn_groups"], cfg["ffn_kept"]) for l in g}
    lines = [f"  eps {cfg.get('eps')} px, min_samples {cfg.get('min_samples')}, "
             f"ffn_threshold {cfg.get('ffn_threshold')}"]
    for layer, clusters in enumerate(cfg["head_clusters"]):
        parts = []
        for members in clusters:
            where = "" if distances is None else "@" + "/".join(f"{distances[layer][h]:.1f}" for h in members)
            parts.append("{" + ",".join(str(h) for h in members) + "}" + where)
        group, kept = group_of[layer]
        ffn = f"FFN {kept}" + (f" (group {group[0]}-{group[-1]})" if len(group) > 1 else "")
        lines.append(f"  layer {layer:>2}: {len(clusters)} clusters {' '.join(parts)}; {ffn}")
    return "\n".join(lines)
