"""`auto-learngene`: whole ancestry layers chosen by a criterion (Auto-Learngene, Wang et al.).

Criteria: "first-half" (the later papers' baseline), "similarity" (linear CKA with the
target labels, after "Inheriting Condensed Knowledge", 2023), "gradient" (least gradient
change over a task stream, after AAAI 2022).

The config's ``needs_data`` property tells the API per criterion whether ``data`` is
read: "first-half" works without it.
"""

from ...registry import MethodSpec, register_method
from .config import AutoLearngeneConfig
from .method import describe_shapes, expand, extract, validate
from .scores import gradient_scores, layer_scores, linear_cka

register_method(MethodSpec(
    name="auto-learngene", config_cls=AutoLearngeneConfig, extract=extract, expand=expand,
    summary="inherit whole layers chosen by rule (first half) or on the target data (CKA similarity / "
            "gradient stability); fresh layers around them",
    needs_data=False, describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["AutoLearngeneConfig", "layer_scores", "gradient_scores", "linear_cka"]
