"""Ancestry loading and saving: timm ``VisionTransformer`` models from run folders, weights
files, presets or timm names; ``save_model`` writes the folder ``load_ancestry`` reads.
The architecture table and ``create_vit`` live in ``learngene.arch``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import try_to_load_from_cache  # a dependency of timm
from safetensors.torch import load_file
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from .arch import VIT_PRESETS, arch_of, create_vit, list_presets, vit_kwargs
from ._io import atomic_save_safetensors, atomic_write_json
from .errors import ArtifactError, ConfigError


WRAPPER_KEYS = ("model", "state_dict", "model_state", "model_ema", "state_dict_ema")  # first present wins


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``.pth``/``.pt``/``.bin`` read with ``weights_only=True``.

    Training checkpoints wrap the weights: DeiT's releases ``{"model": sd}`` (``model_ema`` beside it
    in their training checkpoints), others ``{"state_dict": sd}``; the first of ``WRAPPER_KEYS``
    present is taken, and a ``module.`` prefix (a model saved from inside DDP) is dropped.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return load_file(str(path))
        if suffix in (".pth", ".pt", ".bin"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                wrapped = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
                obj = obj if wrapped is None else wrapped
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise ArtifactError(f"{path} does not hold a state dict (name -> tensor), nor one under "
                                    f"any of the keys {list(WRAPPER_KEYS)}")
            if obj and all(k.startswith("module.") for k in obj):
                obj = {k.removeprefix("module."): v for k, v in obj.items()}
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
      - a timm model name (``deit_tiny_patch16_224``, or with a weights tag such as
        ``vit_small_patch16_224.augreg_in21k``), pretrained when online or in the local cache.
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
        kwargs = vit_kwargs(preset, **overrides) if preset else _infer_arch(state, path, **overrides)
        model = create_vit(kwargs)
        _load_checked(model, state, path)
        return model
    if text in VIT_PRESETS:
        return create_vit(text, **overrides)
    is_timm_name = bool(timm.list_models(text) or timm.list_models(text, pretrained=True))  # a name, or name.tag
    if (path.suffix or os.sep in text) and not is_timm_name:
        raise ConfigError(f"ancestry file {text!r} does not exist")
    if not is_timm_name:
        raise ConfigError(f"unknown ancestry {text!r}: give a preset ({list_presets()}), a timm ViT name "
                          "such as deit_tiny_patch16_224, a .safetensors/.pth file, or a run folder")
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    model = _create_timm(text, pretrained, kwargs)
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"{text!r} is a {type(model).__name__}, not a timm VisionTransformer")
    return model


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``) answers a TCP connection within ``timeout`` s."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _create_timm(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model``; pretrained weights come from the Hub when it answers, else from the
    local Hugging Face cache, else a one-line ArtifactError naming the offline alternative (no
    retries against an unreachable Hub)."""
    offline_fix = (f"offline, download the weights elsewhere and pass the file: --ancestry {name}.pth (a DeiT "
                   "release .pth or a .safetensors state dict; the architecture is read from the weights)")
    if pretrained and not _hub_reachable():
        model = timm.create_model(name, pretrained=False, **kwargs)
        cached = _cached_timm_weights(model)
        if cached is None:
            raise ArtifactError(f"cannot fetch pretrained weights for {name!r}: the Hugging Face Hub is unreachable "
                                f"and they are not in the local cache; {offline_fix}")
        _load_checked(model, _load_state_dict_file(cached), cached)
        return model
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:
        raise ArtifactError(f"cannot create timm model {name!r} (pretrained={pretrained}): "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; {offline_fix}") from None


def _cached_timm_weights(model: nn.Module) -> Path | None:
    """The Hub weights of a timm model already in the local Hugging Face cache (no network)."""
    repo = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if not repo:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


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


def _infer_arch(state: dict[str, torch.Tensor], origin: Path | str = "these weights", **overrides: Any) -> dict[str, Any]:
    """Read a timm ViT architecture from state-dict shapes.

    Patch size, channels, width, depth, MLP ratio, image size (from the position embedding's
    token count, a square grid), class token, classifier size, qkv bias and layer-scale come from
    the tensors. The head count is not in the shapes: it is ``num_heads`` when given, else
    width // 64, the head width of timm's DeiT and ViT names (tiny 192/3, small 384/6, base 768/12).
    """
    if "patch_embed.proj.weight" not in state or not any(k.startswith("blocks.") for k in state):
        keys = ", ".join(list(state)[:3])
        raise ArtifactError(f"{origin} is not a timm ViT state dict (no patch_embed.proj.weight / blocks.*; "
                            f"its keys begin {keys}): pass the weights of a VisionTransformer such as DeiT")
    if "dist_token" in state or "head_dist.weight" in state:
        raise ArtifactError(f"{origin} is a distilled DeiT (dist_token, head_dist): pass the plain DeiT release "
                            "(deit_*_patch16_224, not deit_*_distilled_patch16_224)")
    try:
        patch_w = state["patch_embed.proj.weight"]  # [D, C, p, p]
        embed_dim, in_chans, patch, _ = patch_w.shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        class_token = "cls_token" in state
        num_tokens = state["pos_embed"].shape[1] - (1 if class_token else 0)
    except (KeyError, ValueError, IndexError) as e:
        raise ArtifactError(f"cannot infer a ViT architecture from {origin} ({type(e).__name__}: {e}); "
                            "pass the weights of a timm VisionTransformer") from None
    grid = int(round(num_tokens ** 0.5))
    head = state.get("head.weight")
    kwargs = dict(
        img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
        num_heads=max(1, embed_dim // 64), mlp_ratio=hidden / embed_dim, class_token=class_token,
        global_pool="token" if class_token else "avg", num_classes=0 if head is None else head.shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        init_values=1.0 if "blocks.0.ls1.gamma" in state else None,
        fc_norm="fc_norm.weight" in state, final_norm="norm.weight" in state, pre_norm="norm_pre.weight" in state,
    )
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return vit_kwargs(kwargs)


def _load_run_dir(path: Path) -> VisionTransformer:
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
    path = Path(path)
    atomic_save_safetensors(path / "model.safetensors", model.state_dict())
    atomic_write_json(path / "model_config.json", {"arch": arch_of(model).to_dict(), **extra})
    return path
