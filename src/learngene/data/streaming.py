"""Streaming image datasets: a file list and labels in memory, each image decoded when it is read.

A ``StreamingImageDataset`` is a map-style ``Dataset`` of (float32 [C, S, S], label). Memory
stays bounded at any size: it holds the paths (packed into one byte buffer, see ``PathTable``)
and the int64 labels; the pixels are decoded by PIL in the DataLoader workers, one image at a
time, and go through ``transform``:

* ``eval_transform(S)``: resize the short side to ``floor(S / 0.875)`` (bicubic), centre-crop
  S x S -- DeiT's and timm's evaluation transform (crop_pct 0.875).
* ``train_transform(S)``: ``RandomResizedCrop(S, scale=(0.08, 1))`` (bicubic) + horizontal flip,
  the plain ImageNet training augmentation. Nothing more: a richer recipe (RandAugment, random
  erasing, Mixup/CutMix) is plugged in by replacing the dataset's ``transform``.

Both end with ``ToImage -> ToDtype(float32, scale=True) -> Normalize(mean, std)``
(``torchvision.transforms.v2``), with ImageNet's mean/std (timm's ``IMAGENET_DEFAULT_MEAN`` /
``_STD``) unless the dataset says otherwise.

**Plugging in a train transform.** ``dataset.transform`` is any callable PIL image -> float
tensor [C, S, S]; set it (or pass ``transform=`` to ``load_dataset``) before the first batch is
drawn (the DataLoader workers copy the dataset when they start and live for the whole run)::

    from timm.data import create_transform
    train = load_dataset("imagenet:/data/imagenet", "train", image_size=224, augment=True)
    train.transform = create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5-inc1",
                                       re_prob=0.25, mean=train.info.mean, std=train.info.std)

**Bad input.** ``load_item(i)`` never raises for a bad file: a truncated or corrupt image, a
non-image file with an image extension or an unreadable file gives a ``BadSample`` naming the
file and the reason. The trainer's loader (``learngene.train.data.LoaderSource``) turns it into
a ``BadImageError`` in the main process (``on_bad="error"``, the default: one line naming the
file and the fix) or drops it from its batch and counts it (``on_bad="skip"``: a
``BadImageWarning`` per pass gives the count and the first files). ``dataset[i]`` raises
``BadImageError`` either way. Grey, palette, CMYK and RGBA images are converted to RGB (or to
"L" for in_chans=1) like torchvision's ``pil_loader`` does: alpha is dropped.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from learngene.errors import ConfigError, LearngeneError
from learngene.data.dataset import DatasetInfo
from learngene.data.processing import convert_stats

# ImageNet's per-channel statistics (timm.data.IMAGENET_DEFAULT_MEAN / _STD), pixel / 255 units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation crop: the short side is resized to image_size / CROP_PCT, then centre-cropped (DeiT, timm).
CROP_PCT = 0.875
# RandomResizedCrop's area range (torchvision's and timm's default, DeiT's recipe).
TRAIN_CROP_SCALE = (0.08, 1.0)

ON_BAD = ("error", "skip")
ON_BAD_HINT = "or pass on_bad='skip' (spec option ?on_bad=skip) to skip unreadable images and count them"


class BadImageError(LearngeneError):
    """An image of a dataset cannot be decoded or read; the message names the file and the fix."""


class BadImageWarning(UserWarning):
    """Images were skipped (``on_bad="skip"``): the message gives the count and the first files."""


@dataclass(frozen=True)
class BadSample:
    """What ``load_item`` returns instead of (image, label) for an image it cannot read."""

    index: int
    where: str  # the file (or "<dataset> item i" when there is none)
    reason: str  # one line

    def message(self) -> str:
        return f"cannot read image {self.where} ({self.reason}): replace or delete the file, {ON_BAD_HINT}"


def check_on_bad(on_bad: str) -> str:
    if on_bad not in ON_BAD:
        raise ConfigError(f"on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}")
    return on_bad


def one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- transforms


def _normalize_tail(mean: Sequence[float], std: Sequence[float]) -> list:
    from torchvision.transforms import v2

    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def eval_transform(image_size: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD, crop_pct: float = CROP_PCT) -> Callable:
    """PIL image -> float32 [C, S, S]: resize the short side to floor(S / crop_pct) (bicubic),
    centre-crop S x S, scale to [0, 1], normalize."""
    from torchvision.transforms import v2

    resize = math.floor(image_size / crop_pct)
    return v2.Compose([
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(image_size),
        *_normalize_tail(mean, std),
    ])


def train_transform(image_size: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, scale: tuple[float, float] = TRAIN_CROP_SCALE) -> Callable:
    """PIL image -> float32 [C, S, S]: RandomResizedCrop(S, scale) (bicubic), random horizontal
    flip, scale to [0, 1], normalize. Draws from the global torch RNG, which the trainer seeds
    per sample (``learngene.train.data``)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        *_normalize_tail(mean, std),
    ])


