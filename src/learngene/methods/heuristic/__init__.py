"""`heuristic`: inherit a few whole ancestry layers (Heuristic-Learngene, Wang et al. AAAI 2022)."""

from ...registry import MethodSpec, register_method
from .method import HeuristicConfig, describe_shapes, expand, extract, validate

register_method(MethodSpec(
    name="heuristic", config_cls=HeuristicConfig, extract=extract, expand=expand,
    summary="inherit chosen whole layers (first/last/spread k, or explicit); fresh layers around them",
    describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["HeuristicConfig"]
