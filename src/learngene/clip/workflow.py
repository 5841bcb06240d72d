"""The CLIP steps behind the command line, on CLIP folders (``clip_arch.json`` +
``model.safetensors`` (open_clip keys) + ``tokenizer.json``, written by ``save_clip_ancestry``):

    learngene clip-ancestry --data fashion-mnist --out runs/clip-ancestry     # train_clip_ancestry
    learngene extract mm-lg --ancestry runs/clip-ancestry --data fashion-mnist --out genes/mmlg
    learngene expand genes/mmlg --clip --depth 4 --text-depth 4 --out runs/clip-child
    learngene finetune runs/clip-child --data mnist-5k --out runs/clip-child-mnist  # finetune_clip_folder
    learngene eval runs/clip-child-mnist --data mnist-5k                        # evaluate_clip_folder

A CLIP folder loads anywhere with ``load_clip_ancestry`` and its weights are a plain
``open_clip.CLIP`` state dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.registry import FIXED_DATASETS
from ..errors import ConfigError
from .data import CaptionTokenizer, load_caption_pairs, tokenizer_for
from .model import clip_mini_arch, evaluate_clip, load_clip_ancestry, save_clip_ancestry, train_clip
from .open_clip_adapter import build_open_clip, open_clip_to_stack, stack_to_open_clip
from .stack import ClipStack


def train_clip_ancestry(data: str, out: str | Path, config, *, vocabulary: Sequence[str] | None = None,
                        limit: int | None = None, image_layers: int = 6, text_layers: int = 6, width: int = 96,
                        heads: int = 6) -> dict[str, Any]:
    """Train a clip-mini-shaped CLIP contrastively on ``data``'s caption pairs; write a CLIP folder.

    The compact tokenizer covers the captions of ``vocabulary`` datasets (default: every
    registered fixed dataset), so zero-shot prompts of later downstream datasets use known
    words. Returns the run's numbers (also what the CLI prints)."""
    tokenizer = tokenizer_for(list(vocabulary or FIXED_DATASETS))
    pairs = load_caption_pairs(data, "train", tokenizer, limit=limit, seed=config.seed)
    arch = clip_mini_arch(tokenizer.vocab_size, image_layers=image_layers, text_layers=text_layers, width=width,
                          heads=heads, context_length=tokenizer.context_length)
    torch.manual_seed(config.seed)
    model = build_open_clip(arch)
    result = train_clip(model, pairs, config, out_dir=out, progress=True)
    metrics = evaluate_clip(model, load_caption_pairs(data, "test", tokenizer, limit=2000))
    save_clip_ancestry(open_clip_to_stack(model), tokenizer, out)
    return {"out": str(out), "pairs": len(pairs.images), "train_loss": result.train_loss,
            "samples_seen": result.samples_seen, "train_flops": result.train_flops,
            "wall_time_s": round(result.wall_time_s, 1), "test": metrics}


def write_clip_descendant(stack: ClipStack, tokenizer: CaptionTokenizer | None, out: str | Path) -> Path:
    if tokenizer is None:
        raise ConfigError("this CLIP has no compact tokenizer (its ancestry was a pretrained CLIP): save it with "
                          "the Python API (learngene.methods.mm_lg.expand_clip(..., library='open_clip'))")
    return save_clip_ancestry(stack, tokenizer, out)


def finetune_clip_folder(folder: str | Path, data: str, out: str | Path, config) -> dict[str, Any]:
    """Contrastive fine-tuning of a CLIP folder on ``data``'s caption pairs; writes a CLIP folder."""
    stack, tokenizer = _load_folder(folder)
    model = stack_to_open_clip(stack)
    test = load_caption_pairs(data, "test", tokenizer)
    before = evaluate_clip(model, test)
    result = train_clip(model, load_caption_pairs(data, "train", tokenizer), config, out_dir=out, progress=True)
    after = evaluate_clip(model, test)
    save_clip_ancestry(open_clip_to_stack(model), tokenizer, out)
    return {"out": str(out), "samples_seen": result.samples_seen, "train_flops": result.train_flops,
            "before": before, "after": after}


def evaluate_clip_folder(folder: str | Path, data: str, split: str = "test") -> dict[str, float]:
    """Zero-shot accuracy and retrieval recall@1/5 of a CLIP folder on ``data``'s caption pairs."""
    stack, tokenizer = _load_folder(folder)
    return evaluate_clip(stack_to_open_clip(stack), load_caption_pairs(data, split, tokenizer))


def _load_folder(folder: str | Path) -> tuple[ClipStack, CaptionTokenizer]:
    stack, tokenizer = load_clip_ancestry(str(folder))
    assert tokenizer is not None  # a CLIP folder always holds tokenizer.json
    return stack, tokenizer
