"""``StitchedViT``, a standalone stitched model, and its file format.

A folder with ``model.safetensors`` (the state dict) and ``stitched_config.json`` (format
``stitched-vit``, the two archs and depths that rebuild the module, and any ``extra`` the
writer kept): ``save_stitched`` / ``load_stitched``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.layers import LayerNorm, PatchEmbed
from timm.models.vision_transformer import Block, global_pool_nlc
from torch import nn

from ..._io import atomic_save_safetensors, atomic_write_json
from ...errors import ArtifactError, ConfigError, LearngeneError
from ...arch import MAX_DEPTH, ViTArch, validate_arch

STITCHED_CONFIG = "stitched_config.json"
STITCHED_WEIGHTS = "model.safetensors"
STITCHED_FORMAT = "stitched-vit"
# timm VisionTransformer defaults for the keys an arch dict may leave out.
TIMM_DEFAULTS = dict(class_token=True, no_embed_class=False, global_pool="token", qkv_bias=True, mlp_ratio=4.0,
                     init_values=None, fc_norm=None, final_norm=True)


def arch_value(arch: dict[str, Any], key: str) -> Any:
    """``arch[key]``, or timm's default when the arch dict leaves it out."""
    return arch.get(key, TIMM_DEFAULTS.get(key))


def _check_arch(arch: Any, what: str) -> dict[str, Any]:
    if isinstance(arch, ViTArch):
        arch = arch.to_dict()
    try:
        validate_arch(arch)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None
    return dict(arch)


def _block(arch: dict[str, Any]) -> Block:
    # timm's VisionTransformer builds its blocks the same way (its norm_layer default is timm's LayerNorm, eps 1e-6).
    return Block(dim=int(arch["embed_dim"]), num_heads=int(arch["num_heads"]),
                 mlp_ratio=float(arch_value(arch, "mlp_ratio")), qkv_bias=bool(arch_value(arch, "qkv_bias")),
                 init_values=arch_value(arch, "init_values"), norm_layer=LayerNorm)


class StitchedViT(nn.Module):
    """A ViT of two widths: stem and ``front_depth`` blocks at the front anchor's width, a
    stitching ``Linear``, ``end_depth`` blocks at the end anchor's width, its final norm,
    pooling and classifier. With ``end_arch=None`` it is one anchor (``front_depth`` blocks).

    Not a timm ``VisionTransformer``: timm's has one ``embed_dim`` for every block, and a
    stitched model changes width in the middle. It is built from timm's own ``Block``,
    ``PatchEmbed`` and ``LayerNorm`` and computes exactly what timm's ViT computes for the
    same weights (state-dict keys follow timm's, with ``front_blocks``/``stitch``/``end_blocks``
    in place of ``blocks``). ``config`` is the JSON that rebuilds it (``save_stitched``).
    """

    def __init__(self, front_arch: dict[str, Any], front_depth: int, end_arch: dict[str, Any] | None = None,
                 end_depth: int = 0):
        super().__init__()
        front = _check_arch(front_arch, "front_arch")
        end = _check_arch(end_arch, "end_arch") if end_arch is not None else None
        head = end if end is not None else front
        for name, value, low in (("front_depth", front_depth, 1), ("end_depth", end_depth, 1 if end else 0)):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_DEPTH:
                raise ConfigError(f"{name} must be an integer in [{low}, {MAX_DEPTH}], got {value!r}")
        if end is None and end_depth != 0:
            raise ConfigError("end_depth must be 0 without an end_arch (a single anchor)")
        if bool(arch_value(head, "class_token")) != bool(arch_value(front, "class_token")):
            raise ConfigError("front_arch and end_arch must agree on class_token (the tokens flow from one to the other)")
        self.config = {"front_arch": front, "front_depth": front_depth, "end_arch": end, "end_depth": end_depth}
        d_front, d_end = int(front["embed_dim"]), int(head["embed_dim"])
        self.patch_embed = PatchEmbed(img_size=front["img_size"], patch_size=front["patch_size"],
                                      in_chans=int(front["in_chans"]), embed_dim=d_front)
        self.num_prefix_tokens = 1 if arch_value(front, "class_token") else 0
        self.no_embed_class = bool(arch_value(front, "no_embed_class"))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_front)) if self.num_prefix_tokens else None
        embed_len = self.patch_embed.num_patches + (0 if self.no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, d_front))
        self.front_blocks = nn.Sequential(*[_block(front) for _ in range(front_depth)])
        self.stitch = nn.Linear(d_front, d_end) if end is not None else None
        self.end_blocks = nn.Sequential(*[_block(end) for _ in range(end_depth)]) if end is not None else nn.Sequential()
        pool = arch_value(head, "global_pool")
        fc_norm = arch_value(head, "fc_norm")
        use_fc_norm = pool in ("avg", "avgmax", "max") if fc_norm is None else bool(fc_norm)
        final_norm = bool(arch_value(head, "final_norm"))
        self.global_pool = pool
        self.norm = LayerNorm(d_end) if final_norm and not use_fc_norm else nn.Identity()
        self.fc_norm = LayerNorm(d_end) if final_norm and use_fc_norm else nn.Identity()
        num_classes = int(head["num_classes"])
        self.num_classes = num_classes
        self.head = nn.Linear(d_end, num_classes) if num_classes > 0 else nn.Identity()

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, prefix + N, D], as timm
        if self.cls_token is None:
            return x + self.pos_embed
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if self.no_embed_class:
            return torch.cat([cls, x + self.pos_embed], dim=1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, K]
        x = self._pos_embed(self.patch_embed(x))  # [B, T, d_front]
        x = self.front_blocks(x)
        if self.stitch is not None:
            x = self.stitch(x)                    # [B, T, d_end]
        x = self.end_blocks(x)
        x = self.norm(x)
        x = global_pool_nlc(x, pool_type=self.global_pool, num_prefix_tokens=self.num_prefix_tokens)
        return self.head(self.fc_norm(x))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}


