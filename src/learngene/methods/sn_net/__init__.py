"""`sn-net`: Stitchable Neural Networks (Pan et al., CVPR 2023; code ziplab/SN-Net), the peer
baseline of Learngene Pool: the same sliding-window stitching over independently trained
anchors, stored whole, with least-squares stitching layers. See ``method.py``.
"""

from ...registry import MethodSpec, register_method
from .._stitching import StitchedSupernet, StitchedViT, load_stitched, save_stitched
from .config import SnNetConfig
from .method import describe_shapes, expand, extract, from_anchors, stitch_supernet, validate

register_method(MethodSpec(
    name="sn-net", config_cls=SnNetConfig, extract=extract, expand=expand,
    summary="independently trained anchors stored whole; stitched descendants (prefix + Linear + suffix) "
            "with least-squares stitching layers, via stitch_supernet",
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
))

__all__ = ["SnNetConfig", "StitchedSupernet", "StitchedViT", "from_anchors", "load_stitched", "save_stitched",
           "stitch_supernet"]
