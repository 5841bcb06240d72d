"""WAVE sanity check: zero-shot accuracy of descendants grown from weight templates (CPU, a few min).

    python benchmarks/wave_sanity.py --ancestry /tmp/ancestry-mini [--train-samples 2048] [--epochs 1]
        [--sizes 4x96x6,6x48x3] [--init ancestry] [--test-samples 1000] [--out benchmarks/results/wave-sanity.json]

Extracts a WAVE learngene from a vit-mini Fashion-MNIST ancestry with a reduced budget
(``--epochs`` distillation epochs on ``--train-samples`` training images, then each size's
scalers on ``--scaler-samples`` of them) and reports, on the first ``--test-samples`` images of
the Fashion-MNIST test split, the accuracy
of the ancestry, of the auxiliary model's own size (the expanded depth-12 descendant), and of each
listed size (depth x width x heads) twice: with its trained scalers, and with the untrained
scalers selected from the auxiliary model's (what a size not listed at extraction gets). No
descendant is fine-tuned: this checks that the templates carry the ancestry's function and
that training a size's scalers matters, not the method's fine-tuning accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import learngene  # noqa: E402
from learngene._io import atomic_write_json  # noqa: E402
from learngene.artifact import Artifact  # noqa: E402
from learngene.data.tensors import sample_tensors  # noqa: E402
from learngene.recipes import load_splits  # noqa: E402
from learngene.train import evaluate  # noqa: E402
from perf import _commit, machine_info  # noqa: E402


def parse_sizes(text: str) -> list[list[int]]:
    return [[int(v) for v in part.split("x")] for part in text.split(",") if part]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ancestry", default="/tmp/ancestry-mini")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--train-samples", type=int, default=2048, help="training images the distillation reads")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--sizes", default="4x96x6,6x48x3", help="depth x embed_dim x num_heads, comma-separated")
    p.add_argument("--init", default="ancestry", choices=["random", "ancestry"])
    p.add_argument("--num-templates", type=int, default=12)
    p.add_argument("--scaler-samples", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--test-samples", type=int, default=1000, help="first N test images scored (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON file to write (command, commit, machine, accuracies)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ancestry = learngene.load_ancestry(args.ancestry)
    arch = learngene.arch_of(ancestry)
    train, test = load_splits(args.data, arch)
    if args.test_samples:
        test = torch.utils.data.TensorDataset(test.images[:args.test_samples], test.labels[:args.test_samples])
    images, labels = sample_tensors(train, args.train_samples, torch.Generator().manual_seed(0))
    subset = torch.utils.data.TensorDataset(images, labels)
    sizes = parse_sizes(args.sizes)

    start = time.time()
    gene = learngene.extract("wave", ancestry, data=subset, epochs=args.epochs, init=args.init,
                             num_templates=args.num_templates, sizes=sizes, scaler_samples=args.scaler_samples,
                             batch_size=args.batch_size)
    extract_s = time.time() - start
    # the same learngene without the trained sizes: those sizes then start from selected auxiliary scalers
    trained = {f"d{d}_w{w}_h{h}_f{int(w * arch.mlp_ratio)}" for d, w, h in sizes}
    bare = learngene.Learngene.of(Artifact(
        method=gene.method, config=gene.config, provenance=gene.provenance,
        tensors={k: v for k, v in gene.tensors.items() if k.split(".")[1] not in trained or not k.startswith("scalers.")}))

    acc = lambda model: round(float(evaluate(model.eval(), test)["acc"]), 4)  # noqa: E731
    rows = [{"model": "ancestry", "depth": arch.depth, "embed_dim": arch.embed_dim, "num_heads": arch.num_heads,
             "test_acc": acc(ancestry)},
            {"model": "wave (auxiliary size)", "depth": arch.depth, "embed_dim": arch.embed_dim,
             "num_heads": arch.num_heads, "test_acc": acc(gene.expand())}]
    for depth, width, heads in sizes:
        shape = dict(depth=depth, embed_dim=width, num_heads=heads)
        rows.append({"model": "wave, trained scalers", **shape, "test_acc": acc(gene.expand(**shape))})
        rows.append({"model": "wave, selected scalers (untrained)", **shape, "test_acc": acc(bare.expand(**shape))})
    for row in rows:
        print(f"{row['model']:<38} depth {row['depth']:>2} width {row['embed_dim']:>3} heads {row['num_heads']}: "
              f"{row['test_acc']:.4f}")
    record = {
        "benchmark": "wave-sanity",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "commit": _commit(), "machine": machine_info(torch.device("cpu")),
        "ancestry": str(args.ancestry), "data": args.data, "train_samples": args.train_samples,
        "test_samples": len(test),
        "config": gene.config, "extract_seconds": round(extract_s, 1),
        "distillation": {k: (gene.provenance["wave"]["distillation"] or {}).get(k) for k in ("train_loss", "train_acc", "steps")},
        "stored_parameters": gene.num_parameters, "ancestry_parameters": sum(t.numel() for t in ancestry.parameters()),
        "rows": rows,
    }
    if args.out:
        atomic_write_json(Path(args.out), record)


if __name__ == "__main__":
    main()
