"""The canonical stack-of-blocks view of a ViT.

Methods read and write plain tensors under canonical names (``q.weight [H, hd, D]``...)
and never see a model family's key names; adapters (here: timm ViT) convert both ways,
bit-exactly.
"""

from .canonical import BLOCK_KEYS, BLOCK_MATRICES, HEAD_KEYS, STEM_KEYS, VitStack
from .build import from_stack
from .init import blank_stack, materialize
from .timm_vit import to_stack

__all__ = ["VitStack", "to_stack", "from_stack", "blank_stack", "materialize",
           "BLOCK_KEYS", "BLOCK_MATRICES", "STEM_KEYS", "HEAD_KEYS"]
