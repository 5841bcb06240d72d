"""`learngene-pool`: Learngene Pool (Shi et al., AAAI 2024; code superselll/learngenepool).

The ancestry is distilled into 2-3 small students of different widths (CE + KD + block and
attention MSE through learnable teacher->student maps); the pool stores the students and
their mean maps as one learngene. Descendants are SN-Net-style stitches of a narrower
student's prefix and a wider one's suffix (``stitch_supernet``), with stitching layers
initialised from the maps; ``export(i)`` gives one as a ``StitchedViT`` (``save_stitched`` /
``load_stitched``). See ``method.py`` for the details and every departure.
"""

from ...registry import MethodSpec, register_method
from .._stitching import StitchedSupernet, StitchedViT, load_stitched, save_stitched
from .config import LearngenePoolConfig
from .distill import PoolStudent, default_matches, pool_loss, recording
from .method import describe_shapes, expand, extract, map_stitch_weight, pinv_stitch_weight, stitch_supernet, validate

register_method(MethodSpec(
    name="learngene-pool", config_cls=LearngenePoolConfig, extract=extract, expand=expand,
    summary="2-3 students of different widths distilled with feature maps; stitched descendants "
            "(prefix + Linear + suffix, sliding window) via stitch_supernet",
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["LearngenePoolConfig", "PoolStudent", "StitchedSupernet", "StitchedViT", "default_matches", "load_stitched",
           "map_stitch_weight", "pinv_stitch_weight", "pool_loss", "recording", "save_stitched",
           "stitch_supernet"]
