"""Learngene Pool vs SN-Net: every stitched configuration's accuracy against its FLOPs (CPU).

    python benchmarks/pool_vs_snnet.py --ancestry runs/ancestry-vit-mini-fashion-mnist-7fe3e19704

1. Learngene Pool (Shi et al., AAAI 2024): the ancestry (vit-mini, 12 x 96) is distilled into
   students of widths ``--widths`` and depth ``--depth`` on a ``--subset`` of Fashion-MNIST for
   ``--epochs`` epochs each (a CE + (1-a)(KD + block MSE + attention MSE) through learned maps).
2. SN-Net (Pan et al., CVPR 2023): anchors of the same shapes trained independently from
   scratch on the same images with the same total training FLOPs as the pool's distillation
   (teacher forwards included), unless ``--snnet-epochs`` is given.
3. For each: the stitched supernet over its students/anchors (pairs ``--pairs``; stitching
   layers from the pool's maps, SN-Net's by least squares on ``--init-samples`` downstream
   images) is trained on ``--downstream`` (mnist-5k) for ``--finetune-epochs``, one random
   configuration per step, with the same recipe for both; then EVERY configuration is
   evaluated on the downstream test split.

Writes ``--out`` (JSON: command, commit, machine, settings, one record per configuration with
its parameters, forward FLOPs and top-1, and a summary per method: parameters stored, number
of configurations, smallest model it can build, training costs) and a PNG plot of accuracy vs
FLOPs next to it. The learngenes and each method's smallest exported model go to ``--work``.
FLOPs are counted as the library counts them (``learngene.train.flops``, one 28x28 image).
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
from learngene.bench.report import git_commit, machine_info, save_figure
from learngene.data import load_dataset
from learngene.methods import learngene_pool, sn_net
from learngene.arch import arch_of
from learngene.methods._stitching import anchor_archs, save_stitched
from learngene.train import TrainConfig, evaluate, fit
from learngene.train.flops import forward_flops_per_sample

VARIANTS = {  # name -> (method, how its supernet's stitching layers start)
    "learngene-pool": ("learngene-pool", "maps"),
    "sn-net": ("sn-net", "least-squares"),
    "learngene-pool-lsq": ("learngene-pool", "least-squares"),  # optional: the pool's students, SN-Net's init
}


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def subset(dataset, count: int, seed: int) -> torch.utils.data.TensorDataset:
    """``count`` images drawn at random (seeded) from a pre-tensorised dataset."""
    n = len(dataset.labels)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(count, n)]
    return torch.utils.data.TensorDataset(dataset.images[index], dataset.labels[index])


def recipe(args: argparse.Namespace, widths: list[int]) -> dict:
    """The extraction options both methods share (students' / anchors' widths, depth, training recipe)."""
    return dict(widths=widths, depth=args.depth, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                warmup_epochs=min(1.0, float(args.epochs)))


def reuse_learngene(work: Path, method: str, widths: list[int], depth: int, fail) -> tuple | None:
    """(learngene, stage-1 cost) from ``work/method`` (``--reuse``), or None when there is none there;
    ``fail(message)`` when the stored students / anchors have other (width, depth)s than asked."""
    folder = work / method
    if not (folder / "learngene_config.json").is_file():
        return None
    gene = learngene.load(folder)
    stored = [(int(a["embed_dim"]), int(a["depth"])) for a in gene.provenance["stitch"]["archs"]]
    if stored != [(w, depth) for w in widths]:
        fail(f"--reuse: {folder} holds (width, depth) {stored}, these settings ask for "
             f"{[(w, depth) for w in widths]}; drop --reuse or use another --work")
    cost = {"epochs": gene.config["epochs"], "samples_seen": gene.provenance["cost"]["samples_seen"],
            "flops": gene.provenance["cost"]["flops"], "wall_time_s": None, "reused": str(folder)}
    print(f"{method}: reused {folder} ({gene.num_parameters:,} parameters)", flush=True)
    return gene, cost


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(flops, acc) points no other point beats on both, by increasing FLOPs."""
    front, best = [], -1.0
    for flops, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((flops, acc))
            best = acc
    return front


