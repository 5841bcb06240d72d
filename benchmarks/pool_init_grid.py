"""Learngene Pool: stitch initialisation x supernet learning rate x seed (issue 21), on CPU.

    python benchmarks/pool_init_grid.py --ancestry runs/ancestry-vit-mini-fashion-mnist-7fe3e19704 --reuse

The pool is ``benchmarks/pool_vs_snnet.py``'s stage 1 with two students (``--widths`` 48,96: the
wider one at the vit-mini ancestry's width, as the reference's tiny -> base from a base teacher)
of ``--depth`` 6 blocks, distilled ``--epochs`` 2 on ``--subset`` 20,000 Fashion-MNIST images, or
loaded from ``--work`` with ``--reuse`` (which distils when ``--work`` holds no pool yet). Two
depth-6 students give the reference's 18 configurations: each alone + 16 sliding-window
positions (kernel 2, stride 1; one pair, so ``--pairs`` all and nearest agree). Then for every
stitch init (``--inits``: maps, maps-gain, pinv, random, least-squares; see
``learngene_pool.stitch_supernet``) x supernet peak lr (``--finetune-lrs``) x seed
(``--seeds``): the supernet is built (the seed draws fresh stitches,
the probe images of the fitted inits, the configurations of the training steps and the data
order), every configuration is evaluated on the ``--downstream`` test split (step 0), the
supernet is trained as pool_vs_snnet.py trains it (``--finetune-epochs`` on the downstream
train split, one random configuration per step, warmup + cosine, classifiers kept when the
class counts match unless ``--fresh-heads``), and every configuration is evaluated again.
Step 0 does not depend on the lr, so it is evaluated once per (init, seed) and copied.

Writes ``--out`` (JSON: command, commit, machine, settings, the stage-1 cost, one row per (init,
lr, seed) with mean and best top-1 over the configurations at step 0 and after training, every
configuration's top-1, the init's summary (fitted gains, residuals, weight norms) and the
wall and CPU seconds of each part: on a shared machine the walls include waiting), ``.md``
beside it (per init x lr: mean over seeds +- spread, spread = max - min, in points) and
``.png`` (mean top-1 after training against the lr, one line per init; the step-0 means as
hollow markers).

``--finetune-epochs 0`` scores the starts only. On mnist-5k the kept classifiers name Fashion-MNIST's
classes, so step 0 is chance for every init; on the students' own task it measures how much of
their function each stitch init keeps:
``python benchmarks/pool_init_grid.py --ancestry <the same ancestry> --reuse --work <the same work>
--downstream fashion-mnist --test-subset 2000 --finetune-epochs 0 --finetune-lrs 0 --out
benchmarks/results/pool_init_grid_step0.json``.

``--tiny`` (a random 4 x 48 ancestry, students 24/48 x 3 blocks, 64 images everywhere, one
epoch): seconds, proves it runs; its numbers mean nothing.

Cost of the full grid (estimated, not run): the command at the top, 5 inits x 4 lrs x 3 seeds =
60 supernet trainings of 39,680 samples (10 epochs of mnist-5k's 4,000, full batches) and 75
evaluations of the 18 configurations on the 1,000 test images (15 at step 0, 60 after training).
Timed at the full shapes with small data on one thread, in CPU seconds (the machine was shared,
so its walls were ~10x longer): ``python benchmarks/pool_init_grid.py --ancestry vit-mini
--epochs 0 --inits maps,least-squares --finetune-lrs 1e-3 --seeds 0 --train-subset 1024
--finetune-epochs 1 --threads 1`` (a random vit-mini: the same shapes, so the same cost) gave
0.9-1.1 s per 1,024 training samples, 4.3 s per evaluation of the 18 configurations and about
0.5 s (maps) to 2 s (least-squares) per build; distilling both students on 1,024 images took 3.1 s.
Hence about 60 x 40 s of training + 75 x 4.3 s of evaluation + ~1 min of builds = 47 min, plus
2 min of distillation without ``--reuse``: about 50 min on 2 idle cores (a second thread does not
speed these small models up: pool_vs_snnet.json's supernets ran ~1,000 samples/s on 2 threads,
as here on one). Much longer while another job holds the cores.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from statistics import mean

import torch

import learngene
from learngene._io import atomic_write_json, atomic_write_text
from learngene.arch import arch_of
from learngene.bench.report import git_commit, machine_info, save_figure
from learngene.data import load_dataset
from learngene.methods import learngene_pool
from learngene.methods._stitching import INITS
from learngene.train import TrainConfig, evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from pool_vs_snnet import parse_ints, recipe, reuse_learngene, subset  # noqa: E402

METHOD = "learngene-pool"
DEFAULT_INITS = "maps,maps-gain,pinv,random,least-squares"
TINY = dict(widths="24,48", depth=3, subset=64, epochs=1, batch_size=32, train_subset=64, test_subset=64,
            finetune_epochs=1, init_samples=16, work="runs/pool_init_grid-tiny",
            out="runs/pool_init_grid-tiny/pool_init_grid.json")


def parse_floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def evaluate_every(supernet, test) -> list[float]:
    """Top-1 of every configuration on ``test``, in configuration order."""
    return [evaluate(supernet.select(i), test, batch_size=500)["acc"] for i in range(supernet.num_configs)]


def spread_of(values: list[float]) -> dict:
    """Mean and spread (max - min) over seeds, in points."""
    points = [100 * v for v in values]
    return {"mean": round(mean(points), 2), "spread": round(max(points) - min(points), 2),
            "per_seed": [round(v, 2) for v in points]}


def summarise(rows: list[dict], inits: list[str], lrs: list[float]) -> list[dict]:
    """Per (init, lr): mean +- spread over the seeds of the mean / best top-1 at step 0 and after training."""
    table = []
    for init in inits:
        for lr in lrs:
            cell = [r for r in rows if r["init"] == init and r["finetune_lr"] == lr]
            table.append({"init": init, "finetune_lr": lr, "seeds": [r["seed"] for r in cell],
                          **{f"{when}_{stat}": spread_of([r[when][stat] for r in cell])
                             for when in ("step0", "trained") for stat in ("mean_top1", "best_top1")}})
    return table


def markdown(table: list[dict], inits: list[str], lrs: list[float], configurations: int, seeds: list[int]) -> str:
    def fmt(cell: dict) -> str:
        return f"{cell['mean']:.1f} ± {cell['spread']:.1f}"

    lines = [f"Top-1 (%) over the {configurations} configurations, mean over seeds {seeds} ± spread (max - min).", ""]
    for stat, name in (("mean_top1", "mean"), ("best_top1", "best")):
        lines += [f"**{name} top-1 over the configurations**", "",
                  "| init | step 0 | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
                  "|---|---:|" + "---:|" * len(lrs)]
        for init in inits:
            cells = [c for c in table if c["init"] == init]
            lines.append(f"| {init} | {fmt(cells[0][f'step0_{stat}'])} | "
                         + " | ".join(fmt(c[f"trained_{stat}"]) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(table: list[dict], inits: list[str], lrs: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for init, color in zip(inits, colors):
        cells = [c for c in table if c["init"] == init]
        trained = [c["trained_mean_top1"] for c in cells]
        low = [t["mean"] - min(t["per_seed"]) for t in trained]
        high = [max(t["per_seed"]) - t["mean"] for t in trained]
        ax.errorbar(lrs, [t["mean"] for t in trained], yerr=[low, high], color=color, marker="o", ms=4, capsize=3,
                    label=f"{init}, trained (mean, seed range)")
        ax.scatter(lrs, [c["step0_mean_top1"]["mean"] for c in cells], marker="s", s=36, facecolors="none",
                   edgecolors=color, label="step 0 (hollow, its init's colour)" if init == inits[0] else None)
    ax.set_xscale("log")
    ax.set_xlabel("supernet peak learning rate")
    ax.set_ylabel("mean top-1 over the configurations (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ancestry", default="",
                   help="an ancestry run folder (required unless --tiny; a preset name gives random weights)")
    p.add_argument("--data", default="fashion-mnist", help="distillation data")
    p.add_argument("--subset", type=int, default=20000, help="images of --data distilled on (drawn at random, seeded)")
    p.add_argument("--widths", default="48,96", help="the two students' widths")
    p.add_argument("--depth", type=int, default=6, help="the students' depth (6: 18 configurations)")
    p.add_argument("--epochs", type=int, default=2, help="distillation epochs per student")
    p.add_argument("--downstream", default="mnist-5k")
    p.add_argument("--train-subset", type=int, default=0, help="downstream training images (0 = all)")
    p.add_argument("--test-subset", type=int, default=0, help="downstream test images (0 = all)")
    p.add_argument("--finetune-epochs", type=int, default=10,
                   help="supernet training epochs; 0 = score the starts only (e.g. with --downstream fashion-mnist, "
                        "the students' own task, to see how much of their function each init keeps)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak lr of the distillation")
    p.add_argument("--inits", default=DEFAULT_INITS, help=f"comma list of {list(INITS)}")
    p.add_argument("--finetune-lrs", default="5e-5,1e-4,3e-4,1e-3", help="peak lrs of the supernet training")
    p.add_argument("--seeds", default="0,1,2", help="supernet seeds (stitches, probe images, draws, data order)")
    p.add_argument("--fresh-heads", action="store_true", help="new downstream classifiers (default: kept)")
    p.add_argument("--reuse", action="store_true", help="load the pool already in --work instead of distilling")
    p.add_argument("--pairs", default="all", choices=("all", "nearest"))
    p.add_argument("--init-samples", type=int, default=128, help="probe images of maps-gain and least-squares")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the distillation and of the data subsets")
    p.add_argument("--work", default="runs/pool_init_grid", help="where the pool learngene goes")
    p.add_argument("--out", default="benchmarks/results/pool_init_grid.json")
    p.add_argument("--tiny", action="store_true", help=f"tiny settings (seconds; numbers mean nothing): {TINY}")
    if "--tiny" in argv:
        p.set_defaults(**TINY)  # flags given explicitly still win
    args = p.parse_args(argv)
    inits = [v for v in args.inits.split(",") if v]
    lrs, seeds, widths = parse_floats(args.finetune_lrs), parse_ints(args.seeds), parse_ints(args.widths)
    if [i for i in inits if i not in INITS]:
        p.error(f"unknown inits {[i for i in inits if i not in INITS]}; choose among {list(INITS)}")
    if len(widths) != 2:
        p.error(f"--widths takes the two students' widths, got {widths}")
    if not (inits and lrs and seeds):
        p.error("--inits, --finetune-lrs and --seeds each need at least one value")
    if args.finetune_epochs < 0:
        p.error(f"--finetune-epochs must be >= 0 (0 = score the starts only), got {args.finetune_epochs}")
    if not args.ancestry and not args.tiny:
        p.error("--ancestry is required (an ancestry run folder), unless --tiny")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    work, out = Path(args.work), Path(args.out)

    ancestry = (learngene.load_ancestry(args.ancestry) if args.ancestry else
                learngene.load_ancestry("vit-mini", depth=4, embed_dim=48, num_heads=3))  # --tiny: random
    arch = arch_of(ancestry).to_dict()
    side, chans = int(arch["img_size"]), int(arch["in_chans"])
    train = load_dataset(args.downstream, "train", image_size=side, in_chans=chans)
    test = load_dataset(args.downstream, "test", image_size=side, in_chans=chans)
    classes = train.info.num_classes
    train = subset(train, args.train_subset, args.seed) if args.train_subset else train
    test = subset(test, args.test_subset, args.seed) if args.test_subset else test

    # -- the pool: reused, or distilled as pool_vs_snnet.py does --------------------------------
    found = reuse_learngene(work, METHOD, widths, args.depth, p.error) if args.reuse else None
    if found is not None:
        gene, stage1 = found
    else:
        t0 = time.perf_counter()
        distill = subset(load_dataset(args.data, "train", image_size=side, in_chans=chans), args.subset, args.seed)
        gene = learngene.extract(METHOD, ancestry, data=distill, epochs=args.epochs, **recipe(args, widths))
        gene.save(work / METHOD)
        stage1 = {"epochs": args.epochs, "samples_seen": gene.provenance["cost"]["samples_seen"],
                  "flops": gene.provenance["cost"]["flops"], "wall_time_s": time.perf_counter() - t0}
        print(f"{METHOD}: distilled {widths} x {args.depth} in {stage1['wall_time_s']:.0f} s, saved to "
              f"{work / METHOD}", flush=True)

    # -- the grid ------------------------------------------------------------------------------
    rows: list[dict] = []
    step0: dict[tuple[str, int], dict] = {}
    configurations = None
    cells = len(inits) * len(lrs) * len(seeds)
    for init in inits:
        for lr in lrs:
            for seed in seeds:
                t0 = time.perf_counter()
                supernet = learngene_pool.stitch_supernet(gene, num_classes=classes, init=init, init_data=train,
                                                          init_samples=args.init_samples, pairs=args.pairs, seed=seed)
                if args.fresh_heads:
                    torch.manual_seed(seed)
                    for anchor in supernet.anchors:
                        anchor.reset_classifier(classes)
                build_s = time.perf_counter() - t0
                configurations = supernet.num_configs
                fresh = (init, seed) not in step0
                if fresh:  # step 0 depends on (init, seed) only: the same supernet for every lr
                    t1, c1 = time.perf_counter(), time.process_time()
                    top1 = evaluate_every(supernet, test)
                    step0[init, seed] = {"top1": top1, "eval_s": time.perf_counter() - t1,
                                         "eval_cpu_s": time.process_time() - c1}
                before = step0[init, seed]["top1"]
                if args.finetune_epochs == 0:  # the starts only: "trained" repeats step 0
                    after, steps, samples_seen = before, 0, 0
                    train_s = train_cpu_s = eval_s = eval_cpu_s = 0.0
                else:
                    config = TrainConfig(epochs=args.finetune_epochs, batch_size=args.batch_size, lr=lr,
                                         warmup_epochs=min(1.0, float(args.finetune_epochs)), seed=seed,
                                         checkpoint=False)
                    t1, c1 = time.perf_counter(), time.process_time()
                    result = fit(supernet, train, None, config, progress=False)
                    steps, samples_seen = result.steps, result.samples_seen
                    train_s, train_cpu_s = time.perf_counter() - t1, time.process_time() - c1
                    t1, c1 = time.perf_counter(), time.process_time()
                    after = evaluate_every(supernet, test)
                    eval_s, eval_cpu_s = time.perf_counter() - t1, time.process_time() - c1
                rows.append({
                    "init": init, "finetune_lr": lr, "seed": seed, "configurations": configurations,
                    "step0": {"mean_top1": mean(before), "best_top1": max(before)},
                    "trained": {"mean_top1": mean(after), "best_top1": max(after)},
                    "step0_top1": before, "trained_top1": after, "init_summary": supernet.init_summary,
                    "steps": steps, "samples_seen": samples_seen,
                    "build_s": build_s, "step0_eval_s": step0[init, seed]["eval_s"] if fresh else 0.0,
                    "train_s": train_s, "eval_s": eval_s, "wall_time_s": time.perf_counter() - t0,
                    "step0_eval_cpu_s": step0[init, seed]["eval_cpu_s"] if fresh else 0.0,
                    "train_cpu_s": train_cpu_s, "eval_cpu_s": eval_cpu_s})
                print(f"[{len(rows)}/{cells}] {init} lr {lr:g} seed {seed}: mean/best top-1 "
                      f"{100 * mean(before):.1f}/{100 * max(before):.1f}% at step 0 -> "
                      f"{100 * mean(after):.1f}/{100 * max(after):.1f}% trained, {time.perf_counter() - t0:.0f} s",
                      flush=True)

    table = summarise(rows, inits, lrs)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/pool_init_grid.py", *argv])
    results = {"benchmark": "pool_init_grid", "command": command, "commit": git_commit(), "machine": machine_info(),
               "settings": vars(args), "ancestry_arch": arch, "configurations": configurations, "stage1": stage1,
               "wall_time_s": time.perf_counter() - start, "table": table, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results)
    atomic_write_text(out.with_suffix(".md"), markdown(table, inits, lrs, configurations, seeds))
    plot(table, inits, lrs, out.with_suffix(".png"),
         f"learngene-pool, students {widths} x {args.depth} blocks ({configurations} configurations), "
         f"{args.downstream}, {args.finetune_epochs} epochs, seeds {seeds}")
    print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')} in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
