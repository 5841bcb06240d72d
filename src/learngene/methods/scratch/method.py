"""Scratch baseline: a descendant is a freshly initialised timm ViT of the asked shape."""

from __future__ import annotations

from dataclasses import dataclass

from ...arch import ViTArch, create_vit
from ...artifact import Artifact


@dataclass
class ScratchConfig:
    """No options: nothing is inherited."""


def extract(ancestry, config: ScratchConfig, data=None) -> Artifact:
    return Artifact(method="scratch", config={}, tensors={})


def expand(gene: Artifact, arch: ViTArch):
    return create_vit(arch)
