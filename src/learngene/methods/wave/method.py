"""WAVE: Weight Templates for Adaptive Initialization of Variable-sized Models (Feng et al., CVPR 2025).

Paper (arXiv 2406.17503; the code promised at fu-feng/WAVE is not public, so there is no
reference code to compare with). Initialising each model size is treated as one task of a
multi-task problem: shared, size-agnostic *weight templates* carry the knowledge, small
size-specific *weight scalers* say how to assemble them for one size.

Construction (the paper's Kronecker rule, ``kron.py``). Every weight matrix of a ViT block
(q, k, v, the attention output proj, MLP fc1, fc2) of layer l is

    W_kind^(l) = sum_n S_kind^(l)[n] (x) T_kind[n],    T_kind [N_t, m, m],  S_kind^(l) [N_t, out/m, in/m]

so W is a grid of template blocks, block (i, j) weighted by the scalers at (i, j): the target's
depth sets the number of scaler sets, its width the scalers' grid, and the templates never
change shape. One template set per kind of matrix (q, k, v, proj, fc1, fc2), shared by every
layer and every size.

Learning the templates. An auxiliary ViT of the ancestry's shape (depth ``aux_depth``) whose
every block matrix is computed by that rule from trainable templates and per-layer scalers
(``WaveModel``: a ``ComputedViT`` run through a parameter-less timm template, so gradients reach
templates and scalers), trained by soft distillation from the ancestry with ``learngene.train``
(loss = (1 - alpha) CE + alpha KD, alpha 1, tau 1). The learngene is the templates; the
auxiliary model's scalers are kept as the scalers of its own size.

Scalers of a new size. The paper initialises scalers for the target size and trains them on a
small amount of data with the templates frozen; the target model is then initialised from
templates and trained scalers, and trained as a plain model. Here that training happens at
*extraction* (``sizes``: one scaler set per listed [depth, embed_dim, num_heads], trained on
``scaler_samples`` images by soft distillation from the ancestry, templates and everything else
frozen; ``add_sizes`` trains more sizes later, without distilling again) and the scalers are
stored in the artifact, so ``expand`` stays data-free and its
descendant is a plain timm ``VisionTransformer`` trained freely afterwards. Not
``expand_trainable``: a descendant that trained its scalers with the downstream task would stay
a Kronecker-constrained model for its whole training, which the paper does not do, and the
ancestry the scalers are distilled from is at hand only at extraction.

What is fixed by the paper's text as we could read it (the abstract, Fig. 2's caption and
summaries of the method section; not its full equations): templates shared across sizes, learned
by distillation through an auxiliary model whose weights obey Kronecker-product rules; target
weights that concatenate and weight the templates; size-specific scalers initialised for the
target size and trained on a little data with the templates frozen. The rest is ours.

Choices the paper's text leaves open (ours):
  - New scalers start from the auxiliary model's: layer j of a depth-L model from auxiliary
    layer ``spread(L_aux, L)`` (evenly spaced when shallower, repeated when deeper), and a
    narrower model keeps evenly spaced whole template blocks (``uniform_indices``) of the
    residual width and of the MLP width. A size not listed in ``sizes`` gets exactly these,
    untrained.
  - Templates are square, m = ``template_size`` (default: the ancestry's head_dim, 64 at DeiT),
    so a template block row of q/k/v is one head; every width and MLP size must be a multiple
    of m, and at most the ancestry's (selection cannot widen).
  - Not built from templates: LayerNorms, biases, layer-scales (per auxiliary layer), the stem
    (patch and position embeddings, class token) and the final norm and classifier. They are
    trained with the auxiliary model, stored, and given to a size by the same layer and block
    selection (they stay frozen while scalers train). The classifier is copied only when the
    descendant's label space is the ancestry's.
  - Initialisation: ``init="random"`` templates trunc_normal(.02) and scalers N(0, 1/N_t), so a
    composed weight has timm's std .02; the rest timm's init. ``init="ancestry"`` starts from the
    nearest shared Kronecker sum of the ancestry's weights (one SVD per kind, exact when
    N_t >= the rank) and the ancestry's norms, biases, stem and head.
  - Weight decay on templates, patch and classifier weights only (scalers never decay).
  - The teacher is the ancestry; the recipe is learngene.train's (AdamW, warmup + cosine, grad
    clipping 1.0, no DeiT augmentation), not the paper's ImageNet/DeiT one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer

from ...arch import ViTArch, arch_of
from ...artifact import Artifact
from ...data.tensors import sample_tensors
from ...errors import ConfigError
from ...registry import config_to_dict
from ...stack import BLOCK_MATRICES, VitStack, from_stack, to_stack
from ...stack.init import blank_stack
from ...train import TrainConfig, fit
from .._common import (DISTILL_SUMMARY_FIELDS, copy_head_if_same_labels, distill_from_ancestry, fit_stem,
                       fresh_stack, pack, split_holdout, unpack)
from .._computed import ComputedViT
from .._indices import uniform_indices
from .config import WaveConfig
from .kron import block_channels, check_multiple, compose, nearest_kronecker_sum, spread

Tensors = dict[str, torch.Tensor]

KINDS = ("q", "k", "v", "proj", "fc1", "fc2")   # the block matrices built from templates
GROUPS = ("templates", "scalers", "layers", "stem", "head")


# -- sizes and shapes ---------------------------------------------------------------------
def size_key(arch: ViTArch) -> str:
    """The artifact's name of a size's scaler set: depth, width, heads and MLP hidden size."""
    return f"d{arch.depth}_w{arch.embed_dim}_h{arch.num_heads}_f{arch.mlp_hidden}"


def template_side(tensors: Tensors) -> int:
    return int(tensors["templates.q"].shape[-1])


def aux_arch_of(gene: Artifact) -> ViTArch:
    """The auxiliary model's architecture: the ancestry's, at the stored number of layers."""
    depth = len({k.split(".")[1] for k in gene.tensors if k.startswith("layers.")})
    return gene.ancestry_arch.replace(depth=depth)


def matrix(kind: str, block: Tensors) -> torch.Tensor:
    """A canonical block matrix as the Linear weight [out, in] it is."""
    w = block[f"{kind}.weight"]
    return w.reshape(-1, w.shape[-1]) if kind in ("q", "k", "v") else w.reshape(w.shape[0], -1)


def canonical(kind: str, w: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of ``matrix``: q/k/v [H*hd, D] -> [H, hd, D]; proj [D, H*hd] -> [D, H, hd]."""
    if kind in ("q", "k", "v"):
        return w.reshape(heads, -1, w.shape[-1])
    if kind == "proj":
        return w.reshape(w.shape[0], heads, -1)
    return w


