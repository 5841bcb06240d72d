"""``imagefolder:PATH`` -- any folder of images sorted into one sub-folder per class.

Two layouts are recognised:

* ``PATH/<class>/<image>``: one pool of images. The split is fixed: per class,
  ``np.random.RandomState(0)`` permutes the class's files (sorted by path) and 20% of them
  (rounded, at most all but one) go to test (``processing.stratified_split``).
* ``PATH/train/<class>/<image>`` and ``PATH/test/<class>/<image>``: the split is given.
  Classes are the train sub-folders; a test class folder must also exist in train.

Class names are the sub-folder names, sorted (label i = i-th name, as in torchvision's
ImageFolder). Images are found recursively inside a class folder; their extension must be
one of ``IMAGE_EXTENSIONS`` (any case); hidden files and folders are skipped.

Channels: every image is converted by PIL to "L" (in_chans=1, luma) or "RGB" (in_chans=3).
Without ``in_chans``, the folder is grey (1) when every image is grey, else RGB (3).
Size: every image is resized (PIL bilinear, antialiased when shrinking) to
``image_size x image_size``; without ``image_size``, all images must share one square size,
which is kept. Normalization uses the per-channel mean/std of the train split as loaded
(computed once per folder, size and channel count, and remembered for this process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from learngene.errors import ConfigError, DatasetNotFoundError, LearngeneError
from learngene.data.dataset import DatasetInfo
from learngene.data.processing import compute_mean_std, stratified_split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# PIL modes with a single colour band (alpha ignored).
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}

_LAYOUT_HINT = "expected PATH/<class>/<image> or PATH/train/<class>/<image> + PATH/test/<class>/<image>"

# (folder, image_size, in_chans, hash of the train files' paths/sizes/mtimes) -> (mean, std)
_train_stats_cache: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


@dataclass(frozen=True)
class FolderListing:
    """The files of an image folder, split into train and test, with their labels."""

    folder: Path
    class_names: tuple[str, ...]
    files: dict[str, list[Path]]  # split -> image paths
    labels: dict[str, np.ndarray]  # split -> int64 [n]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _class_folders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)


def _image_files(class_folder: Path) -> list[Path]:
    """Image files anywhere below ``class_folder``, sorted by path."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(class_folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop (or a second link to a folder already listed): once only
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # do not descend into hidden folders
        for filename in filenames:
            if not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / filename)
    return sorted(found)


