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

That is the in-memory path, for small folders. A folder whose float32 tensor (both splits)
would exceed ``IN_MEMORY_MAX_BYTES``, or any folder loaded with ``memory=False``
(``imagefolder:PATH?memory=0``) or a ``transform``, is *streamed* instead: a
``StreamingImageDataset`` holding the file list and labels, each image decoded when read
(``learngene.data.streaming``: resize + centre-crop, or the train augmentation; ImageNet's
mean/std; RGB unless in_chans=1; 224 px unless image_size is given). ``memory=True`` forces
the in-memory path. The split and the labels are the same either way.

``imagenet:PATH`` is the same source with ImageNet's layout: ``PATH/train/<wnid>/`` and
``PATH/val/<wnid>/`` (val is the test split; the flat validation folder must first be
sorted into class folders), streamed at 224 px by default.

Bad files: an image that cannot be decoded (truncated, corrupt, not an image, unreadable)
is a ``BadImageError`` naming it, or with ``on_bad="skip"`` is left out and counted in a
``BadImageWarning``; an empty class folder is a ``ConfigError``, or with ``on_bad="skip"`` a
warning (the class keeps its label).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from learngene.errors import ConfigError, DatasetNotFoundError
from learngene.data.dataset import DatasetInfo, ImageDataset
from learngene.data.processing import compute_mean_std, stratified_split, to_float_images
from learngene.data.streaming import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BadImageError,
    BadImageWarning,
    BadSample,
    PathTable,
    StreamingImageDataset,
    bad_reason,
    decode_image,
    grey_stats,
    warn_skipped,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# PIL modes with a single colour band (alpha ignored).
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}

# A folder is decoded into memory when its float32 tensor (both splits) takes at most this much.
IN_MEMORY_MAX_BYTES = 512 * 2**20
# A streamed folder's side when no image_size is given: the papers' resolution.
STREAMED_IMAGE_SIZE = 224

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


def scan_image_folder(path: str | os.PathLike, *, test_folder: str = "test", split_required: bool = False,
                      hint: str = _LAYOUT_HINT, on_bad: str = "error") -> FolderListing:
    """Find the classes and image files of ``path`` and make (or read) the train/test split.

    ``test_folder``: the name of the test split's folder ("val" for ImageNet);
    ``split_required``: the flat layout is refused; ``on_bad="skip"``: an empty class folder is
    a warning (its class keeps its label, with no images), not an error.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DatasetNotFoundError(f"image folder {folder} does not exist: {hint}")
    if not folder.is_dir():
        raise ConfigError(f"{path} is not a folder: {hint}")
    train_dir, test_dir = folder / "train", folder / test_folder
    has_split_folders = train_dir.is_dir() and test_dir.is_dir()
    if train_dir.is_dir() != test_dir.is_dir() or (split_required and not has_split_folders):
        present = "train/ folder but not " + test_folder if train_dir.is_dir() else (
            f"{test_folder}/ folder but not train" if test_dir.is_dir() else f"neither train/ nor {test_folder}/")
        raise ConfigError(f"{folder} has a {present}: {hint}")

    class_root = train_dir if has_split_folders else folder
    class_names = [p.name for p in _class_folders(class_root)]
    if not class_names:
        raise DatasetNotFoundError(f"no class sub-folders in {class_root}: {hint}")
    all_files, all_labels = _list_classes(class_root, class_names)
    if not all_files:
        extensions = " ".join(IMAGE_EXTENSIONS)
        raise DatasetNotFoundError(f"no images ({extensions}) in the class folders of {class_root}: {hint}")
    counts = np.bincount(all_labels, minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts) if count == 0]
    if empty and on_bad != "skip":
        raise ConfigError(f"class folder {class_root / empty[0]} holds no images: add images or remove the folder "
                          "(or pass on_bad='skip' to keep its class with no images)")
    if empty:
        warnings.warn(BadImageWarning(f"{len(empty)} empty class folder(s) in {class_root} ({', '.join(empty[:3])}): "
                                      "their classes keep their labels, with no images (on_bad='skip')"), stacklevel=2)

    if has_split_folders:
        unknown = sorted(set(p.name for p in _class_folders(test_dir)) - set(class_names))
        if unknown:
            raise ConfigError(f"{test_dir / unknown[0]} is a class with no folder in {train_dir}")
        test_files, test_labels = _list_classes(test_dir, class_names)
        if not test_files:
            raise DatasetNotFoundError(f"no images in the class folders of {test_dir}: {hint}")
        files = {"train": all_files, "test": test_files}
        labels = {"train": all_labels, "test": test_labels}
    else:
        train, test = stratified_split(all_labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
        files = {"train": [all_files[i] for i in train], "test": [all_files[i] for i in test]}
        labels = {"train": all_labels[train], "test": all_labels[test]}
    return FolderListing(folder=folder, class_names=tuple(class_names), files=files, labels=labels)


def _bad(path: Path, error: BaseException) -> BadSample:
    return BadSample(-1, str(path), bad_reason(error))


def native_size_and_chans(files: list[Path], on_bad: str = "error") -> tuple[int | None, int, str]:
    """Read only the image headers -> (common square side or None, 1 or 3 channels, size note).

    The side is None when the images differ in size or are not square; the note then says
    which sizes were seen, for the error message. An unreadable header raises
    ``BadImageError``, or is passed over with ``on_bad="skip"`` (it is skipped when decoded).
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
            if on_bad != "skip":
                raise BadImageError(_bad(path, error).message()) from None
    in_chans = 1 if all_grey else 3
    if len(sizes) == 1:
        (width, height), path = next(iter(sizes.items()))
        if width == height:
            return width, in_chans, f"{width}x{height}"
        return None, in_chans, f"{width}x{height} (not square)"
    examples = ", ".join(f"{w}x{h} ({p.name})" for (w, h), p in list(sizes.items())[:3])
    return None, in_chans, f"several sizes: {examples}"


