"""Heuristic learngene: a few whole layers of the ancestry, stacked among fresh layers.

Extraction stores the chosen blocks (and, optionally, the stem and head) unchanged.
Expansion to depth L places the inherited blocks, in their original order, at:
  - rule "first":  positions 0 .. k-1
  - rule "last":   positions L-k .. L-1
  - "spread" or explicit layers: position round(i * (L-1) / (L_a-1)) for ancestry layer i
    (made strictly increasing), so at L = L_a every layer keeps its own index.
All other layers get timm's random initialisation. Width must be the ancestry's.
"""

from __future__ import annotations

from typing import Any

from ...arch import ViTArch
from ...artifact import Artifact
from ...errors import ConfigError
from ...stack import to_stack
from .._common import check_inherited_layers, grow_with_inherited_layers, pack, require_same_width
from .._indices import place_layers
from .config import HeuristicConfig


def select_layers(config: HeuristicConfig, ancestry_depth: int) -> list[int]:
    """Ancestry layer indices the learngene keeps."""
    if config.layers is not None:
        bad = [i for i in config.layers if i >= ancestry_depth]
        if bad:
            raise ConfigError(f"layers {bad} do not exist: the ancestry has {ancestry_depth} layers (0..{ancestry_depth - 1})")
        return list(config.layers)
    k = config.k
    if k > ancestry_depth:
        raise ConfigError(f"k={k} but the ancestry has only {ancestry_depth} layers")
    if config.rule == "first":
        return list(range(k))
    if config.rule == "last":
        return list(range(ancestry_depth - k, ancestry_depth))
    # spread: k indices evenly spaced over the depth, ends included
    if k == 1:
        return [ancestry_depth // 2]
    return sorted({round(j * (ancestry_depth - 1) / (k - 1)) for j in range(k)})


def _placement(config: dict[str, Any], ancestry_depth: int) -> str:
    """How expand places the stored layers: as the rule that selected them ("first", "last"), else
    by relative depth ("spread"; explicit layers are stored with rule "spread", and a rule whose
    selection is not the stored layers spreads them too)."""
    rule = config["rule"]
    if rule in ("first", "last") and config["layers"] == select_layers(HeuristicConfig(rule=rule, k=config["k"]),
                                                                       ancestry_depth):
        return rule
    return "spread"


def extract(ancestry, config: HeuristicConfig, data=None) -> Artifact:
    stack = to_stack(ancestry)
    layers = select_layers(config, stack.depth)
    tensors = {}
    for i in layers:
        tensors.update(pack(f"blocks.{i}", stack.blocks[i]))
    if config.keep_stem:
        tensors.update(pack("stem", stack.stem))
    if config.keep_head:
        tensors.update(pack("head", stack.head))
    # Explicit layers are placed by relative depth: record that as the rule (extract always stores the layers).
    method_config = {**vars(config), "layers": layers, "rule": "spread" if config.layers is not None else config.rule}
    return Artifact(method="heuristic", config=method_config, tensors=tensors)


def inherited_layers(gene: Artifact) -> list[int]:
    return sorted(int(i) for i in gene.config["layers"])


def validate(gene: Artifact) -> None:
    check_inherited_layers(gene, inherited_layers(gene))


def describe_shapes(gene: Artifact) -> str:
    a = gene.ancestry_arch
    return (f"depth >= {len(inherited_layers(gene))} with embed_dim {a.embed_dim} and {a.num_heads} heads "
            f"(inherits layers {inherited_layers(gene)})")


def expand(gene: Artifact, arch: ViTArch):
    ancestry = gene.ancestry_arch
    require_same_width("heuristic", arch, ancestry)
    layers = inherited_layers(gene)
    positions = place_layers(layers, _placement(gene.config, ancestry.depth), ancestry.depth, arch.depth)
    return grow_with_inherited_layers(gene, arch, layers, positions)