def _list_classes(folder: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """Files of every class folder ``folder/<name>`` that exists -> (paths, int64 labels)."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        class_folder = folder / name
        if class_folder.is_dir():
            class_files = _image_files(class_folder)
            files += class_files
            labels += [label] * len(class_files)
    return files, np.asarray(labels, dtype=np.int64)


def scan_image_folder(path: str | os.PathLike) -> FolderListing:
    """Find the classes and image files of ``path`` and make (or read) the train/test split."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DatasetNotFoundError(f"image folder {folder} does not exist: {_LAYOUT_HINT}")
    if not folder.is_dir():
        raise ConfigError(f"imagefolder:{path} is not a folder: {_LAYOUT_HINT}")
    train_dir, test_dir = folder / "train", folder / "test"
    has_split_folders = train_dir.is_dir() and test_dir.is_dir()
    if train_dir.is_dir() != test_dir.is_dir():
        present = "train" if train_dir.is_dir() else "test"
        raise ConfigError(f"{folder} has a {present}/ folder but not the other one: {_LAYOUT_HINT}")

    class_root = train_dir if has_split_folders else folder
    class_names = [p.name for p in _class_folders(class_root)]
    if not class_names:
        raise DatasetNotFoundError(f"no class sub-folders in {class_root}: {_LAYOUT_HINT}")
    all_files, all_labels = _list_classes(class_root, class_names)
    if not all_files:
        extensions = " ".join(IMAGE_EXTENSIONS)
        raise DatasetNotFoundError(f"no images ({extensions}) in the class folders of {class_root}: {_LAYOUT_HINT}")
    counts = np.bincount(all_labels, minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts) if count == 0]
    if empty:
        raise ConfigError(f"class folder {class_root / empty[0]} holds no images: add images or remove the folder")

    if has_split_folders:
        unknown = sorted(set(p.name for p in _class_folders(test_dir)) - set(class_names))
        if unknown:
            raise ConfigError(f"{test_dir / unknown[0]} is a class with no folder in {train_dir}")
        test_files, test_labels = _list_classes(test_dir, class_names)
        if not test_files:
            raise DatasetNotFoundError(f"no images in the class folders of {test_dir}: {_LAYOUT_HINT}")
        files = {"train": all_files, "test": test_files}
        labels = {"train": all_labels, "test": test_labels}
    else:
        train, test = stratified_split(all_labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
        files = {"train": [all_files[i] for i in train], "test": [all_files[i] for i in test]}
        labels = {"train": all_labels[train], "test": all_labels[test]}
    return FolderListing(folder=folder, class_names=tuple(class_names), files=files, labels=labels)


def _unreadable(path: Path, error: BaseException) -> LearngeneError:
    return LearngeneError(f"cannot read image {path} ({_one_line(error)}): replace or remove the file")


def native_size_and_chans(files: list[Path]) -> tuple[int | None, int, str]:
    """Read only the image headers -> (common square side or None, 1 or 3 channels, size note).

    The side is None when the images differ in size or are not square; the note then says
    which sizes were seen, for the error message.
    """
    from PIL import Image

    sizes: dict[tuple[int, int], Path] = {}
    all_grey = True
    for path in files:
        try:
            with Image.open(path) as image:  # reads the header, not the pixels
                sizes.setdefault(image.size, path)
                all_grey = all_grey and image.mode in GREY_MODES
        except Exception as error:  # PIL raises many kinds (UnidentifiedImageError, OSError, ...)
            raise _unreadable(path, error) from None
    in_chans = 1 if all_grey else 3
    if len(sizes) == 1:
        (width, height), path = next(iter(sizes.items()))
        if width == height:
            return width, in_chans, f"{width}x{height}"
        return None, in_chans, f"{width}x{height} (not square)"
    examples = ", ".join(f"{w}x{h} ({p.name})" for (w, h), p in list(sizes.items())[:3])
    return None, in_chans, f"several sizes: {examples}"


def load_image_files(files: list[Path], *, image_size: int, in_chans: int) -> np.ndarray:
    """Decode, convert and resize every file -> uint8 [N, in_chans, image_size, image_size]."""
    from PIL import Image

    mode = "L" if in_chans == 1 else "RGB"
    pixels = np.empty((len(files), in_chans, image_size, image_size), dtype=np.uint8)
    for index, path in enumerate(files):
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if image.size != (image_size, image_size):
                    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                array = np.asarray(image)  # [S, S] for "L", [S, S, 3] for "RGB"
        except Exception as error:
            raise _unreadable(path, error) from None
        pixels[index] = array[None] if in_chans == 1 else array.transpose(2, 0, 1)
    return pixels


def _final_size_and_chans(
    listing: FolderListing, image_size: int | None, in_chans: int | None
) -> tuple[int, int]:
    """``image_size`` / ``in_chans`` when given, else the folder's native ones (headers only)."""
    if image_size is not None and in_chans is not None:
        return image_size, in_chans
    native_size, native_chans, size_note = native_size_and_chans(listing.files["train"] + listing.files["test"])
    if image_size is None and native_size is None:
        raise ConfigError(
            f"images in {listing.folder} have {size_note}: pass image_size=N to resize them all to NxN"
        )
    return image_size or native_size, in_chans or native_chans  # type: ignore[return-value]


def _train_stats(
    listing: FolderListing, image_size: int, in_chans: int, train_pixels: np.ndarray | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of the train split as loaded; remembered for this process.

    The memo key includes every train file's path, size and modification time, so an
    edited folder is measured again.
    """
    fingerprint = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in listing.files["train"])
    key = (str(listing.folder.resolve()), image_size, in_chans, hash(fingerprint))
    if key not in _train_stats_cache:
        if train_pixels is None:
            train_pixels = load_image_files(listing.files["train"], image_size=image_size, in_chans=in_chans)
        _train_stats_cache[key] = compute_mean_std(train_pixels)
    return _train_stats_cache[key]


def _info(spec: str, listing: FolderListing, image_size: int, in_chans: int, stats: tuple) -> DatasetInfo:
    mean, std = stats
    return DatasetInfo(
        name=spec,
        num_classes=len(listing.class_names),
        class_names=listing.class_names,
        image_size=image_size,
        in_chans=in_chans,
        mean=mean,
        std=std,
        num_train=len(listing.files["train"]),
        num_test=len(listing.files["test"]),
    )


@dataclass(frozen=True)
class ImageFolderSource:
    """The registry entry for the ``imagefolder:PATH`` pattern."""

    prefix: str = "imagefolder"
    usage: str = "imagefolder:PATH"
    description: str = "a folder of class sub-folders of images (or PATH/train + PATH/test)"

    def describe(self, path: str, *, image_size: int | None, in_chans: int | None) -> DatasetInfo:
        """Info of the images as they would load; measures the train split (loads its pixels once)."""
        listing = scan_image_folder(path)
        size, chans = _final_size_and_chans(listing, image_size, in_chans)
        return _info(f"{self.prefix}:{path}", listing, size, chans, _train_stats(listing, size, chans))

    def read(
        self,
        path: str,
        split: str,
        *,
        root: str | os.PathLike | None,
        image_size: int | None,
        in_chans: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
        """-> uint8 [N, C, S, S] already at the final size and channels, int64 [N], info.

        ``root`` is not used (the path is part of the spec).
        """
        listing = scan_image_folder(path)
        size, chans = _final_size_and_chans(listing, image_size, in_chans)
        pixels = load_image_files(listing.files[split], image_size=size, in_chans=chans)
        stats = _train_stats(listing, size, chans, pixels if split == "train" else None)
        info = _info(f"{self.prefix}:{path}", listing, size, chans, stats)
        return torch.from_numpy(pixels), torch.from_numpy(listing.labels[split]), info
