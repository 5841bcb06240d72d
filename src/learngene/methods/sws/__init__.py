"""`sws`: Stage-wise Weight Sharing (Xia et al., IJCAI 2024; arXiv 2404.16897; code AlphaXia/SWS).

The learngene is one block per stage (plus the stem, final norm and head), learned by
soft-distilling the ancestry into an auxiliary ViT whose layers share their stage's block
(the reference's 16 layers in stages of 3, 3, 4, 3, 3). A descendant of any depth splits its
layers into the same stages and copies each stage's block into them; a narrower descendant
takes head-aware slices of those copies (TLEG's width rule in this library, ours: SWS grows
depth only). See ``method.py`` for the details and every departure from the reference.
"""

from ...registry import MethodSpec, register_method
from .config import SwsConfig
from .method import SwsAuxiliary, describe_shapes, expand, extract, layer_stages, stage_sizes, validate

register_method(MethodSpec(
    name="sws", config_cls=SwsConfig, extract=extract, expand=expand,
    summary=("one block per stage, shared by the stage's layers of a distilled auxiliary ViT (3,3,4,3,3); "
             "any depth, narrower by head-aware selection"),
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["SwsConfig", "SwsAuxiliary", "layer_stages", "stage_sizes"]
