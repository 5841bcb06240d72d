"""ViT architectures: the preset table, validation, ``create_vit`` and the typed ``ViTArch``.

The bottom of the library: it imports timm and ``errors`` only, so every other layer may use it.

A preset is a dict of timm ``VisionTransformer`` keyword arguments; ``create_vit`` takes a preset
name and overrides (``None`` overrides are ignored, as in ``timm.create_model``). ``ViTArch`` is
the same facts as a frozen dataclass: what methods, stacks and artifacts pass around, read as
``arch.depth`` rather than ``int(arch["depth"])``. ``ViTArch.to_dict()`` is its JSON form (artifact
provenance, ``model_config.json``); ``timm_kwargs()`` rebuilds the model.

``vit-mini`` is the CPU-scale ancestry: depth 12 like DeiT, 28x28 grey input, patch 7
(a 4x4 grid of 16 tokens + class token), width 96 with 6 heads of 16 dims.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torch import nn
from timm.layers import LayerScale
from timm.models.vision_transformer import VisionTransformer

from .errors import ConfigError

# name -> VisionTransformer kwargs. Architecture facts as data, not branches.
VIT_PRESETS: dict[str, dict[str, Any]] = {
    # CPU-scale ancestry for Fashion-MNIST-like 28x28 grey images.
    "vit-mini": dict(img_size=28, patch_size=7, in_chans=1, embed_dim=96, depth=12, num_heads=6,
                     mlp_ratio=4.0, num_classes=10),
    # DeiT shapes (Touvron et al. 2021) for GPU users; timm names in comments.
    "deit-tiny": dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3,
                      mlp_ratio=4.0, num_classes=1000),   # deit_tiny_patch16_224
    "deit-small": dict(img_size=224, patch_size=16, in_chans=3, embed_dim=384, depth=12, num_heads=6,
                       mlp_ratio=4.0, num_classes=1000),  # deit_small_patch16_224
    "deit-base": dict(img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                      mlp_ratio=4.0, num_classes=1000),   # deit_base_patch16_224
}

# The VisionTransformer arguments that describe architecture (saved in artifacts and
# checkpoints so a model can be rebuilt exactly).
ARCH_KEYS = (
    "img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth",
    "num_heads", "mlp_ratio", "qkv_bias", "init_values", "class_token", "no_embed_class",
    "fc_norm", "final_norm", "pre_norm",
)


def list_presets() -> list[str]:
    return sorted(VIT_PRESETS)


# Upper bounds: far beyond any real ViT (ViT-22B: depth 48, width 6144), low enough that a
# corrupt or hostile value is refused instead of hanging or exhausting memory.
MAX_DEPTH, MAX_EMBED_DIM, MAX_CLASSES, MAX_SIDE = 1024, 1 << 16, 1 << 24, 1 << 16


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_shape(*, depth: int, embed_dim: int, num_heads: int, num_classes: int | None = None) -> None:
    """Raise ConfigError for shapes no ViT can have."""
    if not _is_int(depth) or depth < 1:
        raise ConfigError(f"depth must be a positive integer, got {depth!r}")
    if depth > MAX_DEPTH:
        raise ConfigError(f"depth {depth} is beyond {MAX_DEPTH}; choose a smaller depth")
    if not _is_int(num_heads) or num_heads < 1:
        raise ConfigError(f"num_heads must be a positive integer, got {num_heads!r}")
    if not _is_int(embed_dim) or embed_dim < 1:
        raise ConfigError(f"embed_dim must be a positive integer, got {embed_dim!r}")
    if embed_dim > MAX_EMBED_DIM:
        raise ConfigError(f"embed_dim {embed_dim} is beyond {MAX_EMBED_DIM}; choose a smaller width")
    if embed_dim % num_heads != 0:
        raise ConfigError(
            f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}: "
            f"choose num_heads among {[h for h in range(1, embed_dim + 1) if embed_dim % h == 0][:12]}")
    if num_classes is not None and (not _is_int(num_classes) or not 0 <= num_classes <= MAX_CLASSES):
        raise ConfigError(f"num_classes must be an integer in [0, {MAX_CLASSES}], got {num_classes!r}")


GLOBAL_POOLS = ("", "avg", "token", "max", "avgmax")
REQUIRED_ARCH_KEYS = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads")


def validate_arch(arch: Any) -> None:
    """Raise ConfigError unless ``arch`` is a ViT architecture this library can build: every
    ``ARCH_KEYS`` value of the right type and range, nothing else. For architectures read
    from files (artifact provenance), so that a corrupt or hostile value stops here with
    a message instead of deep inside timm."""
    if not isinstance(arch, dict):
        raise ConfigError("an architecture must be a mapping of VisionTransformer arguments, "
                          f"got {type(arch).__name__}")
    unknown = sorted(map(str, set(arch) - set(ARCH_KEYS)))
    if unknown:
        raise ConfigError(f"unknown architecture key(s) {unknown}; known: {', '.join(ARCH_KEYS)}")
    missing = [k for k in REQUIRED_ARCH_KEYS if k not in arch]
    if missing:
        raise ConfigError(f"the architecture lacks {', '.join(missing)}")
    validate_shape(depth=arch.get("depth"), embed_dim=arch.get("embed_dim"), num_heads=arch.get("num_heads"),
                   num_classes=arch.get("num_classes"))

    def side(name: str, default: int) -> list[int]:
        value = arch.get(name, default)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) != (2 if isinstance(value, (list, tuple)) else 1) or not all(
                _is_int(v) and 1 <= v <= MAX_SIDE for v in values):
            raise ConfigError(f"{name} must be a positive integer or a pair of them, got {value!r}")
        return values * 2 if len(values) == 1 else values

    img, patch = side("img_size", 224), side("patch_size", 16)
    if patch[0] > img[0] or patch[1] > img[1]:
        raise ConfigError(f"patch_size {arch.get('patch_size')} is larger than img_size {arch.get('img_size')}")
    in_chans = arch.get("in_chans", 3)
    if not _is_int(in_chans) or not 1 <= in_chans <= 4096:
        raise ConfigError(f"in_chans must be an integer in [1, 4096], got {in_chans!r}")
    ratio = arch.get("mlp_ratio", 4.0)
    if not (_is_int(ratio) or isinstance(ratio, float)) or not 0 < ratio <= 64 or int(arch["embed_dim"] * ratio) < 1:
        raise ConfigError(f"mlp_ratio must be a number in (0, 64] giving an MLP of >= 1 unit, got {ratio!r}")
    for name in ("qkv_bias", "class_token", "no_embed_class", "final_norm", "pre_norm"):
        if name in arch and not isinstance(arch[name], bool):
            raise ConfigError(f"{name} must be true or false, got {arch[name]!r}")
    if arch.get("fc_norm") is not None and not isinstance(arch["fc_norm"], bool):
        raise ConfigError(f"fc_norm must be true, false or null, got {arch['fc_norm']!r}")
    init = arch.get("init_values")
    if init is not None and not ((_is_int(init) or isinstance(init, float)) and math.isfinite(init)):
        raise ConfigError(f"init_values (layer-scale) must be a number or null, got {init!r}")
    pool = arch.get("global_pool", "token")
    if pool not in GLOBAL_POOLS:
        raise ConfigError(f"global_pool must be one of {GLOBAL_POOLS}, got {pool!r}")
    if pool == "token" and not arch.get("class_token", True):
        raise ConfigError("global_pool 'token' needs class_token=true; use global_pool 'avg' without a class token")


def vit_kwargs(preset: "str | dict[str, Any] | ViTArch" = "vit-mini", **overrides: Any) -> dict[str, Any]:
    """Resolve a preset name (or a kwargs dict, or a ``ViTArch``) plus overrides into VisionTransformer kwargs."""
    if isinstance(preset, ViTArch):
        kwargs = preset.timm_kwargs()
    elif isinstance(preset, dict):
        kwargs = dict(preset)
    else:
        if preset not in VIT_PRESETS:
            raise ConfigError(f"unknown model preset {preset!r}; choose one of {list_presets()}")
        kwargs = dict(VIT_PRESETS[preset])
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    validate_shape(depth=kwargs.get("depth", 12), embed_dim=kwargs.get("embed_dim", 768),
                   num_heads=kwargs.get("num_heads", 12), num_classes=kwargs.get("num_classes"))
    return kwargs


def create_vit(preset: "str | dict[str, Any] | ViTArch" = "vit-mini", **overrides: Any) -> VisionTransformer:
    """Build a timm VisionTransformer from a preset with overrides (timm's own init)."""
    kwargs = vit_kwargs(preset, **overrides)
    try:
        return VisionTransformer(**kwargs)
    except TypeError as e:  # an override timm does not know
        raise ConfigError(f"bad model argument: {e}") from None



def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


@dataclass(frozen=True)
class ViTArch:
    """A timm ``VisionTransformer`` architecture (the ``ARCH_KEYS`` arguments, timm's defaults).

    ``extra`` holds other ``VisionTransformer`` arguments passed through unchanged (drop rates,
    ``weight_init``), as sorted (name, value) pairs so the architecture stays hashable.
    """

    img_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    in_chans: int = 3
    num_classes: int = 1000
    global_pool: str = "token"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    init_values: float | None = None      # layer-scale init; None: no layer-scale
    class_token: bool = True
    no_embed_class: bool = False
    fc_norm: bool | None = None           # None: timm's rule (a norm after pooling when pooling averages)
    final_norm: bool = True
    pre_norm: bool = False                # a norm before the blocks (CLIP-style)
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size"):  # lists from JSON become tuples (hashable, comparable)
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    # -- conversions -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, kwargs: Any) -> "ViTArch":
        """From ``VisionTransformer`` kwargs (a preset, a JSON ``arch``); unknown keys go to ``extra``."""
        if isinstance(kwargs, ViTArch):
            return kwargs
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = tuple(sorted((k, v) for k, v in kwargs.items() if k not in known))
        return cls(**{k: v for k, v in kwargs.items() if k in known}, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every ``ARCH_KEYS`` value (``pre_norm`` only when set), then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "pre_norm")}
        if self.pre_norm:
            out["pre_norm"] = True
        out.update(self.extra)
        return out

    def timm_kwargs(self) -> dict[str, Any]:
        """``VisionTransformer(**arch.timm_kwargs())`` builds this architecture."""
        return self.to_dict()

    def replace(self, **changes: Any) -> "ViTArch":
        """A copy with ``changes`` (``None`` values ignored); names outside the fields go to ``extra``."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return ViTArch.from_dict({**self.to_dict(), **changes})

    def get_extra(self, name: str, default: Any = None) -> Any:
        return dict(self.extra).get(name, default)

    # -- derived facts -----------------------------------------------------------------
    @property
    def img_hw(self) -> tuple[int, int]:
        return _pair(self.img_size)

    @property
    def side(self) -> int:
        """The input side a square image is resized to (the height of a non-square input)."""
        return self.img_hw[0]

    @property
    def patch_hw(self) -> tuple[int, int]:
        return _pair(self.patch_size)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along (height, width)."""
        (h, w), (ph, pw) = self.img_hw, self.patch_hw
        return h // ph, w // pw

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def uses_fc_norm(self) -> bool:
        """Whether the final norm sits after pooling (``fc_norm``), by timm's rule."""
        return self.global_pool in ("avg", "avgmax", "max") if self.fc_norm is None else bool(self.fc_norm)


