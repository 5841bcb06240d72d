"""The images and labels of a dataset as tensors, for the trainer and the methods that read data.

A *tensor dataset* holds its samples as two tensors: an object with ``.images`` [N,C,H,W] and
``.labels`` [N] tensors (this package's pre-tensorized ``ImageDataset``) or a 2-tensor
``TensorDataset``; it is indexed directly. Any other map-style Dataset of (image, label) is
read item by item.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from learngene.errors import ConfigError
from learngene.data.streaming import BadSample

# A Dataset without .images/.labels tensors: ``sample_tensors`` reads at most this many samples.
MAX_LOADED_SAMPLES = 4096


def tensor_pair(data: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, labels) of a tensor dataset, as stored (no copy, no dtype change); None for any other data."""
    images, labels = getattr(data, "images", None), getattr(data, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        return images, labels
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors[0], data.tensors[1]
    return None


def sample_tensors(data: Any, limit: int | None, generator: torch.Generator, *,
                   who: str = "this method") -> tuple[torch.Tensor, torch.Tensor]:
    """(images float [n,C,H,W], labels int64 [n]) from ``data``: ``limit`` random samples (all if None or fewer).

    A tensor dataset is indexed directly (a random ``limit`` of its samples, or all of them in
    order); any other map-style Dataset of (image, label) is read item by item, ``limit`` (at most
    ``MAX_LOADED_SAMPLES``) random items. ``generator`` draws the sample; ``who`` names the caller
    in errors.
    """
    pair = tensor_pair(data)
    if pair is not None:
        images, labels = pair
    else:
        try:
            n = len(data)
        except TypeError:
            raise ConfigError(f"{who} needs a map-style dataset of (image, label), got {type(data).__name__}") from None
        take = min(n, limit or MAX_LOADED_SAMPLES, MAX_LOADED_SAMPLES)
        idx = torch.randperm(n, generator=generator)[:take].tolist()
        if getattr(data, "on_bad", None) == "skip":  # a streaming dataset that skips unreadable images
            items = [item for item in map(data.load_item, idx) if not isinstance(item, BadSample)]
        else:
            items = [data[i] for i in idx]
        images = torch.stack([torch.as_tensor(x) for x, _ in items])
        labels = torch.as_tensor([int(y) for _, y in items])
        limit = None
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise ConfigError(f"data must hold images [N,C,H,W] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}")
    if limit is not None and limit < images.shape[0]:
        idx = torch.randperm(images.shape[0], generator=generator)[:limit]
        images, labels = images[idx], labels[idx]
    return images.float(), labels.long()
