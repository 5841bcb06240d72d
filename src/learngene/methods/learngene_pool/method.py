"""Learngene Pool (Shi et al., AAAI 2024; code superselll/learngenepool, MindSpore).

Stage 1, the pool. The ancestry (teacher) is distilled into 2-3 small students of different
widths and one depth, each with the loss of ``distill.py``: a CE + (1 - a)(KD + block-output
MSE + attention-output MSE) through learnable teacher->student maps (a = 0.1, T = 1;
student blocks (2, 5, 8) <-> teacher (3, 7, 11) for 9-block students, scaled to the depths
configured). The artifact stores, as one learngene:

  - every student whole, in canonical form: ``students.<s>.stem.*``, ``students.<s>.blocks.<i>.*``,
    ``students.<s>.head.*`` (their classifiers are for the ancestry's classes);
  - per student, the mean of its learned block-output maps' weights, ``maps.<s>.block``
    [d_s, D_teacher]: what the stitching layers are initialised from. The attention maps and
    the maps' biases only serve the distillation and are not stored.

Stage 2, descendants. ``stitch_supernet(gene)`` builds the SN-Net-style supernet over the
students (``learngene.methods._stitching``): each student alone, and prefix of a narrower
student + stitching ``Linear`` + suffix of a wider one at every sliding-window position
(kernel 2, stride 1); training samples one configuration per step; ``export(i)`` gives any
configuration as a standalone ``StitchedViT``. Stitching layers start from the maps'
pseudo-inverse (``init="pinv"``, the default), from the maps as the paper composes them (the
transpose of the mean map, ``init="maps"``), from those weights with one least-squares gain per
layer (``init="maps-gain"``), from least squares on a few images (SN-Net's,
``init="least-squares"``), or random. ``expand`` (one timm ViT of one shape) does not apply and raises a ConfigError
pointing here.

Departures from the paper and the reference:
  - Map initialisation between two students neither of which has the teacher's width:
    the paper's rule W = mean(M_front)^T maps a front student's tokens into the *teacher's*
    space, which is the end student's space only when the end student has the teacher's
    width (the reference stitches tiny -> base from a base teacher, exactly that case, and
    we apply it there). Otherwise we compose W = mean(M_end) mean(M_front)^T (ours): into the
    teacher's space, then on to the end student's. Biases start at 0 (the reference leaves
    MindSpore's zero bias). ``init="maps-gain"`` and ``init="pinv"`` are ours too; "pinv" is the
    default because the transpose kept no more of the students' function than random stitches
    (README, Learngene Pool vs SN-Net: the stitch-init grid).
  - Pairs: ``pairs="all"`` (default) stitches every narrower -> wider pair; the reference
    trains only tiny -> base (plus the two alone) out of its three students, and SN-Net
    uses neighbouring widths (``pairs="nearest"``).
  - Students start from timm's initialisation (seeded), not from pre-trained weights; the
    training recipe is learngene.train's (AdamW, warmup + cosine, label smoothing 0.1,
    clipping), not DeiT's; every student gets matched features (the reference trains its
    base/small students with one match at the end and its tiny student with three).
  - The work of the maps and of the MSE terms is not counted in the extraction FLOPs
    (``fit`` counts 3 x student forward + teacher forward per sample).
"""

from __future__ import annotations

from typing import Any

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
from .config import LearngenePoolConfig
from .distill import PoolStudent, check_matches, default_matches, make_extra_loss, recording

METHOD = "learngene-pool"
STUDENTS = "students"
MAPS = "maps"


def _distil(trainer: PoolStudent, ancestry: VisionTransformer, data: Any, config: LearngenePoolConfig):
    """One student's distillation run with ``fit`` (soft KD with alpha = 1 - a, feature terms via extra_loss)."""
    train_config = TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs, seed=config.seed, distill="soft", distill_alpha=1.0 - config.loss_alpha,
        distill_tau=config.distill_tau, checkpoint=False, device=config.device)
    ancestry_device = next(ancestry.parameters()).device
    student_blocks = [s for s, _ in trainer.matches]
    teacher_blocks = [t for _, t in trainer.matches]
    with recording(trainer.student, student_blocks) as student_features, \
            recording(ancestry, teacher_blocks) as teacher_features:
        extra = make_extra_loss(trainer, student_features, teacher_features, config.loss_alpha)
        try:
            return fit(trainer, data, None, train_config, teacher=ancestry, extra_loss=extra)
        finally:
            ancestry.to(ancestry_device)


