"""SWS sanity check: a short extraction from a trained ancestry, then zero-shot descendants (CPU, ~3 min).

    python benchmarks/sws_sanity.py --ancestry /tmp/ancestry-mini [--limit 6000] [--test-limit N] [--epochs 1]
        [--depths 6,12,16] [--out benchmarks/results/sws-sanity.json]

Distils the ancestry (a vit-mini trained on Fashion-MNIST) into SWS's staged auxiliary model
(the reference's 3,3,4,3,3 stages unless --stages) on the first ``--limit`` training images,
then grows descendants of several depths and scores each, untrained ("zero-shot": the
classifier is the auxiliary model's), on the Fashion-MNIST test split (or its first
``--test-limit`` images), next to the ancestry itself. The depth equal to the auxiliary model's (16) is the auxiliary model.
A reduced budget: this checks that the learngene carries the ancestry's function into
descendants of other depths, not the paper's numbers.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

import learngene
from learngene._io import atomic_write_json
from learngene.bench.report import git_commit, machine_info
from learngene.data import load_dataset
from learngene.methods.sws import layer_stages, stage_sizes
from learngene.train import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ancestry", required=True, help="an ancestry folder (model.safetensors + model_config.json)")
    p.add_argument("--limit", type=int, default=6000, help="training images used for the distillation")
    p.add_argument("--test-limit", type=int, default=None, help="score on the first N test images (default: all 10,000)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=float, default=0.1)
    p.add_argument("--stages", default="3,3,4,3,3")
    p.add_argument("--depths", default="6,12,16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON to write (command, commit, machine, results)")
    args = p.parse_args()
    start = time.perf_counter()

    ancestry = learngene.load_ancestry(args.ancestry).eval()
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    if args.test_limit is not None:
        test = torch.utils.data.TensorDataset(test.images[:args.test_limit], test.labels[:args.test_limit])
    subset = torch.utils.data.TensorDataset(train.images[:args.limit], train.labels[:args.limit])
    stages = [int(s) for s in args.stages.split(",")]
    ancestry_acc = evaluate(ancestry, test)["acc"]
    print(f"ancestry: {ancestry_acc:.4f} on {len(test)} test images", flush=True)

    t0 = time.perf_counter()
    gene = learngene.extract("sws", ancestry, data=subset, stages=stages, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs, seed=args.seed)
    extract_s = time.perf_counter() - t0
    distillation = gene.provenance["sws"]["distillation"]
    print(f"extracted in {extract_s:.0f} s: {gene.num_parameters:,} parameters stored "
          f"(ancestry {sum(q.numel() for q in ancestry.parameters()):,})", flush=True)

    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        child = gene.expand(depth=depth, seed=args.seed).eval()
        sizes = stage_sizes(stages, depth)
        row = {"depth": depth, "stage_sizes": sizes, "layer_stages": layer_stages(sizes),
               "parameters": sum(q.numel() for q in child.parameters()), "zero_shot_acc": evaluate(child, test)["acc"]}
        rows.append(row)
        print(row, flush=True)

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:])
    record = {"benchmark": "sws_sanity", "command": command, "commit": git_commit(), "machine": machine_info(),
              "settings": vars(args), "ancestry_acc": ancestry_acc, "stored_parameters": gene.num_parameters,
              "ancestry_parameters": sum(q.numel() for q in ancestry.parameters()),
              "extract": {"wall_time_s": extract_s, "samples_seen": gene.provenance["cost"]["samples_seen"],
                          "flops": gene.provenance["cost"]["flops"], "train_loss": distillation["train_loss"],
                          "train_acc": distillation["train_acc"], "steps": distillation["steps"]},
              "descendants": rows, "wall_time_s": time.perf_counter() - start}
    if args.out:
        atomic_write_json(Path(args.out), record)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
