"""The dataset objects handed to the trainer: ``DatasetInfo``, ``ImageDataset``, ``augment_batch``.

Every dataset is small enough to live in memory as one float32 tensor, so an
``ImageDataset`` is *pre-tensorized*: ``.images`` is [N, C, H, W] (already resized and
normalized) and ``.labels`` is [N] int64. The trainer indexes those tensors directly; the
``Dataset`` protocol (``len`` / ``[i]``) is there for everything else (DataLoader, eval code).

Augmentation is deliberately light: a random shift of up to ``AUGMENT_PADDING`` pixels in
each direction (pad by repeating the edge pixels, then crop back to the original size at a
random offset). Nothing else: no flips (digits would change meaning), no colour jitter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from learngene.errors import ConfigError

# How far (in pixels) augmentation may shift an image in each direction.
AUGMENT_PADDING = 2


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, without touching its images.

    ``image_size`` / ``in_chans`` / ``mean`` / ``std`` describe the images *as loaded*
    (after resizing and channel conversion): ``mean`` and ``std`` have one entry per
    channel, in units of pixel / 255 (so images are normalized as
    ``(pixel / 255 - mean) / std``). ``num_train`` / ``num_test`` are the sizes of the two
    fixed splits.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_size: int  # images are image_size x image_size
    in_chans: int  # 1 (grey) or 3 (RGB)
    mean: tuple[float, ...]  # [in_chans]
    std: tuple[float, ...]  # [in_chans]
    num_train: int | None = None
    num_test: int | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"{self.name}: {self.num_classes} classes but {len(self.class_names)} class names"
            )
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError(
                f"{self.name}: mean/std need one value per channel ({self.in_chans}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        fields = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()}


def augment_batch(
    images: torch.Tensor, generator: torch.Generator | None = None, *, padding: int = AUGMENT_PADDING
) -> torch.Tensor:
    """Shift every image of a batch by its own random offset of up to ``padding`` pixels.

    ``images`` [B, C, H, W] -> [B, C, H, W]. Each image is padded by ``padding`` pixels on
    every side (repeating its edge pixels), then an H x W window is cropped at a random
    offset ``(top, left)`` in ``0 .. 2 * padding``. The offsets come from ``generator``
    (the global torch RNG when None), so the same generator state gives the same result.
    """
    if images.dim() != 4:
        raise ConfigError(f"augment_batch needs images [B,C,H,W], got shape {tuple(images.shape)}")
    if padding == 0 or images.shape[0] == 0:
        return images.clone()
    batch, _, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding), mode="replicate")  # [B, C, H+2p, W+2p]

    # One (top, left) offset per image, drawn on the generator's device.
    offset_device = generator.device if generator is not None else torch.device("cpu")
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=offset_device).to(device)  # [B]
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=offset_device).to(device)  # [B]

    rows = top[:, None] + torch.arange(height, device=device)  # [B, H]: padded rows each image keeps
    cols = left[:, None] + torch.arange(width, device=device)  # [B, W]: padded columns each image keeps
    batch_index = torch.arange(batch, device=device)[:, None, None]  # [B, 1, 1]
    # Indexing dims 0, 2, 3 with tensors (broadcast to [B, H, W]) and dim 1 with ":" puts the
    # channel dim last: [B, H, W, C]. Move it back to [B, C, H, W].
    crops = padded[batch_index, :, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()


class ImageDataset(Dataset):
    """A pre-tensorized image classification split.

    Attributes:
        images: float32 [N, C, H, W], resized and normalized.
        labels: int64 [N], class indices into ``info.class_names``.
        info: the ``DatasetInfo`` of the images as loaded (final size and channels).
        split: "train" or "test".
        augment: when True, ``ds[i]`` returns a randomly shifted image (see ``augment_batch``),
            and ``ds.augment_batch`` is the batch-level function a trainer applies to
            ``ds.images[idx]`` batches; when False, ``ds.augment_batch`` is None.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        info: DatasetInfo,
        *,
        split: str = "train",
        augment: bool = False,
    ) -> None:
        if images.dim() != 4 or images.dtype != torch.float32:
            raise ConfigError(f"ImageDataset needs float32 images [N,C,H,W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],) or labels.dtype != torch.int64:
            raise ConfigError(
                f"ImageDataset needs int64 labels [{images.shape[0]}], got {labels.dtype} {tuple(labels.shape)}"
            )
        expected = (info.in_chans, info.image_size, info.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ConfigError(f"images are {tuple(images.shape[1:])} but info says [C,H,W] = {expected}")
        self.images = images
        self.labels = labels
        self.info = info
        self.split = split
        self.augment = bool(augment)

    @property
    def augment_batch(self) -> Callable[..., torch.Tensor] | None:
        """``augment_batch(images, generator)`` when augmentation is on, else None."""
        # Inside a method, the bare name refers to the module-level function above.
        return augment_batch if self.augment else None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]  # [C, H, W]
        if self.augment:
            image = augment_batch(image[None])[0]
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        shape = "x".join(str(d) for d in self.images.shape[1:])
        return (
            f"ImageDataset({self.info.name!r}, split={self.split!r}, n={len(self)}, "
            f"image={shape}, classes={self.info.num_classes}, augment={self.augment})"
        )
