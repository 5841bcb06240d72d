"""Initialising the stitching layers of a ``StitchedSupernet``.

``init_least_squares`` is SN-Net's: least squares with a bias from the tokens leaving front
block j to the tokens entering end block k on a few images, averaged over the positions that
share a layer. ``initialise`` picks it, given weights through ``set_stitch`` (Learngene Pool
initialises from its learned teacher->student maps: "maps", or "pinv" with their
pseudo-inverse), the given weights with one least-squares gain per layer (``init_map_gains``,
"maps-gain"), or PyTorch's Linear init as built. Both fits on images read their token pairs
from ``stitch_token_pairs``.
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

INITS = ("maps", "maps-gain", "pinv", "least-squares", "random")
WEIGHTED = ("maps", "maps-gain", "pinv")  # the inits that start from given pair weights


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
def stitch_token_pairs(supernet: StitchedSupernet, images: torch.Tensor
                       ) -> dict[tuple[int, int, int], list[tuple[torch.Tensor, torch.Tensor]]]:
    """What each stitching layer should map on ``images`` [N, C, H, W], on the supernet's device.

    (front, end, layer) -> one (x, y) per position (j, k) sharing that layer, in the order of
    ``supernet.pairs`` then layers: x [N, T, d_front] the front anchor's tokens leaving block j,
    y [N, T, d_end] the end anchor's tokens entering block k (its embedded tokens for k = 0).
    """
    device = next(supernet.parameters()).device
    images = images.to(device)
    features = [supernet.token_features(a, images) for a in range(len(supernet.anchors))]
    pairs: dict[tuple[int, int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for f, e in supernet.pairs:
        by_layer: dict[int, list[Stitch]] = {}
        for c in supernet.configs:
            if c.stitched and (c.front, c.end) == (f, e):
                by_layer.setdefault(c.layer, []).append(c)
        for layer, configs in sorted(by_layer.items()):
            pairs[(f, e, layer)] = [(features[f][c.front_last + 1], features[e][c.end_first]) for c in configs]
    return pairs


@torch.no_grad()
def init_least_squares(supernet: StitchedSupernet, images: torch.Tensor) -> dict[str, float]:
    """SN-Net's initialisation on ``images`` [N, C, H, W]; returns each layer's relative residual
    (on its first position's tokens)."""
    device = next(supernet.parameters()).device
    residuals = {}
    for (f, e, layer), pairs in stitch_token_pairs(supernet, images).items():
        solutions = [least_squares(x.cpu(), y.cpu()) for x, y in pairs]
        weight = torch.stack([w for w, _ in solutions]).mean(0)
        bias = torch.stack([b for _, b in solutions]).mean(0)
        supernet.set_stitch(f, e, weight.to(device), bias.to(device), layer=layer)
        x, y = pairs[0]
        err = (supernet.stitch_layers[f"{f}-{e}"][layer](x) - y).pow(2).sum() / y.pow(2).sum().clamp_min(1e-12)
        residuals[f"{f}-{e}/{layer}"] = float(err)
    return residuals


@torch.no_grad()
def init_map_gains(supernet: StitchedSupernet, images: torch.Tensor,
                   pair_weights: dict[tuple[int, int], torch.Tensor]) -> dict[str, dict[str, float]]:
    """Each layer = g x the pair's weight W [d_end, d_front] (bias 0), g the least-squares gain on ``images``.

    The maps' direction is kept and only their scale is fitted (the pool's students have smaller
    residual streams than what the maps carry): over the tokens x, y of every position sharing the
    layer (``stitch_token_pairs``), g = sum <W x, y> / sum <W x, W x>, the minimiser of
    sum ||g W x - y||^2 (g = 1 when W x is 0 everywhere; g may come out negative). Returns the
    gains and the relative residuals sum ||g W x - y||^2 / sum ||y||^2 with the gain and with g = 1,
    per layer "f-e/layer", over all the layer's positions.
    """
    device = next(supernet.parameters()).device
    gains, residuals, residuals_gain_1 = {}, {}, {}
    for (f, e, layer), pairs in stitch_token_pairs(supernet, images).items():
        weight = pair_weights[(f, e)].to(device)
        dot = square = target = torch.zeros((), dtype=torch.float64, device=device)
        for x, y in pairs:
            mapped = (x.double() @ weight.double().T)   # [N, T, d_end]
            dot = dot + (mapped * y.double()).sum()
            square = square + mapped.pow(2).sum()
            target = target + y.double().pow(2).sum()
        gain = float(dot / square) if float(square) > 0 else 1.0
        supernet.set_stitch(f, e, gain * weight, layer=layer)
        name = f"{f}-{e}/{layer}"
        target = target.clamp_min(1e-12)
        gains[name] = gain
        residuals[name] = float((square * gain ** 2 - 2 * gain * dot) / target + 1)  # expands sum ||g Wx - y||^2
        residuals_gain_1[name] = float((square - 2 * dot) / target + 1)
    return {"gains": gains, "relative_residuals": residuals, "relative_residuals_gain_1": residuals_gain_1}


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


def _check_pair_weights(supernet: StitchedSupernet, init: str, pair_weights: Any) -> None:
    if pair_weights is None:
        raise ConfigError(f"init={init!r} needs the learned teacher->student maps, which only learngene-pool stores; "
                          "use init='least-squares' or 'random'")
    missing = [pair for pair in supernet.pairs if pair not in pair_weights]
    if missing:
        raise ConfigError(f"init={init!r}: pair_weights has no weight for the stitched pairs {missing}; give one "
                          f"[d_end, d_front] weight per pair of supernet.pairs ({supernet.pairs})")


def initialise(supernet: StitchedSupernet, init: str, *, init_data: Any = None, init_samples: int = 128,
               pair_weights: dict[tuple[int, int], torch.Tensor] | None = None, seed: int = 0) -> dict[str, Any]:
    """Initialise every stitching layer; returns a summary.

    - "least-squares": SN-Net's, on ``init_samples`` images drawn (seeded) from ``init_data``.
    - "maps" / "pinv": ``pair_weights`` ((front, end) -> weight [d_end, d_front], one per pair of
      ``supernet.pairs``) copied into every layer of the pair, bias 0. The weights are the caller's:
      Learngene Pool passes its maps composed with a transpose for "maps" (``map_stitch_weight``)
      and with a pseudo-inverse for "pinv" (``pinv_stitch_weight``).
    - "maps-gain": the "maps" weights, each layer scaled by one least-squares gain fitted on
      ``init_samples`` images of ``init_data`` (``init_map_gains``).
    - "random": PyTorch's Linear init, as built.
    """
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    if init in WEIGHTED:
        _check_pair_weights(supernet, init, pair_weights)
    if init in ("least-squares", "maps-gain") and init_data is None:
        raise ConfigError(f"init={init!r} fits the stitching layers on images: pass init_data "
                          "(a Dataset or images [N, C, H, W]), or choose init='random'"
                          + (" or 'maps'" if init == "maps-gain" else ""))
    device = next(supernet.parameters()).device
    if init == "least-squares":
        images = probe_images(init_data, init_samples, seed=seed)
        residuals = init_least_squares(supernet, images)
        return {"init": init, "samples": int(images.shape[0]), "relative_residuals": residuals}
    if init == "maps-gain":
        images = probe_images(init_data, init_samples, seed=seed)
        return {"init": init, "samples": int(images.shape[0]), **init_map_gains(supernet, images, pair_weights)}
    if init in ("maps", "pinv"):
        for (front, end), weight in pair_weights.items():
            supernet.set_stitch(front, end, weight.to(device))
        return {"init": init, "weight_norms": {f"{f}-{e}": float(w.norm()) for (f, e), w in pair_weights.items()}}
    return {"init": init}