def plot(records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (method, color) in zip(sorted({r["method"] for r in records}), ("tab:blue", "tab:orange", "tab:green")):
        rows = [r for r in records if r["method"] == method]
        ax.scatter([r["flops"] / 1e6 for r in rows], [100 * r["top1"] for r in rows], s=14, alpha=0.6, color=color,
                   label=f"{method} ({len(rows)} configurations)")
        front = pareto([(r["flops"], r["top1"]) for r in rows])
        ax.plot([f / 1e6 for f, _ in front], [100 * a for _, a in front], color=color, lw=1.5)
        anchors = [r for r in rows if r["stitch"]["front_last"] is None]  # students/anchors alone
        ax.scatter([r["flops"] / 1e6 for r in anchors], [100 * r["top1"] for r in anchors], marker="*", s=90,
                   color=color, edgecolor="black", linewidth=0.5)
    ax.set_xlabel("forward MFLOPs per image")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ancestry", required=True, help="an ancestry run folder (the lead's vit-mini Fashion-MNIST run)")
    p.add_argument("--data", default="fashion-mnist", help="distillation / anchor-training data")
    p.add_argument("--subset", type=int, default=20000, help="images of --data used (drawn at random, seeded)")
    p.add_argument("--widths", default="48,72,96")
    p.add_argument("--depth", type=int, default=6, help="depth of the pool's students")
    p.add_argument("--snnet-depth", type=int, default=0,
                   help="depth of SN-Net's anchors; 0 = --depth (the paper stitches full-depth pretrained anchors: "
                        "pass the ancestry's depth to test the storage and smallest-model claims)")
    p.add_argument("--epochs", type=int, default=2, help="distillation epochs per student")
    p.add_argument("--snnet-epochs", type=int, default=0, help="anchor epochs; 0 = match the pool's training FLOPs")
    p.add_argument("--downstream", default="mnist-5k")
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak lr of the distillation / anchor training")
    p.add_argument("--finetune-lr", type=float, default=0.0, help="peak lr of the supernet training; 0 = --lr")
    p.add_argument("--fresh-heads", action="store_true",
                   help="new classifiers for the downstream task (default: keep the anchors' when the class "
                        "counts match, as the library does)")
    p.add_argument("--reuse", action="store_true",
                   help="load the learngenes already in --work (trained with the same settings) instead of "
                        "training them again")
    p.add_argument("--pairs", default="all", choices=("all", "nearest"))
    p.add_argument("--init-samples", type=int, default=128, help="images for SN-Net's least-squares init")
    p.add_argument("--variants", default="learngene-pool,sn-net", help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/pool_vs_snnet", help="where the learngenes and exported models go")
    p.add_argument("--out", default="benchmarks/results/pool_vs_snnet.json")
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose among {list(VARIANTS)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    work, out = Path(args.work), Path(args.out)

    ancestry = learngene.load_ancestry(args.ancestry)
    arch = arch_of(ancestry).to_dict()
    side, chans = int(arch["img_size"]), int(arch["in_chans"])
    distill_data = subset(load_dataset(args.data, "train", image_size=side, in_chans=chans), args.subset, args.seed)
    train = load_dataset(args.downstream, "train", image_size=side, in_chans=chans)
    test = load_dataset(args.downstream, "test", image_size=side, in_chans=chans)
    sample = test.images[0]
    widths = parse_ints(args.widths)
    options = recipe(args, widths)

    # -- stage 1: the pool, then SN-Net's anchors with the same training FLOPs ------------------
    genes, costs = {}, {}
    methods = sorted({VARIANTS[v][0] for v in variants}, key=["learngene-pool", "sn-net"].index)
    for method in methods:
        t0 = time.perf_counter()
        depth = args.depth if method == "learngene-pool" else (args.snnet_depth or args.depth)
        found = reuse_learngene(work, method, widths, depth, p.error) if args.reuse else None
        if found is not None:
            genes[method], costs[method] = found
            continue
        if method == "learngene-pool":
            gene = learngene.extract("learngene-pool", ancestry, data=distill_data, epochs=args.epochs, **options)
        else:
            epochs = args.snnet_epochs
            if epochs <= 0:  # match the pool's distillation FLOPs (3 x student + teacher forward per sample)
                shapes = anchor_archs(arch, widths, None, depth)
                per_epoch = sum(3 * forward_flops_per_sample(learngene.create_vit(a), sample) for a in shapes)
                per_epoch *= (len(distill_data) // args.batch_size) * args.batch_size
                pool_flops = costs.get("learngene-pool", {}).get("flops") or per_epoch * args.epochs
                epochs = max(1, round(pool_flops / per_epoch))
            gene = learngene.extract("sn-net", ancestry, data=distill_data, epochs=epochs,
                                     **{**options, "depth": depth, "warmup_epochs": min(1.0, float(epochs))})
        gene.save(work / method)
        genes[method] = gene
        costs[method] = {"epochs": gene.config["epochs"], "samples_seen": gene.provenance["cost"]["samples_seen"],
                         "flops": gene.provenance["cost"]["flops"], "wall_time_s": time.perf_counter() - t0}
        print(f"{method}: {gene.num_parameters:,} parameters stored, {gene.config['epochs']} epochs, "
              f"{costs[method]['flops']:.3g} training FLOPs, {costs[method]['wall_time_s']:.0f} s", flush=True)

    # -- stage 2: train each supernet on the downstream data, evaluate every configuration -------
    records, summary = [], {}
    for variant in variants:
        method, init = VARIANTS[variant]
        build = learngene_pool.stitch_supernet if method == "learngene-pool" else sn_net.stitch_supernet
        t0 = time.perf_counter()
        supernet = build(genes[method], num_classes=train.info.num_classes, init=init, init_data=train,
                         init_samples=args.init_samples, pairs=args.pairs, seed=args.seed)
        if args.fresh_heads:
            torch.manual_seed(args.seed)
            for anchor in supernet.anchors:
                anchor.reset_classifier(train.info.num_classes)
        config = TrainConfig(epochs=args.finetune_epochs, batch_size=args.batch_size, lr=args.finetune_lr or args.lr,
                             warmup_epochs=min(1.0, float(args.finetune_epochs)), seed=args.seed, checkpoint=False)
        result = fit(supernet, train, None, config)
        train_s = time.perf_counter() - t0
        rows = []
        for i, row in enumerate(supernet.describe()):
            model = supernet.export(i)
            params = sum(q.numel() for q in model.parameters())
            assert params == row["params"], (variant, i, params, row["params"])
            top1 = evaluate(supernet.select(i), test, batch_size=500)["acc"]
            rows.append({"method": variant, "init": init, "config_id": i, "name": row["name"], "stitch": row["stitch"],
                         "blocks": row["blocks"], "widths": row["widths"], "params": params,
                         "flops": forward_flops_per_sample(model, sample), "top1": top1})
        records += rows
        smallest = min(rows, key=lambda r: (r["params"], r["flops"]))
        save_stitched(supernet.export(smallest["config_id"]), work / f"{variant}-smallest", **smallest)
        mean_flops = sum(r["flops"] for r in rows) / len(rows)
        summary[variant] = {
            "learngene_params_stored": genes[method].num_parameters,
            "configurations": len(rows),
            "smallest_model": {k: smallest[k] for k in ("name", "params", "flops", "top1")},
            "largest_model": {k: max(rows, key=lambda r: r["params"])[k] for k in ("name", "params", "flops", "top1")},
            "best_top1": max(r["top1"] for r in rows),
            "mean_top1": sum(r["top1"] for r in rows) / len(rows),
            "pareto_front": [{"flops": f, "top1": a} for f, a in pareto([(r["flops"], r["top1"]) for r in rows])],
            "stage1": costs[method],
            "init": getattr(supernet, "init_summary", {"init": init}),
            "supernet_training": {"samples_seen": result.samples_seen, "wall_time_s": train_s,
                                  "flops_expected": 3 * mean_flops * result.samples_seen},  # uniform over configs
        }
        print(f"{variant}: {len(rows)} configurations, top-1 mean {100 * summary[variant]['mean_top1']:.1f}% "
              f"best {100 * summary[variant]['best_top1']:.1f}%, smallest {smallest['name']} "
              f"({smallest['params']:,} params, {100 * smallest['top1']:.1f}%), {time.perf_counter() - t0:.0f} s",
              flush=True)

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0].replace(str(Path.cwd()) + "/", "")] + sys.argv[1:])
    settings = {k: v for k, v in vars(args).items()}
    results = {"benchmark": "pool_vs_snnet", "command": command, "commit": git_commit(), "machine": machine_info(),
               "settings": settings, "ancestry_arch": arch, "wall_time_s": time.perf_counter() - start,
               "summary": summary, "records": records}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results)
    plot(records, out.with_suffix(".png"),
         f"{args.downstream}, every stitched configuration ({', '.join(variants)}); "
         f"students {widths} x {args.depth} blocks, SN-Net anchors x {args.snnet_depth or args.depth}")
    print(f"wrote {out} and {out.with_suffix('.png')} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
