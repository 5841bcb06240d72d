"""`peg`: Vision Transformers as Probabilistic Expansion from Learngene (Wang et al., ICML 2024;
code BruceQFWang/ICML2024-PEG).

The learngene is L_b layers of H_b attention heads (mixtures of an ancestry layer's H_a
heads) and L_b FFNs (mixtures of the ancestry's L_a FFNs), with mixture weights drawn from
a Gaussian (fresh each condensing epoch), condensed by distilling the ancestry. Descendants
grow from it through learned non-linear maps along the layer and head axes, which fold into
a plain timm ViT. See ``method.py`` for the details and every departure from the reference.
"""

from ...registry import MethodSpec, register_method
from .config import PAPER_SHAPES, PegConfig, preset_options
from .maps import PegMaps, expand_layers, interpolation_matrix
from .method import (PegCondenser, PegDescendant, describe_shapes, expand, expand_trainable, extract, fold,
                     mixture_weights, sample_learngene, validate)

register_method(MethodSpec(
    name="peg", config_cls=PegConfig, extract=extract, expand=expand,
    summary="Gaussian mixtures of the ancestry's heads and FFNs, condensed by distillation; "
            "learned layer/head maps, folded into a plain ViT of any depth and head count",
    needs_data=True, describe_shapes=describe_shapes, validate=validate,
    expand_trainable=lambda gene, arch: expand_trainable(gene, arch), fold=fold,
))

__all__ = ["PAPER_SHAPES", "PegConfig", "PegCondenser", "PegDescendant", "PegMaps", "expand_layers", "expand_trainable",
           "fold", "interpolation_matrix", "mixture_weights", "preset_options", "sample_learngene"]
