"""Data-parallel fit: `torchrun --nproc_per_node=2` matches one process at the same global batch.

This file is also the worker script: torchrun runs it as ``__main__`` in each rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from conftest import check_ddp_run_matches, torchrun_two_processes

GLOBAL_BATCH = 16


def _setup():
    """Data, student, teacher and config -- identical in every process."""
    from timm.models.vision_transformer import VisionTransformer

    from learngene.train import TrainConfig

    g = torch.Generator().manual_seed(0)
    protos = torch.randn(3, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (70,), generator=g)  # 70 = 4 global batches of 16 + 6 dropped
    train = TensorDataset(protos[y] + 0.8 * torch.randn(70, 1, 8, 8, generator=g), y)
    y2 = torch.randint(0, 3, (41,), generator=g)  # odd size: ranks evaluate 21 + 20 samples
    test = TensorDataset(protos[y2] + 0.8 * torch.randn(41, 1, 8, 8, generator=g), y2)

    def vit(seed):
        torch.manual_seed(seed)
        # No dropout / drop-path: their masks come from per-rank RNG streams, so they
        # (legitimately) differ between a 1-process and a 2-process run.
        return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                                 num_classes=3)

    # Soft distillation too, to check that the KD normalisation (sum / numel of the local
    # logits) stays consistent with DDP's gradient averaging.
    config = TrainConfig(epochs=2, batch_size=GLOBAL_BATCH, lr=3e-3, warmup_epochs=1, seed=3,
                         distill="soft", distill_tau=2.0, device="cpu",
                         amp="off")  # fp32: bf16 rounds differently when the batch is split across ranks
    return train, test, vit(0), vit(1), config


def _recipe_config():
    """DeiT's recipe parts that are the same computation on 1 and 2 processes: gradient
    accumulation (2 ranks x 2 micro-batches of 4 = 1 process x 2 of 8), repeated augmentation
    (each rank takes every other sample of the same global batches), the EMA and layer decay.
    (Mixup and RandAugment draw per rank, so 1 and 2 processes legitimately differ there.)"""
    from learngene.train import TrainConfig

    return TrainConfig(epochs=2, batch_size=GLOBAL_BATCH, lr=3e-3, warmup_epochs=1, seed=3, device="cpu", amp="off",
                       accum_steps=2, repeated_aug=3, ema_decay=0.9, layer_decay=0.75)


def _worker(out_dir: str, variant: str = "distill") -> None:
    from learngene.train import fit

    train, test, student, teacher, config = _setup()
    if variant == "recipe":
        fit(student, train, test, _recipe_config(), out_dir=out_dir, progress=False)
    else:
        fit(student, train, test, config, teacher=teacher, out_dir=out_dir, progress=False)


def test_two_process_ddp_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    from learngene.train import fit

    torchrun_two_processes(Path(__file__).resolve(), str(tmp_path / "ddp"))

    train, test, student, teacher, config = _setup()
    single = fit(student, train, test, config, teacher=teacher, progress=False)

    ddp_weights = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    # Not bitwise: with 2 ranks each gradient is the all-reduced average of two half-batch
    # gradients, i.e. the same sum added in a different order (and the matmuls reduce over
    # half batches), so float32 rounding differs at ~1e-7 relative and drifts slightly
    # through 8 AdamW steps. 1e-4 absolute is far below any real mismatch (a wrong loss
    # normalisation or sample split changes weights by ~1e-3 after one step at lr 3e-3).
    for k, v in student.state_dict().items():
        diff = (ddp_weights[k] - v).abs().max().item()
        assert diff < 1e-4, (k, diff)

    for a, b in check_ddp_run_matches(tmp_path / "ddp", single, 2 * 4 * GLOBAL_BATCH):
        assert a["train_acc"] == b["train_acc"]
        assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-4  # all-reduced over 21 + 20 samples
        assert a["eval_acc"] == b["eval_acc"]


def test_two_process_accumulation_repeated_aug_ema_match_one_process(tmp_path):
    from safetensors.torch import load_file

    from learngene.train import fit

    torchrun_two_processes(Path(__file__).resolve(), str(tmp_path / "ddp"), "recipe")
    train, test, student, _, _ = _setup()
    single = fit(student, train, test, _recipe_config(), out_dir=tmp_path / "one", progress=False)
    for name in ("model.safetensors", "ema.safetensors"):
        ddp, one = load_file(str(tmp_path / "ddp" / name)), load_file(str(tmp_path / "one" / name))
        for k, v in one.items():
            assert (ddp[k] - v).abs().max().item() < 1e-4, (name, k)
    check_ddp_run_matches(tmp_path / "ddp", single, 2 * 4 * GLOBAL_BATCH)
    batch = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())["batch"]
    assert batch == {"effective": GLOBAL_BATCH, "world_size": 2, "per_rank": 8, "micro_batch": 4, "accum_steps": 2}


if __name__ == "__main__":
    _worker(*sys.argv[1:])
