"""Batches for the training loop: data order, rank sharding, tensor fast path, DataLoader fallback.

Data order is a pure function of (seed, epoch): every epoch draws
``torch.randperm(n, generator=Generator().manual_seed(seed * 1000003 + epoch))``, keeps
the first ``steps * B`` indices (B = global batch; the last incomplete global batch is
dropped) and cuts them into ``steps`` global batches of B. Rank r of N takes the r-th
contiguous chunk of B/N from each global batch, so one process with batch B and N
processes with B/N each see exactly the same samples at every step.

"Tensor datasets" -- anything with ``.images`` float [N,C,H,W] and ``.labels`` int64 [N]
tensors (the learngene.data registry's pre-tensorized datasets), or a 2-tensor
``TensorDataset`` -- are indexed directly: no DataLoader, no workers, no collation.
Training on CUDA, such a dataset is copied to the GPU once when it takes at most a
quarter of the free GPU memory (batches are then gathered there: no host-to-device copy
per step); otherwise each gathered batch is put in pinned memory so that its copy to the
GPU is asynchronous. Any other map-style Dataset of (image, label) -- learngene.data's
streaming datasets among them -- goes through a DataLoader driven by the same index lists
(``pin_memory`` on CUDA, ``num_workers`` persistent workers, randomness seeded per sample:
``LoaderSource``).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from learngene.data.streaming import BadImageError, BadSample, warn_skipped
from learngene.data.tensors import tensor_pair
from learngene.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]  # images [b,C,H,W] float, labels [b] int64


def order_seed(seed: int, epoch: int) -> int:
    """Seed of the epoch's data permutation."""
    return seed * 1000003 + epoch


def stream_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """Seed of another per-epoch random stream of one rank.

    Streams: 1 augmentation generator, 2 global torch RNG (dropout / drop-path),
    3 numpy, 4 python ``random``, 5 DataLoader worker seeds, 6 Mixup/CutMix and
    7 RandAugment / random erasing (``train.augment.RandomStream``).
    """
    return ((order_seed(seed, epoch) * 31 + stream) * 65537 + rank) % (2**63)


def epoch_batches(
    n: int, *, global_batch: int, seed: int, epoch: int, rank: int, world_size: int, repeats: int = 1
) -> list[torch.Tensor]:
    """This rank's index tensors ([B // world_size] int64 each) for every step of ``epoch``.

    ``repeats`` > 1 is repeated augmentation (DeiT's RASampler): the epoch's permutation with
    every index repeated ``repeats`` times in a row, ``[p0, p0, p0, p1, p1, p1, ...]``, is the
    stream the global batches are cut from; the epoch keeps ``n // B`` steps, so it sees about
    n / repeats distinct samples, each ``repeats`` times with independent augmentations. Rank r
    takes every ``world_size``-th element of each global batch, starting at r (RASampler's
    ``indices[rank::num_replicas]``), which sends the copies of a sample to different ranks.
    The global batches are the same for any world size; RASampler's padding to a multiple of
    the world size and its drop to a multiple of 256 are replaced by our drop of the last
    incomplete global batch.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed(seed, epoch)))
    steps = n // global_batch
    local = global_batch // world_size
    if repeats > 1:
        stream = perm.repeat_interleave(repeats)[: steps * global_batch]  # [steps * B]
        grid = stream.view(steps, global_batch)  # [steps, B]
        return list(grid[:, rank::world_size].unbind(0))
    grid = perm[: steps * global_batch].view(steps, global_batch)  # [steps, B]
    return list(grid[:, rank * local : (rank + 1) * local].unbind(0))


def epoch_copies(
    n: int, *, global_batch: int, rank: int, world_size: int, repeats: int = 1
) -> list[torch.Tensor] | None:
    """For each element of ``epoch_batches``' lists (same arguments), which copy of its sample it
    is under repeated augmentation (0 .. repeats - 1, from its place in the global stream, so
    the same for any world size); None when ``repeats`` is 1. A decoding dataset seeds each
    copy's transform differently, so the copies are augmented independently."""
    if repeats <= 1:
        return None
    steps = n // global_batch
    grid = (torch.arange(steps * global_batch) % repeats).view(steps, global_batch)  # [steps, B]
    return list(grid[:, rank::world_size].unbind(0))


# A tensor dataset moves to the GPU when it takes at most this share of the free GPU memory.
DEVICE_RESIDENT_SHARE = 0.25


