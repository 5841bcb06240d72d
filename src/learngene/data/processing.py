"""Array helpers shared by every source: fixed splits, statistics, resize + normalize.

Pixels travel as uint8 [N, C, H, W] until the last step, ``to_float_images``, which
converts channels, resizes and normalizes in chunks so that only the final float32
tensor is ever held in full.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R 601-2 luma weights for R, G, B: the same ones PIL uses for convert("L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# How many images are converted at once in ``to_float_images`` / ``compute_mean_std``.
CHUNK_SIZE = 2048


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed per-class train/test split of the positions ``0 .. len(labels) - 1``.

    For each class, in ascending label order, one ``np.random.RandomState(seed)`` permutes
    the positions holding that class and the first ``round(test_fraction * n_class)`` of
    them go to the test split (at most ``n_class - 1``, so every class keeps a training
    example). Returns ``(train_positions, test_positions)``, each sorted ascending (int64).
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    for label in np.unique(labels):  # ascending
        members = np.flatnonzero(labels == label)  # positions of this class, ascending
        shuffled = rng.permutation(members)
        num_test = min(math.floor(test_fraction * len(members) + 0.5), len(members) - 1)
        test_parts.append(shuffled[:num_test])
        train_parts.append(shuffled[num_test:])
    if not train_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    train = np.sort(np.concatenate(train_parts)).astype(np.int64)
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    return train, test


def compute_mean_std(pixels: np.ndarray | torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W], in pixel / 255 units.

    Sums are accumulated in float64 chunk by chunk. A channel with zero spread (all pixels
    equal) gets std 1.0 so that normalizing never divides by zero.
    """
    pixels = torch.as_tensor(pixels)
    num_channels = pixels.shape[1]
    total = torch.zeros(num_channels, dtype=torch.float64)
    total_squares = torch.zeros(num_channels, dtype=torch.float64)
    count = 0
    for start in range(0, pixels.shape[0], CHUNK_SIZE):
        chunk = pixels[start : start + CHUNK_SIZE].to(torch.float64) / 255.0  # [n, C, H, W]
        total += chunk.sum(dim=(0, 2, 3))
        total_squares += (chunk * chunk).sum(dim=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    if count == 0:
        raise ValueError("cannot compute mean/std of zero images")
    mean = total / count
    variance = (total_squares / count - mean * mean).clamp(min=0.0)
    std = variance.sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def convert_stats(
    mean: tuple[float, ...], std: tuple[float, ...], in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Map per-channel stats to ``in_chans`` channels the way ``to_float_images`` maps pixels.

    grey -> RGB repeats the single value (exact). RGB -> grey takes the luma-weighted sum
    of the means (exact) and of the stds (an upper bound of the true std; close for
    natural images, whose channels are strongly correlated).
    """
    if len(mean) == in_chans:
        return tuple(mean), tuple(std)
    if len(mean) == 1 and in_chans == 3:
        return (mean[0],) * 3, (std[0],) * 3
    if len(mean) == 3 and in_chans == 1:
        luma_mean = sum(w * m for w, m in zip(LUMA_WEIGHTS, mean))
        luma_std = sum(w * s for w, s in zip(LUMA_WEIGHTS, std))
        return (luma_mean,), (luma_std,)
    raise ValueError(f"cannot convert stats of {len(mean)} channels to {in_chans}")


def to_float_images(
    pixels: torch.Tensor,
    *,
    image_size: int,
    in_chans: int,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> torch.Tensor:
    """uint8 [N, C0, H0, W0] -> float32 [N, in_chans, image_size, image_size].

    Steps, per chunk of ``CHUNK_SIZE`` images: RGB -> grey by luma weights (before
    resizing, so there is less to resize); bilinear resize with antialiasing when the size
    differs; grey -> RGB by repeating the channel; scale to [0, 1]; then, when ``mean`` and
    ``std`` are given (one value per output channel), ``(x - mean) / std``.
    """
    num_images, source_chans = pixels.shape[0], pixels.shape[1]
    needs_resize = tuple(pixels.shape[2:]) != (image_size, image_size)
    out = torch.empty(num_images, in_chans, image_size, image_size, dtype=torch.float32)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, in_chans, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, in_chans, 1, 1)
    else:
        mean_t, std_t = torch.zeros(1, in_chans, 1, 1), torch.ones(1, in_chans, 1, 1)
    luma = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)

    for start in range(0, num_images, CHUNK_SIZE):
        chunk = pixels[start : start + CHUNK_SIZE].to(torch.float32)  # [n, C0, H0, W0], 0..255
        if source_chans == 3 and in_chans == 1:
            chunk = (chunk * luma).sum(dim=1, keepdim=True)  # [n, 1, H0, W0]
        if needs_resize:
            chunk = F.interpolate(
                chunk, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
            )  # [n, C, S, S]
        if chunk.shape[1] == 1 and in_chans == 3:
            chunk = chunk.expand(-1, 3, -1, -1)  # [n, 3, S, S]
        out[start : start + chunk.shape[0]] = (chunk / 255.0 - mean_t) / std_t
    return out