def load_image_files(files: list[Path], *, image_size: int, in_chans: int,
                     on_bad: str = "error") -> tuple[np.ndarray, list[BadSample]]:
    """Decode, convert and resize every file -> (uint8 [n, in_chans, S, S], the unreadable files).

    A bad file raises ``BadImageError``; with ``on_bad="skip"`` it is left out (``n`` counts
    the readable ones) and returned with its index in ``files``.
    """
    from PIL import Image

    mode = "L" if in_chans == 1 else "RGB"
    pixels = np.empty((len(files), in_chans, image_size, image_size), dtype=np.uint8)
    bad: list[BadSample] = []
    for index, path in enumerate(files):
        try:
            image = decode_image(path, mode)
        except Exception as error:  # see native_size_and_chans
            sample = BadSample(index, str(path), bad_reason(error))
            if on_bad != "skip":
                raise BadImageError(sample.message()) from None
            bad.append(sample)
            continue
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        array = np.asarray(image)  # [S, S] for "L", [S, S, 3] for "RGB"
        pixels[index - len(bad)] = array[None] if in_chans == 1 else array.transpose(2, 0, 1)
    return (pixels[: len(files) - len(bad)] if bad else pixels), bad


def _final_size_and_chans(
    listing: FolderListing, image_size: int | None, in_chans: int | None, on_bad: str = "error"
) -> tuple[int, int]:
    """``image_size`` / ``in_chans`` when given, else the folder's native ones (headers only)."""
    if image_size is not None and in_chans is not None:
        return image_size, in_chans
    native_size, native_chans, size_note = native_size_and_chans(
        listing.files["train"] + listing.files["test"], on_bad)
    if image_size is None and native_size is None:
        raise ConfigError(
            f"images in {listing.folder} have {size_note}: pass image_size=N to resize them all to NxN"
        )
    return image_size or native_size, in_chans or native_chans  # type: ignore[return-value]


