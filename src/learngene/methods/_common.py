"""Helpers shared by methods: fresh stacks, stem fitting, flat tensor names."""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv

from ..arch import ViTArch
from ..data.tensors import tensor_pair
from ..errors import ConfigError
from ..stack import VitStack, from_stack
from ..stack.init import blank_stack, materialize
from ..train import TrainConfig, fit

Tensors = dict[str, torch.Tensor]


def fresh_stack(arch: ViTArch) -> VitStack:
    """A canonical stack of ``arch`` with every tensor freshly initialised.

    timm's init distributions, each tensor drawn from its own generator seeded from the
    global torch RNG (``stack/init.py``): one random draw per weight, and the same values
    a ``blank_stack`` gets for the tensors it leaves to ``from_stack``. Not the numbers
    ``create_vit(arch)`` draws after the same seed: use ``to_stack(create_vit(arch))``
    where that matters (baselines that must match scratch bit for bit).

    Growing a descendant that overwrites most tensors? Use ``blank_stack(arch)`` instead:
    it initialises only what is left when ``from_stack`` builds the model.
    """
    stack = blank_stack(arch)
    materialize(stack)
    return stack


def pack(prefix: str, tensors: Tensors) -> Tensors:
    """{'q.weight': t} -> {'<prefix>.q.weight': t} (copies, so the artifact owns its tensors)."""
    return {f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in tensors.items()}


