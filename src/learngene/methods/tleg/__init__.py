"""`tleg`: Transformer as Linear Expansion of learnGene (Xia et al., AAAI 2024; code AlphaXia/TLEG).

The learngene is one block's worth of base tensors theta_A and slopes theta_B (plus the
stem, final norm and head); block l of a depth-L descendant is theta_A + (l/L) theta_B.
It is learned by soft-distilling the ancestry into a depth-12 auxiliary model built
from it. See ``method.py`` for the details and every departure from the reference.
"""

from ...registry import MethodSpec, register_method
from .config import TlegConfig
from .method import TlegAuxiliary, describe_shapes, expand, extract, linear_expand, validate
from .._narrow import narrow_stack

register_method(MethodSpec(
    name="tleg", config_cls=TlegConfig, extract=extract, expand=expand,
    summary="theta_A + l/L theta_B per block, learned by distilling into a depth-12 auxiliary ViT; any depth",
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["TlegConfig", "TlegAuxiliary", "linear_expand", "narrow_stack"]
