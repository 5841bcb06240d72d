"""TLEG: Transformer as Linear Expansion of learnGene (Xia et al., AAAI 2024; code AlphaXia/TLEG).

Learngene. For every block tensor of a ViT (canonical names: ``norm1.*``, ``q/k/v.weight``
and ``.bias``, ``proj.*``, ``norm2.*``, ``fc1.*``, ``fc2.*``, and ``ls1/ls2.gamma`` when the
ancestry has layer-scale) a base ``theta_A`` and a slope ``theta_B``; block ``l`` of a
depth-``L`` model is

    theta_l = theta_A + (l / L) * theta_B,      l = 0 .. L-1

(0-indexed: the first block is exactly theta_A; the reference's ``gene_tranfer`` uses
``i / num_layers``, not (l-1)/(L-1)). Stored once, not expanded: the stem (patch
embedding weight and bias, position embeddings for the patch tokens only: no class
token), the final norm and the classifier head of the auxiliary model.

Learning it. An auxiliary depth-``aux_depth`` (12) ViT whose every block is computed from
the learngene, average pooling, no class token, a classifier for the ancestry's classes,
trained by soft distillation from the ancestry (loss = (1 - alpha) CE + alpha KD, alpha 1
and tau 1 as in the paper) with ``learngene.train.fit``. The auxiliary model is
``TlegAuxiliary``: it holds theta_A/theta_B/stem/head as ordinary parameters (named
exactly like the artifact's tensors) and runs a parameter-less timm VisionTransformer
template through ``torch.func.functional_call`` on the state dict built from them each
step, so the gradients reach theta_A and theta_B and the auxiliary model *is* the
depth-``aux_depth`` descendant.

Initialisation (as in the reference): Linear theta_A and theta_B ``trunc_normal(std=.02)``,
their biases 0; LayerNorm theta_A weight 1 bias 0, theta_B 0. Stem and head as the
reference builds them, which is timm's ViT init: position embeddings trunc_normal(.02),
the patch convolution PyTorch's default, head trunc_normal(.02) with bias 0, final norm
1/0. The stem is *not* copied from the ancestry (the reference trains it from scratch
inside the auxiliary model); ``inherit_stem=True`` starts it from the ancestry's instead
(our option).

Descendants: a plain timm ``VisionTransformer(global_pool='avg', class_token=False,
fc_norm=True)`` of any depth ``L >= 1``: block l from the formula, stem copied (adapted by
``fit_stem`` to another image size or channel count), final norm into ``fc_norm``, the
classifier copied only when ``num_classes`` is the ancestry's. ``expand`` *overrides*
``global_pool``, ``class_token``, ``fc_norm`` and ``final_norm`` of the arch it is given
(TLEG's descendants are avg-pooled without a class token, like the auxiliary model).

Departures from the reference:
  - The reference auxiliary model applies its final LayerNorm to every token *before*
    average pooling (``x = self.norm(x)`` then ``avgpool``), while its descendants (timm,
    ``global_pool='avg'``) pool first and then apply ``fc_norm``; its norms also use
    eps 1e-5 where the timm descendants use 1e-6. Ours runs the timm descendant itself
    (pool, then fc_norm, eps 1e-6), so the auxiliary model and the depth-12 descendant
    compute the same function exactly.
  - The teacher is the ancestry, not the paper's LeViT-384.
  - Layer-scale gammas (absent from the reference's DeiT) are expanded too: theta_A starts
    at the ancestry's ``init_values``, theta_B at 0.
  - Width (ours): a descendant may be narrower than the ancestry (fewer heads, smaller
    embed_dim or MLP) by head-aware evenly spaced selection of the expanded tensors
    (``methods._narrow.narrow_stack``, weight selection's head-aware rule: whole heads, then dims
    within heads; descendant head h is a slice of one learngene head). TLEG itself only
    varies depth.
  - Weight decay: canonical q/k/v biases are 2-D ([H, hd]); ``TlegAuxiliary.no_weight_decay``
    exempts them with every other non-matrix tensor, so the decay matches the reference's
    (Linear/conv weights only; position embeddings exempt).
  - The training recipe is learngene.train's (AdamW, warmup + cosine, grad clipping 1.0,
    no DeiT augmentation/mixup); the paper uses DeiT's.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer

from ...arch import ViTArch, arch_of
from ...artifact import Artifact
from ...errors import ConfigError
from ...registry import config_to_dict
from ...stack import BLOCK_MATRICES, VitStack, from_stack, to_stack
from ...stack.init import blank_stack
from .._common import split_holdout, copy_head_if_same_labels, distill_from_ancestry, fit_stem, fresh_stack, pack, unpack
from .._computed import ComputedViT, decay_matrices_only
from .._linear_expand import linear_expand
from .config import TlegConfig
from .._narrow import narrow_stack

Tensors = dict[str, torch.Tensor]

# Block tensors by kind, for the reference's initialisation (weight matrices: BLOCK_MATRICES).
NORM_WEIGHTS = ("norm1.weight", "norm2.weight")
LAYER_SCALES = ("ls1.gamma", "ls2.gamma")
# What TLEG forces on every model it builds (auxiliary and descendants).
TLEG_HEAD = dict(global_pool="avg", class_token=False, fc_norm=True, final_norm=True)


def tleg_arch(ancestry_arch: ViTArch, depth: int) -> ViTArch:
    """The TLEG model of ``depth`` blocks at the ancestry's width and classes."""
    return ancestry_arch.replace(**TLEG_HEAD, depth=int(depth))


