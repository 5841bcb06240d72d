"""Architecture presets (a table) and ancestry loading.

Ancestry and descendant models are plain timm ``VisionTransformer`` instances. A preset is
a dict of ``VisionTransformer`` keyword arguments; ``create_vit`` takes a preset name and
overrides (``None`` overrides are ignored, as in ``timm.create_model``).

``vit-mini`` is the CPU-scale ancestry: depth 12 like DeiT, 28x28 grey input, patch 7
(a 4x4 grid of 16 tokens + class token), width 96 with 6 heads of 16 dims. One training
epoch of Fashion-MNIST (60,000 images, batch 128) takes about 100-120 s on 2 CPU cores
(see README, "Presets").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from .errors import ArtifactError, ConfigError

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


def vit_kwargs(preset: str | dict[str, Any] = "vit-mini", **overrides: Any) -> dict[str, Any]:
    """Resolve a preset name (or a kwargs dict) plus overrides into VisionTransformer kwargs."""
    if isinstance(preset, dict):
        kwargs = dict(preset)
    else:
        if preset not in VIT_PRESETS:
            raise ConfigError(f"unknown model preset {preset!r}; choose one of {list_presets()}")
        kwargs = dict(VIT_PRESETS[preset])
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    validate_shape(depth=kwargs.get("depth", 12), embed_dim=kwargs.get("embed_dim", 768),
                   num_heads=kwargs.get("num_heads", 12), num_classes=kwargs.get("num_classes"))
    return kwargs


def create_vit(preset: str | dict[str, Any] = "vit-mini", **overrides: Any) -> VisionTransformer:
    """Build a timm VisionTransformer from a preset with overrides (timm's own init)."""
    kwargs = vit_kwargs(preset, **overrides)
    try:
        return VisionTransformer(**kwargs)
    except TypeError as e:  # an override timm does not know
        raise ConfigError(f"bad model argument: {e}") from None


def arch_of(model: VisionTransformer) -> dict[str, Any]:
    """The VisionTransformer kwargs that rebuild ``model``'s architecture (read from the module)."""
    from .stack.timm_vit import vit_arch  # local import: stack imports models

    return vit_arch(model)


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix in (".pth", ".pt", ".bin"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            # timm/DeiT checkpoints wrap the weights: {"model": sd} or {"state_dict": sd}.
            for key in ("model", "state_dict", "model_state"):
                if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
            if not isinstance(obj, dict):
                raise ArtifactError(f"{path} does not hold a state dict")
            return obj
    except ArtifactError:
        raise
    except Exception as e:  # corrupt file, pickle refused by weights_only, ...
        raise ArtifactError(f"cannot read weights from {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    raise ConfigError(f"unsupported weights file {path.name!r}: use .safetensors, .pth or .pt")


def load_ancestry(source: str | os.PathLike | nn.Module, *, preset: str | None = None,
                  pretrained: bool = True, **overrides: Any) -> VisionTransformer:
    """Load an ancestry model.

    ``source`` may be
      - a timm ``VisionTransformer`` (returned as is);
      - a folder written by our trainer (``model.safetensors`` + ``model_config.json``);
      - a local timm-format state dict (``.safetensors``, or ``.pth``/``.pt`` loaded with
        ``weights_only=True``); the architecture comes from ``preset`` (+ overrides), or
        is inferred from the tensor shapes when no preset is given;
      - a preset name (``vit-mini``, ``deit-tiny``...): randomly initialised;
      - a timm model name (``deit_tiny_patch16_224``), pretrained when online.
    """
    if isinstance(source, VisionTransformer):
        return source
    if isinstance(source, nn.Module):
        raise ConfigError(f"ancestry must be a timm VisionTransformer, got {type(source).__name__}")
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return _load_run_dir(path)
    if path.is_file():
        state = _load_state_dict_file(path)
        kwargs = vit_kwargs(preset, **overrides) if preset else _infer_arch(state, **overrides)
        model = create_vit(kwargs)
        _load_checked(model, state, path)
        return model
    if text in VIT_PRESETS:
        return create_vit(text, **overrides)
    if path.suffix or os.sep in text:
        raise ConfigError(f"ancestry file {text!r} does not exist")
    import timm

    if not timm.list_models(text):
        raise ConfigError(f"unknown ancestry {text!r}: give a preset ({list_presets()}), a timm ViT name "
                          "such as deit_tiny_patch16_224, a .safetensors/.pth file, or a run folder")
    try:
        model = timm.create_model(text, pretrained=pretrained, **{k: v for k, v in overrides.items() if v is not None})
    except Exception as e:  # offline, no weights cached
        raise ArtifactError(f"cannot create timm model {text!r} (pretrained={pretrained}): {str(e).splitlines()[0]}; "
                            "offline, pass a local weights file instead") from None
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"{text!r} is a {type(model).__name__}, not a timm VisionTransformer")
    return model


def _load_checked(model: nn.Module, state: dict[str, torch.Tensor], origin: Path | str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad_shape:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}")
        if bad_shape:
            k = bad_shape[0]
            details.append(f"shape of {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise ArtifactError(f"weights in {origin} do not fit the architecture ({'; '.join(details)}); "
                            "pass the matching --preset and overrides")
    model.load_state_dict(state)


def _infer_arch(state: dict[str, torch.Tensor], **overrides: Any) -> dict[str, Any]:
    """Read a timm ViT architecture from state-dict shapes (num_heads must be given or guessed)."""
    try:
        patch_w = state["patch_embed.proj.weight"]  # [D, C, p, p]
        embed_dim, in_chans, patch, _ = patch_w.shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        class_token = "cls_token" in state
        num_tokens = state["pos_embed"].shape[1] - (1 if class_token else 0)
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"cannot infer a ViT architecture from these weights ({e}); pass --preset") from None
    grid = int(round(num_tokens ** 0.5))
    head = state.get("head.weight")
    kwargs = dict(
        img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
        num_heads=max(1, embed_dim // 64), mlp_ratio=hidden / embed_dim, class_token=class_token,
        global_pool="token" if class_token else "avg", num_classes=0 if head is None else head.shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        init_values=1.0 if "blocks.0.ls1.gamma" in state else None,
    )
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return vit_kwargs(kwargs)


def _load_run_dir(path: Path) -> VisionTransformer:
    import json

    weights, config = path / "model.safetensors", path / "model_config.json"
    if not (weights.is_file() and config.is_file()):
        raise ArtifactError(f"{path} is not a model folder: expected model.safetensors and model_config.json in it")
    try:
        arch = json.loads(config.read_text())["arch"]
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"{config} is not a valid model config ({e})") from None
    model = create_vit(arch)
    _load_checked(model, _load_state_dict_file(weights), weights)
    return model


def save_model(model: VisionTransformer, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``model.safetensors`` and ``model_config.json`` (its arch) into folder ``path``.

    Each file is written atomically; the config goes last, so a folder with a config
    always has complete weights beside it. Other files in the folder are left alone.
    """
    from ._io import atomic_save_safetensors, atomic_write_json

    path = Path(path)
    atomic_save_safetensors(path / "model.safetensors", model.state_dict())
    atomic_write_json(path / "model_config.json", {"arch": arch_of(model), **extra})
    return path
