"""LeTs: Learnable Transformation of a learngene (Xia et al., NeurIPS 2024, "Initializing
Variable-sized Vision Transformers from Learngene with Learnable Transformation"; authors
Shiyu Xia et al., Southeast University; no public code found).

What the paper says (abstract, Figure 1-2 captions, Tables 3-4 captions; the method section's
equations were not available, so the formulas below are our reading of them):
  - Stage 1: a compact learngene module (a few layers of a narrow ViT) and a set of learnable
    transformation matrices are trained *together*: an auxiliary model (Aux-Net) whose weights
    are the learngene transformed along width (matrices F: "how to add new neurons") and depth
    (matrix G: "how to add new layers") is trained by distillation from the ancestry.
  - Stage 2: for a descendant (Des-Net) of a given size, *specific parameters are selected from
    the trained transformation matrices* and applied to the learngene; the descendant is then
    fine-tuned as an ordinary model. Selection strategies compared: continuous, top-n / bottom-n
    by L2 norm, top-n / bottom-n by L1 norm.
  - Every component is transformed (ablations drop MSA, MLP, LN, patch embedding, position
    embedding), so the stem is part of the learngene too.

Learngene (the artifact). A compact ViT of ``gene_depth`` blocks at width ``D_g`` with ``H_g``
heads of ``hd_g`` dims and MLP ``F_g``, in canonical form (``blocks.j.q.weight [H_g, hd_g, D_g]``...),
its stem (patch embedding, position embedding, class token) and head (final norm, classifier) at
width ``D_g``; and the transformation matrices, rows = the auxiliary model's sizes, columns =
the learngene's:

    transform.embed     E [D_a, D_g]    residual stream (every tensor that reads or writes it)
    transform.heads     A [H_a, H_g]    attention heads (q/k/v rows, proj columns)
    transform.head_dim  B [hd_a, hd_g]  dims within a head (q/k/v rows, proj columns)
    transform.mlp       M [F_a, F_g]    MLP hidden units (fc1 rows, fc2 columns)
    transform.depth     G [L_a, L_g]    layers: aux block l mixes the learngene blocks by row l of G

Transformation. Block l of a model whose rows are picked by index sets (all rows: the
auxiliary model) is, with ``W_l = sum_j G[l, j] W_j`` over the learngene blocks j:

    q/k/v.weight  A W_l B^T E^T per head    [H, hd, D]    q/k/v.bias  A b_l B^T   [H, hd]
    proj.weight   E W_l (A, B)              [D, H, hd]    fc1.weight  M W_l E^T   [F, D]
    fc2.weight    E W_l M^T                 [D, F]        fc1.bias    M b_l       [F]
    norms, proj.bias, fc2.bias, layer-scale  E v_l        [D]
    stem: patch.weight / bias, pos_embed, cls_token through E; head: norms E v, classifier W E^T.

It is linear in the learngene for fixed matrices (LiGO-like, Wang et al. ICLR 2023, whose
width/depth operators the paper compares against as "LeTs(LiGO)"); the paper's exact
parameterisation of F and G is what we could not read, so this form is our choice.

Learning it (``extract``). ``LetsAuxiliary`` holds the learngene and the matrices as
parameters (named as the artifact's tensors) and runs a parameter-less timm
VisionTransformer of the auxiliary shape on the computed weights every step; it is trained by
soft distillation from the ancestry with ``learngene.train.fit`` (``distill_from_ancestry``).
Initialisation (ours; the paper's is not stated): the learngene with timm's ViT init at its
compact shape; each width matrix the copy pattern ``X[i, i mod n_g] = 1`` plus N(0, noise^2)
noise (the first n_g rows start as the identity, so a descendant at the learngene's width
starts with, up to the noise, the learngene's own tensors; the noise breaks the symmetry of
the copies); G stage-wise (``G[l, floor(l L_g / L_a)] = 1``: each learngene layer first fills a contiguous run of
layers, as the authors' SWS does). Weight decay applies to the learngene's weight matrices
only, never to the transformation matrices.

Descendants (``expand``). A plain timm VisionTransformer of any depth <= L_a, embed_dim <= D_a,
heads <= H_a, head_dim <= hd_a and MLP hidden <= F_a: those many rows of G, E, A, B, M are
selected by ``config.selection`` (``continuous``: the first n rows; ``l2-top`` / ``l2-bottom`` /
``l1-top`` / ``l1-bottom``: the n rows of largest / smallest norm, kept in their order) and
the learngene transformed through them. At the auxiliary shape every row is selected, so the
descendant computes exactly what the trained auxiliary model computes (tested). A deeper or
wider descendant than the ancestry needs a larger auxiliary model (``aux_depth``,
``aux_embed_dim``...: it is distilled from the ancestry all the same). The classifier is
transformed and kept only when the label space is the ancestry's; other timm arguments
(pooling, drop rates) are the caller's, the stem fitted to another image size or channel
count as every method does.

Choices and departures, all ours where the text was not available:
  - the bilinear width form above (one matrix per kind of dimension, shared by all layers and
    by the stem and head, so the residual stream of every layer lives in the same coordinates),
    and one depth matrix G shared by every tensor of a block; the paper's ablation "w/o ws"
    ("not sharing weights between rows of G") refers to a sharing we could not reconstruct;
  - the default sizes (learngene: half the ancestry's depth and heads, heads of its head_dim; auxiliary:
    the ancestry's shape) and the default selection (``continuous``);
  - the initialisation described above;
  - the teacher is the ancestry, trained with this library's recipe (AdamW, warmup + cosine,
    no DeiT augmentation), pure soft distillation (alpha 1, tau 1) as in tleg.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from ...arch import ViTArch, arch_of
from ...artifact import Artifact
from ...errors import ConfigError
from ...registry import config_to_dict
from ...stack import VitStack, from_stack
from ...stack.init import blank_stack
from .._common import copy_head_if_same_labels, distill_from_ancestry, fit_stem, fresh_stack, pack, split_holdout, unpack
from .._computed import ComputedViT, decay_matrices_only
from .config import SIZE_FIELDS, LetsConfig

Tensors = dict[str, torch.Tensor]

# The transformation matrices: artifact name -> the size (of a model) their rows count.
TRANSFORMS = ("embed", "heads", "head_dim", "mlp", "depth")
QKV_WEIGHTS = ("q.weight", "k.weight", "v.weight")
QKV_BIASES = ("q.bias", "k.bias", "v.bias")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes one side of a transformation matrix counts."""

    depth: int
    embed: int
    heads: int
    head_dim: int
    mlp: int

    @classmethod
    def of(cls, arch: ViTArch) -> "Sizes":
        return cls(arch.depth, arch.embed_dim, arch.num_heads, arch.head_dim, arch.mlp_hidden)


