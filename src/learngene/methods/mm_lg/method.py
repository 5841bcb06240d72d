"""MM-LG: multimodal learngene for CLIP (Chen et al., 2025). No public code; the paper's
description (methods.md: multimodal blocks shared by image and text, unimodal blocks per
modality, combined in a weighted sum; descendants: CLIPs of other depths and
single-modality models) is made concrete as follows. Every choice below is ours.

Learngene (K = ``num_layers``; both towers must have the same width, heads and MLP size):
  mm.{j}.<block key>      K multimodal blocks, shared by the two towers
  image.{j}.<block key>   K unimodal image blocks;   text.{j}.<block key>  K unimodal text blocks
  alpha.image, alpha.text [K]  the learned mixing weights
  image_stem.*, image_head.*, text_stem.*, text_head.*, logit_scale   (the towers' ends, kept)
Block j of tower m is the weighted sum  alpha_m[j] * mm.j + (1 - alpha_m[j]) * m.j  (a
convex pair of weights per layer, unconstrained once learned).

Expansion to depth L (per tower, any L >= 1): block l uses learngene layer j = floor(l K / L)
(each layer stretched over a contiguous run of L/K blocks, in order -- layer order is kept,
as the towers compute low- then high-level features).

Condensation from a CLIP ancestry with tower depths L_i, L_t:
  1. initialise: unimodal m.j = mean of the ancestry tower-m blocks that the expansion maps to
     layer j at depth L_m; multimodal mm.j = mean of image.j and text.j; alpha = 0.5; the
     towers' stems/heads and logit scale copied;
  2. train the auxiliary CLIP = the depth-(L_i, L_t) expansion (so the learngene is learned
     *as it will be expanded*, as TLEG does) on image-caption pairs with InfoNCE +
     ``distill_weight`` x (1 - cos) between its and the ancestry's embeddings, per tower,
     through ``learngene.train.fit``.

Descendants: ``expand_clip`` -> a ClipStack of any tower depths -> open_clip or transformers
model; the registry's ``expand`` -> the image tower as a plain timm ViT classifier (pre-norm,
class token; head from the text embeddings of class names when given, else timm's init);
``expand_text`` -> the text tower (stem, blocks, head) as a canonical ``Tower``.
"""

from __future__ import annotations

from typing import Any

import torch

from ...arch import ViTArch
from ...artifact import Artifact, created_now
from ...clip.data import CaptionPairs, CaptionTokenizer, load_caption_pairs
from ...clip.hf_adapter import stack_to_hf
from ...clip.model import image_classifier_arch, image_tower_to_timm, load_clip_ancestry
from ...clip.open_clip_adapter import stack_to_open_clip
from ...clip.stack import TOWERS, ClipStack, Tower, clip_arch, validate_clip_stack
from ...errors import ConfigError
from ...registry import config_to_dict
from ...version import __version__
from .._common import pack, unpack
from .condense import CondensedClip, build_stack, build_tower, condense, shell_tensors
from .config import MmlgConfig

Tensors = dict[str, torch.Tensor]


def layer_of(block: int, depth: int, num_layers: int) -> int:
    """Learngene layer j serving block ``block`` of a depth-``depth`` tower: floor(block K / depth)."""
    return block * num_layers // depth


def mmlg_blocks(tensors: Tensors, tower: str, depth: int) -> list[Tensors]:
    """The rule: block l = alpha[j] mm.j + (1 - alpha[j]) tower.j, j = layer_of(l)."""
    alpha = tensors[f"alpha.{tower}"]  # [K]
    K = alpha.shape[0]
    out = []
    for l in range(depth):
        j = layer_of(l, depth, K)
        shared, own = unpack(f"mm.{j}", tensors), unpack(f"{tower}.{j}", tensors)
        out.append({k: alpha[j] * shared[k] + (1 - alpha[j]) * own[k] for k in own})
    return out


def _check_towers_match(arch: dict[str, Any]) -> None:
    img, txt = arch["image"], arch["text"]
    for key in ("width", "heads", "mlp_ratio"):
        if img[key] != txt[key]:
            raise ConfigError(f"mm-lg shares blocks between the towers, so their {key} must match: image "
                              f"{img[key]}, text {txt[key]}; use a CLIP with equal tower widths")


