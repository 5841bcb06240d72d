"""Contrastive CLIP training under DDP: `torchrun --nproc_per_node=2` matches one process at the
same global batch. That holds only because ``clip_loss`` all-gathers the embeddings with their
gradients: with a per-rank loss each rank would score its 8 pairs against 8 captions instead
of 16, and the weights would part after the first step.

This file is also the worker script: torchrun runs it as ``__main__`` in each rank.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import check_ddp_run_matches, torchrun_two_processes

pytest.importorskip("open_clip", reason="open_clip_torch is not installed (pip install 'learngene-kit[clip]')")

GLOBAL_BATCH = 16


def _setup():
    """Caption pairs, a tiny open_clip CLIP and the config -- identical in every process."""
    from learngene.clip import CaptionTokenizer, build_open_clip, caption_pairs, clip_arch
    from learngene.clip.data import all_captions
    from learngene.train import TrainConfig

    names = [str(i) for i in range(4)]
    tok = CaptionTokenizer.fit([c for c, _, _ in all_captions(names)], context_length=12)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (70,), generator=g)  # 70 = 4 global batches of 16 + 6 dropped
    images = torch.randn(4, 1, 8, 8, generator=g)[labels] + 0.5 * torch.randn(70, 1, 8, 8, generator=g)
    pairs = caption_pairs(images, labels, names, tok)
    arch = clip_arch(dict(embed_dim=16, image=dict(image_size=8, patch_size=4, in_chans=3, width=24, layers=1, heads=2),
                          text=dict(context_length=12, vocab_size=tok.vocab_size, width=24, layers=1, heads=2)))
    torch.manual_seed(0)
    model = build_open_clip(arch)  # no dropout in open_clip's CLIP: ranks draw no masks
    config = TrainConfig(epochs=2, batch_size=GLOBAL_BATCH, lr=3e-3, warmup_epochs=1, seed=3, device="cpu",
                         amp="off")  # fp32: bf16 rounds differently when the batch is split across ranks
    return model, pairs, config


def _worker(out_dir: str) -> None:
    from learngene.clip import train_clip

    model, pairs, config = _setup()
    train_clip(model, pairs, config, out_dir=out_dir)


def test_two_process_contrastive_training_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    from learngene.clip import train_clip

    torchrun_two_processes(Path(__file__).resolve(), str(tmp_path / "ddp"))

    model, pairs, config = _setup()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    single = train_clip(model, pairs, config)

    saved = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    ddp = {k.removeprefix("clip."): v for k, v in saved.items()}  # the trained module wraps the CLIP as .clip
    moved = 0
    for k, v in model.state_dict().items():
        a, b = ddp[k], v
        if k.endswith("in_proj_bias"):  # [q; k; v] biases: the key bias has zero true gradient (softmax is
            third = len(b) // 3        # shift-invariant), so Adam scales rounding noise up to lr-sized steps
            a, b = torch.cat([a[:third], a[2 * third:]]), torch.cat([b[:third], b[2 * third:]])
        assert (a - b).abs().max().item() < 1e-4, k  # float32 summation order only (see test_train_ddp)
        moved += not torch.equal(start[k], v)
    assert moved > 0.9 * len(start)  # the check is not vacuous: training changed nearly every tensor

    check_ddp_run_matches(tmp_path / "ddp", single, 2 * 4 * GLOBAL_BATCH)


if __name__ == "__main__":
    _worker(sys.argv[1])