def arch_of(model: VisionTransformer) -> ViTArch:
    """The architecture that rebuilds ``model``, read from its modules; refuses features the
    canonical stack does not map."""
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"expected a timm VisionTransformer, got {type(model).__name__}")
    unsupported = {
        "register tokens": getattr(model, "num_reg_tokens", 0) > 0,
        "attention-pool head": getattr(model, "attn_pool", None) is not None,
        "dynamic image size": getattr(model, "dynamic_img_size", False),
    }
    if len(model.blocks):
        attn = model.blocks[0].attn
        unsupported["qk-norm"] = not isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity)
        unsupported["attention scale-norm"] = not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity)
        unsupported["MLP scale-norm"] = not isinstance(getattr(model.blocks[0].mlp, "norm", nn.Identity()), nn.Identity)
        unsupported["attention without proj bias"] = attn.proj.bias is None
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ConfigError(f"this ViT uses {', '.join(found)}, which the canonical stack does not map yet")
    patch = model.patch_embed
    block0 = model.blocks[0] if len(model.blocks) else None
    embed_dim = model.embed_dim
    has_fc_norm = not isinstance(model.fc_norm, nn.Identity)
    has_norm = not isinstance(model.norm, nn.Identity)
    return ViTArch(
        img_size=int(patch.img_size[0]) if patch.img_size[0] == patch.img_size[1] else tuple(patch.img_size),
        patch_size=int(patch.patch_size[0]) if patch.patch_size[0] == patch.patch_size[1] else tuple(patch.patch_size),
        in_chans=int(patch.proj.in_channels),
        num_classes=int(model.num_classes),
        global_pool=model.global_pool,
        embed_dim=int(embed_dim),
        depth=len(model.blocks),
        num_heads=int(block0.attn.num_heads) if block0 is not None else 1,
        mlp_ratio=(block0.mlp.fc1.out_features / embed_dim) if block0 is not None else 4.0,
        qkv_bias=(block0.attn.qkv.bias is not None) if block0 is not None else True,
        init_values=float(block0.ls1.init_values) if block0 is not None and isinstance(block0.ls1, LayerScale) else None,
        class_token=model.cls_token is not None,
        no_embed_class=bool(model.no_embed_class),
        fc_norm=has_fc_norm,
        final_norm=has_fc_norm or has_norm,
        pre_norm=not isinstance(model.norm_pre, nn.Identity),
    )