def init_tensors(stack: ClipStack, num_layers: int) -> Tensors:
    """Step 1 of condensation (data-free): group means, shared = mean of the two towers, alpha 0.5."""
    _check_towers_match(stack.arch)
    tensors = shell_tensors(stack)
    unimodal: dict[str, list[Tensors]] = {}
    for tower in TOWERS:
        blocks = stack.tower(tower).blocks
        if len(blocks) < num_layers:
            raise ConfigError(f"num_layers {num_layers} exceeds the ancestry's {tower} depth {len(blocks)}")
        groups = [[b for l, b in enumerate(blocks) if layer_of(l, len(blocks), num_layers) == j] for j in range(num_layers)]
        unimodal[tower] = [{k: torch.stack([b[k] for b in g]).mean(0) for k in g[0]} for g in groups]
        for j, block in enumerate(unimodal[tower]):
            tensors.update(pack(f"{tower}.{j}", block))
        tensors[f"alpha.{tower}"] = torch.full((num_layers,), 0.5)
    for j in range(num_layers):
        image, text = unimodal["image"][j], unimodal["text"][j]
        tensors.update(pack(f"mm.{j}", {k: (image[k] + text[k]) / 2 for k in image}))
    return tensors


def extract_clip(ancestry: Any, config: MmlgConfig | None = None, pairs=None, **options: Any) -> Artifact:
    """Condense a CLIP ancestry (model, folder, 'open_clip:...', 'hf:...') on caption pairs."""
    if pairs is None:
        raise ConfigError("mm-lg trains its learngene on image-caption pairs: pass pairs=load_caption_pairs(...)")
    return extract(ancestry, config or MmlgConfig(**options), data=pairs)


def _condense_stack(stack: ClipStack, config: MmlgConfig, pairs, tokenizer=None) -> Artifact:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        tensors = init_tensors(stack, config.num_layers)
        aux = CondensedClip(stack.arch, tensors, mmlg_blocks)
        teacher = stack_to_open_clip(stack)
        cost = condense(aux, teacher, pairs, config)
    learned = {k: v.detach().cpu().contiguous() for k, v in aux.learngene_tensors().items()}
    gene = make_learngene("mm-lg", config_to_dict(config), learned, stack, cost, len(pairs.images))
    if tokenizer is not None:  # descendants written as CLIP folders need it to read captions
        gene.provenance["tokenizer"] = tokenizer.to_dict()
    return gene


def make_learngene(method: str, config: dict, tensors: Tensors, stack: ClipStack, cost: dict, num_samples: int) -> Artifact:
    classifier_arch = {k: v for k, v in image_classifier_arch(stack.arch, 0).to_dict().items() if k != "pre_norm"}
    provenance = {
        "ancestry": {"arch": classifier_arch, "clip_arch": stack.arch, "num_parameters": stack.num_parameters(),
                     "source": "clip"},
        "data": {"name": "caption pairs", "num_samples": num_samples},
        "cost": {"samples_seen": cost["samples_seen"], "flops": cost["flops"]},
        method: {k: v for k, v in cost.items() if k not in ("samples_seen", "flops")},
        "library": f"learngene-kit {__version__}", "created": created_now(),
    }
    return Artifact(method=method, config=config, tensors=tensors, provenance=provenance)


# -- descendants ---------------------------------------------------------------------------
def clip_arch_of(gene: Artifact) -> dict[str, Any]:
    try:
        return clip_arch(gene.provenance["ancestry"]["clip_arch"])
    except (KeyError, TypeError):
        raise ConfigError("this learngene has no CLIP architecture in its provenance: it is not an mm-lg one") from None


def expand_clip(gene: Artifact, *, image_layers: int | None = None, text_layers: int | None = None,
                library: str | None = "open_clip"):
    """A CLIP descendant: open_clip model (``library='open_clip'``), transformers CLIPModel
    (``'hf'``), or the canonical ClipStack (``None``). Depths default to the ancestry's."""
    arch = clip_arch_of(gene)
    for tower, layers in (("image", image_layers), ("text", text_layers)):
        if layers is not None:
            if not isinstance(layers, int) or layers < 1:
                raise ConfigError(f"{tower}_layers must be an integer >= 1, got {layers!r}")
            arch[tower]["layers"] = layers
    stack = build_stack({k: v.detach() for k, v in gene.tensors.items()}, mmlg_blocks, arch)
    stack = ClipStack(arch, stack.image, stack.text, stack.logit_scale)
    if library is None:
        return stack.clone()  # the stems and heads are the learngene's tensors: the caller gets its own
    if library == "open_clip":
        return stack_to_open_clip(stack)
    if library == "hf":
        return stack_to_hf(stack)
    raise ConfigError(f"library must be 'open_clip', 'hf' or None, got {library!r}")


