"""`scratch`: timm's random initialisation; the learngene stores nothing (the baseline)."""

from ...registry import MethodSpec, register_method
from .method import ScratchConfig, expand, extract

register_method(MethodSpec(
    name="scratch", config_cls=ScratchConfig, extract=extract, expand=expand,
    summary="baseline: timm random init, stores nothing (pool=avg: TLEG's average-pooled head)",
    describe_shapes=lambda gene: "any depth, width and head count (random init)",
))

__all__ = ["ScratchConfig"]
