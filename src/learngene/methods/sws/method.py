"""SWS: Stage-wise Weight Sharing (Xia et al., IJCAI 2024; arXiv 2404.16897; code AlphaXia/SWS).

Learngene. One ViT block per stage (canonical names: ``norm1.*``, ``q/k/v.weight`` and
``.bias``, ``proj.*``, ``norm2.*``, ``fc1.*``, ``fc2.*``, and ``ls1/ls2.gamma`` when the
ancestry has layer-scale), stored as ``stages.<s>.<key>``; plus, once, the stem (patch
embedding weight and bias, position embeddings of the patch tokens only: no class token),
the final norm and the classifier of the auxiliary model.

Learning it (paper, Sec. 3; reference ``aux_models.py`` / ``SWS_vit.py``). An auxiliary ViT of
``sum(stages)`` layers in ``len(stages)`` stages (the reference's Aux-S/B: 16 layers in 5
stages of 3, 3, 4, 3, 3) whose layers in one stage are *the same block*: the whole block is
shared (both norms, qkv, proj, fc1, fc2, weights and biases; the reference's schedule marks
all of them shared and its MiniViT-style per-layer transforms are switched off,
``transform_flag`` all 0), so there are no per-layer parts. Average pooling, no class token,
a classifier for the ancestry's classes; trained by soft distillation from the ancestry
(loss = (1 - alpha) CE + alpha KD, alpha 1, tau 1 as in the paper) with
``learngene.train.fit``. ``SwsAuxiliary`` holds one block per stage as ordinary parameters
(named like the artifact's tensors) and runs a parameter-less timm VisionTransformer through
``functional_call`` on the stack that repeats each stage's block, so each stage's gradient is
the sum over its layers and the auxiliary model *is* the descendant of its own depth.

Initialisation (the reference's ``_init_weights``, which is timm's ViT init): Linear weights
trunc_normal(.02), biases 0, LayerNorms 1/0, position embeddings trunc_normal(.02), the patch
convolution PyTorch's default, head trunc_normal(.02) with bias 0; one draw per stage block.
The stem is trained from scratch as in the reference; ``inherit_stem=True`` starts it from the
ancestry's (our option).

Descendants: a plain timm ``VisionTransformer(global_pool='avg', class_token=False,
fc_norm=True)`` of any depth ``L >= 1`` (the reference's ``deit_*_L12``): its layers are split
into the same stages and every layer of stage s is a copy of learngene block s (the copies
are independent parameters: they train apart). Stem copied (adapted by ``fit_stem`` to another
image size or channel count), final norm into ``fc_norm``, classifier copied only when
``num_classes`` is the ancestry's. ``expand`` *overrides* ``global_pool``, ``class_token``,
``fc_norm`` and ``final_norm`` of the arch it is given.

How many layers each stage gets (``stage_sizes``). The paper's description ("expand these
learngene layers containing stage information at their corresponding stage") gives no rule
for a depth, and the reference's descendant builder (``utils.gene_tranfer_1``) takes the
layer -> stage map by hand (``--layers-source``); its one published map is
``0,0,0,1,1,1,2,2,3,3,4,4`` for 12 layers from the 3,3,4,3,3 auxiliary model. Our rule
starts from the auxiliary model's stage sizes and, one layer at a time, removes a layer from
the largest stage (the latest of equals) until the depth is reached, or adds one to the
smallest stage (the earliest of equals). It reproduces both of the reference's
configurations: depth 16 gives 3,3,4,3,3 (the auxiliary model itself) and depth 12 gives
3,3,2,2,2; every stage keeps at least one layer. Below one layer per stage (L < stages), the
descendant takes one layer from each of L evenly spaced stages (weight selection's index
rule; first and last stages included): ours, the paper has no such small descendants.

Departures from the reference:
  - The reference auxiliary model applies its final LayerNorm to every token *before*
    average pooling, while its descendants (timm, ``global_pool='avg'``) pool first and then
    apply ``fc_norm``; its block norms use eps 1e-5 where the timm descendants use 1e-6.
    Ours runs the timm descendant itself (pool, then fc_norm, eps 1e-6), so the auxiliary
    model and the descendant of the auxiliary model's depth compute the same function exactly.
  - The reference's Aux-S runs 12 heads of 32 dims (``num_heads=[12]`` at width 384) while
    its Des-S descendants have 6 heads of 64, so a copied block computes another attention
    there; ours uses the ancestry's head count in both.
  - The teacher is the ancestry, not the paper's LeViT-384.
  - Layer-scale gammas (absent from the reference's DeiT) are shared per stage like the rest,
    starting at the ancestry's ``init_values``.
  - Width (ours; the paper and reference grow depth only): a descendant may be narrower than
    the ancestry (fewer heads, smaller embed_dim or MLP) by TLEG's rule in this library,
    head-aware evenly spaced selection of the expanded stack (``methods._narrow.narrow_stack``,
    weight selection's head-aware rule: whole heads, then dims within heads; descendant
    head h is a slice of one learngene head). Every layer of a stage takes the same slices
    of its stage's block, so the layers of a stage still start equal.
  - Weight decay: canonical q/k/v biases are 2-D ([H, hd]); ``SwsAuxiliary.no_weight_decay``
    exempts them with every other non-matrix tensor, so the decay matches the reference's
    (Linear/conv weights only; position embeddings exempt).
  - The training recipe is learngene.train's (AdamW, warmup + cosine, grad clipping 1.0,
    no DeiT augmentation/mixup); the paper uses DeiT's.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from ...arch import ViTArch, arch_of
from ...artifact import Artifact
from ...errors import ConfigError
from ...registry import config_to_dict
from ...stack import VitStack, from_stack, to_stack
from ...stack.init import blank_stack
from .._common import copy_head_if_same_labels, distill_from_ancestry, fit_stem, fresh_stack, pack, split_holdout, unpack
from .._computed import ComputedViT, decay_matrices_only
from .._indices import uniform_indices
from .._narrow import narrow_stack
from .config import SwsConfig

Tensors = dict[str, torch.Tensor]

# What SWS forces on every model it builds (auxiliary and descendants), as the reference's
# aux (use_cls_token=False, avgpool) and deit_*_L12 descendants (global_pool='avg', class_token=False).
SWS_HEAD = dict(global_pool="avg", class_token=False, fc_norm=True, final_norm=True)


def sws_arch(ancestry_arch: ViTArch, depth: int) -> ViTArch:
    """The SWS model of ``depth`` blocks at the ancestry's width and classes."""
    return ancestry_arch.replace(**SWS_HEAD, depth=int(depth))


