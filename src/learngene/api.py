"""``learngene.extract``: one entry point for every method."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .artifact import Learngene, created_now
from .errors import ConfigError
from .models import load_ancestry
from .registry import config_to_dict, get_method, make_config
from .stack import vit_arch


def resolve_data(data: Any, arch: dict[str, Any], split: str = "train") -> tuple[Any, dict[str, Any]]:
    """A registered dataset name -> the dataset at the model's input size; a Dataset passes through.

    Returns (dataset, provenance entry).
    """
    if data is None:
        return None, {}
    if isinstance(data, (str, os.PathLike)):
        from .data import load_dataset

        dataset = load_dataset(str(data), split, image_size=_side(arch["img_size"]), in_chans=int(arch["in_chans"]))
        return dataset, {"name": str(data), "split": split, "num_samples": len(dataset)}
    if isinstance(data, torch.utils.data.Dataset):
        return data, {"name": type(data).__name__, "num_samples": len(data) if hasattr(data, "__len__") else None}
    raise ConfigError(f"data must be a registered dataset name or a torch Dataset, got {type(data).__name__}")


def _side(img_size: Any) -> int:
    return int(img_size[0] if isinstance(img_size, (tuple, list)) else img_size)


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
        return spec.extract(ancestry, method_config, data=data)
    model = load_ancestry(ancestry)
    arch = vit_arch(model)
    # A config may decide per option whether data is read (auto-learngene's first-half does not).
    needs_data = bool(getattr(method_config, "needs_data", spec.needs_data))
    if needs_data and data is None:
        raise ConfigError(f"method {method!r} with these options needs data: pass data='fashion-mnist' "
                          "(or --data on the CLI)")
    dataset, data_info = resolve_data(data, arch) if needs_data else (None, {"name": str(data)} if data else {})
    was_training = model.training
    gene = spec.extract(model, method_config, data=dataset)
    model.train(was_training)
    from . import __version__

    cost = dict(gene.provenance.get("cost", {}))
    cost.setdefault("samples_seen", 0)
    cost.setdefault("flops", 0.0)
    gene.provenance = {
        **gene.provenance,
        "ancestry": {
            "arch": arch,
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
