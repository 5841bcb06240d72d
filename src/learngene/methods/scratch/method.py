"""Scratch baseline: a descendant is a freshly initialised timm ViT of the asked shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...artifact import Learngene
from ...models import create_vit


@dataclass
class ScratchConfig:
    """No options: nothing is inherited."""


def extract(ancestry, config: ScratchConfig, data=None) -> Learngene:
    return Learngene(method="scratch", config={}, tensors={})


def expand(gene: Learngene, arch: dict[str, Any]):
    return create_vit(arch)
