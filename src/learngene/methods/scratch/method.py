"""Scratch baseline: a descendant is a freshly initialised timm ViT of the asked shape."""

from __future__ import annotations

from dataclasses import dataclass

from ...arch import ViTArch, create_vit
from ...artifact import Artifact
from ...errors import ConfigError
from ...registry import config_to_dict

POOLS = ("given", "avg")
# TLEG's descendant head: average pooling over the patch tokens, no class token, a norm after pooling.
AVG_HEAD = dict(global_pool="avg", class_token=False, fc_norm=True, final_norm=True)


@dataclass
class ScratchConfig:
    """Nothing is inherited. ``pool`` picks the classifier's input, the one design choice where
    methods differ: TLEG's descendants average the patch tokens without a class token, every
    other method keeps the ancestry's class token, so a fair control trains scratch both ways."""

    pool: str = "given"  # "given": the asked arch's pooling (the ancestry's: class token); "avg": TLEG's head

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ConfigError(f"scratch pool must be one of {', '.join(map(repr, POOLS))}, got {self.pool!r}")


def extract(ancestry, config: ScratchConfig, data=None) -> Artifact:
    return Artifact(method="scratch", config=config_to_dict(config), tensors={})


def expand(gene: Artifact, arch: ViTArch):
    config = ScratchConfig(**gene.config)
    return create_vit(arch.replace(**AVG_HEAD) if config.pool == "avg" else arch)