def save_stitched(model: StitchedViT, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``model.safetensors`` and ``stitched_config.json`` into folder ``path`` (each atomically,
    the config last). ``extra`` (JSON-able) is kept in the config, e.g. the configuration it came from."""
    if not isinstance(model, StitchedViT):
        raise ConfigError(f"save_stitched takes a StitchedViT, got {type(model).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(path / STITCHED_WEIGHTS, model.state_dict(), metadata={"format": "pt"})
    atomic_write_json(path / STITCHED_CONFIG, {"format": STITCHED_FORMAT, **model.config, "extra": extra})
    return path


def load_stitched(path: str | os.PathLike) -> StitchedViT:
    """Load a folder written by ``save_stitched``; anything inconsistent is an ``ArtifactError``."""
    path = Path(path)
    config_path, weights_path = path / STITCHED_CONFIG, path / STITCHED_WEIGHTS
    if not (config_path.is_file() and weights_path.is_file()):
        raise ArtifactError(f"{path} is not a stitched model: expected {STITCHED_CONFIG} and {STITCHED_WEIGHTS} in it "
                            "(write one with save_stitched)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError) as e:
        raise ArtifactError(f"{config_path} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(config, dict) or config.get("format") != STITCHED_FORMAT:
        raise ArtifactError(f"{config_path} is not a {STITCHED_FORMAT} config")
    try:
        model = StitchedViT(config.get("front_arch"), config.get("front_depth"), config.get("end_arch"),
                            config.get("end_depth", 0))
    except (LearngeneError, TypeError, ValueError, KeyError) as e:
        raise ArtifactError(f"{config_path}: invalid stitched model config ({e})") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{weights_path} is corrupt or truncated ({str(e).splitlines()[0][:160]})") from None
    own = model.state_dict()
    problems = sorted(set(own) ^ set(state)) or [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if problems:
        raise ArtifactError(f"{weights_path} does not fit {config_path}: tensor {problems[0]!r} is missing, extra "
                            "or of another shape; save the model again")
    model.load_state_dict(state)
    return model
