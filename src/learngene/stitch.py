"""Stitching ViTs of different widths (SN-Net, Pan et al., CVPR 2023), shared by the methods
``learngene-pool`` (Shi et al., AAAI 2024) and ``sn-net``.

Anchors are timm VisionTransformers of one depth L and one token layout (image size, patch
size, input channels, class token), ordered by width, narrowest first. The configurations
(SN-Net's ``get_stitch_configs``, one stitch per model):

  - each anchor alone;
  - for each stitched pair (f, e), f narrower than e (``pairs="nearest"``: neighbouring
    widths only, SN-Net's default; ``"all"``: every narrower -> wider pair, as the
    Learngene Pool reference stitches tiny -> base), and each position (j, k) of the
    sliding window (kernel 2, stride 1): blocks 0..j of f, a stitching layer
    ``Linear(d_f, d_e)``, blocks k..L-1 of e, then e's final norm and head. Window
    [i, i+1] holds the positions (j, k) in {i, i+1}^2; positions first found in one window
    share that window's stitching layer, so a pair has L-1 layers and 4 + 3 (L-2)
    positions (34 for L = 12: with DeiT-Ti/S/B, "nearest", 3 + 2 x 34 = SN-Net's 71).

``StitchedSupernet`` holds the anchors and every stitching layer; in training mode each
forward runs one configuration drawn uniformly at random (SN-Net's training), from a
generator seeded by (seed, number of draws so far): deterministic given the seed, and the
draw counter is a buffer, so it is in ``fit``'s checkpoint and a resumed run continues the
same sequence. Train it in one process: a step leaves the other configurations' parameters
unused, which ``fit``'s DDP wrapper (find_unused_parameters off) does not allow.
In eval mode it runs the configuration chosen with ``select(i)``. ``export(i)`` gives any
configuration as a standalone ``StitchedViT`` (``save_stitched`` / ``load_stitched``:
safetensors + JSON).

Stitching-layer initialisation: ``init_least_squares`` is SN-Net's (least squares with a
bias from front-block-j tokens to the tokens entering end-block k on a few images, averaged
over the positions that share a layer); ``set_stitch`` takes given weights (Learngene Pool
initialises from its learned teacher->student maps). Departure from SN-Net's code: for
k = 0 its ``end_features[k - 1]`` reads the *last* block's output (a negative index); here
the target is what enters block 0, the end anchor's embedded tokens.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.layers import LayerNorm, PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer, global_pool_nlc
from torch import nn

from ._io import atomic_save_safetensors, atomic_write_json
from .errors import ArtifactError, ConfigError, LearngeneError
from .arch import MAX_DEPTH, validate_arch
from .arch import ViTArch, arch_of
from .stack import VitStack, from_stack

Tensors = dict[str, torch.Tensor]
PAIRS = ("nearest", "all")
STITCHED_CONFIG = "stitched_config.json"
STITCHED_WEIGHTS = "model.safetensors"
STITCHED_FORMAT = "stitched-vit"
# timm VisionTransformer defaults for the keys an arch dict may leave out.
TIMM_DEFAULTS = dict(class_token=True, no_embed_class=False, global_pool="token", qkv_bias=True, mlp_ratio=4.0,
                     init_values=None, fc_norm=None, final_norm=True)


def _get(arch: dict[str, Any], key: str) -> Any:
    return arch.get(key, TIMM_DEFAULTS.get(key))


# -- shapes of anchors / students ------------------------------------------------------------
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


# -- the configurations ----------------------------------------------------------------------
@dataclass(frozen=True)
class Stitch:
    """One configuration: an anchor alone (``front == end``), or front blocks 0..j + layer + end blocks k..L-1."""

    front: int                    # anchor whose stem (and first blocks) run
    end: int                      # anchor whose last blocks and head run
    front_last: int | None = None  # j: blocks 0..j of `front` (None: the anchor alone)
    end_first: int | None = None   # k: blocks k..L-1 of `end`
    layer: int | None = None       # index of the pair's stitching layer (shared within a window)

    @property
    def stitched(self) -> bool:
        return self.front_last is not None

    def depth(self, anchor_depth: int) -> int:
        """Number of transformer blocks this configuration runs."""
        return anchor_depth if not self.stitched else self.front_last + 1 + anchor_depth - self.end_first

    def describe(self, anchor_depth: int) -> str:
        if not self.stitched:
            return f"anchor {self.front}"
        return (f"{self.front}[0..{self.front_last}] -> {self.end}[{self.end_first}..{anchor_depth - 1}] "
                f"(layer {self.layer})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_stitching(depth: int, kernel_size: int = 2, stride: int = 1) -> list[tuple[int, int, int]]:
    """SN-Net's sliding window over two anchors of ``depth`` blocks: [(j, k, layer), ...] in window order."""
    for name, value in (("depth", depth), ("kernel_size", kernel_size), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    positions: list[tuple[int, int, int]] = []
    seen: set[tuple[int, int]] = set()
    layer = -1
    for start in range(0, depth, stride):
        window = range(start, min(start + kernel_size, depth))
        new = [(j, k) for j in window for k in window if (j, k) not in seen]
        if new:
            layer += 1
        for j, k in new:
            seen.add((j, k))
            positions.append((j, k, layer))
    return positions


def stitch_pairs(num_anchors: int, pairs: str) -> list[tuple[int, int]]:
    if pairs not in PAIRS:
        raise ConfigError(f"pairs must be one of {PAIRS}, got {pairs!r}")
    if pairs == "nearest":
        return [(a, a + 1) for a in range(num_anchors - 1)]
    return list(itertools.combinations(range(num_anchors), 2))


def enumerate_stitches(num_anchors: int, depth: int, *, pairs: str = "nearest", kernel_size: int = 2,
                       stride: int = 1) -> list[Stitch]:
    """Every configuration: the anchors alone first, then each pair's window positions."""
    configs = [Stitch(front=a, end=a) for a in range(num_anchors)]
    positions = paired_stitching(depth, kernel_size, stride)
    for front, end in stitch_pairs(num_anchors, pairs):
        configs += [Stitch(front, end, j, k, layer) for j, k, layer in positions]
    return configs


# -- the standalone model --------------------------------------------------------------------
def _check_arch(arch: Any, what: str) -> dict[str, Any]:
    try:
        validate_arch(arch)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None
    return dict(arch)


def _block(arch: dict[str, Any]) -> Block:
    # timm's VisionTransformer builds its blocks the same way (its norm_layer default is timm's LayerNorm, eps 1e-6).
    return Block(dim=int(arch["embed_dim"]), num_heads=int(arch["num_heads"]), mlp_ratio=float(_get(arch, "mlp_ratio")),
                 qkv_bias=bool(_get(arch, "qkv_bias")), init_values=_get(arch, "init_values"), norm_layer=LayerNorm)


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
        if bool(_get(head, "class_token")) != bool(_get(front, "class_token")):
            raise ConfigError("front_arch and end_arch must agree on class_token (the tokens flow from one to the other)")
        self.config = {"front_arch": front, "front_depth": front_depth, "end_arch": end, "end_depth": end_depth}
        d_front, d_end = int(front["embed_dim"]), int(head["embed_dim"])
        self.patch_embed = PatchEmbed(img_size=front["img_size"], patch_size=front["patch_size"],
                                      in_chans=int(front["in_chans"]), embed_dim=d_front)
        self.num_prefix_tokens = 1 if _get(front, "class_token") else 0
        self.no_embed_class = bool(_get(front, "no_embed_class"))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_front)) if self.num_prefix_tokens else None
        embed_len = self.patch_embed.num_patches + (0 if self.no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, d_front))
        self.front_blocks = nn.Sequential(*[_block(front) for _ in range(front_depth)])
        self.stitch = nn.Linear(d_front, d_end) if end is not None else None
        self.end_blocks = nn.Sequential(*[_block(end) for _ in range(end_depth)]) if end is not None else nn.Sequential()
        pool = _get(head, "global_pool")
        use_fc_norm = pool in ("avg", "avgmax", "max") if _get(head, "fc_norm") is None else bool(_get(head, "fc_norm"))
        final_norm = bool(_get(head, "final_norm"))
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
                            "(write one with learngene.stitch.save_stitched)")
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


