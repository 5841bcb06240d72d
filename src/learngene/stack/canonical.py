"""``VitStack``: a ViT as stem + list of blocks + head, each a dict of canonical tensors.

Shapes (D = embed_dim, H = num_heads, hd = head_dim = D / H, F = MLP hidden size,
C = input channels, p = patch size, T = number of tokens incl. class token, K = classes):

stem:   patch.weight [D, C, p, p]   patch.bias [D]   pos_embed [1, T, D]   cls_token [1, 1, D]
block:  norm1.weight/bias [D]
        q.weight k.weight v.weight [H, hd, D]      (Linear weights are [out, in]; out split per head)
        q.bias k.bias v.bias [H, hd]                (absent when qkv_bias=False)
        proj.weight [D, H, hd]                      (attention output projection; in split per head)
        proj.bias [D]
        norm2.weight/bias [D]
        fc1.weight [F, D]  fc1.bias [F]  fc2.weight [D, F]  fc2.bias [D]
        ls1.gamma ls2.gamma [D]                     (only with layer-scale)
head:   norm.weight/bias [D]                        (the final norm, wherever the family puts it)
        head.weight [K, D]  head.bias [K]           (absent when num_classes=0)

Head h of a block is ``q.weight[h], k.weight[h], v.weight[h]`` and ``proj.weight[:, h]``:
selecting, sharing or mixing heads is indexing along one axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..arch import ViTArch

STEM_KEYS = ("patch.weight", "patch.bias", "pos_embed", "cls_token")
BLOCK_KEYS = (
    "norm1.weight", "norm1.bias",
    "q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias",
    "proj.weight", "proj.bias",
    "norm2.weight", "norm2.bias",
    "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
    "ls1.gamma", "ls2.gamma",
)
HEAD_KEYS = ("norm.weight", "norm.bias", "head.weight", "head.bias")
# The block's weight matrices (timm's Linear weights): what weight decay applies to in a block,
# and what gets the truncated-normal init.
BLOCK_MATRICES = ("q.weight", "k.weight", "v.weight", "proj.weight", "fc1.weight", "fc2.weight")

Tensors = dict[str, torch.Tensor]


@dataclass
class VitStack:
    """A ViT in canonical form; ``arch`` is its architecture.

    Tensors may alias the source model's parameters (no copy is made by ``to_stack``):
    methods must build new tensors rather than modify these in place, or call ``clone()``.

    A stack from ``blank_stack`` holds meta-device placeholders (shape and dtype only)
    until they are replaced or ``materialize``d; ``init_seed`` seeds their fresh values.
    """

    arch: ViTArch
    stem: Tensors = field(default_factory=dict)
    blocks: list[Tensors] = field(default_factory=list)
    head: Tensors = field(default_factory=dict)
    init_seed: int | None = None  # seeds the fresh init of meta placeholders (see stack/init.py)

    def __post_init__(self) -> None:
        self.arch = ViTArch.from_dict(self.arch)  # VisionTransformer kwargs are accepted too

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def embed_dim(self) -> int:
        return self.arch.embed_dim

    @property
    def num_heads(self) -> int:
        return self.arch.num_heads

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.blocks[0]["fc1.weight"].shape[0]) if self.blocks else self.arch.mlp_hidden

    def clone(self) -> "VitStack":
        copy = lambda d: {k: v.detach().clone() for k, v in d.items()}  # noqa: E731
        return VitStack(self.arch, copy(self.stem), [copy(b) for b in self.blocks], copy(self.head),
                        self.init_seed)

    def num_parameters(self, part: str = "all") -> int:
        """Parameter count of 'stem', 'blocks', 'head' or 'all'."""
        count = lambda d: sum(t.numel() for t in d.values())  # noqa: E731
        parts = {"stem": count(self.stem), "blocks": sum(count(b) for b in self.blocks), "head": count(self.head)}
        return sum(parts.values()) if part == "all" else parts[part]

    def validate(self) -> None:
        """Check every tensor's shape against the architecture; raise ValueError naming the first misfit."""
        D, H, hd, F = self.embed_dim, self.num_heads, self.head_dim, self.mlp_hidden
        expected = {
            "norm1.weight": (D,), "norm1.bias": (D,), "norm2.weight": (D,), "norm2.bias": (D,),
            "q.weight": (H, hd, D), "k.weight": (H, hd, D), "v.weight": (H, hd, D),
            "q.bias": (H, hd), "k.bias": (H, hd), "v.bias": (H, hd),
            "proj.weight": (D, H, hd), "proj.bias": (D,),
            "fc1.weight": (F, D), "fc1.bias": (F,), "fc2.weight": (D, F), "fc2.bias": (D,),
            "ls1.gamma": (D,), "ls2.gamma": (D,),
        }
        if len(self.blocks) != self.arch.depth:
            raise ValueError(f"stack has {len(self.blocks)} blocks but arch depth is {self.arch.depth}")
        for i, block in enumerate(self.blocks):
            for key, tensor in block.items():
                if key not in expected:
                    raise ValueError(f"block {i}: unknown key {key!r}")
                if tuple(tensor.shape) != expected[key]:
                    raise ValueError(f"block {i}: {key} has shape {tuple(tensor.shape)}, expected {expected[key]}")
