"""The public API: ``extract``, ``load`` and ``Learngene``, dispatching to the methods through the registry.

    gene = learngene.extract("heuristic", "runs/ancestry", rule="last", k=3)   # a Learngene
    gene.save("genes/heuristic")
    child = learngene.load("genes/heuristic").expand(depth=6, num_classes=10)  # a timm VisionTransformer

``Learngene`` is the stored ``Artifact`` plus what needs the method: growing descendants
(``expand``, ``fold``), describing the shapes it can grow, and the method's own picture of it
(``plot``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .arch import ViTArch, arch_of, validate_shape
from .artifact import Artifact, created_now, read_artifact
from .data import load_dataset
from .errors import ArtifactError, ConfigError, LearngeneError
from .models import load_ancestry
from .registry import config_to_dict, get_method, make_config, methods_with
from .version import __version__


@dataclass(repr=False)
class Learngene(Artifact):
    """A learngene, ready to grow descendants. Fields and storage: ``Artifact``."""

    @classmethod
    def of(cls, artifact: Artifact) -> "Learngene":
        """The same artifact (tensors shared, not copied) with the method's operations."""
        if isinstance(artifact, cls):
            return artifact
        return cls(method=artifact.method, config=artifact.config, tensors=artifact.tensors,
                   provenance=artifact.provenance)

    def describe_shapes(self) -> str:
        spec = get_method(self.method)
        return spec.describe_shapes(self) if spec.describe_shapes else "any depth, width and head count"

    def descendant_arch(self, *, depth: int | None = None, embed_dim: int | None = None,
                        num_heads: int | None = None, num_classes: int | None = None,
                        **timm_kwargs: Any) -> ViTArch:
        """The descendant's architecture: the ancestry's, with the given overrides."""
        arch = self.ancestry_arch.replace(depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                                          num_classes=num_classes, **timm_kwargs)
        validate_shape(depth=arch.depth, embed_dim=arch.embed_dim, num_heads=arch.num_heads,
                       num_classes=arch.num_classes)
        return arch

    def expand(self, *, depth: int | None = None, embed_dim: int | None = None, num_heads: int | None = None,
               num_classes: int | None = None, seed: int | None = None, trainable: bool = False,
               **timm_kwargs: Any) -> torch.nn.Module:
        """Grow a descendant: a plain timm ``VisionTransformer``.

        Shape arguments default to the ancestry's. ``timm_kwargs`` go to the
        VisionTransformer (e.g. ``drop_path_rate=0.1``, ``global_pool='avg'``).
        ``seed`` fixes the random initialisation of whatever the learngene does not provide.
        ``trainable=True``: for methods whose descendants train extra machinery (PEG's maps),
        the trainable module; train it, then ``fold`` it into the plain ViT. For every other
        method it is the plain ViT itself.
        """
        spec = get_method(self.method)
        build = spec.expand_trainable if trainable and spec.expand_trainable is not None else spec.expand
        arch = self.descendant_arch(depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                                    num_classes=num_classes, **timm_kwargs)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            try:
                return build(self, arch)
            except KeyError as e:  # a tensor or config entry the method needs is not stored
                missing = e.args[0] if e.args else e
                raise ArtifactError(f"this {self.method} learngene lacks {missing!r}, which growing a descendant "
                                    "needs: it is incomplete or inconsistent; re-create it") from None

    def fold(self, descendant: torch.nn.Module) -> torch.nn.Module:
        """The plain timm ViT a trained ``expand(trainable=True)`` module computes (itself if plain)."""
        spec = get_method(self.method)
        return descendant if spec.fold is None or isinstance(descendant, VisionTransformer) else spec.fold(descendant)

    def plot(self, path: str | os.PathLike) -> Path:
        """Write the method's picture of this learngene to ``path`` (Cluster-Learngene: mean
        attention distance per head and layer, clusters coloured); returns the file written."""
        spec = get_method(self.method)
        if spec.plot is None:
            raise ConfigError(f"only {' and '.join(methods_with('plot'))} learngenes have a plot; this one is "
                              f"{self.method!r}")
        return Path(spec.plot(self, path))


