"""learngene-kit: condense a large ancestry ViT into a small learngene; grow descendants of any size.

    import learngene
    gene = learngene.extract("heuristic", "runs/ancestry", rule="last", k=3)
    gene.save("genes/heuristic")
    child = learngene.load("genes/heuristic").expand(depth=6, num_classes=10)  # a timm VisionTransformer
"""

from __future__ import annotations

from .api import Learngene, extract, load
from .arch import ViTArch, arch_of, create_vit, list_presets
from .artifact import Artifact
from .errors import ArtifactError, ConfigError, DatasetNotFoundError, LearngeneError, UnknownMethodError
from .models import load_ancestry, save_model
from .registry import get_method, list_methods
from .version import __version__

__all__ = [
    "__version__", "extract", "load", "Learngene", "Artifact", "list_methods", "get_method",
    "create_vit", "ViTArch", "arch_of", "load_ancestry", "save_model", "list_presets",
    "LearngeneError", "ConfigError", "ArtifactError", "DatasetNotFoundError", "UnknownMethodError",
]