def unpack(prefix: str, tensors: Tensors) -> Tensors:
    """Inverse of ``pack``: the tensors under ``<prefix>.``, with the prefix removed."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def _pos_prefix(arch: ViTArch) -> int:
    # Number of prefix (class) positions inside pos_embed, as timm lays it out.
    return 0 if arch.no_embed_class or not arch.class_token else 1


def _check_stem(stem: Tensors, arch: ViTArch) -> None:
    """The stem's tensors must have the shapes ``arch`` gives them (a stored stem read from a
    file may not: refuse it here rather than fail on an index deep in the fitting)."""
    d, c = arch.embed_dim, arch.in_chans
    patch = arch.patch_hw
    gh, gw = arch.grid
    expected = {"patch.weight": (d, c, patch[0], patch[1]), "patch.bias": (d,),
                "pos_embed": (1, _pos_prefix(arch) + gh * gw, d), "cls_token": (1, 1, d),
                "norm_pre.weight": (d,), "norm_pre.bias": (d,)}
    for key, tensor in stem.items():
        if key in expected and tuple(tensor.shape) != expected[key]:
            raise ConfigError(f"the stem's {key} has shape {tuple(tensor.shape)} but its architecture gives "
                              f"{expected[key]}: the learngene is inconsistent; re-create it")
        if not tensor.is_floating_point():
            raise ConfigError(f"the stem's {key} has dtype {tensor.dtype}; weights must be floating point")


def fit_stem(stem: Tensors, source_arch: ViTArch, target_arch: ViTArch) -> Tensors:
    """Adapt an inherited stem (patch embedding, position embedding, class token) to a new arch.

    - different grid (image or patch size keeps the patch size): position embeddings are
      resampled bicubically (timm's ``resample_abs_pos_embed``);
    - different input channels: the patch filter is adapted as timm does for pretrained
      weights (``adapt_input_conv``: summed for grey, repeated and rescaled for RGB);
    - class token present/absent: its position slot is dropped or added (zeros).
    The width (embed_dim) and patch size must match: a stem can't change them.
    """
    if source_arch.embed_dim != target_arch.embed_dim:
        raise ConfigError(f"the inherited stem has width {source_arch.embed_dim} but the descendant has "
                          f"{target_arch.embed_dim}; use a method that selects width (weight-selection) "
                          "or keep the ancestry's embed_dim")
    if source_arch.patch_size != target_arch.patch_size:
        raise ConfigError(f"the inherited stem has patch size {source_arch.patch_size}, the descendant "
                          f"{target_arch.patch_size}; keep the ancestry's patch_size")
    _check_stem(stem, source_arch)
    out: Tensors = {}
    if "patch.weight" in stem:
        weight = stem["patch.weight"]  # [D, C, p, p]
        if weight.shape[1] != target_arch.in_chans:
            weight = adapt_input_conv(target_arch.in_chans, weight.clone(), base_chans=weight.shape[1])
        out["patch.weight"] = weight
    if "patch.bias" in stem:
        out["patch.bias"] = stem["patch.bias"]
    if "pos_embed" in stem:
        pos = stem["pos_embed"]  # [1, prefix + gh*gw, D]
        src_prefix, dst_prefix = _pos_prefix(source_arch), _pos_prefix(target_arch)
        src_grid, dst_grid = source_arch.grid, target_arch.grid
        prefix, grid_tokens = pos[:, :src_prefix], pos[:, src_prefix:]
        if src_grid != dst_grid:
            grid_tokens = resample_abs_pos_embed(grid_tokens, new_size=list(dst_grid), old_size=list(src_grid),
                                                 num_prefix_tokens=0)
        if dst_prefix > src_prefix:
            prefix = torch.zeros(1, dst_prefix, pos.shape[-1], dtype=pos.dtype)
        elif dst_prefix < src_prefix:
            prefix = prefix[:, :0]
        out["pos_embed"] = torch.cat([prefix, grid_tokens], dim=1)
    if "cls_token" in stem and target_arch.class_token:
        out["cls_token"] = stem["cls_token"]
    if target_arch.pre_norm:  # CLIP-style pre-norm: kept when both have it (else fresh 1 / 0)
        out.update({k: stem[k] for k in ("norm_pre.weight", "norm_pre.bias") if k in stem})
    return out


def copy_head_if_same_labels(stack: VitStack, head: Tensors, ancestry_arch: ViTArch) -> bool:
    """Copy the final norm always, and the classifier only if the label space is the ancestry's."""
    for a, b in (("norm.weight", "norm.bias"), ("head.weight", "head.bias")):
        if (a in head) != (b in head):
            have, lack = (a, b) if a in head else (b, a)
            raise ConfigError(f"the stored head has {have} but not {lack}: the learngene is incomplete; re-create it")
    if "norm.weight" in head and "norm.weight" in stack.head:
        stack.head["norm.weight"], stack.head["norm.bias"] = head["norm.weight"], head["norm.bias"]
    same_labels = stack.arch.num_classes == ancestry_arch.num_classes and "head.weight" in head
    if same_labels and "head.weight" in stack.head:
        stack.head["head.weight"], stack.head["head.bias"] = head["head.weight"], head["head.bias"]
        return True
    return False


def check_images_fit(images: torch.Tensor, arch: ViTArch) -> None:
    """Data images [N, C, H, W] must be the input ``arch`` (the ancestry's) takes."""
    expected = (arch.in_chans, *arch.img_hw)
    if tuple(images.shape[1:]) != expected:
        raise ConfigError(f"data images are {tuple(images.shape[1:])} but the ancestry takes {expected}; pass a "
                          "registered dataset name (data='fashion-mnist' is resized for you) or resize your dataset")


def require_same_width(method: str, arch: ViTArch, ancestry_arch: ViTArch) -> None:
    for key in ("embed_dim", "num_heads", "mlp_ratio"):
        if float(getattr(arch, key)) != float(getattr(ancestry_arch, key)):
            raise ConfigError(f"{method} inherits whole layers, so the descendant's {key} must be the ancestry's "
                              f"({getattr(ancestry_arch, key)}), got {getattr(arch, key)}; for a narrower descendant use "
                              "weight-selection")


def check_inherited_layers(gene, layers: list[int]) -> None:
    """A whole-layer learngene must store exactly the blocks its config lists."""
    for i in layers:
        if f"blocks.{i}.q.weight" not in gene.tensors:
            raise ConfigError(f"config lists layer {i} but its tensors are missing")
    stored = {int(k.split(".")[1]) for k in gene.tensors if k.startswith("blocks.")}
    if stored - set(layers):
        raise ConfigError(f"tensors hold layers {sorted(stored)} but the config lists {layers}")


def grow_with_inherited_layers(gene, arch: ViTArch, layers: list[int], positions: list[int]):
    """A descendant of ``arch`` whose blocks at ``positions`` are the stored ancestry ``layers``.

    Every other block is freshly initialised with timm's distributions (only those: the
    inherited blocks are never drawn, see ``blank_stack``); the stem is inherited (and
    fitted) when stored, the final norm and classifier when stored and the label space matches.
    """
    ancestry = gene.ancestry_arch
    stack = blank_stack(arch)
    for layer, position in zip(layers, positions):
        inherited = unpack(f"blocks.{layer}", gene.tensors)
        if set(inherited) != set(stack.blocks[position]):
            raise ConfigError(f"layer {layer} has tensors {sorted(inherited)} but the descendant block expects "
                              f"{sorted(stack.blocks[position])}: keep the ancestry's qkv_bias and layer-scale settings")
        stack.blocks[position] = inherited
    stem = unpack("stem", gene.tensors)
    if stem:
        stack.stem.update(fit_stem(stem, ancestry, arch))
    copy_head_if_same_labels(stack, unpack("head", gene.tensors), ancestry)
    return from_stack(stack)


# The run statistics a distilled learngene records in its provenance.
DISTILL_SUMMARY_FIELDS = ("train_loss", "train_acc", "eval_loss", "eval_acc", "steps", "wall_time_s",
                          "forward_flops_per_sample", "forward_flops_per_step", "teacher_flops_per_sample")


def distill_from_ancestry(student: torch.nn.Module, ancestry: torch.nn.Module, train_data, eval_data, config):
    """Soft-distil ``ancestry`` into ``student`` with the training engine; returns (TrainResult, summary).

    ``config`` carries the shared distillation fields of TLEG/PEG configs (epochs, batch_size,
    lr, weight_decay, warmup_epochs, seed, distill_alpha, distill_tau, device). The ancestry is
    moved back to its own device afterwards (fit moves the teacher to the training device).
    """
    train_config = TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs, seed=config.seed, distill="soft", distill_alpha=config.distill_alpha,
        distill_tau=config.distill_tau, checkpoint=False, device=config.device,
    )
    ancestry_device = next(ancestry.parameters()).device
    try:
        result = fit(student, train_data, eval_data, train_config, teacher=ancestry, out_dir=None)
    finally:
        ancestry.to(ancestry_device)
    return result, {k: getattr(result, k) for k in DISTILL_SUMMARY_FIELDS}


def split_holdout(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """(train, held-out) parts of ``data``; tensor datasets stay tensor datasets."""
    if fraction == 0:
        return data, None
    n = len(data)
    n_eval = int(round(n * fraction))
    if n_eval < 1 or n_eval >= n:
        raise ConfigError(f"holdout={fraction} of {n} samples leaves an empty part; change holdout")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    eval_idx, train_idx = perm[:n_eval], perm[n_eval:]
    pair = tensor_pair(data)
    if pair is not None:
        images, labels = pair
        pick = lambda idx: torch.utils.data.TensorDataset(images[idx], labels[idx])  # noqa: E731
    else:
        pick = lambda idx: torch.utils.data.Subset(data, idx.tolist())  # noqa: E731
    return pick(train_idx), pick(eval_idx)