# -- the supernet ----------------------------------------------------------------------------
def _stem_and_blocks(anchor: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    x = anchor.patch_embed(images)
    x = anchor._pos_embed(x)  # class token + position embeddings, exactly as timm's forward_features
    x = anchor.patch_drop(x)
    return anchor.norm_pre(x)


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_{W,b} ||x W^T + b - y||^2 for tokens x [..., d_in], y [..., d_out] -> (W [d_out, d_in], b [d_out]).

    SN-Net's ``ps_inv`` (pseudo-inverse with a ones column), solved with ``lstsq`` in float64.
    """
    x2 = x.reshape(-1, x.shape[-1]).double()
    y2 = y.reshape(-1, y.shape[-1]).double()
    if x2.shape[0] != y2.shape[0]:
        raise ConfigError(f"least squares needs as many tokens on both sides, got {x2.shape[0]} and {y2.shape[0]}")
    design = torch.cat([x2, torch.ones(x2.shape[0], 1, dtype=x2.dtype)], dim=1)  # [N, d_in + 1]
    solution = torch.linalg.lstsq(design, y2).solution                            # [d_in + 1, d_out]
    return solution[:-1].T.float().contiguous(), solution[-1].float().contiguous()


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
                if _get(a, key) != _get(archs[0], key):
                    raise ConfigError(f"anchors differ in {key} ({_get(archs[0], key)!r} vs {_get(a, key)!r}); "
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
        x = _stem_and_blocks(front, x)             # [B, T, d_front]
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

    # -- initialising the stitching layers -------------------------------------------------
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
            x = _stem_and_blocks(model, images)
            features = [x]
            for block in model.blocks:
                x = block(x)
                features.append(x)
        finally:
            model.train(was_training)
        return features

    @torch.no_grad()
    def init_least_squares(self, images: torch.Tensor) -> dict[str, float]:
        """SN-Net's initialisation on ``images`` [N, C, H, W]; returns each layer's relative residual."""
        device = next(self.parameters()).device
        images = images.to(device)
        features = [self.token_features(a, images) for a in range(len(self.anchors))]
        residuals = {}
        for f, e in self.pairs:
            by_layer: dict[int, list[Stitch]] = {}
            for c in self.configs:
                if c.stitched and (c.front, c.end) == (f, e):
                    by_layer.setdefault(c.layer, []).append(c)
            for layer, configs in sorted(by_layer.items()):
                solutions = [least_squares(features[f][c.front_last + 1].cpu(), features[e][c.end_first].cpu())
                             for c in configs]
                weight = torch.stack([w for w, _ in solutions]).mean(0)
                bias = torch.stack([b for _, b in solutions]).mean(0)
                self.set_stitch(f, e, weight.to(device), bias.to(device), layer=layer)
                c = configs[0]
                x, y = features[f][c.front_last + 1], features[e][c.end_first]
                err = (self.stitch_layers[f"{f}-{e}"][layer](x) - y).pow(2).sum() / y.pow(2).sum().clamp_min(1e-12)
                residuals[f"{f}-{e}/{layer}"] = float(err)
        return residuals


# -- helpers for the methods -----------------------------------------------------------------
def probe_images(data: Any, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` images [count, C, H, W] drawn at random (seeded: datasets may be sorted by class)
    from a tensor, a tensor dataset or any (image, label) Dataset."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"the number of images for least squares must be a positive integer, got {count!r}")
    if isinstance(data, torch.Tensor):
        images = data
    elif isinstance(getattr(data, "images", None), torch.Tensor):
        images = data.images
    elif isinstance(data, torch.utils.data.TensorDataset):
        images = data.tensors[0]
    elif isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        images = None
    else:
        raise ConfigError(f"init_data must be images [N, C, H, W] or a Dataset of (image, label), got {type(data).__name__}")
    n = len(images) if images is not None else len(data)
    if n < 1:
        raise ConfigError("init_data holds no images")
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]
    picked = images[index] if images is not None else torch.stack([data[int(i)][0] for i in index])
    if picked.dim() != 4:
        raise ConfigError(f"init_data images must be [N, C, H, W], got shape {tuple(picked.shape)}")
    return picked.float()


def build_supernet(stacks: Sequence[VitStack], *, num_classes: int | None, pairs: str, kernel_size: int,
                   stride: int, seed: int) -> StitchedSupernet:
    """Anchors as timm ViTs from stored stacks (classifier kept only when the classes match, else timm
    init seeded by ``seed``), then the supernet with PyTorch-default stitching layers (also seeded).
    Stem and blocks come from the stacks, so only what is left (a new classifier) is drawn."""
    from .methods._common import copy_head_if_same_labels
    from .stack import blank_stack

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


def supernet_from_gene(gene, method: str, prefix: str, *, num_classes: int | None, pairs: str, kernel_size: int,
                       stride: int, seed: int) -> StitchedSupernet:
    """The supernet over the anchors a ``method`` learngene stores under ``prefix`` (not yet initialised)."""
    from .artifact import Artifact

    if not isinstance(gene, Artifact) or gene.method != method:
        raise ConfigError(f"stitch_supernet takes a {method} learngene, got "
                          f"{getattr(gene, 'method', type(gene).__name__)!r}")
    archs = stored_archs(gene)
    return build_supernet(unpack_anchors(gene.tensors, prefix, archs), num_classes=num_classes, pairs=pairs,
                          kernel_size=kernel_size, stride=stride, seed=seed)


INITS = ("maps", "least-squares", "random")


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


def initialise(supernet: StitchedSupernet, init: str, *, init_data: Any = None, init_samples: int = 128,
               pair_weights: dict[tuple[int, int], torch.Tensor] | None = None, seed: int = 0) -> dict[str, Any]:
    """Initialise every stitching layer: "least-squares" on ``init_samples`` images drawn (seeded) from
    ``init_data`` (SN-Net), "maps" from ``pair_weights`` ((front, end) -> weight [d_end, d_front], bias 0, every
    layer of the pair), or "random" (PyTorch's Linear init, as built). Returns a summary."""
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    if init == "least-squares":
        if init_data is None:
            raise ConfigError("init='least-squares' fits the stitching layers on images: pass init_data "
                              "(a Dataset or images [N, C, H, W]), or choose init='random'")
        images = probe_images(init_data, init_samples, seed=seed)
        return {"init": init, "samples": int(images.shape[0]), "relative_residuals": supernet.init_least_squares(images)}
    if init == "maps":
        if pair_weights is None:
            raise ConfigError("init='maps' needs the learned teacher->student maps, which only learngene-pool stores; "
                              "use init='least-squares' or 'random'")
        for (front, end), weight in pair_weights.items():
            supernet.set_stitch(front, end, weight.to(next(supernet.parameters()).device))
    return {"init": init}
