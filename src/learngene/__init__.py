"""learngene-kit: condense a large ancestry ViT into a small learngene; grow descendants of any size.

    import learngene
    gene = learngene.extract("heuristic", "runs/ancestry", rule="last", k=3)
    gene.save("genes/heuristic")
    child = learngene.load("genes/heuristic").expand(depth=6, num_classes=10)  # a timm VisionTransformer
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import extract
from .artifact import Learngene, load
from .errors import ArtifactError, ConfigError, DatasetNotFoundError, LearngeneError, UnknownMethodError
from .models import create_vit, list_presets, load_ancestry, save_model
from .registry import get_method, list_methods

__all__ = [
    "__version__", "extract", "load", "Learngene", "list_methods", "get_method",
    "create_vit", "load_ancestry", "save_model", "list_presets",
    "LearngeneError", "ConfigError", "ArtifactError", "DatasetNotFoundError", "UnknownMethodError",
]
