"""DeiT's augmentations with timm's components: RandAugment, random erasing, Mixup/CutMix.

timm's implementations draw from the *global* random streams: RandAugment from python's
``random`` (and numpy for weighted op choice), RandomErasing from ``random`` and the torch CPU
generator (its noise), Mixup from numpy. ``RandomStream`` gives each of them a private
(python, numpy, torch) state seeded per (seed, epoch, rank) by the loop and swaps it in only
around the call, so their draws are a function of that seed and of the batches seen so far,
and never shift the dropout / drop-path stream (the global torch RNG) or user code's draws.
A run resumed at an epoch boundary therefore replays them exactly.

Two places can apply RandAugment and random erasing (both from the same TrainConfig fields):

* ``BatchAugment``: the batch-tensor hook the loop applies to every training batch, for
  in-memory tensor datasets. It takes normalized images ``[b,C,H,W]``, un-normalizes each to
  8-bit PIL (the dataset's ``.info.mean/.std``), runs timm's RandAugment, normalizes back, then
  erases. Per image on the CPU, as DeiT's dataset transforms are.
* ``train_transform``: a per-image PIL pipeline (timm ``create_transform``) for datasets that
  decode images themselves (streaming image folders). Such a dataset sets
  ``applies_train_transform = True``; the loop then skips ``BatchAugment`` (no double
  augmentation), while Mixup/CutMix, which need the batch, stay in the loop.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing

from learngene.errors import ConfigError
from learngene.train.config import TrainConfig


class RandomStream:
    """A private state of python ``random``, numpy and the torch CPU generator.

    ``with stream.active():`` swaps it in for the global states and, on exit, keeps the
    advanced state and puts the caller's back.
    """

    def __init__(self, seed: int):
        self.python = random.Random(seed).getstate()
        self.numpy = np.random.RandomState(seed % 2**32).get_state()
        self.torch = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        try:
            yield
        finally:
            self.python, self.numpy, self.torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize, also for 0 bits kept: RandAugment's PosterizeIncreasing at magnitude 10
    (reached by m9 with mstd noise) asks for 0 bits, which Pillow < 10 turned into a black image
    and Pillow >= 10 refuses; keep the old result."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def rand_augment(config_str: str, *, image_size: int, mean: Sequence[float]):
    """timm's RandAugment for ``config_str`` with timm create_transform's hparams: translate up to
    45% of the image, fill with the mean colour (``mean`` in pixel / 255 units, one per channel),
    bicubic resampling."""
    hparams = dict(translate_const=int(image_size * 0.45), img_mean=tuple(min(255, round(255 * m)) for m in mean),
                   interpolation=Image.Resampling.BICUBIC)  # create_transform's, as DeiT's (else timm picks at random)
    try:
        transform = rand_augment_transform(config_str, hparams)
    except (AssertionError, ValueError, KeyError) as e:
        raise ConfigError(
            f"TrainConfig.rand_augment {config_str!r} is not a timm RandAugment string ({e}); "
            "use e.g. 'rand-m9-mstd0.5-inc1' (DeiT's)"
        ) from None
    return _with_safe_posterize(transform)


def _with_safe_posterize(rand_aug: Any) -> Any:
    """``rand_aug`` (timm's RandAugment) with its posterize ops on ``_posterize``."""
    for op in rand_aug.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize
    return rand_aug


def _normalization(data: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    info = getattr(data, "info", None)
    mean, std = getattr(info, "mean", None), getattr(info, "std", None)
    if mean is None or std is None:
        raise ConfigError(
            f"TrainConfig.rand_augment needs to know how the training images were normalized, but the "
            f"{type(data).__name__} has no .info.mean/.std: train on a learngene dataset "
            "(learngene.data.load_dataset), or give the dataset an .info with mean and std per channel "
            "in pixel/255 units"
        )
    return tuple(mean), tuple(std)


class BatchAugment:
    """RandAugment then random erasing, per image, on a batch of normalized tensors (CPU).

    ``__call__(images [b,C,H,W] float, stream) -> [b,C,H,W]`` on the CPU; every draw comes from
    ``stream``. RandAugment sees each image as 8-bit PIL ("L" for 1 channel, "RGB" for 3):
    ``round(clamp(255 * (x * std + mean), 0, 255))``, which is lossless for datasets decoded from
    8-bit images. Random erasing follows RandAugment and normalisation, as in DeiT: timm's
    RandomErasing, "pixel" mode (normal noise), one box per erased image.

    Departure from DeiT's per-image pipeline: no RandomResizedCrop and no horizontal flip here
    (the in-memory datasets are already at the model's size; their own ``augment_batch`` shift
    plays the crop's part, and flips change digits' meaning); ``train_transform`` has both.
    """

    def __init__(self, cfg: TrainConfig, data: Any, image_size: int, in_chans: int):
        self.rand_augment = None
        if cfg.rand_augment is not None:
            if in_chans not in (1, 3):
                raise ConfigError(f"TrainConfig.rand_augment works on 1- or 3-channel images, these have {in_chans}")
            mean, std = _normalization(data)
            if len(mean) != in_chans or len(std) != in_chans:
                raise ConfigError(f"the dataset's .info.mean/.std have {len(mean)} channels, its images {in_chans}")
            self.mean = torch.tensor(mean).view(1, -1, 1, 1)  # [1,C,1,1]
            self.std = torch.tensor(std).view(1, -1, 1, 1)
            self.rand_augment = rand_augment(cfg.rand_augment, image_size=image_size, mean=mean)
        self.erase = None
        if cfg.random_erasing > 0:
            self.erase = RandomErasing(cfg.random_erasing, mode="pixel", max_count=1, device="cpu")

    @property
    def enabled(self) -> bool:
        return self.rand_augment is not None or self.erase is not None

    def _rand_augment(self, images: torch.Tensor) -> torch.Tensor:
        scale, shift = 255 * self.std, 255 * self.mean  # [1,C,1,1]: normalized -> pixel values
        pixels = (images * scale).add_(shift).round_().clamp_(0, 255).to(torch.uint8)  # [b,C,H,W]
        pixels = pixels.permute(0, 2, 3, 1).contiguous().numpy()  # [b,H,W,C]
        mode = "L" if pixels.shape[3] == 1 else "RGB"
        out = np.empty_like(pixels)
        for i, img in enumerate(pixels):
            pil = Image.fromarray(img[:, :, 0] if mode == "L" else img, mode)
            out[i] = np.asarray(self.rand_augment(pil), dtype=np.uint8).reshape(img.shape)  # [H,W,C]
        aug = torch.from_numpy(out).permute(0, 3, 1, 2).float()  # [b,C,H,W] pixel values
        return aug.sub_(shift).div_(scale)

    def __call__(self, images: torch.Tensor, stream: RandomStream) -> torch.Tensor:
        images = images.detach().to("cpu", torch.float32)
        with stream.active():
            if self.rand_augment is not None:
                images = self._rand_augment(images)
            if self.erase is not None:
                images = self.erase(images.clone())  # in place, per image
        return images


def train_transform(cfg: TrainConfig, *, image_size: int, mean: Sequence[float], std: Sequence[float]):
    """The per-image PIL -> normalized tensor training transform of DeiT for a dataset that decodes
    its own images: timm ``create_transform`` (RandomResizedCrop, flip, ``cfg.rand_augment``,
    normalize, random erasing with ``cfg.random_erasing``, "pixel" mode, one box; no colour
    jitter, which timm would add when RandAugment is off and BatchAugment never applies; posterize
    as in ``_posterize``). A dataset
    using it sets ``applies_train_transform = True`` so the loop's BatchAugment stays off.
    Call it under the loop's per-epoch seeding (DataLoader workers are seeded from the epoch)."""
    if cfg.rand_augment is not None:
        rand_augment(cfg.rand_augment, image_size=image_size, mean=mean)  # a bad string: a ConfigError here
    transform = create_transform(image_size, is_training=True, auto_augment=cfg.rand_augment,
                                 interpolation="bicubic", color_jitter=None, re_prob=cfg.random_erasing,
                                 re_mode="pixel", re_count=1, mean=tuple(mean), std=tuple(std))
    for step in transform.transforms:
        if hasattr(step, "ops"):  # RandAugment: 0-bit posterize at magnitude 10 (see _posterize)
            _with_safe_posterize(step)
    return transform


def move_recipe_into_workers(dataset: Any, cfg: TrainConfig | None) -> bool:
    """Give a dataset that decodes its own images with a train augmentation (a streamed folder
    loaded with ``augment=True``) DeiT's whole per-image pipeline (``train_transform``), so
    RandAugment and random erasing run in the DataLoader workers beside the decoding instead of
    in the training process on the decoded batch (``BatchAugment``); marks it
    ``applies_train_transform``. The random draws stay a function of (seed, epoch, sample): the
    loader seeds python ``random``, numpy and torch per sample. Returns whether it changed the
    dataset: not when ``cfg`` has neither RandAugment nor erasing, when the dataset holds tensors
    or keeps its eval transform (augment=False), or for grey images (the batch hook handles them).
    """
    info = getattr(dataset, "info", None)
    decodes = callable(getattr(dataset, "transform", None)) and callable(getattr(dataset, "load_item", None))
    if cfg is None or (cfg.rand_augment is None and not cfg.random_erasing) or not decodes or info is None:
        return False
    if getattr(dataset, "augment", False) is not True or getattr(info, "in_chans", 3) != 3 \
            or getattr(dataset, "normalize", True) is False:  # train_transform always normalizes
        return False
    dataset.transform = train_transform(cfg, image_size=info.image_size, mean=info.mean, std=info.std)
    dataset.applies_train_transform = True
    return True


def build_mixup(cfg: TrainConfig, num_classes: int) -> Mixup | None:
    """timm's Mixup for ``cfg`` (None when mixup and cutmix are both off); it also applies
    ``cfg.label_smoothing`` to the targets it returns ([b, num_classes] float)."""
    if not cfg.mixes:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode, label_smoothing=cfg.label_smoothing,
                 num_classes=num_classes)
