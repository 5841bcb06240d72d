"""Fresh tensors for a ``VitStack`` with timm's init distributions, drawn only where needed.

Building a whole timm model to overwrite most of it with the learngene would spend timm's
random init on every weight (~2 s at DeiT-B on one CPU core). Instead a stack is first *blank*: every tensor is a meta-device
placeholder (a shape and dtype, no memory). The method puts in what the learngene
provides; ``materialize`` (called by ``from_stack``) initialises only what is left.

Distributions: timm's default ``VisionTransformer`` init (``weight_init=''``), per
canonical key (D = embed_dim, fan_in = C * p * p of the patch filter):

    stem.patch.weight, stem.patch.bias  U(-1/sqrt(fan_in), 1/sqrt(fan_in))  (PyTorch's Conv2d
                                         default, kaiming_uniform a=sqrt(5); timm keeps it)
    stem.pos_embed                      trunc_normal(std 0.02, at +-2)
    stem.cls_token                      normal(std 1e-6)
    q/k/v/proj/fc1/fc2 weights, head.head.weight   trunc_normal(std 0.02, at +-2)
    every bias of a Linear              0
    norm weights / biases               1 / 0   (norm1/2, the final norm, and stem.norm_pre.* of pre-norm ViTs)
    ls1.gamma, ls2.gamma                init_values

trunc_normal(std 0.02) truncated at +-2 (timm's absolute bounds = 100 std) is drawn as a
normal clamped at +-2: the same distribution (the bounds are never reached), and normal_
is the fastest sampler on CPU.

Random stream (a departure from timm's): each tensor has its own generator, seeded from
``(stack.init_seed, tensor name)``; ``init_seed`` is one draw from the global torch RNG
when the stack is made, so ``torch.manual_seed`` (``Learngene.expand(seed=...)``) still
fixes everything. A fresh tensor's values therefore do not depend on which other
tensors the learngene provides, nor on the order of initialisation -- but they are not
the numbers ``timm.VisionTransformer(**arch)`` would draw after the same seed. Where that
exact stream matters (the scratch baseline, mimetic init), use the timm model itself.

Architectures whose init this table does not describe (``weight_init`` other than the
default, ``fix_init``, custom layers) get timm's own model instead (``blank_stack``
returns it fully initialised; nothing is a placeholder).
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache

import torch
from timm.models.vision_transformer import VisionTransformer

from ..arch import ViTArch, create_vit
from .canonical import BLOCK_MATRICES, VitStack
from .timm_vit import state_dict_to_stack, to_stack

# VisionTransformer arguments besides the architecture keys that leave the init alone.
_INIT_NEUTRAL_KEYS = frozenset({
    "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
})
LINEAR_WEIGHTS = frozenset({*BLOCK_MATRICES, "head.weight"})
ZERO_BIASES = frozenset({"q.bias", "k.bias", "v.bias", "proj.bias", "fc1.bias", "fc2.bias", "head.bias",
                         "norm1.bias", "norm2.bias", "norm.bias", "norm_pre.bias"})
NORM_WEIGHTS = frozenset({"norm1.weight", "norm2.weight", "norm.weight", "norm_pre.weight"})
LAYER_SCALES = frozenset({"ls1.gamma", "ls2.gamma"})
STEM_RULES = frozenset({"patch.weight", "patch.bias", "pos_embed", "cls_token"})
TRUNC_STD = 0.02       # timm's trunc_normal_(std=.02), bounds a=-2, b=2 (absolute)
TRUNC_BOUND = 2.0
CLS_TOKEN_STD = 1e-6   # timm: nn.init.normal_(cls_token, std=1e-6)


def has_table_init(arch: "ViTArch | dict") -> bool:
    """True when timm's init of ``arch`` is exactly the table above (the default init of a
    plain ViT); False for anything else (then use timm's model)."""
    return {name for name, _ in ViTArch.from_dict(arch).extra} <= _INIT_NEUTRAL_KEYS


@lru_cache(maxsize=32)
def _shapes(arch_json: str) -> tuple[dict, list[dict], dict]:
    """{canonical key: (shape, dtype)} of stem, blocks and head, read from a meta-device timm model."""
    arch = ViTArch.from_dict(json.loads(arch_json))
    model = VisionTransformer(**arch.timm_kwargs(), device="meta", weight_init="skip")
    stack = state_dict_to_stack(model.state_dict(), arch)
    spec = lambda d: {k: (tuple(t.shape), t.dtype) for k, t in d.items()}  # noqa: E731
    return spec(stack.stem), [spec(b) for b in stack.blocks], spec(stack.head)


def blank_stack(arch: "ViTArch | dict") -> VitStack:
    """A stack of ``arch`` whose tensors are meta placeholders (no memory, no random draws yet).

    Draws ``init_seed`` from the global torch RNG. Replace placeholders with real tensors
    freely; ``materialize`` (or ``from_stack``) initialises the rest. For an architecture
    without table init (see ``has_table_init``) the stack is timm's own model, initialised.
    """
    arch = ViTArch.from_dict(arch)  # VisionTransformer kwargs are accepted too
    if not has_table_init(arch):
        return to_stack(create_vit(arch))
    try:
        stem, blocks, head = _shapes(json.dumps(arch.to_dict(), sort_keys=True, default=repr))
    except TypeError:  # an argument timm does not know: let create_vit raise its ConfigError
        return to_stack(create_vit(arch))
    make = lambda spec: {k: torch.empty(shape, dtype=dtype, device="meta") for k, (shape, dtype) in spec.items()}  # noqa: E731
    seed = int(torch.randint(0, 2**62, ()).item())
    return VitStack(arch=arch, stem=make(stem), blocks=[make(b) for b in blocks], head=make(head), init_seed=seed)


def tensor_seed(init_seed: int, name: str) -> int:
    """The generator seed of the fresh tensor ``name`` ('stem.pos_embed', 'blocks.3.fc1.weight', ...)."""
    digest = hashlib.blake2b(f"{init_seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits


def init_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype, arch: ViTArch,
                generator: torch.Generator) -> torch.Tensor:
    """One fresh tensor for canonical ``key`` (a stem, block or head key), by the table above."""
    out = torch.empty(shape, dtype=dtype)
    if key in LINEAR_WEIGHTS or key == "pos_embed":
        return out.normal_(0.0, TRUNC_STD, generator=generator).clamp_(-TRUNC_BOUND, TRUNC_BOUND)
    if key in ZERO_BIASES:
        return out.zero_()
    if key in NORM_WEIGHTS:
        return out.fill_(1.0)
    if key in LAYER_SCALES:
        return out.fill_(float(arch.init_values))
    if key == "cls_token":
        return out.normal_(0.0, CLS_TOKEN_STD, generator=generator)
    if key in ("patch.weight", "patch.bias"):
        fan_in = arch.in_chans * arch.patch_hw[0] * arch.patch_hw[1]
        bound = 1.0 / math.sqrt(fan_in)
        return out.uniform_(-bound, bound, generator=generator)
    raise KeyError(f"no initialisation rule for {key!r}")


def _fresh(name: str, key: str, shape: tuple[int, ...], dtype: torch.dtype, arch: ViTArch,
           init_seed: int) -> torch.Tensor:
    return init_tensor(key, shape, dtype, arch, torch.Generator().manual_seed(tensor_seed(init_seed, name)))


def materialize(stack: VitStack, *, blocks: bool = True) -> list[str]:
    """Initialise every meta placeholder of ``stack`` in place; return the names initialised.
    ``blocks=False`` leaves the blocks' placeholders alone (a method that builds every block
    itself and needs only a fresh stem and head); each tensor's values are the same either way.

    The tensors are drawn on a thread pool (``torch.get_num_threads()`` threads): a seeded
    CPU ``normal_`` runs on one thread, and each tensor has its own generator, so the values
    do not depend on the thread count or the order (DeiT-B from blank: ~0.9 s of draws on one
    thread)."""
    todo = []  # (part dict, key, full name) of every placeholder
    parts = [(stack.stem, "stem"), (stack.head, "head")]
    if blocks:
        parts[1:1] = [(b, f"blocks.{i}") for i, b in enumerate(stack.blocks)]  # stem, blocks, head
    for part, prefix in parts:
        todo += [(part, key, f"{prefix}.{key}") for key, t in part.items() if t.device.type == "meta"]
    if not todo:
        return []
    if stack.init_seed is None:
        raise ValueError("the stack holds meta placeholders but no init_seed: make it with blank_stack")
    jobs = [(name, key, tuple(part[key].shape), part[key].dtype, stack.arch, stack.init_seed) for part, key, name in todo]
    threads = min(torch.get_num_threads(), len(jobs))
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:  # torch kernels release the GIL
            tensors = list(pool.map(lambda job: _fresh(*job), jobs))
    else:
        tensors = [_fresh(*job) for job in jobs]
    for (part, key, _), tensor in zip(todo, tensors):
        part[key] = tensor
    return [name for _, _, name in todo]
