"""``from_stack``: a timm ``VisionTransformer`` holding a stack's tensors, without a second copy."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from timm.models.vision_transformer import VisionTransformer

from ..errors import ConfigError
from .canonical import VitStack
from .init import materialize
from .timm_vit import TIMM_STEM, _block_state, _head_table


def _storage_ptrs(tensors) -> set[int]:
    """Storage addresses of real tensors (meta placeholders have none)."""
    return {t.untyped_storage().data_ptr() for t in tensors if t.device.type != "meta"}


def _stack_tensors(stack: VitStack):
    return [t for part in (stack.stem, stack.head, *stack.blocks) for t in part.values()]


def _owns_its_storage(t: torch.Tensor) -> bool:
    """True when ``t`` spans its whole storage (not a view into a larger tensor)."""
    return (t.is_contiguous() and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())


def from_stack(stack: VitStack, *, requires_grad: bool = True, consume: bool = False,
               protect: Iterable[torch.Tensor] = ()) -> VisionTransformer:
    """Build a timm VisionTransformer holding exactly the stack's tensors.

    Meta placeholders left in the stack (see ``blank_stack``) are initialised first, with
    timm's distributions (``materialize``). The module is created on the meta device
    (without timm's init) and the tensors assigned, so no random initialisation is spent on
    weights that are overwritten at once.

    Copies, two modes:

    - default: the caller keeps its stack (placeholders stay placeholders); every tensor it
      holds is cloned into the model, tensors made here (fused q/k/v, fresh ones) are used
      as they are. Peak memory: the caller's tensors + the model.
    - ``consume=True``: the caller gives its stack away (a method that computed the
      descendant's tensors and has no further use for them). Tensors that own their whole
      storage go into the model as they are; views into larger tensors, and tensors sharing
      storage with anything in ``protect`` (the learngene's tensors, an ancestry) or with an
      earlier weight, are cloned. The stack is emptied block by block as q/k/v are fused,
      so peak memory is about one model (nothing held twice).
    """
    try:
        stack.validate()
    except ValueError as e:
        raise ConfigError(f"invalid stack: {e}") from None
    if consume:
        kept_apart = _storage_ptrs(protect)
        owner = stack
    else:
        kept_apart = _storage_ptrs(_stack_tensors(stack))
        owner = VitStack(stack.arch, dict(stack.stem), [dict(b) for b in stack.blocks], dict(stack.head),
                         stack.init_seed)
    try:
        materialize(owner)  # only the placeholders (on the copy of the dicts unless consuming)
    except ValueError as e:
        raise ConfigError(f"invalid stack: {e}") from None

    used: set[int] = set()

    def own(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        ptr = t.untyped_storage().data_ptr()
        if ptr in kept_apart or ptr in used or (consume and not _owns_its_storage(t)):
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        used.add(ptr)
        return t

    table = _head_table(owner.arch)
    state = {TIMM_STEM[c]: own(t) for c, t in owner.stem.items()}
    for i, block in enumerate(owner.blocks):
        state.update({k: own(v) for k, v in _block_state(block, i, owner.embed_dim).items()})
        if consume:
            block.clear()  # the separate q/k/v are dropped as soon as they are fused
    state.update({table[c]: own(t) for c, t in owner.head.items()})
    if consume:
        owner.stem.clear()
        owner.head.clear()

    init_mode = stack.arch.get_extra("weight_init", "")
    model = VisionTransformer(**{**stack.arch.timm_kwargs(), "weight_init": "skip"}, device="meta")
    if hasattr(model, "weight_init_mode"):  # what a later model.init_weights() uses: as if built with arch
        model.weight_init_mode = "reset" if init_mode == "skip" else init_mode
    own_state = model.state_dict()
    missing = sorted(set(own_state) - set(state))
    unexpected = sorted(set(state) - set(own_state))
    if missing or unexpected:
        raise ConfigError(f"stack does not match its arch: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for k, v in state.items():  # the stem and head too (validate() checks the blocks)
        if tuple(v.shape) != tuple(own_state[k].shape):
            raise ConfigError(f"stack does not match its arch: {k} has shape {tuple(v.shape)}, the architecture "
                              f"needs {tuple(own_state[k].shape)}")
        if not v.is_floating_point():
            raise ConfigError(f"stack tensor {k} has dtype {v.dtype}; weights must be floating point")
    model.load_state_dict(state, strict=True, assign=True)
    for p in model.parameters():
        p.requires_grad_(requires_grad)
    return model
