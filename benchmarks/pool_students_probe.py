"""Why do Learngene Pool's students fine-tune worse than SN-Net's scratch anchors?

    python benchmarks/pool_students_probe.py --work runs/pool_vs_snnet

Reads the two learngenes ``benchmarks/pool_vs_snnet.py`` wrote under ``--work``
(``learngene-pool``: students distilled from the ancestry; ``sn-net``: anchors of the same
shapes trained from scratch with the same training FLOPs) and, for every student / anchor
*alone* (no stitching, so the stitch init plays no part):

  - feature statistics on ``--downstream`` test images: mean L2 norm of the tokens leaving the
    last block (the residual stream), and of the final (normed) class-token feature;
  - a linear probe: ridge regression from the frozen final class-token features to one-hot
    labels (closed form, ``--ridge``), train split -> test top-1: how much the features
    alone carry for the new task;
  - fine-tuning top-1 after ``--epochs`` epochs, the whole model, in two variants: the
    Fashion-MNIST classifier kept (what the supernet does when the classes count matches) and a
    fresh classifier; optionally at a second learning rate (``--lrs``).

Writes ``--out`` (JSON with the command, commit and machine).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import torch

import learngene
from learngene._io import atomic_write_json
from learngene.bench.report import git_commit, machine_info
from learngene.data import load_dataset
from learngene.methods import learngene_pool, sn_net
from learngene.train import TrainConfig, fit


@torch.no_grad()
def features(model, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual stream after the last block [N, T, D], final class-token feature after the norm [N, D])."""
    model.eval()
    streams, pooled = [], []
    for part in images.split(batch):
        x = model.forward_features(part)      # timm: blocks then final norm -> [B, T, D]
        pooled.append(model.forward_head(x, pre_logits=True))
        streams.append(_last_block_output(model, part))
    return torch.cat(streams), torch.cat(pooled)


def _last_block_output(model, images: torch.Tensor) -> torch.Tensor:
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.norm_pre(x)
    for block in model.blocks:
        x = block(x)
    return x


def ridge_probe(train_x, train_y, test_x, test_y, num_classes: int, ridge: float) -> float:
    """Top-1 of the closed-form ridge regression W = (X^T X + r I)^-1 X^T Y (bias by a ones column)."""
    def design(x):
        return torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    X, Y = design(train_x), torch.nn.functional.one_hot(train_y, num_classes).double()
    W = torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=torch.float64), X.T @ Y)
    return float(((design(test_x) @ W).argmax(1) == test_y).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/pool_vs_snnet", help="folder with learngene-pool/ and sn-net/ learngenes")
    p.add_argument("--downstream", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lrs", default="1e-3", help="comma list of fine-tuning learning rates")
    p.add_argument("--ridge", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/pool_students_probe.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    train = load_dataset(args.downstream, "train", image_size=28, in_chans=1)
    test = load_dataset(args.downstream, "test", image_size=28, in_chans=1)
    classes = train.info.num_classes
    lrs = [float(v) for v in args.lrs.split(",") if v]

    rows = []
    for method, module in (("learngene-pool", learngene_pool), ("sn-net", sn_net)):
        gene = learngene.load(Path(args.work) / method)
        supernet = module.stitch_supernet(gene, num_classes=classes, init="random", seed=args.seed)
        for i, anchor in enumerate(supernet.anchors):
            stream, pooled = features(anchor, test.images)
            _, train_pooled = features(anchor, train.images)
            row = {"method": method, "anchor": i, "width": int(anchor.embed_dim), "depth": len(anchor.blocks),
                   "stream_token_norm": float(stream.norm(dim=-1).mean()),
                   "feature_norm": float(pooled.norm(dim=-1).mean()),
                   "feature_std": float(pooled.std(0).mean()),
                   "linear_probe_top1": ridge_probe(train_pooled, train.labels, pooled, test.labels, classes,
                                                    args.ridge)}
            for lr in lrs:
                for head in ("kept", "fresh"):
                    model = copy.deepcopy(anchor)
                    if head == "fresh":
                        torch.manual_seed(args.seed)
                        model.reset_classifier(classes)
                    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr,
                                         warmup_epochs=min(1.0, float(args.epochs)), seed=args.seed, checkpoint=False)
                    result = fit(model, train, test, config, progress=False)
                    row[f"finetune_top1_{head}_lr{lr:g}"] = result.eval_acc
            rows.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:])
    atomic_write_json(Path(args.out), {"benchmark": "pool_students_probe", "command": command, "commit": git_commit(),
                                       "machine": machine_info(), "settings": vars(args), "rows": rows,
                                       "wall_time_s": time.perf_counter() - start})
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