# -- shapes -------------------------------------------------------------------------------
def resolve(config: LetsConfig, ancestry_arch: ViTArch) -> LetsConfig:
    """``config`` with every size that was None set from the ancestry, checked for consistency."""
    a = ancestry_arch
    # Default learngene width: half the ancestry's heads, each of the ancestry's head_dim.
    gene_heads = config.gene_heads or (max(1, config.gene_embed_dim // a.head_dim) if config.gene_embed_dim
                                       else max(1, a.num_heads // 2))
    gene_dim = config.gene_embed_dim or gene_heads * a.head_dim
    if gene_dim % gene_heads:
        raise ConfigError(f"lets gene_embed_dim {gene_dim} is not divisible by gene_heads {gene_heads}: set gene_heads "
                          f"among {[h for h in range(1, gene_dim + 1) if gene_dim % h == 0][:12]}")
    resolved = dataclasses.replace(
        config, gene_depth=config.gene_depth or max(1, a.depth // 2), gene_embed_dim=gene_dim, gene_heads=gene_heads,
        gene_mlp_ratio=config.gene_mlp_ratio or float(a.mlp_ratio), aux_depth=config.aux_depth or a.depth,
        aux_embed_dim=config.aux_embed_dim or a.embed_dim, aux_heads=config.aux_heads or a.num_heads,
        aux_mlp_ratio=config.aux_mlp_ratio or float(a.mlp_ratio))
    gene, aux = Sizes.of(gene_arch(resolved, a)), Sizes.of(aux_arch(resolved, a))
    for kind, g, x in zip(TRANSFORMS, (gene.embed, gene.heads, gene.head_dim, gene.mlp, gene.depth),
                          (aux.embed, aux.heads, aux.head_dim, aux.mlp, aux.depth)):
        if g > x:
            raise ConfigError(f"the learngene's {kind} size {g} exceeds the auxiliary model's {x}: the learngene is the "
                              f"compact part; lower gene_* or raise aux_* (sizes: gene {gene}, aux {aux})")
    return resolved


def gene_arch(config: LetsConfig, ancestry_arch: ViTArch) -> ViTArch:
    """The compact shape the learngene's tensors have (it is never run as a model)."""
    return ancestry_arch.replace(depth=config.gene_depth, embed_dim=config.gene_embed_dim, num_heads=config.gene_heads,
                                 mlp_ratio=config.gene_mlp_ratio)


def aux_arch(config: LetsConfig, ancestry_arch: ViTArch) -> ViTArch:
    """The auxiliary model: the ancestry's architecture at the auxiliary sizes."""
    return ancestry_arch.replace(depth=config.aux_depth, embed_dim=config.aux_embed_dim, num_heads=config.aux_heads,
                                 mlp_ratio=config.aux_mlp_ratio)


# -- selection ----------------------------------------------------------------------------
def select_rows(matrix: torch.Tensor, n: int, selection: str) -> torch.Tensor:
    """The ``n`` rows of ``matrix`` [rows, cols] a model of size ``n`` takes (int64, increasing)."""
    rows = matrix.shape[0]
    if not 1 <= n <= rows:
        raise ConfigError(f"cannot select {n} of {rows} rows")
    if selection == "continuous" or n == rows:
        return torch.arange(n)
    p = 2 if selection.startswith("l2") else 1
    norms = matrix.detach().float().norm(p=p, dim=1)
    picked = torch.topk(norms, n, largest=selection.endswith("top"), sorted=False).indices
    return picked.sort().values


def transforms_for(tensors: Tensors, sizes: Sizes, selection: str) -> dict[str, torch.Tensor]:
    """The rows of each transformation matrix a model of ``sizes`` uses."""
    wanted = dict(embed=sizes.embed, heads=sizes.heads, head_dim=sizes.head_dim, mlp=sizes.mlp, depth=sizes.depth)
    out = {}
    for kind in TRANSFORMS:
        matrix = tensors[f"transform.{kind}"]
        out[kind] = matrix.index_select(0, select_rows(matrix, wanted[kind], selection))
    return out


# -- the transformation -------------------------------------------------------------------
def transform_block_tensor(key: str, t: torch.Tensor, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Width-transform one block tensor stacked over layers, ``t`` [L, ...] in the learngene's sizes.

    One matrix per einsum: torch contracts a many-operand einsum left to right (no opt_einsum
    here), which would build the outer product of the matrices first.
    """
    E, A, B, M = x["embed"], x["heads"], x["head_dim"], x["mlp"]
    if key in QKV_WEIGHTS:                      # [L, H_g, hd_g, D_g] -> [L, H, hd, D]
        t = torch.einsum("ce,lhde->lhdc", E, t)
        t = torch.einsum("bd,lhdc->lhbc", B, t)
        return torch.einsum("ah,lhbc->labc", A, t)
    if key in QKV_BIASES:                       # [L, H_g, hd_g] -> [L, H, hd]
        return torch.einsum("ah,lhb->lab", A, torch.einsum("bd,lhd->lhb", B, t))
    if key == "proj.weight":                    # [L, D_g, H_g, hd_g] -> [L, D, H, hd]
        t = torch.einsum("bd,lehd->lehb", B, t)
        t = torch.einsum("ah,lehb->leab", A, t)
        return torch.einsum("ce,leab->lcab", E, t)
    if key == "fc1.weight":                     # [L, F_g, D_g] -> [L, F, D]
        return M @ t @ E.T
    if key == "fc1.bias":                       # [L, F_g] -> [L, F]
        return t @ M.T
    if key == "fc2.weight":                     # [L, D_g, F_g] -> [L, D, F]
        return E @ t @ M.T
    return t @ E.T                              # norms, proj.bias, fc2.bias, layer-scale: [L, D_g] -> [L, D]


def transformed_stack(tensors: Tensors, arch: ViTArch, selection: str) -> VitStack:
    """The canonical stack of ``arch`` (at most the auxiliary sizes) computed from the learngene
    ``tensors`` through the selected rows of its matrices (differentiable in ``tensors``)."""
    x = transforms_for(tensors, Sizes.of(arch), selection)
    E, G = x["embed"], x["depth"]
    gene_blocks = [unpack(f"blocks.{j}", tensors) for j in range(G.shape[1])]
    keys = sorted(gene_blocks[0])
    computed = {}
    for key in keys:
        stacked = torch.stack([b[key] for b in gene_blocks])               # [L_g, ...]
        mixed = (G @ stacked.flatten(1)).view(G.shape[0], *stacked.shape[1:])  # [L, ...]: depth first (compact width)
        computed[key] = transform_block_tensor(key, mixed, x).unbind(0)
    blocks = [{key: computed[key][l] for key in keys} for l in range(arch.depth)]
    stem = {}
    for key, t in unpack("stem", tensors).items():
        stem[key] = torch.einsum("ce,e...->c...", E, t) if key in ("patch.weight", "patch.bias") else t @ E.T  # [.., D]
    head = {}
    for key, t in unpack("head", tensors).items():
        head[key] = t if key == "head.bias" else (t @ E.T if key == "head.weight" else E @ t)
    return VitStack(arch=arch, stem=stem, blocks=blocks, head=head)


# -- initialisation -----------------------------------------------------------------------
def copy_pattern(rows: int, cols: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """[rows, cols]: row i copies column i mod cols (the first ``cols`` rows are the identity), plus noise."""
    matrix = torch.zeros(rows, cols)
    matrix[torch.arange(rows), torch.arange(rows) % cols] = 1.0
    return matrix + noise * torch.randn(rows, cols, generator=generator)


def stagewise(rows: int, cols: int) -> torch.Tensor:
    """[rows, cols]: row l is one-hot at floor(l * cols / rows), each column a contiguous run."""
    matrix = torch.zeros(rows, cols)
    matrix[torch.arange(rows), torch.arange(rows) * cols // rows] = 1.0
    return matrix


def init_tensors(config: LetsConfig, ancestry_arch: ViTArch) -> Tensors:
    """The learngene and its matrices before training (the global torch RNG seeds both)."""
    gene = fresh_stack(gene_arch(config, ancestry_arch))  # timm's ViT init at the compact shape
    tensors = {**pack("stem", gene.stem), **pack("head", gene.head)}
    for j, block in enumerate(gene.blocks):
        tensors.update(pack(f"blocks.{j}", block))
    g, a = Sizes.of(gene.arch), Sizes.of(aux_arch(config, ancestry_arch))
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
    for kind in ("embed", "heads", "head_dim", "mlp"):
        tensors[f"transform.{kind}"] = copy_pattern(getattr(a, kind), getattr(g, kind), config.noise, generator)
    tensors["transform.depth"] = stagewise(a.depth, g.depth)
    return tensors


# -- the auxiliary model ------------------------------------------------------------------
class LetsAuxiliary(ComputedViT):
    """The auxiliary ViT: the learngene transformed by every row of its matrices, trained end to end.

    Parameters are the artifact's tensors under their names (``blocks.0.q.weight``,
    ``transform.embed``...), so ``state_dict()`` is the learngene.
    """

    def __init__(self, arch: ViTArch, tensors: Tensors, selection: str = "continuous"):
        super().__init__(arch, {"": tensors})
        self.selection = selection

    def learngene_tensors(self) -> Tensors:
        return dict(self.named_parameters())

    def stack(self) -> VitStack:
        return transformed_stack(self.learngene_tensors(), self.arch, self.selection)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Everything but the learngene's weight matrices (timm's rule for the ViT it computes);
        the transformation matrices re-parameterise weights and never decay."""
        depth = self.transform.depth.shape[1]
        return decay_matrices_only(self, [f"blocks.{j}" for j in range(depth)])


# -- extraction ---------------------------------------------------------------------------
def extract(ancestry: VisionTransformer, config: LetsConfig, data: Any = None) -> Artifact:
    """Learn the learngene and its matrices by distilling ``ancestry`` into the auxiliary model."""
    ancestry_arch = arch_of(ancestry)
    if config.epochs > 0 and data is None:
        raise ConfigError("lets trains its learngene by distillation and needs data: pass data='fashion-mnist' "
                          "(or epochs=0 for the untrained initialisation)")
    if config.epochs > 0 and ancestry_arch.num_classes < 1:
        raise ConfigError("lets distils the ancestry's logits, but this ancestry has no classifier (num_classes=0)")
    config = resolve(config, ancestry_arch)
    arch = aux_arch(config, ancestry_arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        tensors = init_tensors(config, ancestry_arch)
    aux = LetsAuxiliary(arch, tensors, config.selection)
    provenance: dict[str, Any] = {"cost": {"samples_seen": 0, "flops": 0.0}, "lets": {"aux_arch": arch.to_dict()}}
    if config.epochs > 0:
        train_data, eval_data = split_holdout(data, config.holdout, config.seed)
        result, summary = distill_from_ancestry(aux, ancestry, train_data, eval_data, config)
        provenance["cost"] = {"samples_seen": int(result.samples_seen), "flops": float(result.train_flops)}
        provenance["lets"]["distillation"] = {**summary, "history": result.history}
    learned = {k: v.detach().cpu().contiguous() for k, v in aux.learngene_tensors().items()}
    return Artifact(method="lets", config=config_to_dict(config), tensors=learned, provenance=provenance)


# -- the artifact -------------------------------------------------------------------------
def stored_sizes(gene: Artifact) -> tuple[Sizes, Sizes]:
    """(learngene, auxiliary) sizes from the stored config."""
    config = LetsConfig(**gene.config)
    a = gene.ancestry_arch
    return Sizes.of(gene_arch(config, a)), Sizes.of(aux_arch(config, a))


def validate(gene: Artifact) -> None:
    """The learngene's blocks, stem, head and matrices have the shapes the stored sizes give."""
    for name in (*SIZE_FIELDS, "gene_mlp_ratio", "aux_mlp_ratio"):
        if gene.config.get(name) is None:
            raise ConfigError(f"config field {name} is not resolved; re-create the learngene")
    g, a = stored_sizes(gene)
    dtypes = {t.dtype for t in gene.tensors.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ConfigError(f"the tensors must share one floating-point dtype (they are transformed together), "
                          f"found {sorted(str(d) for d in dtypes)}")
    prefixes = {k.split(".", 1)[0] for k in gene.tensors}
    if prefixes - {"blocks", "stem", "head", "transform"}:
        raise ConfigError(f"unexpected tensors under {sorted(prefixes - {'blocks', 'stem', 'head', 'transform'})}")
    for kind in TRANSFORMS:
        name, want = f"transform.{kind}", (getattr(a, kind), getattr(g, kind))
        if name not in gene.tensors:
            raise ConfigError(f"{name} is missing")
        if tuple(gene.tensors[name].shape) != want:
            raise ConfigError(f"{name} is {tuple(gene.tensors[name].shape)} but the config gives {want}")
    blocks = [unpack(f"blocks.{j}", gene.tensors) for j in range(g.depth)]
    stored = {int(k.split(".")[1]) for k in gene.tensors if k.startswith("blocks.")}
    if stored != set(range(g.depth)):
        raise ConfigError(f"blocks {sorted(stored)} are stored but gene_depth is {g.depth}")
    if any(set(b) != set(blocks[0]) for b in blocks):
        raise ConfigError("the learngene's blocks hold different tensors")
    VitStack(arch=gene_arch(LetsConfig(**gene.config), gene.ancestry_arch), blocks=blocks).validate()
    for name in ("stem.patch.weight", "stem.pos_embed", "head.norm.weight"):
        if name not in gene.tensors:
            raise ConfigError(f"{name} is missing")
    if gene.tensors["stem.patch.weight"].shape[0] != g.embed or gene.tensors["stem.pos_embed"].shape[-1] != g.embed:
        raise ConfigError(f"the stem's width differs from the learngene's embed size {g.embed}")


def describe_shapes(gene: Artifact) -> str:
    g, a = stored_sizes(gene)
    return (f"depth <= {a.depth}, embed_dim <= {a.embed}, num_heads <= {a.heads}, head_dim <= {a.head_dim}, "
            f"MLP hidden <= {a.mlp} (the auxiliary model's sizes; rows of the transformation matrices chosen by "
            f"'{gene.config['selection']}'); learngene: {g.depth} blocks of width {g.embed}, {g.heads} heads; "
            f"head kept when num_classes = {gene.ancestry_arch.num_classes}")


def check_fits(arch: ViTArch, aux: Sizes) -> None:
    """A descendant takes rows of the matrices, so it must fit inside the auxiliary model."""
    want = Sizes.of(arch)
    for kind, option in (("depth", "aux_depth"), ("embed", "aux_embed_dim"), ("heads", "aux_heads"),
                         ("head_dim", "aux_embed_dim / aux_heads"), ("mlp", "aux_mlp_ratio")):
        if getattr(want, kind) > getattr(aux, kind):
            name = {"embed": "embed_dim", "heads": "num_heads", "mlp": "MLP hidden size"}.get(kind, kind)
            raise ConfigError(f"the descendant's {name} is {getattr(want, kind)} but this learngene's transformation "
                              f"matrices have {getattr(aux, kind)} rows: choose {name} <= {getattr(aux, kind)}, or "
                              f"re-extract with a larger {option}")


def expand(gene: Artifact, arch: ViTArch) -> VisionTransformer:
    """A timm ViT of ``arch``: the learngene transformed through the selected rows of its matrices."""
    _, aux = stored_sizes(gene)
    check_fits(arch, aux)
    target = blank_stack(arch)  # timm-distributed init (by from_stack) for what the learngene does not give
    with torch.no_grad():
        source = transformed_stack(gene.tensors, arch, gene.config["selection"])
    if set(source.blocks[0]) != set(target.blocks[0]):
        raise ConfigError(f"the learngene's blocks hold {sorted(source.blocks[0])} but the descendant expects "
                          f"{sorted(target.blocks[0])}: keep the ancestry's qkv_bias and layer-scale (init_values)")
    target.blocks = source.blocks
    source_arch = gene.ancestry_arch.replace(embed_dim=arch.embed_dim, num_heads=arch.num_heads)
    target.stem.update(fit_stem(source.stem, source_arch, arch))
    copy_head_if_same_labels(target, source.head, gene.ancestry_arch)
    return from_stack(target, consume=True, protect=gene.tensors.values())