def grey_stats(mean: Sequence[float], std: Sequence[float], in_chans: int) -> tuple[tuple[float, ...], ...]:
    """RGB statistics for ``in_chans`` channels (1: luma-weighted, as ``processing.convert_stats``)."""
    return convert_stats(tuple(mean), tuple(std), in_chans)


# --------------------------------------------------------------------------- decoding


def decode_image(path: str | os.PathLike, mode: str):
    """Open and fully decode ``path`` -> PIL image in ``mode`` ("RGB" or "L"). Raises on a bad file.

    ``convert`` decodes every pixel, so a truncated file fails here rather than later.
    Palette images with transparency go through RGBA first (PIL's advice); alpha is dropped.
    """
    from PIL import Image

    with open(path, "rb") as f:
        image = Image.open(f)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return image.convert(mode)


def bad_reason(error: BaseException) -> str:
    """One line for a decode error; the fix for the ones a user can act on."""
    if isinstance(error, PermissionError):
        return f"permission denied: make it readable (chmod a+r) -- {one_line(error)}"
    text = one_line(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


# --------------------------------------------------------------------------- path table


class PathTable:
    """Many paths under one root, packed: a uint8 buffer of UTF-8 bytes plus int64 offsets.

    Two numpy arrays instead of a list of Python strings: ~30 bytes per ImageNet path, and
    forked DataLoader workers never touch (so never copy) per-path Python objects.
    """

    def __init__(self, root: str | os.PathLike, paths: Sequence[str | os.PathLike]):
        self.root = str(root)
        encoded = [os.path.relpath(os.fspath(p), self.root).encode() for p in paths]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, end = self.offsets[index], self.offsets[index + 1]
        return os.path.join(self.root, self.buffer[start:end].tobytes().decode())

    def nbytes(self) -> int:
        return self.buffer.nbytes + self.offsets.nbytes


# --------------------------------------------------------------------------- datasets


class StreamingDataset(Dataset):
    """Common part: ``info``, ``split``, ``transform``, ``on_bad``; subclasses read raw (PIL, label).

    Attributes:
        info: ``DatasetInfo`` at the final size/channels (``mean``/``std`` are the ones the
            transform normalizes with).
        split: "train" or "test".
        transform: callable PIL image -> float32 [C, S, S]; replace it to plug in another
            train recipe (see the module docstring).
        augment: True when the default transform is the train augmentation.
        on_bad: "error" or "skip" (read by the trainer's loader).
        normalize: False -> the default transform gives pixel / 255 in [0, 1] (kept as an attribute).
        labels: int64 numpy [N].
    """

    def __init__(self, info: DatasetInfo, *, split: str, transform: Callable | None, augment: bool,
                 on_bad: str = "error", normalize: bool = True):
        self.info = info
        self.split = split
        self.augment = bool(augment)
        self.normalize = bool(normalize)
        self.on_bad = check_on_bad(on_bad)
        if transform is None:
            build = train_transform if self.augment else eval_transform
            mean, std = (info.mean, info.std) if normalize else ((0.0,) * info.in_chans, (1.0,) * info.in_chans)
            transform = build(info.image_size, mean=mean, std=std)
        self.transform = transform
        self.mode = "L" if info.in_chans == 1 else "RGB"

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def read(self, index: int) -> tuple[Any, int]:
        """(PIL image in ``self.mode``, label); raises on a bad file."""
        raise NotImplementedError

    def where(self, index: int) -> str:
        """The file behind item ``index``, for error messages."""
        return f"{self.info.name} {self.split} item {index}"

    def load_item(self, index: int) -> tuple[torch.Tensor, int] | BadSample:
        """(float32 [C, S, S], label), or a ``BadSample`` when the image cannot be read."""
        try:
            image, label = self.read(index)
        except Exception as error:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError, ...)
            return BadSample(index, self.where(index), bad_reason(error))
        return self.transform(image), int(label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.load_item(int(index))
        if isinstance(item, BadSample):
            raise BadImageError(item.message())
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.info.name!r}, split={self.split!r}, n={len(self)}, "
                f"image={self.info.in_chans}x{self.info.image_size}x{self.info.image_size}, "
                f"classes={self.info.num_classes}, augment={self.augment}, on_bad={self.on_bad!r})")