def check_size(arch: ViTArch, aux: ViTArch, m: int) -> None:
    """A model WAVE can build: widths multiples of m, no wider than the auxiliary model."""
    check_multiple("embed_dim", arch.embed_dim, m)
    check_multiple("MLP hidden size (embed_dim * mlp_ratio)", arch.mlp_hidden, m)
    for name, new, old in (("embed_dim", arch.embed_dim, aux.embed_dim),
                           ("MLP hidden size", arch.mlp_hidden, aux.mlp_hidden)):
        if new > old:
            raise ConfigError(f"the descendant's {name} is {new} but the learngene's auxiliary model has {old}: "
                              f"wave selects template blocks and cannot widen; choose {name} <= {old}")


# -- one size's tensors from the auxiliary model's ----------------------------------------
def sized(tensors: Tensors, aux: ViTArch, arch: ViTArch) -> dict[str, Tensors]:
    """The groups of a WaveModel of ``arch`` built from a learngene: the templates, the size's
    stored scalers (or, when it has none, the auxiliary scalers selected by depth and width),
    and the per-layer vectors, stem and head selected the same way."""
    m = template_side(tensors)
    layers = spread(aux.depth, arch.depth)
    res = block_channels(uniform_indices(aux.embed_dim // m, arch.embed_dim // m), m)   # residual channels
    hid = block_channels(uniform_indices(aux.mlp_hidden // m, arch.mlp_hidden // m), m)  # MLP channels
    rows = {"q": res, "k": res, "v": res, "proj": res, "fc1": hid, "fc2": res}  # output channels per kind
    cols = {"q": res, "k": res, "v": res, "proj": res, "fc1": res, "fc2": hid}  # input channels per kind
    blocks_of = lambda ch: ch[::m] // m  # noqa: E731  (channel list of whole blocks -> block indices)

    stored = unpack(f"scalers.{size_key(arch)}", tensors)
    source = unpack(f"scalers.{size_key(aux)}", tensors)
    scalers: Tensors = {}
    for j, layer in enumerate(layers.tolist()):
        for kind in KINDS:
            if stored:
                scalers[f"{j}.{kind}"] = stored[f"{j}.{kind}"]
            else:
                s = source[f"{layer}.{kind}"]  # [N, out/m, in/m]
                scalers[f"{j}.{kind}"] = s[:, blocks_of(rows[kind])][:, :, blocks_of(cols[kind])]
    vectors: Tensors = {}
    for j, layer in enumerate(layers.tolist()):
        for key, t in unpack(f"layers.{layer}", tensors).items():
            if key in ("q.bias", "k.bias", "v.bias"):                  # [H, hd] -> [H', hd']
                t = t.reshape(-1)[res].reshape(arch.num_heads, arch.head_dim)
            else:                                                      # [F] or [D]
                t = t[hid] if key == "fc1.bias" else t[res]
            vectors[f"{j}.{key}"] = t
    stem = {key: (t[res] if key.startswith("patch.") else t[..., res]) for key, t in unpack("stem", tensors).items()}
    head = {key: (t[:, res] if key == "head.weight" else t if key == "head.bias" else t[res])
            for key, t in unpack("head", tensors).items()}
    return {"templates": unpack("templates", tensors), "scalers": scalers, "layers": vectors,
            "stem": stem, "head": head}


def build_stack(groups: dict[str, Tensors], arch: ViTArch) -> VitStack:
    """The canonical stack of ``arch`` the groups give: each block matrix composed from the
    templates and its layer's scalers, the rest as stored (differentiable in every group)."""
    templates, scalers, vectors = groups["templates"], groups["scalers"], groups["layers"]
    blocks = []
    for j in range(arch.depth):
        block = unpack(str(j), vectors)
        for kind in KINDS:
            w = compose(scalers[f"{j}.{kind}"], templates[kind])
            block[f"{kind}.weight"] = canonical(kind, w, arch.num_heads)
        blocks.append(block)
    return VitStack(arch=arch, stem=dict(groups["stem"]), blocks=blocks, head=dict(groups["head"]))


# -- the model that trains templates and scalers ------------------------------------------
class WaveModel(ComputedViT):
    """A ViT whose block matrices are Kronecker sums of templates and per-layer scalers.

    Parameters are named like the artifact's tensors within a size: ``templates.q``,
    ``scalers.<layer>.<kind>``, ``layers.<layer>.norm1.weight``, ``stem.pos_embed``,
    ``head.head.weight``. The auxiliary model trains them all; a size's scaler training
    freezes all but ``scalers`` (``train_only_scalers``).
    """

    def __init__(self, arch: ViTArch, groups: dict[str, Tensors]):
        super().__init__(arch, groups)

    def stack(self) -> VitStack:
        return build_stack({g: self.group(g) for g in GROUPS}, self.arch)

    def train_only_scalers(self) -> "WaveModel":
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("scalers."))
        return self

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Everything but the templates and the patch / classifier weights (timm's rule for the
        ViT it computes, with the scalers that re-parameterise its matrices never decayed)."""
        decayed = {"stem.patch.weight", "head.head.weight"}
        return {n for n, _ in self.named_parameters() if not n.startswith("templates.") and n not in decayed}


# -- initialisation -----------------------------------------------------------------------
def init_random(aux: ViTArch, m: int, n: int) -> dict[str, Tensors]:
    """Templates trunc_normal(.02), scalers N(0, 1/n) (a composed weight then has std .02, timm's),
    the rest timm's init (uses the global torch RNG)."""
    template = fresh_stack(aux.replace(depth=1))  # norms/biases/layer-scales are constants in timm's init
    vectors = {f"{j}.{k}": t.clone() for j in range(aux.depth) for k, t in template.blocks[0].items()
               if k not in BLOCK_MATRICES}
    templates = {kind: trunc_normal_(torch.empty(n, m, m), std=0.02) for kind in KINDS}
    scalers = {}
    for j in range(aux.depth):
        for kind in KINDS:
            rows, cols = matrix(kind, template.blocks[0]).shape
            scalers[f"{j}.{kind}"] = torch.randn(n, rows // m, cols // m) / math.sqrt(n)
    return {"templates": templates, "scalers": scalers, "layers": vectors,
            "stem": template.stem, "head": template.head}


def init_from_ancestry(ancestry: VisionTransformer, aux: ViTArch, m: int, n: int) -> dict[str, Tensors]:
    """The nearest shared Kronecker sums of the ancestry's block matrices (auxiliary layer j from
    ancestry layer ``spread(L, aux_depth)[j]``), and the ancestry's vectors, stem and head."""
    stack = to_stack(ancestry)
    layers = spread(stack.depth, aux.depth).tolist()
    templates, scalers = {}, {}
    for kind in KINDS:
        t, per_layer = nearest_kronecker_sum([matrix(kind, stack.blocks[i]) for i in layers], m, n)
        templates[kind] = t
        scalers.update({f"{j}.{kind}": s for j, s in enumerate(per_layer)})
    vectors = {f"{j}.{k}": t for j, i in enumerate(layers) for k, t in stack.blocks[i].items() if k not in BLOCK_MATRICES}
    return {"templates": templates, "scalers": scalers, "layers": vectors, "stem": stack.stem, "head": stack.head}


def to_tensors(groups: dict[str, Tensors], key: str) -> Tensors:
    """A WaveModel's groups as artifact tensors (the scalers under the size's ``key``)."""
    out: Tensors = {}
    for group, tensors in groups.items():
        prefix = f"scalers.{key}" if group == "scalers" else group
        out.update(pack(prefix, {k: v.detach().cpu() for k, v in tensors.items()}))
    return out


# -- extraction ---------------------------------------------------------------------------
def _train_scalers(tensors: Tensors, aux: ViTArch, arch: ViTArch, ancestry: VisionTransformer, data: Any,
                   config: WaveConfig, generator: torch.Generator) -> tuple[Tensors, Any]:
    """One size's scalers trained on ``config.scaler_samples`` images of ``data`` by distillation
    from the ancestry, everything else frozen; starts from the selection of the auxiliary scalers."""
    model = WaveModel(arch, sized(tensors, aux, arch)).train_only_scalers()
    images, labels = sample_tensors(data, config.scaler_samples, generator, who="wave's scaler training")
    train = TrainConfig(epochs=config.scaler_epochs, batch_size=min(config.batch_size, len(labels)),
                        lr=config.scaler_lr, weight_decay=0.0, warmup_epochs=0.0, seed=config.seed, distill="soft",
                        distill_alpha=config.distill_alpha, distill_tau=config.distill_tau, checkpoint=False,
                        device=config.device)
    ancestry_device = next(ancestry.parameters()).device
    try:
        result = fit(model, torch.utils.data.TensorDataset(images, labels), None, train, teacher=ancestry,
                     out_dir=None, progress=False)
    finally:
        ancestry.to(ancestry_device)
    return {k: v.detach().cpu().contiguous() for k, v in model.group("scalers").items()}, result


def extract(ancestry: VisionTransformer, config: WaveConfig, data: Any = None) -> Artifact:
    """Learn the weight templates by distilling ``ancestry`` into the auxiliary model on ``data``,
    then train the scalers of every size in ``config.sizes`` on a few images of it."""
    if data is None:
        raise ConfigError("wave learns its templates by distillation and needs data: pass data='fashion-mnist'")
    ancestry_arch = arch_of(ancestry)
    if ancestry_arch.num_classes < 1:
        raise ConfigError("wave distils the ancestry's logits, but this ancestry has no classifier (num_classes=0)")
    m = config.template_size or ancestry_arch.head_dim
    aux = ancestry_arch.replace(depth=config.aux_depth or ancestry_arch.depth)
    check_size(aux, aux, m)
    targets = [ancestry_arch.replace(depth=d, embed_dim=w, num_heads=h) for d, w, h in config.sizes or []]
    for arch in targets:  # refuse an impossible size before any training
        check_size(arch, aux, m)
        if size_key(arch) == size_key(aux):
            raise ConfigError(f"wave sizes lists {size_key(arch)}, the auxiliary model's own size, whose scalers are "
                              "learned with the templates; drop it from sizes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.init == "ancestry":
            groups = init_from_ancestry(ancestry, aux, m, config.num_templates)
        else:
            groups = init_random(aux, m, config.num_templates)
    model = WaveModel(aux, groups)
    train_data, eval_data = split_holdout(data, config.holdout, config.seed)
    samples, flops, distillation = 0, 0.0, None
    if config.epochs:
        result, summary = distill_from_ancestry(model, ancestry, train_data, eval_data, config)
        samples, flops = int(result.samples_seen), float(result.train_flops)
        distillation = {**summary, "history": result.history}
    tensors = to_tensors({g: model.group(g) for g in GROUPS}, size_key(aux))
    scaler_runs, scaler_samples, scaler_flops = _train_sizes(tensors, aux, targets, ancestry, train_data, config)
    provenance = {
        "cost": {"samples_seen": samples + scaler_samples, "flops": flops + scaler_flops},
        "wave": {"aux_arch": aux.to_dict(), "template_size": m, "distillation": distillation,
                 "scalers": scaler_runs},
    }
    return Artifact(method="wave", config=config_to_dict(config), tensors=tensors, provenance=provenance)


def _train_sizes(tensors: Tensors, aux: ViTArch, targets: list[ViTArch], ancestry: VisionTransformer, data: Any,
                 config: WaveConfig) -> tuple[dict[str, Any], int, float]:
    """Train each target size's scalers in turn (one seeded image sample stream), adding them to
    ``tensors``; returns the runs' summaries by size, and their samples and FLOPs in total."""
    generator = torch.Generator().manual_seed(config.seed)
    runs, samples, flops = {}, 0, 0.0
    for arch in targets:
        key = size_key(arch)
        scalers, result = _train_scalers(tensors, aux, arch, ancestry, data, config, generator)
        tensors.update(pack(f"scalers.{key}", scalers))
        samples, flops = samples + int(result.samples_seen), flops + float(result.train_flops)
        runs[key] = {k: getattr(result, k) for k in DISTILL_SUMMARY_FIELDS}
    return runs, samples, flops


def add_sizes(gene: Artifact, ancestry: VisionTransformer, data: Any, sizes: list[list[int]]) -> Artifact:
    """The learngene with trained scalers for more sizes ([depth, embed_dim, num_heads] each), the
    templates untouched: what ``sizes`` at extraction gives, without distilling again. Uses the
    learngene's own config (scaler_samples, scaler_epochs, scaler_lr, seed...): with holdout 0 and
    the same data, a size added first gets the scalers extraction would have given it. The new
    config lists every trained size; the cost adds up in the provenance."""
    if data is None:
        raise ConfigError("add_sizes trains scalers on images: pass data='fashion-mnist' or a dataset")
    stored = dict(gene.config)
    sizes = WaveConfig(**{**stored, "sizes": sizes}).sizes  # validates their form
    if arch_of(ancestry).to_dict() != gene.ancestry_arch.to_dict():
        raise ConfigError("add_sizes distils from the ancestry the learngene was extracted from; this model has "
                          "another architecture")
    aux, m = aux_arch_of(gene), template_side(gene.tensors)
    targets = [gene.ancestry_arch.replace(depth=d, embed_dim=w, num_heads=h) for d, w, h in sizes or []]
    for arch in targets:
        check_size(arch, aux, m)
        if size_key(arch) in _scaler_sets(gene):
            raise ConfigError(f"the learngene already holds scalers for {size_key(arch)} (the auxiliary model's own "
                              "size, or one trained before); drop it from sizes")
    config = WaveConfig(**{**stored, "sizes": [*(stored.get("sizes") or []), *(sizes or [])]})
    tensors = dict(gene.tensors)
    runs, samples, flops = _train_sizes(tensors, aux, targets, ancestry, data, config)
    provenance = copy.deepcopy(gene.provenance)
    cost = provenance.setdefault("cost", {})
    cost["samples_seen"] = int(cost.get("samples_seen", 0)) + samples
    cost["flops"] = float(cost.get("flops", 0.0)) + flops
    provenance.setdefault("wave", {}).setdefault("scalers", {}).update(runs)
    return dataclasses.replace(gene, config=config_to_dict(config), tensors=tensors, provenance=provenance)


# -- the artifact -------------------------------------------------------------------------
def _scaler_sets(gene: Artifact) -> list[str]:
    return sorted({k.split(".")[1] for k in gene.tensors if k.startswith("scalers.")})


def validate(gene: Artifact) -> None:
    """Templates of every kind [N, m, m]; every stored size's scalers shaped for its size."""
    prefixes = {k.split(".", 1)[0] for k in gene.tensors}
    if prefixes - set(GROUPS):
        raise ConfigError(f"unexpected tensors under {sorted(prefixes - set(GROUPS))}")
    for kind in KINDS:
        t = gene.tensors.get(f"templates.{kind}")
        if t is None:
            raise ConfigError(f"templates.{kind} is missing")
        if t.dim() != 3 or t.shape[1] != t.shape[2] or t.shape != gene.tensors["templates.q"].shape:
            raise ConfigError(f"templates.{kind} is {tuple(t.shape)}; every kind needs [N, m, m] of one shape")
    n, m = gene.tensors["templates.q"].shape[:2]
    for name in ("stem.patch.weight", "stem.pos_embed", "head.norm.weight", "layers.0.norm1.weight"):
        if name not in gene.tensors:
            raise ConfigError(f"{name} is missing")
    aux = aux_arch_of(gene)
    if gene.tensors["stem.patch.weight"].shape[0] != aux.embed_dim:
        raise ConfigError(f"stem width differs from the ancestry's embed_dim {aux.embed_dim}")
    check_size(aux, aux, m)
    keys = _scaler_sets(gene)
    if size_key(aux) not in keys:
        raise ConfigError(f"the auxiliary model's scalers (scalers.{size_key(aux)}) are missing")
    for key in keys:
        try:
            depth, width, heads, hidden = (int(part[1:]) for part in key.split("_"))
        except ValueError:
            raise ConfigError(f"scaler set {key!r} is not named d<depth>_w<width>_h<heads>_f<hidden>") from None
        shapes = {"q": (width, width), "k": (width, width), "v": (width, width), "proj": (width, width),
                  "fc1": (hidden, width), "fc2": (width, hidden)}
        for j in range(depth):
            for kind, (rows, cols) in shapes.items():
                s = gene.tensors.get(f"scalers.{key}.{j}.{kind}")
                if s is None:
                    raise ConfigError(f"scalers.{key}.{j}.{kind} is missing")
                if tuple(s.shape) != (n, rows // m, cols // m):
                    raise ConfigError(f"scalers.{key}.{j}.{kind} is {tuple(s.shape)}, expected {(n, rows // m, cols // m)}")
        if any(k.startswith(f"scalers.{key}.{depth}.") for k in gene.tensors):
            raise ConfigError(f"scaler set {key} has more than its {depth} layers")


def describe_shapes(gene: Artifact) -> str:
    aux, m = aux_arch_of(gene), template_side(gene.tensors)
    trained = [k for k in _scaler_sets(gene) if k != size_key(aux)]
    return (f"any depth; embed_dim and MLP hidden size multiples of {m} up to {aux.embed_dim} / {aux.mlp_hidden} "
            f"(whole {m}x{m} template blocks), any num_heads dividing embed_dim; trained scalers for "
            f"{', '.join([size_key(aux) + ' (auxiliary)', *trained])}, other sizes start from the auxiliary "
            f"scalers selected by depth and width (untrained); head kept when num_classes = {aux.num_classes}")


def expand(gene: Artifact, arch: ViTArch) -> VisionTransformer:
    """A timm ViT of ``arch``: block matrices from the templates and the size's scalers."""
    aux = aux_arch_of(gene)
    check_size(arch, aux, template_side(gene.tensors))
    # the source is the auxiliary model at the descendant's size (its stem layout, pooling, class token)
    source_arch = aux.replace(depth=arch.depth, embed_dim=arch.embed_dim, num_heads=arch.num_heads,
                              mlp_ratio=arch.mlp_ratio)
    with torch.no_grad():
        source = build_stack(sized(gene.tensors, aux, source_arch), source_arch)
    target = blank_stack(arch)  # timm-distributed init (by from_stack) for what the learngene does not give
    if set(source.blocks[0]) != set(target.blocks[0]):
        raise ConfigError(f"the learngene's blocks hold {sorted(source.blocks[0])} but the descendant expects "
                          f"{sorted(target.blocks[0])}: keep the ancestry's qkv_bias and layer-scale (init_values)")
    target.blocks = source.blocks
    target.stem.update(fit_stem(source.stem, source_arch, arch))
    copy_head_if_same_labels(target, source.head, gene.ancestry_arch)
    return from_stack(target, consume=True, protect=gene.tensors.values())  # composed blocks go in uncopied
