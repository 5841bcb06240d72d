"""LeTs sanity check: a short extraction, then zero-shot descendants of several sizes.

    nice -n 10 python benchmarks/lets_sanity.py --ancestry /tmp/ancestry-mini \
        --out benchmarks/results/lets-sanity.json

Distils the ancestry into LeTs' auxiliary model (learngene + width/depth transformation
matrices) for ``--epochs`` over the first ``--limit`` Fashion-MNIST training images, then grows
descendants at several depths and widths (every row-selection strategy) and reports their
top-1 on the first ``--test-limit`` Fashion-MNIST test images *without any fine-tuning*, next
to the ancestry's on the same images. A reduced budget:
it checks that the learned transformation really carries the ancestry's function into
variable-sized models, not what a full extraction reaches.

Writes ``--out`` (JSON with the command, commit and machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

import learngene
from learngene._io import atomic_write_json
from learngene.arch import arch_of
from learngene.bench.report import git_commit, machine_info
from learngene.data import load_dataset
from learngene.methods.lets import SELECTIONS
from learngene.train import evaluate

SHAPES = [  # (depth, embed_dim, num_heads): the auxiliary shape first, then shallower and narrower
    (12, 96, 6), (9, 96, 6), (6, 96, 6), (12, 48, 3), (6, 48, 3),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ancestry", default="/tmp/ancestry-mini", help="a vit-mini ancestry folder (Fashion-MNIST)")
    p.add_argument("--limit", type=int, default=6000, help="training images distilled on (the first N)")
    p.add_argument("--test-limit", type=int, default=2000, help="test images scored (the first N)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/lets-sanity.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ancestry = learngene.load_ancestry(args.ancestry).eval()
    arch = arch_of(ancestry)
    train = load_dataset("fashion-mnist", "train", image_size=arch.side, in_chans=arch.in_chans)
    full_test = load_dataset("fashion-mnist", "test", image_size=arch.side, in_chans=arch.in_chans)
    test = torch.utils.data.TensorDataset(full_test.images[: args.test_limit], full_test.labels[: args.test_limit])
    subset = torch.utils.data.TensorDataset(train.images[: args.limit], train.labels[: args.limit])

    rows = [{"model": "ancestry", "depth": arch.depth, "embed_dim": arch.embed_dim, "num_heads": arch.num_heads,
             "params": sum(p.numel() for p in ancestry.parameters()), "test_acc": evaluate(ancestry, test)["acc"]}]
    start = time.perf_counter()
    gene = learngene.extract("lets", ancestry, data=subset, epochs=args.epochs, lr=args.lr, warmup_epochs=0.2)
    extract_s = time.perf_counter() - start
    for selection in SELECTIONS:
        variant = dataclasses.replace(gene, config={**gene.config, "selection": selection})
        for depth, width, heads in SHAPES:
            child = variant.expand(depth=depth, embed_dim=width, num_heads=heads, seed=0).eval()
            rows.append({"model": "lets", "selection": selection, "depth": depth, "embed_dim": width,
                         "num_heads": heads, "params": sum(p.numel() for p in child.parameters()),
                         "test_acc": evaluate(child, test)["acc"]})
            print(rows[-1], flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:])
    distill = gene.provenance["lets"]["distillation"]
    atomic_write_json(Path(args.out), {
        "benchmark": "lets_sanity", "command": command, "commit": git_commit(), "machine": machine_info(),
        "settings": vars(args), "learngene": {"config": gene.config, "stored_params": gene.num_parameters,
                                               "extract_wall_s": round(extract_s, 1),
                                               "aux_train_acc": distill["train_acc"], "steps": distill["steps"]},
        "rows": rows,
    })
    print(f"ancestry {rows[0]['test_acc']:.4f}; extraction {extract_s:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