class StreamingImageDataset(StreamingDataset):
    """Image files + labels; decodes ``files[i]`` with PIL when item i is read.

    ``files`` is a ``PathTable`` (or any sequence of paths), ``labels`` int64 [N].
    """

    def __init__(self, files: PathTable | Sequence[str | os.PathLike], labels: np.ndarray, info: DatasetInfo, *,
                 split: str, transform: Callable | None = None, augment: bool = False, on_bad: str = "error",
                 normalize: bool = True):
        super().__init__(info, split=split, transform=transform, augment=augment, on_bad=on_bad, normalize=normalize)
        if not isinstance(files, PathTable):
            folders = [os.path.dirname(os.path.abspath(f)) for f in files]
            files = PathTable(os.path.commonpath(folders) if folders else ".", [os.path.abspath(f) for f in files])
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.files):
            raise ConfigError(f"{len(self.files)} files but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.files)

    def where(self, index: int) -> str:
        return self.files[index]

    def read(self, index: int) -> tuple[Any, int]:
        return decode_image(self.files[index], self.mode), int(self.labels[index])


class TorchvisionStreamingDataset(StreamingDataset):
    """Items of torchvision dataset objects (their ``transform`` left None): PIL image, label.

    Several parts (e.g. Flowers-102's train + val) are read as one, in order.
    """

    def __init__(self, parts: Sequence[Dataset], labels: np.ndarray, info: DatasetInfo, *, split: str,
                 transform: Callable | None = None, augment: bool = False, on_bad: str = "error",
                 normalize: bool = True):
        super().__init__(info, split=split, transform=transform, augment=augment, on_bad=on_bad, normalize=normalize)
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])  # [parts + 1]
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, index: int) -> tuple[Dataset, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.parts[part], index - int(self.starts[part])

    def where(self, index: int) -> str:
        dataset, local = self._locate(index)
        for name in ("_image_files", "_images", "_samples", "samples", "imgs"):
            files = getattr(dataset, name, None)
            if files is not None and local < len(files):
                entry = files[local]
                return str(entry[0] if isinstance(entry, tuple) else entry)
        return super().where(index)

    def read(self, index: int) -> tuple[Any, int]:
        dataset, local = self._locate(index)
        image, _ = dataset[local]
        if image.mode != self.mode:
            image = image.convert(self.mode)
        return image, int(self.labels[index])


def warn_skipped(count: int, examples: list[BadSample], what: str) -> None:
    """One ``BadImageWarning`` for ``count`` skipped images of ``what``."""
    shown = "; ".join(f"{b.where} ({b.reason})" for b in examples[:3])
    warnings.warn(BadImageWarning(f"skipped {count} unreadable image(s) of {what} (on_bad='skip'): {shown}"),
                  stacklevel=3)


def materialize(dataset: StreamingDataset) -> tuple[torch.Tensor, torch.Tensor, list[BadSample]]:
    """Every item of ``dataset`` through its transform -> float32 [N, C, S, S], int64 [N], bad samples.

    Bad samples are dropped (the caller raises or warns by ``dataset.on_bad``).
    """
    size, chans = dataset.info.image_size, dataset.info.in_chans
    images = torch.empty(len(dataset), chans, size, size, dtype=torch.float32)
    labels = torch.empty(len(dataset), dtype=torch.int64)
    bad: list[BadSample] = []
    kept = 0
    for index in range(len(dataset)):
        item = dataset.load_item(index)
        if isinstance(item, BadSample):
            if dataset.on_bad == "error":
                raise BadImageError(item.message())
            bad.append(item)
            continue
        images[kept], labels[kept] = item
        kept += 1
    if kept < len(dataset):
        images, labels = images[:kept].clone(), labels[:kept].clone()
    return images, labels, bad