def extract(ancestry: VisionTransformer, config: LearngenePoolConfig, data: Any = None) -> Artifact:
    """Distil the ancestry into the configured students; store them and their mean block maps."""
    ancestry_arch = arch_of(ancestry).to_dict()
    if int(ancestry_arch["num_classes"]) < 1:
        raise ConfigError("learngene-pool distils the ancestry's logits, but this ancestry has no classifier")
    if config.epochs > 0 and data is None:
        raise ConfigError("learngene-pool distils its students on data: pass data='fashion-mnist' (or epochs=0)")
    teacher_depth, teacher_width = int(ancestry_arch["depth"]), int(ancestry_arch["embed_dim"])
    depth = config.depth if config.depth is not None else max(1, teacher_depth // 2)
    archs = anchor_archs(ancestry_arch, config.widths, config.num_heads, depth)
    matches = config.matches if config.matches is not None else default_matches(depth, teacher_depth)
    check_matches(matches, depth, teacher_depth)

    stacks, maps, runs = [], {}, []
    samples, flops = 0, 0.0
    for s, arch in enumerate(archs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed * 1009 + s)
            trainer = PoolStudent(create_vit(arch), teacher_width, matches)
        if config.epochs > 0:
            result = _distil(trainer, ancestry, data, config)
            samples += int(result.samples_seen)
            flops += float(result.train_flops)
            runs.append({"width": int(arch["embed_dim"]), "train_loss": result.train_loss, "train_acc": result.train_acc,
                         "steps": result.steps, "wall_time_s": result.wall_time_s,
                         "forward_flops_per_sample": result.forward_flops_per_sample,
                         "teacher_flops_per_sample": result.teacher_flops_per_sample, "history": result.history})
        stacks.append(to_stack(trainer.student))
        maps[f"{MAPS}.{s}.block"] = trainer.mean_block_map().cpu().contiguous()
    resolved = {**config_to_dict(config), "widths": [int(a["embed_dim"]) for a in archs],
                "num_heads": [int(a["num_heads"]) for a in archs], "depth": depth, "matches": [list(m) for m in matches]}
    provenance = {"cost": {"samples_seen": samples, "flops": flops},
                  "stitch": {"archs": archs, "teacher_width": teacher_width},
                  "learngene_pool": {"distillation": runs}}
    return Artifact(method=METHOD, config=resolved, tensors={**pack_anchors(STUDENTS, stacks), **maps},
                     provenance=provenance)


# -- the artifact -------------------------------------------------------------------------
def validate(gene: Artifact) -> None:
    """Students fit their stored archs, one mean map per student of shape [d_s, D_teacher], nothing else."""
    archs = stored_archs(gene)
    teacher_width = gene.ancestry_arch.embed_dim
    if gene.config.get("widths") != [int(a["embed_dim"]) for a in archs]:
        raise ConfigError(f"config widths {gene.config.get('widths')} differ from the stored students'")
    unpack_anchors(gene.tensors, STUDENTS, archs)
    for s, arch in enumerate(archs):
        name = f"{MAPS}.{s}.block"
        if name not in gene.tensors:
            raise ConfigError(f"{name} is missing")
        if tuple(gene.tensors[name].shape) != (int(arch["embed_dim"]), teacher_width):
            raise ConfigError(f"{name} is {tuple(gene.tensors[name].shape)}, "
                              f"expected ({arch['embed_dim']}, {teacher_width})")
    known = {f"{MAPS}.{s}.block" for s in range(len(archs))}
    stray = [k for k in gene.tensors if k not in known and not k.startswith(f"{STUDENTS}.")]
    stray += [k for k in gene.tensors if k.startswith(f"{STUDENTS}.") and int(k.split(".")[1]) >= len(archs)]
    if stray:
        raise ConfigError(f"unexpected tensor {stray[0]!r}")


def describe_shapes(gene: Artifact) -> str:
    archs = stored_archs(gene)
    return (f"stitched descendants only: {len(archs)} students of depth {archs[0]['depth']}, widths "
            f"{[a['embed_dim'] for a in archs]}; a prefix of a narrower student + Linear + a suffix of a wider one "
            "(learngene.methods.learngene_pool.stitch_supernet(gene))")


def expand(gene: Artifact, arch: dict[str, Any]):
    raise ConfigError(
        "learngene-pool grows stitched descendants (two widths joined by a Linear), not a single-shape timm ViT: "
        "build them with learngene.methods.learngene_pool.stitch_supernet(gene, num_classes=K), train that supernet "
        "with learngene.train.fit, then take any configuration with .export(i) (see benchmarks/pool_vs_snnet.py)")


# -- descendants --------------------------------------------------------------------------
def map_stitch_weight(front_map: torch.Tensor, end_map: torch.Tensor, teacher_width: int) -> torch.Tensor:
    """Stitching weight [d_end, d_front] from the students' mean maps M [d, D_teacher].

    End student at the teacher's width: mean(M_front)^T (the paper). Otherwise
    mean(M_end) mean(M_front)^T (ours: into the teacher's space, then to the end student's).
    """
    if end_map.shape[0] == teacher_width:
        return front_map.T.contiguous()
    return (end_map @ front_map.T).contiguous()


def pinv_stitch_weight(front_map: torch.Tensor, end_map: torch.Tensor, teacher_width: int) -> torch.Tensor:
    """``map_stitch_weight`` with the transpose of M_front [d_front, D_teacher] replaced by its
    Moore-Penrose pseudo-inverse pinv(M_front) [D_teacher, d_front] (float64): pinv(M_front) when
    the end student has the teacher's width, else M_end pinv(M_front) [d_end, d_front] (ours).

    The maps were trained so that student tokens s ~ M t for teacher tokens t, so pinv(M_front) s_front
    is the least-norm t that M_front takes to s_front: the inverse of the map (up to what M_front
    loses), where the transpose also carries M_front's scale a second time. When s_front = M_front t
    and s_end = M_end t for t in M_front's row space, the weight maps s_front exactly to s_end.
    """
    inverse = torch.linalg.pinv(front_map.double())  # [D_teacher, d_front]
    return map_stitch_weight(inverse.T, end_map.double(), teacher_width).float().contiguous()


STITCH_WEIGHTS = {"maps": map_stitch_weight, "maps-gain": map_stitch_weight, "pinv": pinv_stitch_weight}


def stitch_supernet(gene: Artifact, *, num_classes: int | None = None, init: str = "pinv", init_data: Any = None,
                    init_samples: int = 128, pairs: str = "all", kernel_size: int = 2, stride: int = 1,
                    seed: int = 0) -> StitchedSupernet:
    """The pool's descendants: a ``StitchedSupernet`` over the students.

    ``num_classes``: the downstream classes (None = the ancestry's; classifiers are kept only when
    they match). ``init``: "pinv" (the default: the maps' pseudo-inverse, ``pinv_stitch_weight``),
    "maps" (the paper's transpose, ``map_stitch_weight``), "maps-gain" (those weights with one
    least-squares gain per layer on ``init_samples`` images of ``init_data``), "least-squares" on
    ``init_samples`` images of ``init_data`` (SN-Net), or "random". Default "pinv", a departure
    from the paper: it keeps the paper's idea (stitches from the learned teacher->student maps)
    and inverts M as M is learned (student ~ M teacher); in the stitch-init grid
    (benchmarks/results/pool_init_grid.md) the paper's transpose kept no more of the students'
    function than random stitches and trained to 60.3% mean over the 18 configurations at lr
    1e-3, the pseudo-inverse to 76.3% (least squares on images: 79.6%). ``seed`` seeds fresh
    heads, stitching layers and the per-step configuration draws. Train it with ``learngene.train.fit``; ``select(i)`` +
    evaluate, or ``export(i)`` for a standalone model.
    """
    if not isinstance(gene, Artifact) or gene.method != METHOD:
        raise ConfigError(f"stitch_supernet takes a {METHOD} learngene, got "
                          f"{getattr(gene, 'method', type(gene).__name__)!r}")
    archs = stored_archs(gene)
    supernet = build_supernet(unpack_anchors(gene.tensors, STUDENTS, archs), num_classes=num_classes, pairs=pairs,
                              kernel_size=kernel_size, stride=stride, seed=seed)
    teacher_width = gene.ancestry_arch.embed_dim
    maps = [gene.tensors[f"{MAPS}.{s}.block"] for s in range(len(archs))]
    compose = STITCH_WEIGHTS.get(init, map_stitch_weight)  # the weights only serve the inits that take them
    weights = {(f, e): compose(maps[f], maps[e], teacher_width) for f, e in supernet.pairs}
    supernet.init_summary = initialise(supernet, init, init_data=init_data, init_samples=init_samples,
                                       pair_weights=weights, seed=seed)
    return supernet
