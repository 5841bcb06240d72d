"""Stitching ViTs of different widths (SN-Net, Pan et al., CVPR 2023), shared by the methods
``learngene-pool`` (Shi et al., AAAI 2024) and ``sn-net``.

Anchors are timm VisionTransformers of one depth and one token layout (image size, patch
size, input channels, class token), ordered by width, narrowest first. A stitched model runs
a prefix of a narrower anchor, a stitching ``Linear``, and the suffix of a wider one.

Modules:
  configs   the configurations: each anchor alone + SN-Net's sliding-window positions
  anchors   the anchors' shapes, and how a learngene stores them (flat tensors + provenance)
  model     ``StitchedViT`` (one configuration, standalone) and its folder format
  supernet  ``StitchedSupernet`` (every configuration, one drawn per training step)
  init      the stitching layers' initialisation: least squares, given weights (with a fitted gain), random
"""

from .anchors import anchor_arch, anchor_archs, default_num_heads, pack_anchors, stored_archs, unpack_anchors
from .configs import PAIRS, Stitch, enumerate_stitches, paired_stitching, stitch_pairs
from .init import INITS, init_least_squares, init_map_gains, initialise, least_squares, probe_images, stitch_token_pairs
from .model import STITCHED_CONFIG, STITCHED_FORMAT, STITCHED_WEIGHTS, StitchedViT, load_stitched, save_stitched
from .supernet import StitchedSupernet, build_supernet

__all__ = [
    "INITS", "PAIRS", "STITCHED_CONFIG", "STITCHED_FORMAT", "STITCHED_WEIGHTS", "Stitch", "StitchedSupernet",
    "StitchedViT", "anchor_arch", "anchor_archs", "build_supernet", "default_num_heads", "enumerate_stitches",
    "init_least_squares", "init_map_gains", "initialise", "least_squares", "load_stitched", "pack_anchors",
    "paired_stitching", "probe_images", "save_stitched", "stitch_pairs", "stitch_token_pairs", "stored_archs",
    "unpack_anchors",
]
