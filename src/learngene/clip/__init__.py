"""CLIP support: a canonical two-tower view (``ClipStack``) with exact adapters to open_clip
and transformers, image-caption pairs from the labelled datasets, the contrastive loss
through ``learngene.train.fit``, evaluation (zero-shot accuracy, retrieval recall@K), and
the image tower as a plain timm ViT. Needs the ``clip`` extra: pip install 'learngene-kit[clip]'.

    from learngene.clip import open_clip_to_stack, stack_to_hf
    hf_model = stack_to_hf(open_clip_to_stack(open_clip_model))   # same numbers, other library
"""

from .data import CaptionPairs, CaptionTokenizer, caption_pairs, load_caption_pairs, tokenizer_for
from .hf_adapter import HF_TABLE, build_hf_clip, hf_arch, hf_to_stack, stack_to_hf
from .loss import ContrastiveClip, clip_loss, contrastive_loss_fn
from .model import (clip_mini_arch, embed, evaluate_clip, image_classifier_arch, image_tower_to_timm,
                    load_clip_ancestry, save_clip_ancestry, train_clip)
from .open_clip_adapter import OPEN_CLIP_TABLE, build_open_clip, open_clip_arch, open_clip_to_stack, stack_to_open_clip
from .stack import ClipStack, Tower, clip_arch, expected_shapes, validate_clip_stack

__all__ = [
    "ClipStack", "Tower", "clip_arch", "expected_shapes", "validate_clip_stack",
    "OPEN_CLIP_TABLE", "build_open_clip", "open_clip_arch", "open_clip_to_stack", "stack_to_open_clip",
    "HF_TABLE", "build_hf_clip", "hf_arch", "hf_to_stack", "stack_to_hf",
    "CaptionPairs", "CaptionTokenizer", "caption_pairs", "load_caption_pairs", "tokenizer_for",
    "ContrastiveClip", "clip_loss", "contrastive_loss_fn",
    "clip_mini_arch", "embed", "evaluate_clip", "image_classifier_arch", "image_tower_to_timm",
    "load_clip_ancestry", "save_clip_ancestry", "train_clip",
]
