"""`weight-selection`: descendants take evenly spaced weights of the ancestry (Xu et al., ICLR 2024)."""

from ...registry import MethodSpec, register_method
from .config import WeightSelectionConfig
from .method import describe_shapes, expand, extract, validate

register_method(MethodSpec(
    name="weight-selection", config_cls=WeightSelectionConfig, extract=extract, expand=expand,
    summary="peer baseline: first-N blocks, evenly spaced rows/cols of every tensor (uniform or head-aware)",
    describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["WeightSelectionConfig"]
