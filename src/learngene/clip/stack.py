"""``ClipStack``: a CLIP model as two canonical towers + the logit scale, independent of the library.

Both towers use the canonical *block* of ``learngene.stack`` (``norm1.*``, ``q/k/v.weight``
[H, hd, D], ``q/k/v.bias`` [H, hd], ``proj.weight`` [D, H, hd], ``proj.bias``, ``norm2.*``,
``fc1.*``, ``fc2.*``), so a method can move, share or mix blocks between the image and the
text tower (MM-LG) or reuse a ViT method's block code. Stem and head names per tower
(D = tower width, E = joint embedding size, C = channels, p = patch, T = 1 + patches,
V = vocabulary, S = context length):

image stem:  patch.weight [D, C, p, p]   cls_token [1, 1, D]   pos_embed [1, T, D]
             norm_pre.weight/bias [D]            (CLIP's ln_pre; the patch conv has no bias)
image head:  norm.weight/bias [D]   proj.weight [E, D]        (ln_post; projection, no bias)
text stem:   token_embed.weight [V, D]   pos_embed [1, S, D]
text head:   norm.weight/bias [D]   proj.weight [E, D]        (ln_final; projection, no bias)
top:         logit_scale []                                   (log of the softmax temperature's inverse)

``arch`` (plain JSON) describes the model; adapters build open_clip or transformers models from it:
    {"embed_dim": E, "act": "gelu" | "quick_gelu",
     "image": {"image_size", "patch_size", "in_chans", "width", "layers", "heads", "mlp_ratio"},
     "text":  {"context_length", "vocab_size", "width", "layers", "heads", "mlp_ratio"}}
The text tower pools the end-of-text token, which is always the vocabulary's last id
(``vocab_size - 1``): open_clip pools the argmax id, transformers the first end-of-text
token, and the two agree exactly when the end-of-text id is the largest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

Tensors = dict[str, torch.Tensor]
TOWERS = ("image", "text")
ACTIVATIONS = ("gelu", "quick_gelu")


@dataclass
class Tower:
    """One CLIP tower: stem (embeddings), blocks (canonical), head (final norm + projection)."""

    stem: Tensors = field(default_factory=dict)
    blocks: list[Tensors] = field(default_factory=list)
    head: Tensors = field(default_factory=dict)

    def num_parameters(self) -> int:
        count = lambda d: sum(t.numel() for t in d.values())  # noqa: E731
        return count(self.stem) + sum(count(b) for b in self.blocks) + count(self.head)

    def clone(self) -> "Tower":
        copy = lambda d: {k: v.detach().clone() for k, v in d.items()}  # noqa: E731
        return Tower(copy(self.stem), [copy(b) for b in self.blocks], copy(self.head))


@dataclass
class ClipStack:
    """A CLIP in canonical form: ``arch`` (see the module docstring), two towers, logit scale."""

    arch: dict[str, Any]
    image: Tower
    text: Tower
    logit_scale: torch.Tensor

    def tower(self, name: str) -> Tower:
        if name not in TOWERS:
            raise ConfigError(f"unknown tower {name!r}; choose 'image' or 'text'")
        return self.image if name == "image" else self.text

    def num_parameters(self) -> int:
        return self.image.num_parameters() + self.text.num_parameters() + self.logit_scale.numel()

    def clone(self) -> "ClipStack":
        return ClipStack(clip_arch(self.arch), self.image.clone(), self.text.clone(), self.logit_scale.detach().clone())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def clip_arch(arch: Any) -> dict[str, Any]:
    """Validate a CLIP arch dict (raise ConfigError naming the problem) and return a deep copy."""
    if not isinstance(arch, dict):
        raise ConfigError(f"a CLIP arch must be a dict, got {type(arch).__name__}")
    for key in ("embed_dim", "image", "text"):
        if key not in arch:
            raise ConfigError(f"the CLIP arch lacks {key!r}; it needs embed_dim, image and text")
    if not _is_int(arch["embed_dim"]) or arch["embed_dim"] < 1:
        raise ConfigError(f"CLIP embed_dim must be a positive integer, got {arch['embed_dim']!r}")
    act = arch.get("act", "gelu")
    if act not in ACTIVATIONS:
        raise ConfigError(f"CLIP act must be one of {ACTIVATIONS}, got {act!r}")
    needs = {"image": ("image_size", "patch_size", "in_chans", "width", "layers", "heads"),
             "text": ("context_length", "vocab_size", "width", "layers", "heads")}
    out: dict[str, Any] = {"embed_dim": int(arch["embed_dim"]), "act": act}
    for tower, keys in needs.items():
        cfg = arch[tower]
        if not isinstance(cfg, dict):
            raise ConfigError(f"the CLIP arch's {tower} entry must be a dict, got {type(cfg).__name__}")
        unknown = sorted(set(cfg) - set(keys) - {"mlp_ratio"})
        if unknown:
            raise ConfigError(f"unknown {tower} arch key(s) {unknown}; known: {', '.join(keys)}, mlp_ratio")
        for key in keys:
            if not _is_int(cfg.get(key)) or cfg[key] < (0 if key == "layers" else 1):
                raise ConfigError(f"CLIP {tower} {key} must be a positive integer, got {cfg.get(key)!r}")
        if cfg["width"] % cfg["heads"]:
            raise ConfigError(f"CLIP {tower} width {cfg['width']} is not divisible by heads {cfg['heads']}")
        ratio = float(cfg.get("mlp_ratio", 4.0))
        if ratio <= 0 or (cfg["width"] * ratio) != int(cfg["width"] * ratio):
            raise ConfigError(f"CLIP {tower} mlp_ratio {ratio} must be > 0 and give an integer MLP width")
        out[tower] = {**{k: int(cfg[k]) for k in keys}, "mlp_ratio": ratio}
    if out["image"]["image_size"] % out["image"]["patch_size"]:
        raise ConfigError(f"CLIP image_size {out['image']['image_size']} is not a multiple of patch_size "
                          f"{out['image']['patch_size']}")
    if out["text"]["vocab_size"] < 3:
        raise ConfigError("CLIP text vocab_size must be >= 3 (padding, start and end-of-text tokens)")
    return out


def num_image_tokens(arch: dict[str, Any]) -> int:
    """Class token + patches of the image tower."""
    grid = arch["image"]["image_size"] // arch["image"]["patch_size"]
    return 1 + grid * grid


def expected_shapes(arch: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Shape of every canonical tensor per part ('image.stem', 'image.block', ...)."""
    arch = clip_arch(arch)
    E = arch["embed_dim"]
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for tower in TOWERS:
        cfg = arch[tower]
        D, H = cfg["width"], cfg["heads"]
        hd, F = D // H, int(D * cfg["mlp_ratio"])
        out[f"{tower}.block"] = {
            "norm1.weight": (D,), "norm1.bias": (D,), "norm2.weight": (D,), "norm2.bias": (D,),
            "q.weight": (H, hd, D), "k.weight": (H, hd, D), "v.weight": (H, hd, D),
            "q.bias": (H, hd), "k.bias": (H, hd), "v.bias": (H, hd),
            "proj.weight": (D, H, hd), "proj.bias": (D,),
            "fc1.weight": (F, D), "fc1.bias": (F,), "fc2.weight": (D, F), "fc2.bias": (D,),
        }
        out[f"{tower}.head"] = {"norm.weight": (D,), "norm.bias": (D,), "proj.weight": (E, D)}
    img = arch["image"]
    p, D = img["patch_size"], img["width"]
    out["image.stem"] = {"patch.weight": (D, img["in_chans"], p, p), "cls_token": (1, 1, D),
                         "pos_embed": (1, num_image_tokens(arch), D), "norm_pre.weight": (D,), "norm_pre.bias": (D,)}
    txt = arch["text"]
    out["text.stem"] = {"token_embed.weight": (txt["vocab_size"], txt["width"]),
                        "pos_embed": (1, txt["context_length"], txt["width"])}
    return out


