"""Auto-learngene: whole ancestry layers chosen by a criterion, stacked among fresh layers.

Extraction stores the chosen blocks unchanged (canonical tensors) plus the stem:
  - "first-half": blocks 0 .. L_a // 2 - 1 (no data);
  - "similarity": the k blocks with the highest linear CKA against the label kernel on a
    probe batch of the target data (``scores.layer_scores``);
  - "gradient": the k blocks whose gradients change least over a short fine-tuning
    stream of tasks drawn from the data (``scores.gradient_scores``).
Ties go to the lower layer index; the kept layers are stored in ascending order. The
config records the chosen ``layers`` and every layer's ``scores``; the provenance records
the extraction cost (samples seen, FLOPs: forward only for similarity, 3 x forward for
the gradient stream).

Expansion is heuristic's: "first-half" puts the blocks at positions 0 .. k-1, the other
criteria spread them by relative depth (``methods._indices.place_layers``); every other
layer gets timm's random initialisation, and the descendant is a plain timm ViT.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ...arch import ViTArch, arch_of
from ...artifact import Artifact
from ...data.tensors import sample_tensors
from ...errors import ConfigError
from ...stack import to_stack
from ...train.distributed import resolve_device
from ...train.flops import forward_flops_per_sample
from .._common import (check_images_fit, check_inherited_layers, grow_with_inherited_layers, pack,
                       require_same_width)
from .._indices import place_layers
from .config import AutoLearngeneConfig
from .scores import gradient_scores, layer_scores


def top_k(scores: torch.Tensor, k: int, *, largest: bool) -> list[int]:
    """Indices of the k best scores (ties: lower index first), returned in ascending order."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]) if largest else float(scores[i]), i))
    return sorted(order[:k])


def extract(ancestry, config: AutoLearngeneConfig, data=None) -> Artifact:
    if config.layers is not None or config.scores is not None:
        raise ConfigError("auto-learngene fills in `layers` and `scores` itself; to inherit chosen layers use "
                          "method 'heuristic' with layers=[...]")
    if config.needs_data and data is None:
        raise ConfigError(f"auto-learngene criterion {config.criterion!r} scores layers on the target data: "
                          "pass data=... (a registered dataset name such as 'fashion-mnist', or a torch Dataset)")
    stack = to_stack(ancestry)
    depth = stack.depth
    scores: torch.Tensor | None = None
    cost = {"samples_seen": 0, "flops": 0.0}
    extra: dict[str, Any] = {}
    if config.criterion == "first-half":
        layers = list(range(max(1, depth // 2)))
    else:
        if config.k > depth:
            raise ConfigError(f"k={config.k} but the ancestry has only {depth} layers")
        device = resolve_device(config.device, field="auto-learngene device")
        arch = arch_of(ancestry)
        gen = torch.Generator().manual_seed(config.seed)
        limit = config.probe_size if config.criterion == "similarity" else None
        images, labels = sample_tensors(data, limit, gen, who="auto-learngene")
        check_images_fit(images, arch)
        model_device = next(ancestry.parameters()).device
        if config.criterion == "similarity":
            model = ancestry if model_device == device else copy.deepcopy(ancestry).to(device)
            scores = layer_scores(model, images, labels, pool=config.pool)
            layers = top_k(scores, config.k, largest=True)
            samples, passes = images.shape[0], 1
        else:
            scores, info = gradient_scores(ancestry, images, labels, num_tasks=config.num_tasks,
                                           task_classes=config.task_classes, steps=config.grad_steps,
                                           batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                                           device=device)
            layers = top_k(scores, config.k, largest=False)
            samples, passes = info["samples_seen"], 3
            extra["tasks"] = info["tasks"]
        if not torch.isfinite(scores).all():
            raise ConfigError("a layer score is NaN/inf: the ancestry's activations overflow on this data")
        cost = {"samples_seen": int(samples),
                "flops": float(passes * forward_flops_per_sample(ancestry, images[:1]) * samples)}
    tensors = {}
    for i in layers:
        tensors.update(pack(f"blocks.{i}", stack.blocks[i]))
    tensors.update(pack("stem", stack.stem))
    method_config = {**vars(config), "layers": layers,
                     "scores": None if scores is None else [float(s) for s in scores]}
    provenance = {"cost": cost, **({"selection": extra} if extra else {})}
    return Artifact(method="auto-learngene", config=method_config, tensors=tensors, provenance=provenance)


def inherited_layers(gene: Artifact) -> list[int]:
    return sorted(int(i) for i in gene.config["layers"])


def placement(gene: Artifact) -> str:
    return "first" if gene.config.get("criterion") == "first-half" else "spread"


def validate(gene: Artifact) -> None:
    layers = gene.config.get("layers")
    if not layers:
        raise ConfigError("config lists no inherited layers")
    check_inherited_layers(gene, inherited_layers(gene))
    scores = gene.config.get("scores")
    depth = gene.ancestry_arch.depth
    if scores is not None and len(scores) != depth:
        raise ConfigError(f"config holds {len(scores)} layer scores for an ancestry of {depth} layers")


def describe_shapes(gene: Artifact) -> str:
    a = gene.ancestry_arch
    return (f"depth >= {len(inherited_layers(gene))} with embed_dim {a.embed_dim} and {a.num_heads} heads "
            f"(inherits layers {inherited_layers(gene)}, chosen by {gene.config.get('criterion')})")


def expand(gene: Artifact, arch: ViTArch):
    ancestry = gene.ancestry_arch
    require_same_width("auto-learngene", arch, ancestry)
    layers = inherited_layers(gene)
    positions = place_layers(layers, placement(gene), ancestry.depth, arch.depth)
    return grow_with_inherited_layers(gene, arch, layers, positions)
