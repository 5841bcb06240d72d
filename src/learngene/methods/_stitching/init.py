"""Initialising the stitching layers of a ``StitchedSupernet``.

``init_least_squares`` is SN-Net's: least squares with a bias from the tokens leaving front
block j to the tokens entering end block k on a few images, averaged over the positions that
share a layer. ``initialise`` picks it, given weights through ``set_stitch`` (Learngene Pool
initialises from its learned teacher->student maps), or PyTorch's Linear init as built.
Departure from SN-Net's code: for k = 0 its ``end_features[k - 1]`` reads the *last* block's
output (a negative index); here the target is what enters block 0, the end anchor's embedded
tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError
from .configs import Stitch
from .supernet import StitchedSupernet

INITS = ("maps", "least-squares", "random")


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_{W,b} ||x W^T + b - y||^2 for tokens x [..., d_in], y [..., d_out] -> (W [d_out, d_in], b [d_out]).

    SN-Net's ``ps_inv`` (pseudo-inverse with a ones column), solved with ``lstsq`` in float64.
    """
    x2 = x.reshape(-1, x.shape[-1]).double()
    y2 = y.reshape(-1, y.shape[-1]).double()
    if x2.shape[0] != y2.shape[0]:
        raise ConfigError(f"least squares needs as many tokens on both sides, got {x2.shape[0]} and {y2.shape[0]}")
    design = torch.cat([x2, torch.ones(x2.shape[0], 1, dtype=x2.dtype)], dim=1)  # [N, d_in + 1]
    solution = torch.linalg.lstsq(design, y2).solution                            # [d_in + 1, d_out]
    return solution[:-1].T.float().contiguous(), solution[-1].float().contiguous()


@torch.no_grad()
def init_least_squares(supernet: StitchedSupernet, images: torch.Tensor) -> dict[str, float]:
    """SN-Net's initialisation on ``images`` [N, C, H, W]; returns each layer's relative residual."""
    device = next(supernet.parameters()).device
    images = images.to(device)
    features = [supernet.token_features(a, images) for a in range(len(supernet.anchors))]
    residuals = {}
    for f, e in supernet.pairs:
        by_layer: dict[int, list[Stitch]] = {}
        for c in supernet.configs:
            if c.stitched and (c.front, c.end) == (f, e):
                by_layer.setdefault(c.layer, []).append(c)
        for layer, configs in sorted(by_layer.items()):
            solutions = [least_squares(features[f][c.front_last + 1].cpu(), features[e][c.end_first].cpu())
                         for c in configs]
            weight = torch.stack([w for w, _ in solutions]).mean(0)
            bias = torch.stack([b for _, b in solutions]).mean(0)
            supernet.set_stitch(f, e, weight.to(device), bias.to(device), layer=layer)
            c = configs[0]
            x, y = features[f][c.front_last + 1], features[e][c.end_first]
            err = (supernet.stitch_layers[f"{f}-{e}"][layer](x) - y).pow(2).sum() / y.pow(2).sum().clamp_min(1e-12)
            residuals[f"{f}-{e}/{layer}"] = float(err)
    return residuals


def probe_images(data: Any, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` images [count, C, H, W] drawn at random (seeded: datasets may be sorted by class)
    from a tensor, a tensor dataset or any (image, label) Dataset."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"the number of images for least squares must be a positive integer, got {count!r}")
    if isinstance(data, torch.Tensor):
        images = data
    elif isinstance(getattr(data, "images", None), torch.Tensor):
        images = data.images
    elif isinstance(data, torch.utils.data.TensorDataset):
        images = data.tensors[0]
    elif isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        images = None
    else:
        raise ConfigError(f"init_data must be images [N, C, H, W] or a Dataset of (image, label), got {type(data).__name__}")
    n = len(images) if images is not None else len(data)
    if n < 1:
        raise ConfigError("init_data holds no images")
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]
    picked = images[index] if images is not None else torch.stack([data[int(i)][0] for i in index])
    if picked.dim() != 4:
        raise ConfigError(f"init_data images must be [N, C, H, W], got shape {tuple(picked.shape)}")
    return picked.float()


def initialise(supernet: StitchedSupernet, init: str, *, init_data: Any = None, init_samples: int = 128,
               pair_weights: dict[tuple[int, int], torch.Tensor] | None = None, seed: int = 0) -> dict[str, Any]:
    """Initialise every stitching layer: "least-squares" on ``init_samples`` images drawn (seeded) from
    ``init_data`` (SN-Net), "maps" from ``pair_weights`` ((front, end) -> weight [d_end, d_front], bias 0, every
    layer of the pair), or "random" (PyTorch's Linear init, as built). Returns a summary."""
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    if init == "least-squares":
        if init_data is None:
            raise ConfigError("init='least-squares' fits the stitching layers on images: pass init_data "
                              "(a Dataset or images [N, C, H, W]), or choose init='random'")
        images = probe_images(init_data, init_samples, seed=seed)
        residuals = init_least_squares(supernet, images)
        return {"init": init, "samples": int(images.shape[0]), "relative_residuals": residuals}
    if init == "maps":
        if pair_weights is None:
            raise ConfigError("init='maps' needs the learned teacher->student maps, which only learngene-pool stores; "
                              "use init='least-squares' or 'random'")
        for (front, end), weight in pair_weights.items():
            supernet.set_stitch(front, end, weight.to(next(supernet.parameters()).device))
    return {"init": init}
