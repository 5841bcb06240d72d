"""Training checkpoints: written atomically, read only with torch.load(weights_only=True).

A checkpoint is a plain dict of tensors, dicts, lists, ints, floats, strings and None, so
the safe unpickler accepts it (no code runs on load). Layout::

    format            "learngene-train-checkpoint"
    version           1
    epoch             epochs completed (resume starts at this 0-based epoch index)
    step              optimizer steps taken
    samples_seen      training samples consumed, all ranks together
    wall_time_s       training wall time so far (summed over resumed segments)
    world_size        ranks of the run that wrote it (informational)
    model             model.state_dict() (unwrapped from DDP)
    optimizer         optimizer.state_dict()
    ema               the model EMA's state_dict (only with TrainConfig.ema_decay)
    config            TrainConfig.to_dict()
    history           list of per-epoch metric dicts (the metrics.jsonl lines)
    steps_per_epoch   optimizer steps per epoch (a resume with another dataset size is refused)
    rng               {"torch": ByteTensor, "cuda": [ByteTensor...], "numpy": {...},
                       "python": [...], "generators": {name: ByteTensor}, "data_order_seed": int}

The data order needs no saved state: it is ``randperm`` under the seed
``seed * 1000003 + epoch`` (``data_order_seed`` records the next epoch's, for the record),
and every stream is reseeded at each epoch start, so the states are kept for inspection and
for resuming code that draws randomness between epochs.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learngene._io import atomic_torch_save
from learngene.errors import ArtifactError

FORMAT = "learngene-train-checkpoint"
VERSION = 1
_REQUIRED = ("epoch", "step", "samples_seen", "wall_time_s", "model", "optimizer", "config", "history", "rng")


def capture_rng(generators: dict[str, torch.Generator] | None = None, data_order_seed: int = 0) -> dict[str, Any]:
    """All RNG states as tensors / lists / ints (weights_only-loadable)."""
    np_state = np.random.get_state()  # ('MT19937', uint32[624], pos, has_gauss, cached_gaussian)
    py_state = random.getstate()  # (version, tuple of 625 ints, gauss_next)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [int(py_state[0]), list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
        "data_order_seed": int(data_order_seed),
    }


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    v, ints, gauss = state["python"]
    random.setstate((v, tuple(ints), gauss))
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name])


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> Path:
    """Atomically write ``ckpt`` (a dict with the keys above, minus format/version)."""
    return atomic_torch_save(path, {"format": FORMAT, "version": VERSION, **ckpt})


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely; any problem is an ArtifactError naming the file and the fix."""
    path = Path(path)
    fix = f"delete {path} to start over, or pass resume=False"
    if not path.is_file():
        raise ArtifactError(f"no training checkpoint at {path}; train with checkpoint=True first, or pass resume=False")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"training checkpoint {path} is corrupt or unreadable ({first[:200]}); {fix}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a learngene training checkpoint; {fix}")
    if ckpt.get("version") != VERSION:
        raise ArtifactError(
            f"training checkpoint {path} has format version {ckpt.get('version')!r}, this learngene reads "
            f"version {VERSION}; {fix}"
        )
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise ArtifactError(f"training checkpoint {path} lacks {missing}; it is incomplete; {fix}")
    return ckpt
