"""The downstream datasets of the papers, by name, through torchvision's dataset classes.

``cifar10``, ``cifar100``, ``flowers102``, ``oxford-pets``, ``food101``, ``stanford-cars``,
``dtd``, ``stl10``, ``fgvc-aircraft``: one row each in ``DOWNSTREAM_DATASETS`` (the
torchvision class, the arguments of our "train" and "test" splits, the files it expects).
Items stream through ``StreamingDataset`` (PIL image -> transform) at 224 px by default, the
fine-tuning resolution of DeiT and the learngene papers, normalized with ImageNet's mean/std
(the ancestries are ImageNet models); ``image_size`` overrides it.

Splits: "train" is the split the papers fine-tune on, "test" the one they report: the
official train+val for Flowers-102 and DTD (partition 1), trainval for Oxford-IIIT Pets and
FGVC-Aircraft (variant level, 100 classes), train for the others; test is the official test
split (STL-10: the 8,000 labelled test images; its unlabelled split is not used).

Where the files are looked for: ``root=`` when given, else ``$LEARNGENE_DATA``, else the cache
folder (``$LEARNGENE_CACHE`` or ``~/.cache/learngene``), each passed as torchvision's ``root``.
Nothing is downloaded unless asked (``download=True`` or the spec option ``cifar10?download=1``);
a dataset that is not there is a one-line ``DatasetNotFoundError`` naming the files expected and
where they go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from learngene.errors import ConfigError, DatasetNotFoundError
from learngene.data.dataset import DatasetInfo
from learngene.data.sources import default_cache_dir
from learngene.data.streaming import IMAGENET_MEAN, IMAGENET_STD, TorchvisionStreamingDataset, grey_stats, one_line

# Fine-tuning resolution of DeiT and the learngene papers.
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class DownstreamDataset:
    """One row: a torchvision dataset class and how our two splits are made from it."""

    name: str
    torchvision_class: str  # a name in torchvision.datasets
    description: str
    num_classes: int
    num_train: int
    num_test: int
    splits: dict[str, tuple[dict[str, Any], ...]]  # our split -> torchvision kwargs of each part
    expected: str  # the files torchvision reads, relative to the root
    source: str  # where to get them
    can_download: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # kwargs of every part
    # torchvision numbers the classes of the split it reads (DTD) or names only those (Pets):
    # the test split then takes the train split's names, and must list the same ones
    split_lists_classes: bool = False

    def open_parts(self, split: str, root: Path, *, download: bool) -> list[Any]:
        """The torchvision dataset objects of ``split`` (transform None: they return PIL images)."""
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.torchvision_class)
        if download and not self.can_download:
            raise DatasetNotFoundError(f"{self.name}: torchvision cannot download it; {self._hint(root)}")
        parts = []
        for kwargs in self.splits[split]:
            try:
                parts.append(cls(str(root), **kwargs, **self.extra, download=download))
            except Exception as error:  # RuntimeError (not found / md5), OSError, network errors, bad files
                verb = "could not be downloaded" if download else "not found"
                raise DatasetNotFoundError(
                    f"{self.name} {verb} in {root} ({one_line(error)[:160]}): {self._hint(root)}"
                ) from None
        return parts

    def _hint(self, root: Path) -> str:
        fetch = "pass download=True (spec option ?download=1) on a machine online, or " if self.can_download else ""
        return (f"expected {root}/{self.expected}; {fetch}get them from {self.source} and put them there "
                "(the root is root=, else $LEARNGENE_DATA, else the cache folder)")


def _part_labels(dataset: Any) -> np.ndarray:
    """Labels of a torchvision dataset object without decoding its images."""
    for name in ("targets", "_labels", "labels"):
        labels = getattr(dataset, name, None)
        if labels is not None:
            return np.asarray(labels, dtype=np.int64).reshape(-1)
    samples = getattr(dataset, "_samples", None)  # StanfordCars: [(path, label)]
    if samples is not None:
        return np.asarray([label for _, label in samples], dtype=np.int64)
    raise ConfigError(f"cannot find the labels of {type(dataset).__name__} (torchvision changed?)")


def _row(name, cls, description, num_classes, num_train, num_test, train, test, expected, source,
         **kw) -> DownstreamDataset:
    return DownstreamDataset(name=name, torchvision_class=cls, description=description, num_classes=num_classes,
                             num_train=num_train, num_test=num_test, splits={"train": train, "test": test},
                             expected=expected, source=source, **kw)


DOWNSTREAM_DATASETS: dict[str, DownstreamDataset] = {row.name: row for row in (
    _row("cifar10", "CIFAR10", "CIFAR-10: 32x32 colour images, 10 classes, 50,000 train / 10,000 test",
         10, 50_000, 10_000, ({"train": True},), ({"train": False},),
         "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
         "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extracted)"),
    _row("cifar100", "CIFAR100", "CIFAR-100: 32x32 colour images, 100 classes, 50,000 train / 10,000 test",
         100, 50_000, 10_000, ({"train": True},), ({"train": False},),
         "cifar-100-python/{train,test,meta}",
         "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extracted)"),
    _row("flowers102", "Flowers102", "Oxford Flowers-102: 102 classes, train+val 2,040 / test 6,149",
         102, 2_040, 6_149, ({"split": "train"}, {"split": "val"}), ({"split": "test"},),
         "flowers-102/{jpg/image_NNNNN.jpg,imagelabels.mat,setid.mat}",
         "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz extracted, imagelabels.mat, setid.mat)"),
    _row("oxford-pets", "OxfordIIITPet", "Oxford-IIIT Pets: 37 breeds, trainval 3,680 / test 3,669",
         37, 3_680, 3_669, ({"split": "trainval"},), ({"split": "test"},),
         "oxford-iiit-pet/{images/*.jpg,annotations/trainval.txt,annotations/test.txt}",
         "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz and annotations.tar.gz extracted)",
         split_lists_classes=True),
    _row("food101", "Food101", "Food-101: 101 dishes, 75,750 train / 25,250 test",
         101, 75_750, 25_250, ({"split": "train"},), ({"split": "test"},),
         "food-101/{images/<class>/*.jpg,meta/train.json,meta/test.json}",
         "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz (extracted)"),
    _row("stanford-cars", "StanfordCars", "Stanford Cars: 196 models, 8,144 train / 8,041 test",
         196, 8_144, 8_041, ({"split": "train"},), ({"split": "test"},),
         "stanford_cars/{cars_train/,cars_test/,cars_test_annos_withlabels.mat,devkit/cars_meta.mat,"
         "devkit/cars_train_annos.mat}",
         "a mirror such as Kaggle's 'stanford-cars-dataset' (the original site is gone)", can_download=False),
    _row("dtd", "DTD", "Describable Textures: 47 classes, partition 1, train+val 3,760 / test 1,880",
         47, 3_760, 1_880, ({"split": "train"}, {"split": "val"}), ({"split": "test"},),
         "dtd/dtd/{images/<class>/*.jpg,labels/train1.txt,labels/val1.txt,labels/test1.txt}",
         "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz (extracted into dtd/)",
         extra={"partition": 1}, split_lists_classes=True),
    _row("stl10", "STL10", "STL-10: 96x96 colour images, 10 classes, 5,000 train / 8,000 test",
         10, 5_000, 8_000, ({"split": "train"},), ({"split": "test"},),
         "stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin,class_names.txt}",
         "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (extracted)"),
    _row("fgvc-aircraft", "FGVCAircraft", "FGVC-Aircraft: 100 variants, trainval 6,667 / test 3,333",
         100, 6_667, 3_333, ({"split": "trainval"},), ({"split": "test"},),
         "fgvc-aircraft-2013b/data/{images/,variants.txt,images_variant_trainval.txt,images_variant_test.txt}",
         "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz (extracted)",
         extra={"annotation_level": "variant"}),
)}


def downstream_root(root: str | os.PathLike | None) -> Path:
    """``root``, else ``$LEARNGENE_DATA``, else the cache folder."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("LEARNGENE_DATA"):
        return Path(os.environ["LEARNGENE_DATA"]).expanduser()
    return default_cache_dir()