class TensorSource:
    """Direct indexing of in-memory tensors (the fast path)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: Callable | None,
                 device: torch.device | None = None):
        if images.dim() != 4:
            raise ConfigError(f"dataset images must be [N,C,H,W], got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ConfigError(
                f"dataset labels must be [N] matching {images.shape[0]} images, got shape {tuple(labels.shape)}"
            )
        self.images = images if images.is_floating_point() else images.float()
        self.labels = labels.long()
        self.augment = augment
        self.pin_memory = False
        if device is not None and device.type == "cuda":
            self._place_on(device)

    def _place_on(self, device: torch.device) -> None:
        """Keep the tensors on the GPU if they fit the budget, else pin each batch (see module doc)."""
        nbytes = self.images.nbytes + self.labels.nbytes
        free_bytes, _ = torch.cuda.mem_get_info(device)
        if nbytes <= DEVICE_RESIDENT_SHARE * free_bytes:
            self.images, self.labels = self.images.to(device), self.labels.to(device)
        else:
            self.pin_memory = True

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self) -> torch.Tensor:
        return self.images[:1]

    def max_label(self) -> int | None:
        return int(self.labels.max()) if len(self) else None

    def batches(self, index_lists: list[torch.Tensor], aug_gen: torch.Generator | None,
                worker_seed: int = 0, copies: list[torch.Tensor] | None = None) -> Iterator[Batch]:
        for idx in index_lists:
            x, y = self.images[idx], self.labels[idx]  # [b,C,H,W] and [b], gathered copies (on the GPU if resident)
            if self.augment is not None and aug_gen is not None:
                x = self.augment(x, aug_gen)
            if self.pin_memory:  # page-locked: the loop's .to(device, non_blocking=True) is then asynchronous
                x, y = x.pin_memory(), y.pin_memory()
            yield x, y


class _EpochBatches:
    """A batch sampler whose batches are replaced before every pass (a DataLoader keeps its
    sampler for life, and a persistent-worker DataLoader must be reused to keep its workers)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def sample_seed(worker_seed: int, index: int) -> int:
    """Seed of the random draws made while reading sample ``index`` in one pass (< 2**63)."""
    return (worker_seed * 0x9E3779B1 + index) % (2**63)