def gene_stack(tensors: Tensors, arch: ViTArch) -> VitStack:
    """The canonical stack of the TLEG model ``arch`` (its depth picks L) built from learngene tensors."""
    blocks = linear_expand(unpack("theta_A", tensors), unpack("theta_B", tensors), arch.depth)
    return VitStack(arch=arch, stem=unpack("stem", tensors), blocks=blocks, head=unpack("head", tensors))


# -- initialisation -----------------------------------------------------------------------
def init_tensors(ancestry_arch: ViTArch) -> Tensors:
    """A learngene before training, initialised as the reference does (uses the global torch RNG).

    Layout: ``theta_A.<block key>``, ``theta_B.<block key>``, ``stem.patch.weight``,
    ``stem.patch.bias``, ``stem.pos_embed`` [1, patches, D], ``head.norm.*``, ``head.head.*``.
    """
    template = fresh_stack(tleg_arch(ancestry_arch, 1))  # timm init: stem and head as the reference's
    theta_a, theta_b = {}, {}
    for key, t in template.blocks[0].items():
        a, b = torch.empty_like(t), torch.empty_like(t)
        if key in BLOCK_MATRICES:
            trunc_normal_(a, std=0.02)
            trunc_normal_(b, std=0.02)
        elif key in NORM_WEIGHTS:
            a.fill_(1.0)
            b.zero_()
        elif key in LAYER_SCALES:  # not in the reference: start at the ancestry's init_values, slope 0
            a.fill_(float(ancestry_arch.init_values or 1.0))
            b.zero_()
        else:  # biases (Linear and LayerNorm)
            a.zero_()
            b.zero_()
        theta_a[key], theta_b[key] = a, b
    return {**pack("theta_A", theta_a), **pack("theta_B", theta_b),
            **pack("stem", template.stem), **pack("head", template.head)}