def _class_names(row: DownstreamDataset, parts: list[Any]) -> tuple[str, ...]:
    names = getattr(parts[0], "classes", None)
    if not names:
        return tuple(str(i) for i in range(row.num_classes))
    return tuple(str(n) for n in names)


def open_downstream(row: DownstreamDataset, split: str, *, root: str | os.PathLike | None, download: bool,
                    image_size: int | None, in_chans: int | None) -> tuple[list[Any], np.ndarray, DatasetInfo]:
    """(torchvision parts, int64 labels [N], info) of one split; nothing is decoded."""
    folder = downstream_root(root)
    parts = row.open_parts(split, folder, download=download)
    names = _class_names(row, parts)
    if row.split_lists_classes and split != "train":
        own, names = names, _class_names(row, row.open_parts("train", folder, download=False))
        if own != names:
            raise DatasetNotFoundError(f"{row.name} in {folder}: the test split lists other classes than train; "
                                       f"the files are incomplete: {row._hint(folder)}")
    labels = np.concatenate([_part_labels(p) for p in parts])
    chans = in_chans or 3
    mean, std = grey_stats(IMAGENET_MEAN, IMAGENET_STD, chans)
    info = DatasetInfo(name=row.name, num_classes=len(names), class_names=names,
                       image_size=image_size or DEFAULT_IMAGE_SIZE, in_chans=chans, mean=mean, std=std,
                       num_train=len(labels) if split == "train" else None,
                       num_test=len(labels) if split == "test" else None)
    return parts, labels, info


def load_downstream(row: DownstreamDataset, split: str, *, root, download: bool, image_size: int | None,
                    in_chans: int | None, augment: bool, transform: Callable | None, on_bad: str,
                    normalize: bool = True) -> TorchvisionStreamingDataset:
    parts, labels, info = open_downstream(row, split, root=root, download=download, image_size=image_size,
                                          in_chans=in_chans)
    return TorchvisionStreamingDataset(parts, labels, info, split=split, transform=transform, augment=augment,
                                       on_bad=on_bad, normalize=normalize)
