"""`mm-lg`: multimodal learngene for CLIP (Chen et al., 2025): multimodal blocks shared by the
image and text towers and unimodal blocks per tower, mixed by learned weights; descendants are
CLIPs of any tower depths (open_clip or transformers) and single-modality models. See method.py
for the design (no public code: every choice is documented there)."""

from ...registry import MethodSpec, register_method
from .config import MmlgConfig
from .descendants import CLIP_DESCENDANTS
from .method import (describe_shapes, expand, expand_clip, expand_text, extract, extract_clip, gene_tokenizer,
                     mmlg_blocks, validate)

register_method(MethodSpec(
    name="mm-lg", config_cls=MmlgConfig, extract=extract, expand=expand,
    summary="CLIP: shared multimodal + per-tower unimodal blocks mixed by learned weights; CLIP/ViT descendants",
    needs_data=True, describe_shapes=describe_shapes, validate=validate, ancestry_kind="clip",
    descendant_kinds=(CLIP_DESCENDANTS,),
))

__all__ = ["MmlgConfig", "extract_clip", "expand_clip", "expand_text", "gene_tokenizer", "mmlg_blocks"]
