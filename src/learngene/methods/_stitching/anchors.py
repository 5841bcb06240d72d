"""The anchors' (students') shapes, and how a stitching learngene stores them.

A learngene of a stitching method keeps its anchors whole as flat tensors under a prefix
(``pack_anchors``) and their timm kwargs in ``provenance['stitch']['archs']`` (``stored_archs``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ...arch import ViTArch, validate_arch
from ...errors import ConfigError
from ...stack import VitStack, from_stack

Tensors = dict[str, torch.Tensor]


def default_num_heads(width: int, head_dim: int) -> int:
    """The head count dividing ``width`` whose head size is nearest ``head_dim`` (fewer heads on ties).

    DeiT-Ti/S/B: 192/384/768 with head_dim 64 -> 3/6/12; vit-mini's head_dim 16: 48 -> 3, 72 -> 4 (18 each).
    """
    divisors = [h for h in range(1, width + 1) if width % h == 0]
    return min(divisors, key=lambda h: (abs(width // h - head_dim), h))


def anchor_arch(base_arch: dict[str, Any], *, depth: int, width: int, num_heads: int) -> dict[str, Any]:
    """``base_arch`` (timm kwargs: stem geometry, pooling, classes) at another depth and width."""
    arch = {**base_arch, "depth": int(depth), "embed_dim": int(width), "num_heads": int(num_heads)}
    validate_arch(arch)
    return arch


def anchor_archs(base_arch: dict[str, Any], widths: list[int] | None, num_heads: list[int] | None,
                 depth: int) -> list[dict[str, Any]]:
    """The anchors' (students') timm kwargs: ``base_arch`` at each width, with ``depth`` blocks.

    ``widths`` None = D/4, D/2, D (DeiT-Ti/S/B from a DeiT-B-wide base); ``num_heads`` None = the
    base's head size, as near as divides each width (``default_num_heads``).
    """
    d = int(base_arch["embed_dim"])
    if widths is None:
        widths = sorted({max(1, d // 4), max(1, d // 2), d})
        if len(widths) < 2:
            raise ConfigError(f"the ancestry's width {d} is too small for default widths; pass widths=[...]")
    head_dim = d // int(base_arch["num_heads"])
    heads = num_heads if num_heads is not None else [default_num_heads(w, head_dim) for w in widths]
    return [anchor_arch(base_arch, depth=depth, width=w, num_heads=h) for w, h in zip(widths, heads)]


def stored_archs(gene) -> list[dict[str, Any]]:
    """The anchors' archs a stitching learngene keeps in ``provenance['stitch']['archs']``, validated."""
    stitch = gene.provenance.get("stitch") if isinstance(gene.provenance, dict) else None
    archs = stitch.get("archs") if isinstance(stitch, dict) else None
    if not isinstance(archs, list) or len(archs) < 2:
        raise ConfigError("the learngene lacks its anchors' architectures (provenance.stitch.archs); re-create it")
    for i, arch in enumerate(archs):
        try:
            validate_arch(arch)
        except ConfigError as e:
            raise ConfigError(f"anchor {i}'s architecture is invalid: {e}") from None
    return [dict(a) for a in archs]


def pack_anchors(prefix: str, stacks: Sequence[VitStack]) -> Tensors:
    """Anchors as flat tensors: ``<prefix>.<a>.stem.*``, ``<prefix>.<a>.blocks.<i>.*``, ``<prefix>.<a>.head.*``."""
    out: Tensors = {}
    for a, stack in enumerate(stacks):
        parts = {"stem": stack.stem, "head": stack.head, **{f"blocks.{i}": b for i, b in enumerate(stack.blocks)}}
        for part, tensors in parts.items():
            out.update({f"{prefix}.{a}.{part}.{k}": v.detach().cpu().clone().contiguous() for k, v in tensors.items()})
    return out


def unpack_anchors(tensors: Tensors, prefix: str, archs: Sequence[dict[str, Any]]) -> list[VitStack]:
    """Inverse of ``pack_anchors``; every tensor is checked against its anchor's arch (ConfigError)."""
    stacks = []
    for a, arch in enumerate(archs):
        start = f"{prefix}.{a}."
        own = {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}
        stem = {k[5:]: v for k, v in own.items() if k.startswith("stem.")}
        head = {k[5:]: v for k, v in own.items() if k.startswith("head.")}
        blocks: list[Tensors] = [{} for _ in range(int(arch["depth"]))]
        for k, v in own.items():
            if k.startswith("blocks."):
                _, index, name = k.split(".", 2)
                if not index.isdigit() or int(index) >= len(blocks):
                    raise ConfigError(f"{prefix} {a}: tensor {k!r} is beyond its depth {arch['depth']}")
                blocks[int(index)][name] = v
        stack = VitStack(arch=ViTArch.from_dict(arch), stem=stem, blocks=blocks, head=head)
        try:
            from_stack(stack, requires_grad=False)  # every tensor present, every shape right
        except (ConfigError, RuntimeError, KeyError) as e:
            raise ConfigError(f"{prefix} {a} does not fit its architecture: {e}") from None
        stacks.append(stack)
    return stacks
