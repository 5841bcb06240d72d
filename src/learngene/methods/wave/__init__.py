"""`wave`: Weight Templates for Adaptive Initialization of Variable-sized Models (Feng et al., CVPR 2025).

The learngene is a set of weight templates per kind of block matrix (q, k, v, proj, fc1, fc2);
every block matrix of a model of any depth and width is a sum of Kronecker products of the
templates with that layer's small, size-specific weight scalers. Templates are learned by
distilling the ancestry into an auxiliary model built that way; the scalers of each size listed
at extraction are trained on a few images with the templates frozen. See ``method.py`` for the
details and every choice the paper leaves open.
"""

from ...registry import MethodSpec, register_method
from .config import WaveConfig
from .kron import compose, nearest_kronecker_sum
from .method import WaveModel, add_sizes, describe_shapes, expand, extract, validate

register_method(MethodSpec(
    name="wave", config_cls=WaveConfig, extract=extract, expand=expand,
    summary="weight templates + per-size weight scalers (Kronecker sums), learned by distillation; any depth, "
            "narrower widths",
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["WaveConfig", "WaveModel", "add_sizes", "compose", "nearest_kronecker_sum"]
