"""The end-to-end demo (`learngene demo`), a flat recipe:

1. train (or reuse, keyed by its config hash) a vit-mini ancestry on Fashion-MNIST;
2. extract a learngene from it;
3. expand descendants of three depths, fine-tune them and the scratch baseline of the
   same shapes on mnist-5k with the same recipe;
4. print a table (method, depth, parameters, stored parameters, accuracy, training cost)
   and write results.json plus a plot of accuracy vs training epochs.

The descendants fine-tune ``workers`` at a time in separate processes, torch's threads split
between them (on a few cores, one small model per core beats two threads on one model; the
suites' ``--workers`` do the same). README, "The demo", gives the measured time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._io import atomic_write_json
from .api import extract, load
from .arch import arch_of
from .bench import train_or_reuse_ancestry as train_or_reuse
from .bench.report import save_figure
from .errors import ConfigError
from .models import load_ancestry
from .recipes import Shape, finetune, grow, load_splits
from .train import TrainConfig
from .version import __version__


@dataclass
class DemoConfig:
    out: str = "runs/demo"                       # everything goes here
    ancestry: str | None = None                  # an existing ancestry folder; None = train/reuse one
    ancestry_preset: str = "vit-mini"
    ancestry_data: str = "fashion-mnist"
    ancestry_epochs: int = 2                     # ~2 min each on 2 cores
    method: str = "heuristic"                    # the learngene method shown
    method_options: dict[str, Any] = field(default_factory=lambda: {"rule": "first", "k": 3})
    depths: list[int] = field(default_factory=lambda: [3, 6, 9])
    downstream: str = "mnist-5k"
    epochs: int = 6                              # fine-tuning epochs, same for every model
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))  # descendants fine-tuned at once

    def __post_init__(self) -> None:
        if not self.depths or any(not isinstance(d, int) or d < 1 for d in self.depths):
            raise ConfigError(f"depths must be positive integers, got {self.depths!r}")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {self.workers!r}")


def train_or_reuse_ancestry(cfg: DemoConfig, out: Path) -> tuple[Path, dict[str, Any]]:
    """Return (ancestry folder, its training cost). Reuses a finished run with the same config.

    Shared with `learngene bench` (same folder name and key for the same recipe).
    """
    if cfg.ancestry:
        path = Path(cfg.ancestry)
        meta = json.loads((path / "model_config.json").read_text()) if (path / "model_config.json").is_file() else {}
        return path, meta.get("cost", {})
    train_cfg = TrainConfig(epochs=cfg.ancestry_epochs, batch_size=128, lr=1e-3, warmup_epochs=min(1, cfg.ancestry_epochs),
                            seed=cfg.seed)
    path, meta = train_or_reuse(cfg.ancestry_preset, cfg.ancestry_data, train_cfg, out, tag="[1/4] ")
    return path, meta.get("cost", {})


def run_demo(cfg: DemoConfig) -> list[dict[str, Any]]:
    import torch

    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ancestry_path, ancestry_cost = train_or_reuse_ancestry(cfg, out)
    ancestry = load_ancestry(ancestry_path)

    print(f"[2/4] extracting a {cfg.method} learngene {cfg.method_options}")
    genes = {
        cfg.method: extract(cfg.method, ancestry, data=cfg.ancestry_data, **cfg.method_options),
        "scratch": extract("scratch", ancestry),
    }

    gene_dirs = {}
    for method, gene in genes.items():
        gene_dirs[method] = out / f"learngene-{method}"
        gene.save(gene_dirs[method])
    train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                            warmup_epochs=min(1, cfg.epochs), checkpoint=False)
    jobs = [(method, str(gene_dirs[method]), depth, cfg.downstream, train_cfg,
             str(out / "descendants" / f"{method}-depth{depth}"), cfg.seed)
            for depth in cfg.depths for method in genes]
    n_train = len(load_splits(cfg.downstream, arch_of(ancestry))[0])
    print(f"[3/4] fine-tuning {len(jobs)} descendants on {cfg.downstream} "
          f"({n_train:,} images x {cfg.epochs} epochs each, {min(cfg.workers, len(jobs))} at a time)")
    rows = []
    for row in _map(_finetune_one, jobs, cfg.workers):
        rows.append(row)
        print(f"      {row['method']:>12s} depth {row['depth']:2d}: top-1 {row['top1']:.3f} "
              f"({row['wall_time_s']:.0f} s)", flush=True)
    order = {(method, depth): i for i, (method, _, depth, *_rest) in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["method"], r["depth"])])  # the table's order, whatever finished first

    print("[4/4] results")
    print_table(rows)
    plot_path = plot_curves(rows, out / "accuracy_vs_epochs.png", title=f"{cfg.downstream}: {cfg.method} vs scratch")
    atomic_write_json(out / "results.json", {
        "command": "learngene demo", "config": asdict(cfg), "library": f"learngene-kit {__version__}",
        "torch": torch.__version__, "ancestry": str(ancestry_path), "ancestry_cost": ancestry_cost,
        "records": rows, "wall_time_s": round(time.perf_counter() - start, 1),
    })
    print(f"wrote {out / 'results.json'} and {plot_path} in {time.perf_counter() - start:.0f} s")
    return rows


def _finetune_one(job: tuple) -> dict[str, Any]:
    """Grow one descendant from a saved learngene and fine-tune it; its results row."""
    method, gene_dir, depth, downstream, train_cfg, run_dir, seed = job
    gene = load(gene_dir)
    train, test = load_splits(downstream, gene.ancestry_arch)
    # the plain ViT expand grows (for PEG-style methods: maps folded before training)
    child = grow(gene, shape=Shape(depth=depth), num_classes=train.info.num_classes, seed=seed, trainable=False)
    model, result = finetune(child, (train, test), train_cfg, Path(run_dir), progress=False)
    return {
        "method": method, "depth": depth,
        "params": sum(p.numel() for p in model.parameters()),
        "stored_params": gene.num_parameters,
        "top1": result.eval_acc,
        "finetune_samples": result.samples_seen,
        "finetune_flops": result.train_flops,
        "curve": [r["eval_acc"] for r in result.history],
        "wall_time_s": round(result.wall_time_s, 1),
    }


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _map(fn, jobs: list, workers: int):
    """Yield fn(job) for every job, as they finish: in this process when ``workers`` is 1, else
    in that many spawned processes with torch's threads split between them."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    import concurrent.futures
    import multiprocessing

    import torch

    workers = min(workers, len(jobs))
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_set_threads,
                                                initargs=(max(1, torch.get_num_threads() // workers),)) as pool:
        for future in concurrent.futures.as_completed([pool.submit(fn, job) for job in jobs]):
            yield future.result()


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'method':>12s} {'depth':>5s} {'params':>10s} {'stored':>10s} {'top-1':>6s} {'train samples':>13s} {'train FLOPs':>11s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['method']:>12s} {r['depth']:>5d} {r['params']:>10,d} {r['stored_params']:>10,d} "
              f"{r['top1']:>6.3f} {r['finetune_samples']:>13,d} {r['finetune_flops']:>11.3g}")


def plot_curves(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = sorted({r["method"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    colors = plt.cm.viridis([i / max(1, len(depths) - 1) * 0.85 for i in range(len(depths))])
    styles = ["-", "--", ":", "-."]
    for r in rows:
        epochs = list(range(1, len(r["curve"]) + 1))
        ax.plot(epochs, r["curve"], styles[methods.index(r["method"]) % len(styles)], marker="o", markersize=3,
                color=colors[depths.index(r["depth"])], label=f"{r['method']} depth {r['depth']}")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("test top-1 accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
