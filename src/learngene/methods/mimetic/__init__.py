"""`mimetic`: data-free attention init, W_q W_k^T ~ I and W_v W_proj ~ -I (Trockman & Kolter, ICML 2023)."""

from ...registry import MethodSpec, register_method
from .config import MimeticConfig
from .method import describe_shapes, expand, extract

register_method(MethodSpec(
    name="mimetic", config_cls=MimeticConfig, extract=extract, expand=expand,
    summary="peer baseline: data-free mimetic attention init (W_q W_k^T ~ I, W_v W_proj ~ -I), stores nothing",
    describe_shapes=describe_shapes,
))

__all__ = ["MimeticConfig"]