def _train_stats(
    listing: FolderListing, image_size: int, in_chans: int, train_pixels: np.ndarray | None = None,
    on_bad: str = "error",
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of the train split as loaded; remembered for this process.

    The memo key includes every train file's path, size and modification time, so an
    edited folder is measured again.
    """
    fingerprint = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in listing.files["train"])
    key = (str(listing.folder.resolve()), image_size, in_chans, hash(fingerprint))
    if key not in _train_stats_cache:
        if train_pixels is None:
            train_pixels, _ = load_image_files(listing.files["train"], image_size=image_size, in_chans=in_chans,
                                               on_bad=on_bad)
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
class FolderOptions:
    """How one ``load_dataset`` call reads a folder (from the keywords and the spec's ``?options``)."""

    memory: bool | None = None  # True: decode into memory; False: stream; None: by size (IN_MEMORY_MAX_BYTES)
    on_bad: str = "error"  # "error" or "skip"
    transform: Callable | None = None  # a streaming dataset's per-image transform (forces streaming)


@dataclass(frozen=True)
class ImageFolderSource:
    """The registry entry for the ``imagefolder:PATH`` pattern (and, with other fields, ``imagenet:PATH``).

    Small folders are decoded into memory (a pre-tensorized ``ImageDataset``: squashed to S x S,
    normalized with the folder's own train statistics); a folder whose float32 tensor would
    exceed ``IN_MEMORY_MAX_BYTES`` (files x channels x S x S x 4 bytes, both splits), or any
    folder with ``memory=False`` (``?memory=0``) or a ``transform``, streams
    (``StreamingImageDataset``: resize + centre-crop or the train augmentation, ImageNet's
    mean/std; RGB unless in_chans=1; 224 px unless image_size is given).
    """

    prefix: str = "imagefolder"
    usage: str = "imagefolder:PATH"
    description: str = ("a folder of class sub-folders of images (or PATH/train + PATH/test); "
                        "options ?memory=0|1&on_bad=skip")
    test_folder: str = "test"
    split_required: bool = False
    hint: str = _LAYOUT_HINT
    default_image_size: int | None = None  # None: the folder's own (all images one square size)
    default_memory: bool | None = None  # None: by size

    def _scan(self, path: str, options: FolderOptions) -> FolderListing:
        return scan_image_folder(path, test_folder=self.test_folder, split_required=self.split_required,
                                 hint=self.hint, on_bad=options.on_bad)

    def _plan(self, listing: FolderListing, image_size: int | None, in_chans: int | None,
              options: FolderOptions) -> tuple[bool, int, int]:
        """-> (in memory?, final size, final channels)."""
        memory = self.default_memory if options.memory is None else options.memory
        if options.transform is not None:
            if memory:
                raise ConfigError("a transform applies to streamed images: drop memory=1 (or the transform)")
            memory = False
        image_size = image_size or self.default_image_size
        if memory is None:  # by the size of the float32 tensor; 3 channels when unknown (an upper bound)
            size = image_size or _final_size_and_chans(listing, None, in_chans, options.on_bad)[0]  # headers
            count = len(listing.files["train"]) + len(listing.files["test"])
            memory = count * (in_chans or 3) * size * size * 4 <= IN_MEMORY_MAX_BYTES
        if memory:
            size, chans = _final_size_and_chans(listing, image_size, in_chans, options.on_bad)  # headers if needed
        else:  # streamed: no header is read
            size, chans = image_size or STREAMED_IMAGE_SIZE, in_chans or 3
        return memory, size, chans

    def describe(self, path: str, *, image_size: int | None, in_chans: int | None,
                 options: FolderOptions = FolderOptions()) -> DatasetInfo:
        """Info of the images as they would load; in memory, measures the train split (loads its pixels once)."""
        listing = self._scan(path, options)
        memory, size, chans = self._plan(listing, image_size, in_chans, options)
        if memory:
            stats = _train_stats(listing, size, chans, on_bad=options.on_bad)
        else:
            stats = grey_stats(IMAGENET_MEAN, IMAGENET_STD, chans)
        return _info(f"{self.prefix}:{path}", listing, size, chans, stats)

    def load(self, path: str, split: str, *, image_size: int | None, in_chans: int | None, augment: bool,
             normalize: bool, options: FolderOptions) -> ImageDataset | StreamingImageDataset:
        listing = self._scan(path, options)
        memory, size, chans = self._plan(listing, image_size, in_chans, options)
        name = f"{self.prefix}:{path}"
        if not memory:
            info = _info(name, listing, size, chans, grey_stats(IMAGENET_MEAN, IMAGENET_STD, chans))
            files = PathTable(listing.folder, listing.files[split])
            return StreamingImageDataset(files, listing.labels[split], info, split=split, transform=options.transform,
                                         augment=augment, on_bad=options.on_bad, normalize=normalize)
        pixels, bad = load_image_files(listing.files[split], image_size=size, in_chans=chans, on_bad=options.on_bad)
        labels = listing.labels[split]
        if bad:
            labels = np.delete(labels, [b.index for b in bad])
            warn_skipped(len(bad), bad, f"{name} ({split})")
        stats = _train_stats(listing, size, chans, pixels if split == "train" else None, on_bad=options.on_bad)
        info = _info(name, listing, size, chans, stats)
        images = to_float_images(torch.from_numpy(pixels), image_size=size, in_chans=chans,
                                 mean=info.mean if normalize else None, std=info.std if normalize else None)
        return ImageDataset(images, torch.from_numpy(labels), info, split=split, augment=augment)


IMAGENET_HINT = ("expected PATH/train/<wnid>/*.JPEG and PATH/val/<wnid>/*.JPEG (the validation images sorted "
                 "into class folders, e.g. by the valprep.sh script of the PyTorch ImageNet example)")

IMAGENET = ImageFolderSource(
    prefix="imagenet",
    usage="imagenet:PATH",
    description="ImageNet's train/ + val/ class folders (val = the test split), streamed at 224 px; "
                "options ?memory=1&on_bad=skip",
    test_folder="val",
    split_required=True,
    hint=IMAGENET_HINT,
    default_image_size=224,
    default_memory=False,
)