# -- stages -------------------------------------------------------------------------------
def stage_sizes(aux_stages: list[int], depth: int) -> list[int]:
    """Layers per stage of a depth-``depth`` descendant of an auxiliary model staged ``aux_stages``.

    From the auxiliary sizes, remove one layer at a time from the largest stage (the latest of
    equals), or add one to the smallest (the earliest of equals), until the sizes add up to
    ``depth``; every stage keeps at least one layer. Below one layer per stage, one layer from
    each of ``depth`` evenly spaced stages (0 for the others).
    ``stage_sizes([3, 3, 4, 3, 3], 12) == [3, 3, 2, 2, 2]`` (the reference's 12-layer map),
    ``stage_sizes([3, 3, 4, 3, 3], 16) == [3, 3, 4, 3, 3]``.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"depth must be a positive integer, got {depth!r}")
    n = len(aux_stages)
    if depth < n:
        sizes = [0] * n
        for s in uniform_indices(n, depth).tolist():
            sizes[s] = 1
        return sizes
    sizes = list(aux_stages)
    while sum(sizes) > depth:
        largest = max(sizes)
        sizes[max(i for i, k in enumerate(sizes) if k == largest)] -= 1  # largest >= 2 here: sum > depth >= n
    while sum(sizes) < depth:
        sizes[sizes.index(min(sizes))] += 1
    return sizes


def layer_stages(sizes: list[int]) -> list[int]:
    """The stage of every layer: ``[2, 1] -> [0, 0, 1]`` (the reference's ``--layers-source``)."""
    return [s for s, k in enumerate(sizes) for _ in range(k)]


def stage_blocks(tensors: Tensors, num_stages: int) -> list[Tensors]:
    """The learngene's block of each stage (canonical keys)."""
    return [unpack(f"stages.{s}", tensors) for s in range(num_stages)]


def gene_stack(tensors: Tensors, aux_stages: list[int], arch: ViTArch) -> VitStack:
    """The canonical stack of the SWS model ``arch`` (its depth picks the stage sizes) built from
    learngene tensors: every layer of stage s holds stage s's tensors themselves (not copies)."""
    per_stage = stage_blocks(tensors, len(aux_stages))
    blocks = [dict(per_stage[s]) for s in layer_stages(stage_sizes(aux_stages, arch.depth))]
    return VitStack(arch=arch, stem=unpack("stem", tensors), blocks=blocks, head=unpack("head", tensors))


# -- initialisation -----------------------------------------------------------------------
def init_tensors(ancestry_arch: ViTArch, num_stages: int) -> Tensors:
    """A learngene before training, timm-initialised as the reference (uses the global torch RNG).

    Layout: ``stages.<s>.<block key>`` for s < ``num_stages``, ``stem.patch.weight``,
    ``stem.patch.bias``, ``stem.pos_embed`` [1, patches, D], ``head.norm.*``, ``head.head.*``.
    """
    template = fresh_stack(sws_arch(ancestry_arch, num_stages))  # one fresh block per stage, timm's stem and head
    tensors: Tensors = {}
    for s, block in enumerate(template.blocks):
        tensors.update(pack(f"stages.{s}", block))
    return {**tensors, **pack("stem", template.stem), **pack("head", template.head)}


# -- the auxiliary model ------------------------------------------------------------------
class SwsAuxiliary(ComputedViT):
    """The auxiliary ViT: ``sum(stages)`` layers, each stage's layers one shared block.

    Parameters are the learngene's tensors under the artifact's names (``stages.0.q.weight``,
    ``stem.pos_embed``, ``head.head.weight``...), so ``state_dict()`` is the learngene.
    ``template`` is a timm VisionTransformer without parameters; ``forward`` runs it on the
    stack in which every layer of a stage holds that stage's parameters.
    """

    def __init__(self, arch: ViTArch, stages: list[int], tensors: Tensors):
        if arch.depth != sum(stages):
            raise ConfigError(f"the auxiliary model has {arch.depth} layers but stages {stages} add up to {sum(stages)}")
        super().__init__(arch, {"": tensors})
        self.aux_stages = list(stages)  # not `stages`: that name is the submodule holding the blocks

    def learngene_tensors(self) -> Tensors:
        return dict(self.named_parameters())

    def stack(self) -> VitStack:
        """The auxiliary model's stack (differentiable in the parameters; layers of a stage share them)."""
        return gene_stack(self.learngene_tensors(), self.aux_stages, self.arch)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Everything but Linear/conv weights, as timm's rule gives the ViT it computes (canonical
        q/k/v biases are 2-D, which the trainer's ``ndim <= 1`` rule alone would decay)."""
        return decay_matrices_only(self, [f"stages.{s}" for s in range(len(self.aux_stages))])


# -- extraction ---------------------------------------------------------------------------
def extract(ancestry: VisionTransformer, config: SwsConfig, data: Any = None) -> Artifact:
    """Learn the SWS learngene by distilling ``ancestry`` into the staged auxiliary model on ``data``."""
    if data is None:
        raise ConfigError("sws trains its learngene by distillation and needs data: pass data='fashion-mnist'")
    ancestry_arch = arch_of(ancestry)
    if ancestry_arch.num_classes < 1:
        raise ConfigError("sws distils the ancestry's logits, but this ancestry has no classifier (num_classes=0)")
    arch = sws_arch(ancestry_arch, sum(config.stages))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        tensors = init_tensors(ancestry_arch, len(config.stages))
    if config.inherit_stem:
        stem = fit_stem(to_stack(ancestry).stem, ancestry_arch, arch)  # drops the class token and its position
        tensors.update(pack("stem", stem))
    aux = SwsAuxiliary(arch, config.stages, tensors)
    train_data, eval_data = split_holdout(data, config.holdout, config.seed)
    result, summary = distill_from_ancestry(aux, ancestry, train_data, eval_data, config)
    learned = {k: v.detach().cpu().contiguous() for k, v in aux.learngene_tensors().items()}
    provenance = {
        "cost": {"samples_seen": int(result.samples_seen), "flops": float(result.train_flops)},
        "sws": {"aux_arch": arch.to_dict(), "stages": list(config.stages),
                "distillation": {**summary, "history": result.history}},
    }
    return Artifact(method="sws", config=config_to_dict(config), tensors=learned, provenance=provenance)


# -- the artifact -------------------------------------------------------------------------
def _stages_of(gene: Artifact) -> list[int]:
    return SwsConfig(**{k: v for k, v in gene.config.items() if k == "stages"}).stages


def validate(gene: Artifact) -> None:
    """One block per configured stage, all with the same tensors, shaped for the ancestry's width."""
    stages = _stages_of(gene)
    blocks = stage_blocks(gene.tensors, len(stages))
    for s, block in enumerate(blocks):
        for key in ("q.weight", "fc1.weight", "norm1.weight"):
            if key not in block:
                raise ConfigError(f"stages.{s}.{key} is missing (the config lists {len(stages)} stages)")
        if set(block) != set(blocks[0]):
            raise ConfigError(f"stages.{s} holds {sorted(block)} but stages.0 holds {sorted(blocks[0])}")
    stored = {int(k.split(".")[1]) for k in gene.tensors if k.startswith("stages.") and k.split(".")[1].isdigit()}
    if stored != set(range(len(stages))) or any(k.startswith("stages.") and not k.split(".")[1].isdigit()
                                                  for k in gene.tensors):
        raise ConfigError(f"tensors hold stages {sorted(stored)} but the config lists {len(stages)} stages {stages}")
    for name in ("stem.patch.weight", "stem.pos_embed", "head.norm.weight"):
        if name not in gene.tensors:
            raise ConfigError(f"{name} is missing")
    prefixes = {k.split(".", 1)[0] for k in gene.tensors}
    if prefixes - {"stages", "stem", "head"}:
        raise ConfigError(f"unexpected tensors under {sorted(prefixes - {'stages', 'stem', 'head'})}")
    stack = VitStack(arch=sws_arch(gene.ancestry_arch, len(stages)), blocks=blocks)
    stack.validate()  # ValueError naming the misfit (load turns it into an ArtifactError)
    d = gene.ancestry_arch.embed_dim
    if gene.tensors["stem.patch.weight"].shape[0] != d or gene.tensors["stem.pos_embed"].shape[-1] != d:
        raise ConfigError(f"stem width differs from the ancestry's embed_dim {d}")


def describe_shapes(gene: Artifact) -> str:
    a, stages = gene.ancestry_arch, _stages_of(gene)
    examples = ", ".join(f"{L} -> {stage_sizes(stages, L)}" for L in sorted({len(stages), 12, sum(stages)}))
    return (f"any depth >= 1, split into the {len(stages)} stages of the auxiliary model {stages} "
            f"(layers per stage: {examples}); embed_dim <= {a.embed_dim}, num_heads <= {a.num_heads}, "
            f"head_dim <= {a.head_dim} (narrower by head-aware selection, ours); "
            f"avg pooling, no class token; head kept when num_classes = {a.num_classes}")


def expand(gene: Artifact, arch: ViTArch) -> VisionTransformer:
    """A timm ViT of ``arch.depth`` blocks, each a copy of its stage's learngene block, narrowed by
    head-aware selection when ``arch`` is narrower than the ancestry (pooling forced to avg, no
    class token)."""
    ancestry = gene.ancestry_arch
    arch = arch.replace(**SWS_HEAD)
    target = blank_stack(arch)  # timm-distributed init (by from_stack) for what the learngene does not give
    source = gene_stack(gene.tensors, _stages_of(gene), sws_arch(ancestry, arch.depth))
    if (target.embed_dim, target.num_heads, target.mlp_hidden) != (source.embed_dim, source.num_heads, source.mlp_hidden):
        source = narrow_stack(source, target.embed_dim, target.num_heads, target.mlp_hidden)
    if set(source.blocks[0]) != set(target.blocks[0]):
        raise ConfigError(f"the learngene's blocks hold {sorted(source.blocks[0])} but the descendant expects "
                          f"{sorted(target.blocks[0])}: keep the ancestry's qkv_bias and layer-scale (init_values)")
    target.blocks = source.blocks
    target.stem.update(fit_stem(source.stem, source.arch, arch))
    copy_head_if_same_labels(target, source.head, ancestry)
    # the learngene's own tensors (every layer of a stage holds them at full width) are cloned,
    # narrowed slices go in uncopied: either way the layers become independent parameters
    return from_stack(target, consume=True, protect=gene.tensors.values())