class _SeededItems(Dataset):
    """``dataset`` read by ``(index, seed)`` keys: the torch CPU, numpy and ``random`` RNGs are
    seeded with ``seed`` before the item is read, so a random transform draws the same numbers
    whichever worker reads it, with any number of workers, before or after a resume.

    Read in the main process (num_workers=0), the RNG states are restored afterwards: they
    belong to the training loop (dropout / drop-path). Only the CPU generator is seeded, never
    CUDA's (``torch.manual_seed`` would reseed those too). Items come from ``load_item`` when the
    dataset has it (learngene.data's streaming datasets: a bad image gives a ``BadSample``).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.load = getattr(dataset, "load_item", None) or dataset.__getitem__

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        in_main = get_worker_info() is None
        if in_main:
            saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.load(index)
        finally:
            if in_main:
                torch.set_rng_state(saved[0])
                np.random.set_state(saved[1])
                random.setstate(saved[2])


def _collate_good(items: list) -> tuple[Any, Any, list[BadSample]]:
    """default_collate of the readable items -> (images, labels, the BadSamples); (None, None, bad)
    when none was readable."""
    bad = [item for item in items if isinstance(item, BadSample)]
    good = [item for item in items if not isinstance(item, BadSample)]
    if not good:
        return None, None, bad
    images, labels = default_collate(good)
    return images, labels, bad


class LoaderSource:
    """Any map-style Dataset of (image, label): a DataLoader fed our own index lists.

    With ``num_workers > 0`` one DataLoader with persistent workers serves every pass (no
    worker start-up per epoch); its batch sampler is refilled before each pass. Randomness in
    the dataset's transform is seeded per sample from ``(worker_seed, index)`` (``_SeededItems``),
    so it does not depend on which worker reads a sample, nor on how many there are: a run
    resumed at an epoch boundary (even with another num_workers) reads the same augmented
    images as an uninterrupted one.

    Bad images (a ``BadSample`` from ``load_item``): ``dataset.on_bad == "skip"`` drops them
    from their batch (a batch left empty is not yielded), counts them in ``skipped`` and warns
    once per pass; otherwise a ``BadImageError`` naming the file is raised in this process.
    """

    def __init__(self, dataset: Dataset, *, num_workers: int, pin_memory: bool, augment: Callable | None):
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.augment = augment
        self.skipped = 0  # bad images dropped so far, all passes
        self._sampler = _EpochBatches()
        self._loader: DataLoader | None = None
        try:
            self.n = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError(
                f"{type(dataset).__name__} has no len(); fit needs a map-style Dataset of (image, label)"
            ) from None

    def __len__(self) -> int:
        return self.n

    def _skipping(self) -> bool:
        return getattr(self.dataset, "on_bad", "error") == "skip"

    def sample(self) -> torch.Tensor:
        """The first readable sample, [1, C, H, W] (bad ones skipped when the dataset skips them)."""
        load = getattr(self.dataset, "load_item", None)
        if load is None:
            return torch.as_tensor(self.dataset[0][0]).unsqueeze(0)
        for index in range(self.n):
            item = load(index)
            if not isinstance(item, BadSample):
                return torch.as_tensor(item[0]).unsqueeze(0)
            if not self._skipping():
                raise BadImageError(item.message())
        raise BadImageError(f"no image of {getattr(self.dataset, 'info', self.dataset)} can be read")

    def max_label(self) -> int | None:
        labels = getattr(self.dataset, "labels", None)  # learngene.data's streaming datasets list them
        if isinstance(labels, (np.ndarray, torch.Tensor)) and len(labels) == self.n and self.n:
            return int(labels.max())
        return None  # unknown without a full pass; cross_entropy will complain if out of range

    def _get_loader(self) -> DataLoader:
        if self._loader is None or self.num_workers == 0:
            # Its own generator: the DataLoader draws its workers' base seed from it instead of
            # from the global torch RNG, which must stay reserved for dropout / drop-path.
            self._loader = DataLoader(
                _SeededItems(self.dataset),
                batch_sampler=self._sampler,
                num_workers=self.num_workers,
                collate_fn=_collate_good,
                pin_memory=self.pin_memory,
                persistent_workers=self.num_workers > 0,
                generator=torch.Generator().manual_seed(0),
            )
        return self._loader

    def batches(self, index_lists: list[torch.Tensor], aug_gen: torch.Generator | None,
                worker_seed: int = 0, copies: list[torch.Tensor] | None = None) -> Iterator[Batch]:
        """``copies``: per element, which repeated-augmentation copy it is (``epoch_copies``);
        copy k of sample i is seeded as item i + k * n, so its transform draws afresh."""
        copies = copies if copies is not None else [torch.zeros_like(idx) for idx in index_lists]
        self._sampler.batches = [[(i, sample_seed(worker_seed, i + k * self.n)) for i, k in zip(idx.tolist(), c.tolist())]
                                 for idx, c in zip(index_lists, copies, strict=True)]
        skipped: list[BadSample] = []
        for x, y, bad in self._get_loader():
            if bad:
                if not self._skipping():
                    raise BadImageError(bad[0].message())
                skipped += bad
            if x is None:
                continue
            x = torch.as_tensor(x).float()
            if self.augment is not None and aug_gen is not None:
                x = self.augment(x, aug_gen)
            yield x, torch.as_tensor(y).long()
        if skipped:
            self.skipped += len(skipped)
            info = getattr(self.dataset, "info", None)
            warn_skipped(len(skipped), skipped, f"{getattr(info, 'name', type(self.dataset).__name__)} in this pass")


def as_source(data: object, *, num_workers: int = 0, pin_memory: bool = False,
              device: torch.device | None = None) -> TensorSource | LoaderSource:
    """The batch source for ``data``. ``device``: where training runs (a CUDA device lets a
    tensor dataset live on the GPU, see the module doc); ``pin_memory`` applies to DataLoaders."""
    # Batch augmentation hook of learngene.data datasets: augment_batch(images [b,C,H,W],
    # generator) -> images. Skipped when the dataset says augment=False.
    augment = getattr(data, "augment_batch", None)
    augment = augment if callable(augment) and getattr(data, "augment", None) is not False else None
    pair = tensor_pair(data)  # .images/.labels tensors or a 2-tensor TensorDataset
    if pair is not None:
        return TensorSource(*pair, augment, device)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return LoaderSource(data, num_workers=num_workers, pin_memory=pin_memory,  # type: ignore[arg-type]
                            augment=augment)
    raise ConfigError(
        f"cannot train on a {type(data).__name__}: pass a Dataset of (image, label), a TensorDataset(images, "
        "labels), or an object with .images [N,C,H,W] and .labels [N] tensors"
    )


def eval_batches(
    source: TensorSource | LoaderSource, *, batch_size: int, rank: int, world_size: int
) -> Iterator[Batch]:
    """Every sample exactly once, split into contiguous per-rank chunks (none dropped)."""
    mine = torch.arange(len(source)).tensor_split(world_size)[rank]
    return source.batches(list(mine.split(batch_size)), None)
