"""Pre-train + fine-tune: store every ancestry tensor; the descendant is the ancestry.

Only the ancestry's own depth/width/heads can be produced. The classifier is copied when
the descendant's label space is the ancestry's, else freshly initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...arch import ViTArch
from ...artifact import Artifact
from ...errors import ConfigError
from ...stack import from_stack, to_stack
from ...stack.init import blank_stack
from .._common import copy_head_if_same_labels, fit_stem, pack, unpack


@dataclass
class PretrainFinetuneConfig:
    """No options: the whole ancestry is kept."""


def extract(ancestry, config: PretrainFinetuneConfig, data=None) -> Artifact:
    stack = to_stack(ancestry)
    tensors = {**pack("stem", stack.stem), **pack("head", stack.head)}
    for i, block in enumerate(stack.blocks):
        tensors.update(pack(f"blocks.{i}", block))
    return Artifact(method="pretrain-finetune", config={}, tensors=tensors)


def describe_shapes(gene: Artifact) -> str:
    a = gene.ancestry_arch
    return f"only the ancestry's shape: depth {a['depth']}, embed_dim {a['embed_dim']}, {a['num_heads']} heads"


def validate(gene: Artifact) -> None:
    depth = gene.ancestry_arch.depth
    for i in range(depth):
        if f"blocks.{i}.q.weight" not in gene.tensors:
            raise ConfigError(f"block {i} of {depth} is missing")


def expand(gene: Artifact, arch: ViTArch):
    ancestry = gene.ancestry_arch
    for key in ("depth", "embed_dim", "num_heads", "mlp_ratio"):
        if float(getattr(arch, key)) != float(getattr(ancestry, key)):
            raise ConfigError(f"pretrain-finetune can only rebuild the ancestry: {key} must be {getattr(ancestry, key)}, "
                              f"got {getattr(arch, key)}; use heuristic, weight-selection or tleg for other shapes")
    stack = blank_stack(arch)  # placeholders: from_stack initialises only what is not inherited
    stack.stem.update(fit_stem(unpack("stem", gene.tensors), ancestry, arch))
    for i in range(stack.depth):
        stack.blocks[i] = unpack(f"blocks.{i}", gene.tensors)
    copy_head_if_same_labels(stack, unpack("head", gene.tensors), ancestry)
    return from_stack(stack)