def load(path: str | os.PathLike) -> Learngene:
    """Load a learngene folder written by ``Learngene.save``, validating it fully: the files
    against each other (``read_artifact``), then the method's config and invariants."""
    artifact = read_artifact(path)
    spec = get_method(artifact.method)
    gene = Learngene.of(artifact)
    try:
        make_config(spec, gene.config)  # the stored config must still be a valid config
        if spec.validate is not None:
            spec.validate(gene)
    except ArtifactError:
        raise
    except (LearngeneError, KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: config and tensors disagree: {e}") from None
    return gene


def resolve_data(data: Any, arch: ViTArch, split: str = "train") -> tuple[Any, dict[str, Any]]:
    """A registered dataset name -> the dataset at the model's input size; a Dataset passes through.

    Returns (dataset, provenance entry).
    """
    if data is None:
        return None, {}
    if isinstance(data, (str, os.PathLike)):
        dataset = load_dataset(str(data), split, image_size=arch.side, in_chans=arch.in_chans)
        return dataset, {"name": str(data), "split": split, "num_samples": len(dataset)}
    if isinstance(data, torch.utils.data.Dataset):
        return data, {"name": type(data).__name__, "num_samples": len(data) if hasattr(data, "__len__") else None}
    raise ConfigError(f"data must be a registered dataset name or a torch Dataset, got {type(data).__name__}")


def extract(method: str, ancestry: str | os.PathLike | nn.Module, data: Any = None, **config: Any) -> Learngene:
    """Condense ``ancestry`` into a learngene with ``method``.

    Args:
        method: a name from ``learngene.list_methods()``.
        ancestry: a timm VisionTransformer, a run folder, a weights file, a preset or a timm model name
            (for ``mm-lg``: a CLIP, see ``learngene.clip.load_clip_ancestry``).
        data: a registered dataset name (``"fashion-mnist"``) or a torch Dataset of (image, label);
            required by methods that read data, recorded in the provenance otherwise.
        **config: the method's options (its config dataclass fields).
    """
    spec = get_method(method)
    method_config = make_config(spec, config)
    if spec.ancestry_kind == "clip":  # a CLIP ancestry and caption pairs: the method loads both itself
        if data is None:
            raise ConfigError(f"method {method!r} condenses on image-caption pairs: pass data='fashion-mnist' "
                              "(or --data on the CLI)")
        return Learngene.of(spec.extract(ancestry, method_config, data=data))
    model = load_ancestry(ancestry)
    arch = arch_of(model)
    # A config may decide per option whether data is read (auto-learngene's first-half does not).
    needs_data = bool(getattr(method_config, "needs_data", spec.needs_data))
    if needs_data and data is None:
        raise ConfigError(f"method {method!r} with these options needs data: pass data='fashion-mnist' "
                          "(or --data on the CLI)")
    dataset, data_info = resolve_data(data, arch) if needs_data else (None, {"name": str(data)} if data else {})
    was_training = model.training
    gene = Learngene.of(spec.extract(model, method_config, data=dataset))
    model.train(was_training)

    cost = dict(gene.provenance.get("cost", {}))
    cost.setdefault("samples_seen", 0)
    cost.setdefault("flops", 0.0)
    gene.provenance = {
        **gene.provenance,
        "ancestry": {
            "arch": arch.to_dict(),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "source": ancestry if isinstance(ancestry, str) else str(ancestry) if isinstance(ancestry, os.PathLike) else type(ancestry).__name__,
        },
        "data": data_info,
        "cost": cost,
        "library": f"learngene-kit {__version__}",
        "created": created_now(),
    }
    if not gene.config:
        gene.config = config_to_dict(method_config)
    return gene
