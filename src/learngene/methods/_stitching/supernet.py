"""``StitchedSupernet``: the anchors and every stitching layer, one configuration per forward.

In training mode each forward runs one configuration drawn uniformly at random (SN-Net's
training), from a generator seeded by (seed, number of draws so far): deterministic given the
seed, and the draw counter is a buffer, so it is in ``fit``'s checkpoint and a resumed run
continues the same sequence. Train it in one process: a step leaves the other configurations'
parameters unused, which ``fit``'s DDP wrapper (find_unused_parameters off) does not allow.
In eval mode it runs the configuration chosen with ``select(i)``. ``export(i)`` gives any
configuration as a standalone ``StitchedViT``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ...errors import ConfigError
from ...arch import arch_of
from ...stack import VitStack, blank_stack, from_stack
from .._common import copy_head_if_same_labels
from .configs import Stitch, enumerate_stitches, stitch_pairs
from .model import StitchedViT, arch_value


def _embed_tokens(anchor: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The tokens entering block 0: [B, C, H, W] -> [B, T, d]."""
    x = anchor.patch_embed(images)
    x = anchor._pos_embed(x)  # class token + position embeddings, exactly as timm's forward_features
    x = anchor.patch_drop(x)
    return anchor.norm_pre(x)


class StitchedSupernet(nn.Module):
    """Anchors + stitching layers; trains one random configuration per step (see the module docstring).

    ``anchors``: timm VisionTransformers of equal depth and token layout, narrowest first.
    ``pairs``: "nearest" or "all" (which narrower -> wider pairs are stitched).
    """

    def __init__(self, anchors: Sequence[VisionTransformer], *, pairs: str = "nearest", kernel_size: int = 2,
                 stride: int = 1, seed: int = 0):
        super().__init__()
        anchors = list(anchors)
        if len(anchors) < 2:
            raise ConfigError(f"stitching needs at least 2 anchors, got {len(anchors)}")
        archs = [arch_of(a).to_dict() for a in anchors]  # ConfigError for non-ViTs and unmapped features
        depth = int(archs[0]["depth"])
        widths = [int(a["embed_dim"]) for a in archs]
        if any(int(a["depth"]) != depth for a in archs):
            raise ConfigError(f"anchors must have one depth for sliding-window stitching, got "
                              f"{[a['depth'] for a in archs]}; give every student/anchor the same depth")
        if any(w1 >= w2 for w1, w2 in zip(widths, widths[1:])):
            raise ConfigError(f"anchors must be ordered by strictly increasing width, got {widths}")
        layout = ("img_size", "patch_size", "in_chans", "class_token", "no_embed_class")
        for a in archs[1:]:
            for key in layout:
                first, other = arch_value(archs[0], key), arch_value(a, key)
                if other != first:
                    raise ConfigError(f"anchors differ in {key} ({first!r} vs {other!r}); "
                                      "stitched anchors need one token layout")
        if len({int(a["num_classes"]) for a in archs}) != 1:
            raise ConfigError("anchors must have the same number of classes")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        self.anchors = nn.ModuleList(anchors)
        self.archs = archs
        self.depth = depth
        self.configs = enumerate_stitches(len(anchors), depth, pairs=pairs, kernel_size=kernel_size, stride=stride)
        self.pairs = stitch_pairs(len(anchors), pairs)
        num_layers = 1 + max(c.layer for c in self.configs if c.stitched)
        self.stitch_layers = nn.ModuleDict({
            f"{f}-{e}": nn.ModuleList([nn.Linear(widths[f], widths[e]) for _ in range(num_layers)])
            for f, e in self.pairs})
        self.seed = seed
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))  # configurations drawn so far
        self.active = 0

    # -- choosing a configuration -------------------------------------------------------------
    @property
    def num_configs(self) -> int:
        return len(self.configs)

    def _check_id(self, config_id: int) -> int:
        if not isinstance(config_id, int) or isinstance(config_id, bool) or not 0 <= config_id < self.num_configs:
            raise ConfigError(f"configuration id must be an integer in [0, {self.num_configs - 1}], got {config_id!r}")
        return config_id

    def select(self, config_id: int) -> "StitchedSupernet":
        """The configuration eval-mode forwards run (training mode draws its own)."""
        self.active = self._check_id(config_id)
        return self

    def sample_config(self) -> int:
        """Draw the next training configuration: uniform, seeded by (seed, draws so far)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.draws))
        self.draws += 1
        return int(torch.randint(self.num_configs, (1,), generator=g))

    def stitch_layer(self, config: Stitch) -> nn.Linear:
        return self.stitch_layers[f"{config.front}-{config.end}"][config.layer]

    # -- running one -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, K]
        return self.forward_config(x, self.sample_config() if self.training else self.active)

    def forward_config(self, x: torch.Tensor, config_id: int) -> torch.Tensor:
        config = self.configs[self._check_id(config_id)]
        if not config.stitched:
            return self.anchors[config.front](x)
        front, end = self.anchors[config.front], self.anchors[config.end]
        x = _embed_tokens(front, x)                 # [B, T, d_front]
        for block in front.blocks[:config.front_last + 1]:
            x = block(x)
        x = self.stitch_layer(config)(x)            # [B, T, d_end]
        for block in end.blocks[config.end_first:]:
            x = block(x)
        return end.forward_head(end.norm(x))

    # -- facts -----------------------------------------------------------------------------
    def config_params(self, config_id: int) -> int:
        """Parameters of the model configuration ``config_id`` runs (= its exported StitchedViT's)."""
        config = self.configs[self._check_id(config_id)]
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        if not config.stitched:
            return count(self.anchors[config.front])
        front, end = self.anchors[config.front], self.anchors[config.end]
        tokens = front.pos_embed.numel() + (front.cls_token.numel() if front.cls_token is not None else 0)
        stem = count(front.patch_embed) + tokens
        blocks = sum(count(b) for b in front.blocks[:config.front_last + 1])
        blocks += sum(count(b) for b in end.blocks[config.end_first:])
        head = count(end.norm) + count(end.fc_norm) + count(end.head)
        return stem + blocks + count(self.stitch_layer(config)) + head

    def describe(self) -> list[dict[str, Any]]:
        """One row per configuration: id, the stitch, blocks run, widths, parameters."""
        rows = []
        for i, c in enumerate(self.configs):
            rows.append({"id": i, "stitch": c.to_dict(), "name": c.describe(self.depth), "blocks": c.depth(self.depth),
                         "widths": [int(self.archs[c.front]["embed_dim"]), int(self.archs[c.end]["embed_dim"])],
                         "params": self.config_params(i)})
        return rows

    # -- exporting one ---------------------------------------------------------------------
    def export(self, config_id: int) -> StitchedViT:
        """Configuration ``config_id`` as a standalone ``StitchedViT`` (weights copied)."""
        config = self.configs[self._check_id(config_id)]
        front, end = self.anchors[config.front], self.anchors[config.end]
        front_sd, end_sd = front.state_dict(), end.state_dict()
        stem_keys = ("patch_embed.", "cls_token", "pos_embed")
        head_keys = ("norm.", "fc_norm.", "head.")
        if not config.stitched:
            model = StitchedViT(self.archs[config.front], self.depth)
            state = {k.replace("blocks.", "front_blocks.", 1) if k.startswith("blocks.") else k: v
                     for k, v in front_sd.items()}
        else:
            j, k0 = config.front_last, config.end_first
            model = StitchedViT(self.archs[config.front], j + 1, self.archs[config.end], self.depth - k0)
            state = {k: v for k, v in front_sd.items() if k.startswith(stem_keys)}
            state.update({k: v for k, v in end_sd.items() if k.startswith(head_keys)})
            for key, value in front_sd.items():
                if key.startswith("blocks.") and int(key.split(".")[1]) <= j:
                    state["front_" + key] = value
            for key, value in end_sd.items():
                if key.startswith("blocks.") and int(key.split(".")[1]) >= k0:
                    _, index, rest = key.split(".", 2)
                    state[f"end_blocks.{int(index) - k0}.{rest}"] = value
            layer = self.stitch_layer(config)
            state["stitch.weight"], state["stitch.bias"] = layer.weight, layer.bias
        model.load_state_dict({k: v.detach().clone() for k, v in state.items()})  # strict: every key accounted for
        return model.to(next(self.parameters()).device).train(False)

    # -- the stitching layers and the features that fit them -------------------------------
    @torch.no_grad()
    def set_stitch(self, front: int, end: int, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   layer: int | None = None) -> None:
        """Set the (front -> end) stitching layer ``layer`` (all of the pair's layers when None)."""
        key = f"{front}-{end}"
        if key not in self.stitch_layers:
            raise ConfigError(f"anchors {front} -> {end} are not a stitched pair; pairs: {list(self.stitch_layers)}")
        layers = self.stitch_layers[key]
        targets = list(layers) if layer is None else [layers[layer]]
        for target in targets:
            if tuple(weight.shape) != tuple(target.weight.shape):
                raise ConfigError(f"stitching weight for {key} must be {tuple(target.weight.shape)}, "
                                  f"got {tuple(weight.shape)}")
            target.weight.copy_(weight)
            target.bias.copy_(torch.zeros_like(target.bias) if bias is None else bias)

    @torch.no_grad()
    def token_features(self, anchor: int, images: torch.Tensor) -> list[torch.Tensor]:
        """[tokens entering block 0, output of block 0, ..., output of block L-1] of one anchor, each [B, T, d]."""
        model = self.anchors[anchor]
        was_training = model.training
        model.eval()
        try:
            x = _embed_tokens(model, images)
            features = [x]
            for block in model.blocks:
                x = block(x)
                features.append(x)
        finally:
            model.train(was_training)
        return features


def build_supernet(stacks: Sequence[VitStack], *, num_classes: int | None, pairs: str, kernel_size: int,
                   stride: int, seed: int) -> StitchedSupernet:
    """Anchors as timm ViTs from stored stacks (classifier kept only when the classes match, else timm
    init seeded by ``seed``), then the supernet with PyTorch-default stitching layers (also seeded).
    Stem and blocks come from the stacks, so only what is left (a new classifier) is drawn."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        anchors = []
        for stack in stacks:
            classes = stack.arch.num_classes if num_classes is None else num_classes
            if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
                raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
            target = blank_stack(stack.arch.replace(num_classes=classes))
            target.stem, target.blocks = dict(stack.stem), [dict(b) for b in stack.blocks]
            copy_head_if_same_labels(target, stack.head, stack.arch)
            anchors.append(from_stack(target))
        return StitchedSupernet(anchors, pairs=pairs, kernel_size=kernel_size, stride=stride, seed=seed)
