"""SN-Net: Stitchable Neural Networks (Pan et al., CVPR 2023; code ziplab/SN-Net), the peer
baseline of Learngene Pool.

The learngene stores the anchors whole (``anchors.<a>.stem.*``, ``anchors.<a>.blocks.<i>.*``,
``anchors.<a>.head.*``). Here the anchors are small ViTs trained independently from scratch on
``data`` (plain cross-entropy, no distillation), or given (``from_anchors``). Descendants are the
same stitched configurations as Learngene Pool's (``learngene.methods._stitching``): each
anchor alone, and a narrower anchor's prefix + ``Linear`` + a wider anchor's suffix at every
sliding-window position (kernel 2, stride 1), stitching layers initialised by least squares on
a few images (about 100 in SN-Net; ``init_samples``), one random configuration trained per step.

Departures: SN-Net stitches pre-trained DeiT-Ti/S/B; this library has none, so anchors are
trained here (the recipe is learngene.train's). For k = 0 the least-squares target is the
end anchor's embedded tokens (SN-Net's code indexes the last block's output there; see
``_stitching/init.py``). ``expand`` (one timm ViT) does not apply and raises a ConfigError.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer

from ...arch import arch_of, create_vit
from ...artifact import Artifact
from ...errors import ConfigError
from ...registry import config_to_dict
from ...stack import to_stack
from ...train import TrainConfig, fit
from .._stitching import (
    StitchedSupernet,
    anchor_archs,
    build_supernet,
    initialise,
    pack_anchors,
    stored_archs,
    unpack_anchors,
)
from .config import SnNetConfig

METHOD = "sn-net"
ANCHORS = "anchors"


def _train(anchor: VisionTransformer, data: Any, config: SnNetConfig):
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs, seed=config.seed,
                               checkpoint=False, device=config.device)
    return fit(anchor, data, None, train_config)


def _gene(stacks, archs, config: dict[str, Any], provenance: dict[str, Any]) -> Artifact:
    return Artifact(method=METHOD, config=config, tensors=pack_anchors(ANCHORS, stacks),
                     provenance={**provenance, "stitch": {"archs": archs}})


def extract(ancestry: VisionTransformer, config: SnNetConfig, data: Any = None) -> Artifact:
    """Train the anchors from scratch on ``data`` (the ancestry gives only the shape: stem, pooling, classes)."""
    ancestry_arch = arch_of(ancestry).to_dict()
    if config.epochs > 0 and data is None:
        raise ConfigError("sn-net trains its anchors on data: pass data='fashion-mnist' (or epochs=0)")
    depth = config.depth if config.depth is not None else int(ancestry_arch["depth"])
    archs = anchor_archs(ancestry_arch, config.widths, config.num_heads, depth)
    stacks, runs, samples, flops = [], [], 0, 0.0
    for a, arch in enumerate(archs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed * 1009 + a)
            anchor = create_vit(arch)
        if config.epochs > 0:
            result = _train(anchor, data, config)
            samples += int(result.samples_seen)
            flops += float(result.train_flops)
            runs.append({"width": int(arch["embed_dim"]), "train_loss": result.train_loss, "train_acc": result.train_acc,
                         "steps": result.steps, "wall_time_s": result.wall_time_s,
                         "forward_flops_per_sample": result.forward_flops_per_sample, "history": result.history})
        stacks.append(to_stack(anchor))
    resolved = {**config_to_dict(config), "widths": [int(a["embed_dim"]) for a in archs],
                "num_heads": [int(a["num_heads"]) for a in archs], "depth": depth}
    return _gene(stacks, archs, resolved, {"cost": {"samples_seen": samples, "flops": flops},
                                           "sn_net": {"training": runs}})


def from_anchors(anchors: Sequence[VisionTransformer], *, ancestry_arch: dict[str, Any] | None = None,
                 source: str = "given") -> Artifact:
    """An sn-net learngene from anchors you already have (narrowest first, one depth and token layout).

    ``ancestry_arch`` is recorded as the ancestry (default: the widest anchor's arch).
    """
    anchors = list(anchors)
    with torch.random.fork_rng(devices=[]):  # building it draws stitching weights; keep the caller's RNG as it was
        StitchedSupernet(anchors)  # the same checks the supernet will make: >= 2, depth, order, layout, classes
    archs = [arch_of(a).to_dict() for a in anchors]
    config = config_to_dict(SnNetConfig(widths=[int(a["embed_dim"]) for a in archs],
                                        num_heads=[int(a["num_heads"]) for a in archs],
                                        depth=int(archs[0]["depth"]), epochs=0))
    gene = _gene([to_stack(a) for a in anchors], archs, config, {"sn_net": {"anchors": source}})
    gene.provenance["ancestry"] = {"arch": dict(ancestry_arch or archs[-1]), "source": source,
                                   "num_parameters": sum(p.numel() for p in anchors[-1].parameters())}
    return gene


def validate(gene: Artifact) -> None:
    archs = stored_archs(gene)
    if gene.config.get("widths") != [int(a["embed_dim"]) for a in archs]:
        raise ConfigError(f"config widths {gene.config.get('widths')} differ from the stored anchors'")
    unpack_anchors(gene.tensors, ANCHORS, archs)
    stray = [k for k in gene.tensors if not k.startswith(f"{ANCHORS}.") or int(k.split(".")[1]) >= len(archs)]
    if stray:
        raise ConfigError(f"unexpected tensor {stray[0]!r}")


def describe_shapes(gene: Artifact) -> str:
    archs = stored_archs(gene)
    return (f"stitched descendants only: {len(archs)} anchors of depth {archs[0]['depth']}, widths "
            f"{[a['embed_dim'] for a in archs]} (learngene.methods.sn_net.stitch_supernet(gene))")


def expand(gene: Artifact, arch: dict[str, Any]):
    raise ConfigError(
        "sn-net grows stitched descendants (two widths joined by a Linear), not a single-shape timm ViT: build them "
        "with learngene.methods.sn_net.stitch_supernet(gene, num_classes=K, init_data=...), train that supernet with "
        "learngene.train.fit, then take any configuration with .export(i) (see benchmarks/pool_vs_snnet.py)")


def stitch_supernet(gene: Artifact, *, num_classes: int | None = None, init: str = "least-squares",
                    init_data: Any = None, init_samples: int = 128, pairs: str = "nearest", kernel_size: int = 2,
                    stride: int = 1, seed: int = 0) -> StitchedSupernet:
    """SN-Net's supernet over the stored anchors; ``init`` "least-squares" (needs ``init_data``) or "random"."""
    if not isinstance(gene, Artifact) or gene.method != METHOD:
        raise ConfigError(f"stitch_supernet takes a {METHOD} learngene, got "
                          f"{getattr(gene, 'method', type(gene).__name__)!r}")
    supernet = build_supernet(unpack_anchors(gene.tensors, ANCHORS, stored_archs(gene)), num_classes=num_classes,
                              pairs=pairs, kernel_size=kernel_size, stride=stride, seed=seed)
    supernet.init_summary = initialise(supernet, init, init_data=init_data, init_samples=init_samples, seed=seed)
    return supernet