def validate_clip_stack(stack: ClipStack) -> None:
    """Every tensor present with its arch's shape, floating point; ConfigError naming the first misfit."""
    shapes = expected_shapes(stack.arch)
    for tower_name in TOWERS:
        tower = stack.tower(tower_name)
        layers = stack.arch[tower_name]["layers"]
        if len(tower.blocks) != layers:
            raise ConfigError(f"the {tower_name} tower has {len(tower.blocks)} blocks but its arch says {layers}")
        parts = [("stem", tower.stem), ("head", tower.head)] + [("block", b) for b in tower.blocks]
        for index, (part, tensors) in enumerate(parts):
            want = shapes[f"{tower_name}.{part}"]
            where = f"{tower_name} {part}" + (f" {index - 2}" if part == "block" else "")
            if set(tensors) != set(want):
                raise ConfigError(f"{where} holds {sorted(tensors)} but needs {sorted(want)}")
            for key, tensor in tensors.items():
                if tuple(tensor.shape) != want[key] or not tensor.is_floating_point():
                    raise ConfigError(f"{where} {key} is {tuple(tensor.shape)} {tensor.dtype}, expected {want[key]} "
                                      "floating point")
    if stack.logit_scale.numel() != 1:
        raise ConfigError(f"logit_scale must be a scalar, got shape {tuple(stack.logit_scale.shape)}")