def expand_text(gene: Artifact, layers: int) -> Tower:
    """The text tower of ``layers`` blocks (single-modality text encoder, canonical form)."""
    return expand_clip(gene, text_layers=layers, library=None).text


def expand(gene: Artifact, arch: ViTArch, class_embeddings: torch.Tensor | None = None):
    """The registry's descendant: the image tower at ``arch.depth`` as a timm ViT classifier."""
    if arch.num_classes < 1:
        raise ConfigError("an mm-lg image classifier needs num_classes >= 1: pass num_classes=")
    ancestry = gene.ancestry_arch
    for key in ("embed_dim", "num_heads", "mlp_ratio", "patch_size", "img_size"):
        if getattr(arch, key) != getattr(ancestry, key):
            raise ConfigError(f"mm-lg descendants keep the ancestry's {key} ({getattr(ancestry, key)}), got {getattr(arch, key)}")
    tensors = {k: v.detach() for k, v in gene.tensors.items()}
    image = build_tower(tensors, mmlg_blocks, "image", arch.depth)  # the image tower alone: no text tower
    stack = ClipStack(clip_arch_of(gene), image, Tower(), tensors["logit_scale"])
    return image_tower_to_timm(stack, arch.num_classes, in_chans=arch.in_chans,
                               class_embeddings=class_embeddings, blocks_given=True)


def extract(ancestry: Any, config: MmlgConfig, data: Any = None) -> Artifact:
    """The registry's entry (``learngene.extract("mm-lg", ...)``, ``learngene extract mm-lg``):
    ``ancestry`` is any CLIP source ``load_clip_ancestry`` reads (a folder of ``learngene
    clip-ancestry``, a Hugging Face CLIP folder, a model, 'open_clip:...', 'hf:...'); ``data`` a
    dataset name, captioned with the ancestry's own tokenizer at its image size, or ``CaptionPairs``."""
    stack, tokenizer = load_clip_ancestry(ancestry)
    if isinstance(data, CaptionPairs):
        pairs = data
    elif isinstance(data, str):
        if tokenizer is None:
            raise ConfigError("this CLIP ancestry's vocabulary is not the 49,408-token BPE table: pass caption pairs "
                              "tokenised for it, data=CaptionPairs(...), through the Python API")
        pairs = load_caption_pairs(data, "train", tokenizer, image_size=stack.arch["image"]["image_size"])
    else:
        raise ConfigError(f"mm-lg condenses on image-caption pairs: pass data='fashion-mnist' (a dataset name) "
                          f"or CaptionPairs, got {type(data).__name__}")
    return _condense_stack(stack, config, pairs, tokenizer)


def gene_tokenizer(gene: Artifact):
    """The tokenizer the learngene's ancestry used (compact, or the full BPE table of a pretrained CLIP);
    None for a learngene condensed on caption pairs given through the Python API for another vocabulary."""
    values = gene.provenance.get("tokenizer")
    return CaptionTokenizer.from_dict(values) if values else None


def validate(gene: Artifact) -> None:
    arch = clip_arch_of(gene)
    K = int(gene.config.get("num_layers", 0))
    for tower in TOWERS:
        alpha = gene.tensors.get(f"alpha.{tower}")
        if alpha is None or tuple(alpha.shape) != (K,):
            raise ConfigError(f"alpha.{tower} must have shape ({K},)")
    validate_clip_stack(build_stack(gene.tensors, mmlg_blocks, {**arch, "image": {**arch["image"], "layers": K},
                                                                 "text": {**arch["text"], "layers": K}}))


def describe_shapes(gene: Artifact) -> str:
    a = clip_arch_of(gene)
    return (f"CLIP descendants of any tower depths (width {a['image']['width']}, {a['image']['heads']} heads); "
            "image classifiers (timm ViT, pre-norm) and text towers of any depth")
