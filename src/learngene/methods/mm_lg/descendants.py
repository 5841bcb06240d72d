"""mm-lg's whole-CLIP descendants as folders: the ``clip`` descendant kind of its registration.

    learngene expand GENE --clip --depth 4 --text-depth 4 --out runs/clip-child   # expand_folder
    learngene finetune runs/clip-child --data mnist-5k --out runs/clip-tuned      # clip.workflow
    learngene eval runs/clip-tuned --data mnist-5k

A CLIP folder (``clip_arch.json`` + open_clip weights + ``tokenizer.json``) is recognised
whichever step wrote it: a descendant, or an ancestry from ``learngene clip-ancestry``.
"""

from __future__ import annotations

import os
from typing import Any

from ...artifact import Artifact
from ...clip.model import is_clip_folder
from ...clip.workflow import evaluate_clip_folder, finetune_clip_folder, write_clip_descendant
from ...registry import DescendantKind
from .method import expand_clip, gene_tokenizer


def expand_folder(gene: Artifact, out: str | os.PathLike, *, depth: int | None = None,
                  text_depth: int | None = None) -> dict[str, Any]:
    """Grow a whole CLIP (image tower of ``depth`` blocks, text tower of ``text_depth``; the
    ancestry's by default) and write it as a CLIP folder; returns its summary."""
    stack = expand_clip(gene, image_layers=depth, text_layers=text_depth, library=None)
    write_clip_descendant(stack, gene_tokenizer(gene), out)
    return {"out": str(out), "method": gene.method, "image_layers": len(stack.image.blocks),
            "text_layers": len(stack.text.blocks), "parameters": stack.num_parameters()}


CLIP_DESCENDANTS = DescendantKind(name="clip", title="CLIP", is_folder=is_clip_folder, expand=expand_folder,
                                  finetune=finetune_clip_folder, evaluate=evaluate_clip_folder)
