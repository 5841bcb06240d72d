"""A small VGG-style CNN: the AT-TPC paper's transfer-learning baseline, scaled to a CPU
(``benchmarks/attpc.py``).

Kuchera et al. (NIM A 2019) fine-tuned VGG16 pretrained on ImageNet with a new head
(Flatten -> Dense 256 + ReLU -> Dropout 0.5 -> softmax), Adam lr 1e-5, 10 epochs, batch 32.
Here the same recipe shape at CPU scale (departures, on purpose):

* ``VggSmall``: VGG's pattern (stages of two 3x3 conv + ReLU, then 2x2 max-pool; channels
  doubling) with ``widths`` (16, 32, 64) instead of (64 .. 512) x 13 convs, on 28x28 grey
  images; the source task is Fashion-MNIST (what the vit-mini ancestry saw), not ImageNet.
* The head is the paper's: Flatten -> Linear(features, 256) -> ReLU -> Dropout(0.5) ->
  Linear(256, classes) (softmax lives in the loss). ``new_head`` replaces it for the target
  task, keeping the pretrained convolutions; all layers are then fine-tuned.
* Trained through ``learngene.train.fit`` like every other model (AdamW, warmup + cosine),
  so that comparisons are at equal training budget; the paper's lr 1e-5 suits a 138M
  ImageNet VGG16, not a 100k-parameter network trained for a few epochs.

Saved as ``model.safetensors`` + ``cnn_config.json`` (atomic writes; nothing unpickled).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from learngene._io import atomic_save_safetensors, atomic_write_json
from learngene.errors import ArtifactError, ConfigError

CONFIG_FILE = "cnn_config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class CnnConfig:
    in_chans: int = 1  # grey images
    num_classes: int = 10
    img_size: int = 28  # square input side; each stage halves it (floor)
    widths: tuple[int, ...] = (16, 32, 64)  # channels of each conv stage (VGG16: 64, 128, 256, 512, 512)
    head_hidden: int = 256  # the paper's Dense 256
    dropout: float = 0.5  # the paper's dropout before the output layer

    def __post_init__(self) -> None:
        for name in ("in_chans", "num_classes", "img_size", "head_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"CnnConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.widths or not all(isinstance(w, int) and w >= 1 for w in self.widths):
            raise ConfigError(f"CnnConfig.widths must be a non-empty list of positive integers, got {self.widths!r}")
        if self.img_size >> len(self.widths) < 1:
            raise ConfigError(f"{len(self.widths)} pooling stages shrink img_size {self.img_size} to nothing: "
                              "use fewer widths or larger images")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"CnnConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def feature_dim(self) -> int:
        """Flattened size after the conv stages: widths[-1] x side x side."""
        side = self.img_size >> len(self.widths)
        return self.widths[-1] * side * side

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv + ReLU, then 2x2 max-pool: [B, in, H, W] -> [B, out, H/2, W/2]."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def make_head(feature_dim: int, num_classes: int, *, hidden: int = 256, dropout: float = 0.5) -> nn.Sequential:
    """The paper's head: Flatten -> Dense(hidden) + ReLU -> Dropout -> Linear(num_classes)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class VggSmall(nn.Module):
    """Images [B, in_chans, S, S] -> logits [B, num_classes]."""

    def __init__(self, config: CnnConfig) -> None:
        super().__init__()
        self.config = config
        channels = (config.in_chans, *config.widths)
        self.features = nn.Sequential(*[_stage(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.head = make_head(config.feature_dim, config.num_classes, hidden=config.head_hidden, dropout=config.dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # [B, K]

    def new_head(self, num_classes: int) -> "VggSmall":
        """Replace the head by a freshly initialised one for ``num_classes`` (transfer learning)."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.head = make_head(self.config.feature_dim, num_classes, hidden=self.config.head_hidden,
                              dropout=self.config.dropout)
        return self


def create_cnn(**config: Any) -> VggSmall:
    """``create_cnn(widths=(16, 32, 64), num_classes=3)`` -> a fresh ``VggSmall``."""
    if "widths" in config:
        config["widths"] = tuple(config["widths"])
    return VggSmall(CnnConfig(**config))


def save_cnn(model: VggSmall, folder: str | os.PathLike, **extra: Any) -> Path:
    """Write ``model.safetensors`` then ``cnn_config.json`` (config + ``extra``) into ``folder``."""
    folder = Path(folder)
    atomic_save_safetensors(folder / WEIGHTS_FILE, model.state_dict())
    atomic_write_json(folder / CONFIG_FILE, {"config": model.config.to_dict(), **extra})
    return folder


def load_cnn(folder: str | os.PathLike) -> VggSmall:
    """The ``VggSmall`` saved by ``save_cnn``; every tensor's name and shape is checked."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ArtifactError(f"{folder} lacks {CONFIG_FILE} or {WEIGHTS_FILE}: save the model with save_cnn")
    record = json.loads((folder / CONFIG_FILE).read_text())
    model = create_cnn(**record["config"])
    state = load_file(str(folder / WEIGHTS_FILE))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise ArtifactError(f"{folder / WEIGHTS_FILE} does not match {CONFIG_FILE} "
                            f"(tensors differ: {sorted(set(expected.items()) ^ set(found.items()))[:3]}); re-save it")
    model.load_state_dict(state)
    return model
