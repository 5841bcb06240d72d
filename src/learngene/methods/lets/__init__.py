"""`lets`: LeTs, Learnable Transformation of a learngene (Xia et al., NeurIPS 2024).

A compact learngene (a few narrow ViT blocks, stem and head) and learnable transformation
matrices along width (residual stream, heads, head dims, MLP units) and depth (layers),
trained together by soft-distilling the ancestry into the auxiliary model they compute.
A descendant of any size up to the auxiliary model's selects rows of the matrices and
applies them to the learngene. See ``method.py`` for the formulas and every choice.
"""

from ...registry import MethodSpec, register_method
from .config import SELECTIONS, LetsConfig
from .method import LetsAuxiliary, describe_shapes, expand, extract, select_rows, transformed_stack, validate

register_method(MethodSpec(
    name="lets", config_cls=LetsConfig, extract=extract, expand=expand,
    summary="compact learngene + learnable width/depth transformation matrices, distilled together; "
            "descendants select rows: shallower/deeper, narrower/wider",
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["LetsConfig", "LetsAuxiliary", "SELECTIONS", "select_rows", "transformed_stack"]
