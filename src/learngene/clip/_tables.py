"""The engine under the CLIP adapters: a key table turns a library state dict into a
``ClipStack`` and back. Every reshape is a view (or a transpose), so the round trip is bitwise.

A table maps ``(part, canonical key)`` -- part is ``image.stem``, ``image.block``,
``image.head``, ``text.stem``, ``text.block``, ``text.head`` or ``top`` -- to
``(library key, kind)``; block keys contain ``{i}``. Kinds:
  "view"     same numbers, canonical shape (e.g. [D, D] <-> [H, hd, D], [T, D] <-> [1, T, D])
  "t"        transposed (open_clip stores projections as ``x @ proj`` [D, E]; canonical is [E, D])
  "chunk:j"  the j-th of 3 equal row blocks of a fused tensor (nn.MultiheadAttention's
             in_proj [3D, D] with rows [q; k; v]), in canonical shape
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .stack import TOWERS, ClipStack, Tower, clip_arch, expected_shapes, validate_clip_stack

Table = dict[tuple[str, str], tuple[str, str]]


def _to_canonical(tensor: torch.Tensor, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    if kind == "t":
        return tensor.t()
    if kind.startswith("chunk:"):
        tensor = tensor.chunk(3, dim=0)[int(kind.split(":")[1])]
    return tensor.view(shape)


def state_dict_to_clip_stack(state: dict[str, torch.Tensor], arch: dict[str, Any], table: Table) -> ClipStack:
    """Read a library state dict through ``table`` into a canonical stack (views, no copies)."""
    arch = clip_arch(arch)
    shapes = expected_shapes(arch)

    def read(part: str, i: int | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for (table_part, key), (lib_key, kind) in table.items():
            if table_part != part:
                continue
            name = lib_key.format(i=i)
            if name not in state:
                raise ConfigError(f"the model has no {name!r}: it is not the CLIP layout this adapter maps")
            out[key] = _to_canonical(state[name], kind, shapes[part][key])
        return out

    towers = {}
    for tower in TOWERS:
        blocks = [read(f"{tower}.block", i) for i in range(arch[tower]["layers"])]
        towers[tower] = Tower(stem=read(f"{tower}.stem"), blocks=blocks, head=read(f"{tower}.head"))
    (scale_key, _), = [v for (part, _), v in table.items() if part == "top"]
    stack = ClipStack(arch=arch, image=towers["image"], text=towers["text"], logit_scale=state[scale_key])
    validate_clip_stack(stack)
    return stack


def clip_stack_to_state_dict(stack: ClipStack, table: Table, lib_shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Write a canonical stack through ``table`` into a library state dict shaped as ``lib_shapes``."""
    validate_clip_stack(stack)
    state: dict[str, torch.Tensor] = {}
    fused: dict[str, list[torch.Tensor | None]] = {}

    def write(part: str, tensors: dict[str, torch.Tensor], i: int | None = None) -> None:
        for (table_part, key), (lib_key, kind) in table.items():
            if table_part != part:
                continue
            name, tensor = lib_key.format(i=i), tensors[key]
            if kind == "t":
                state[name] = tensor.t()
            elif kind.startswith("chunk:"):
                fused.setdefault(name, [None, None, None])[int(kind.split(":")[1])] = tensor.reshape(-1, *lib_shapes[name][1:])
            else:
                state[name] = tensor.reshape(lib_shapes[name])

    for tower_name in TOWERS:
        tower = stack.tower(tower_name)
        write(f"{tower_name}.stem", tower.stem)
        write(f"{tower_name}.head", tower.head)
        for i, block in enumerate(tower.blocks):
            write(f"{tower_name}.block", block, i)
    for name, chunks in fused.items():
        state[name] = torch.cat(chunks, dim=0)  # [q; k; v] rows
    (scale_key, _), = [v for (part, _), v in table.items() if part == "top"]
    state[scale_key] = stack.logit_scale.reshape(lib_shapes[scale_key])
    return state


def load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Copy ``state`` into ``model`` (strict: every key, every shape) and return it."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(f"the stack does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ConfigError(f"{key} has shape {tuple(tensor.shape)}, the model needs {tuple(own[key].shape)}")
    model.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)  # copied into the model's own tensors
    return model