# -- the auxiliary model ------------------------------------------------------------------
class TlegAuxiliary(ComputedViT):
    """The auxiliary ViT: every block computed from the learngene, trained end to end.

    Parameters are the learngene's tensors under the artifact's names (``theta_A.q.weight``,
    ``stem.pos_embed``, ``head.head.weight``...), so ``state_dict()`` is the learngene.
    ``template`` is a timm VisionTransformer without parameters (``fused_attn`` switches
    and train/eval mode still apply to it); ``forward`` runs it on the expanded weights.
    """

    def __init__(self, arch: ViTArch, tensors: Tensors):
        super().__init__(arch, {"": tensors})

    def learngene_tensors(self) -> Tensors:
        return dict(self.named_parameters())

    def stack(self) -> VitStack:
        """The depth-``aux_depth`` stack (differentiable in the parameters)."""
        return gene_stack(self.learngene_tensors(), self.arch)

    expanded_stack = stack

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Everything but Linear/conv weights, as timm's 1-D rule gives the ViT it computes.

        Needed because canonical q/k/v biases are 2-D ([H, hd]), which the trainer's
        ``ndim <= 1`` rule alone would decay; in timm (and the reference) they are 1-D.
        """
        return decay_matrices_only(self, ("theta_A", "theta_B"))


# -- extraction ---------------------------------------------------------------------------
def extract(ancestry: VisionTransformer, config: TlegConfig, data: Any = None) -> Artifact:
    """Learn the TLEG learngene by distilling ``ancestry`` into the auxiliary model on ``data``."""

    if data is None:
        raise ConfigError("tleg trains its learngene by distillation and needs data: pass data='fashion-mnist'")
    ancestry_arch = arch_of(ancestry)
    if ancestry_arch.num_classes < 1:
        raise ConfigError("tleg distils the ancestry's logits, but this ancestry has no classifier (num_classes=0)")
    arch = tleg_arch(ancestry_arch, config.aux_depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        tensors = init_tensors(ancestry_arch)
    if config.inherit_stem:
        stem = fit_stem(to_stack(ancestry).stem, ancestry_arch, arch)  # drops the class token and its position
        tensors.update(pack("stem", stem))
    aux = TlegAuxiliary(arch, tensors)
    train_data, eval_data = split_holdout(data, config.holdout, config.seed)
    result, summary = distill_from_ancestry(aux, ancestry, train_data, eval_data, config)
    learned = {k: v.detach().cpu().contiguous() for k, v in aux.learngene_tensors().items()}
    provenance = {
        "cost": {"samples_seen": int(result.samples_seen), "flops": float(result.train_flops)},
        "tleg": {"aux_arch": arch.to_dict(), "distillation": {**summary, "history": result.history}},
    }
    return Artifact(method="tleg", config=config_to_dict(config), tensors=learned, provenance=provenance)


# -- the artifact -------------------------------------------------------------------------
def validate(gene: Artifact) -> None:
    """theta_A and theta_B hold the same block tensors, shaped for the ancestry's width."""
    theta_a, theta_b = unpack("theta_A", gene.tensors), unpack("theta_B", gene.tensors)
    if set(theta_a) != set(theta_b):
        raise ConfigError(f"theta_A holds {sorted(theta_a)} but theta_B holds {sorted(theta_b)}")
    for key in ("q.weight", "fc1.weight", "norm1.weight"):
        if key not in theta_a:
            raise ConfigError(f"theta_A.{key} is missing")
    for key in theta_a:
        if theta_a[key].shape != theta_b[key].shape:
            raise ConfigError(f"theta_A.{key} is {tuple(theta_a[key].shape)} but theta_B.{key} is {tuple(theta_b[key].shape)}")
    for name in ("stem.patch.weight", "stem.pos_embed", "head.norm.weight"):
        if name not in gene.tensors:
            raise ConfigError(f"{name} is missing")
    prefixes = {k.split(".", 1)[0] for k in gene.tensors}
    if prefixes - {"theta_A", "theta_B", "stem", "head"}:
        raise ConfigError(f"unexpected tensors under {sorted(prefixes - {'theta_A', 'theta_B', 'stem', 'head'})}")
    stack = VitStack(arch=tleg_arch(gene.ancestry_arch, 1), blocks=[theta_a])
    stack.validate()  # ValueError naming the misfit (load turns it into an ArtifactError)
    d = gene.ancestry_arch.embed_dim
    if gene.tensors["stem.patch.weight"].shape[0] != d or gene.tensors["stem.pos_embed"].shape[-1] != d:
        raise ConfigError(f"stem width differs from the ancestry's embed_dim {d}")


def describe_shapes(gene: Artifact) -> str:
    a = gene.ancestry_arch
    return (f"any depth >= 1 (block l of L = theta_A + l/L theta_B); embed_dim <= {a.embed_dim}, "
            f"num_heads <= {a.num_heads}, head_dim <= {a.head_dim} (narrower by head-aware selection); "
            f"avg pooling, no class token; head kept when num_classes = {a.num_classes}")


def expand(gene: Artifact, arch: ViTArch) -> VisionTransformer:
    """A timm ViT of ``arch.depth`` blocks from the learngene (pooling forced to avg, no class token)."""
    ancestry = gene.ancestry_arch
    arch = arch.replace(**TLEG_HEAD)
    target = blank_stack(arch)  # timm-distributed init (by from_stack) for what the learngene does not give
    source = gene_stack(gene.tensors, tleg_arch(ancestry, arch.depth))
    if (target.embed_dim, target.num_heads, target.mlp_hidden) != (source.embed_dim, source.num_heads, source.mlp_hidden):
        source = narrow_stack(source, target.embed_dim, target.num_heads, target.mlp_hidden)
    if set(source.blocks[0]) != set(target.blocks[0]):
        raise ConfigError(f"the learngene's blocks hold {sorted(source.blocks[0])} but the descendant expects "
                          f"{sorted(target.blocks[0])}: keep the ancestry's qkv_bias and layer-scale (init_values)")
    target.blocks = source.blocks
    target.stem.update(fit_stem(source.stem, source.arch, arch))
    copy_head_if_same_labels(target, source.head, ancestry)
    return from_stack(target, consume=True, protect=gene.tensors.values())  # computed blocks go in uncopied
