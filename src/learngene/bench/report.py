"""Results: every cached cell of a suite as records, the per-shape summary (mean ± std over
seeds), <results_dir>/<suite>.json and .md, and three plots.

Accounting, per record:
  - ``stored_params``: what must be stored to initialise every shape of the suite. For a
    learngene, ``gene.num_parameters``; for a baseline that stores whole pre-trained models
    (``PER_SHAPE_METHODS``: pretrain-finetune), the parameters of one model per suite shape.
  - ``ancestry_*``: the ancestry's training cost, counted for every learngene that stores
    something derived from it (a learngene storing nothing, e.g. scratch, used no ancestry).
  - ``extract_*``: the learngene's own cost (``provenance["cost"]``, e.g. TLEG's distillation).
  - ``finetune_*``: the descendant's training cost (``TrainResult``), per run; a distilling
    cell's includes its teacher's forwards.
  - ``teacher``: a distilling cell's teacher (its cell key, label, top-1, and its own
    fine-tuning cost ``finetune_flops``/``finetune_samples``, not in the cell's ``finetune_*``);
    such a cell counts the ancestry's cost, which its teacher was fine-tuned from.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, atomic_write_text
from ..arch import ViTArch, create_vit
from .suite import REPO_ROOT, Suite, plan_cells, suite_shapes

PER_SHAPE_METHODS = ("pretrain-finetune",)  # baselines that store one whole model per shape
RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {  # what every record holds (checked by the tests)
    "method": str, "method_name": str, "dataset": str, "depth": int, "embed_dim": int, "num_heads": int,
    "seed": int, "epochs": int, "top1": float, "curve": list, "params": int, "stored_params": int,
    "learngene_params": int, "ancestry_samples": int, "ancestry_flops": (int, float),
    "extract_samples": int, "extract_flops": (int, float), "finetune_samples": int,
    "finetune_flops": (int, float), "wall_time_s": float, "cell": str, "command": str, "commit": str,
    "machine": dict,
}


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    import torch

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": device}


# -- records ------------------------------------------------------------------------------


def _vit_params(arch: ViTArch, shape: tuple[int, int, int]) -> int:
    depth, embed_dim, num_heads = shape
    model = create_vit(arch.replace(depth=depth, embed_dim=embed_dim, num_heads=num_heads))
    return sum(p.numel() for p in model.parameters())


def collect_results(suite: Suite, cells_dir: Path, akey: str, arch: ViTArch, ancestry_path: Path,
                    ancestry_meta: dict[str, Any], *, seeds: list[int], command: str, commit: str) -> dict[str, Any]:
    """Every cached cell of the suite's grid (all methods, datasets, shapes, ``seeds``) as records."""
    cells, unavailable = plan_cells(suite, akey, arch, methods=[m.label for m in suite.methods],
                                    datasets=suite.datasets, seeds=seeds)
    cost = ancestry_meta.get("cost", {})
    shapes = suite_shapes(suite, arch)
    per_shape_params = sum(_vit_params(arch, shape) for shape in shapes)
    records, skipped, missing, skipped_cells = [], [], 0, 0
    seen_skips = set()
    for cell in cells:
        path = cells_dir / f"{cell.key}.json"
        if not path.is_file():
            missing += 1
            continue
        cell_record = json.loads(path.read_text())
        depth, embed_dim, num_heads = cell.shape
        where = {"method": cell.entry.label, "dataset": cell.dataset, "depth": depth, "embed_dim": embed_dim,
                 "num_heads": num_heads}
        if cell_record["status"] == "skipped":
            skipped_cells += 1
            if (cell.entry.label, cell.dataset, cell.shape) not in seen_skips:
                seen_skips.add((cell.entry.label, cell.dataset, cell.shape))
                skipped.append({**where, "reason": cell_record["reason"]})
            continue
        uses_ancestry = cell_record["learngene_params"] > 0 or "teacher" in cell_record
        stored = per_shape_params if cell.entry.method in PER_SHAPE_METHODS else cell_record["learngene_params"]
        records.append({
            **where, "method_name": cell.entry.method, "options": cell.entry.options, "seed": cell.seed,
            "epochs": cell_record["epochs"], "top1": cell_record["top1"], "curve": cell_record["curve"],
            "params": cell_record["params"], "stored_params": stored,
            "learngene_params": cell_record["learngene_params"],
            "ancestry_samples": int(cost.get("samples_seen", 0)) if uses_ancestry else 0,
            "ancestry_flops": int(cost.get("train_flops", 0)) if uses_ancestry else 0,
            "extract_samples": cell_record["extract_samples"], "extract_flops": cell_record["extract_flops"],
            "finetune_samples": cell_record["finetune_samples"], "finetune_flops": cell_record["finetune_flops"],
            "wall_time_s": float(cell_record["wall_time_s"]), "cell": cell.key,
            "command": cell_record["command"], "commit": cell_record["commit"], "machine": cell_record["machine"],
            **({"teacher": cell_record["teacher"]} if "teacher" in cell_record else {}),
        })
    for label, reason in unavailable.items():
        skipped.append({"method": label, "dataset": None, "depth": None, "embed_dim": None, "num_heads": None,
                        "reason": reason})
    return {
        "suite": suite.name, "command": command, "commit": commit, "machine": machine_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ancestry": {"path": str(ancestry_path), "key": akey, "eval_acc": ancestry_meta.get("eval_acc"),
                     "samples": int(cost.get("samples_seen", 0)), "flops": int(cost.get("train_flops", 0)),
                     "arch": arch.to_dict()},
        "config": _suite_dict(suite),
        "cells": len(cells), "skipped_cells": skipped_cells, "missing_cells": missing,
        "records": records, "skipped": skipped, "summary": aggregate(records),
    }


def _suite_dict(suite: Suite) -> dict[str, Any]:
    values = asdict(suite)
    values["widths"] = [list(w) for w in suite.widths] if suite.widths else None
    return values


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std of one value is 0."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, dataset, shape): mean and std of top-1 over seeds, costs, mean curve."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], r["dataset"], r["depth"], r["embed_dim"], r["num_heads"]), []).append(r)
    rows = []
    for (method, dataset, depth, embed_dim, num_heads), group in groups.items():
        top1_mean, top1_std = mean_std([r["top1"] for r in group])
        length = min(len(r["curve"]) for r in group)
        curve = [sum(r["curve"][e] for r in group) / len(group) for e in range(length)]
        first = group[0]
        rows.append({
            "method": method, "dataset": dataset, "depth": depth, "embed_dim": embed_dim, "num_heads": num_heads,
            "n_seeds": len(group), "seeds": sorted(r["seed"] for r in group),
            "top1_mean": top1_mean, "top1_std": top1_std, "curve_mean": curve,
            "params": first["params"], "stored_params": first["stored_params"],
            "pretrain_flops": first["ancestry_flops"] + first["extract_flops"],
            "finetune_flops": sum(r["finetune_flops"] for r in group) / len(group),
            "finetune_samples": sum(r["finetune_samples"] for r in group) // len(group),
            "wall_time_s": sum(r["wall_time_s"] for r in group) / len(group),
        })
        if "teacher" in first:  # a distilling row: its teachers' own fine-tuning, per run
            rows[-1]["teacher"] = {
                "label": first["teacher"]["label"],
                "top1_mean": sum(r["teacher"]["top1"] for r in group) / len(group),
                "finetune_flops": sum(r["teacher"]["finetune_flops"] for r in group) / len(group),
            }
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | dataset | depth | width/heads | params | stored params | top-1 (mean ± std) | seeds "
             "| pre-train + extract FLOPs | fine-tune FLOPs | s / run |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['dataset']} | {r['depth']} | {r['embed_dim']}/{r['num_heads']} "
                     f"| {r['params']:,} | {r['stored_params']:,} | {100 * r['top1_mean']:.1f} ± "
                     f"{100 * r['top1_std']:.1f} | {r['n_seeds']} | {r['pretrain_flops']:.3g} "
                     f"| {r['finetune_flops']:.3g} | {r['wall_time_s']:.0f} |")
    return "\n".join(lines)


def results_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    anc = results["ancestry"]
    lines = [
        f"# Benchmark suite `{results['suite']}`", "",
        f"- command: `{results['command']}`",
        f"- commit: `{results['commit']}`",
        f"- machine: {m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads), {m['device']}, "
        f"torch {m['torch']}, {m['platform']}",
        f"- ancestry: `{anc['path']}` (key {anc['key']}, test accuracy {anc['eval_acc'] or float('nan'):.3f}, "
        f"{anc['samples']:,} samples, {anc['flops']:.3g} FLOPs)",
        f"- cells: {results['cells']} in the suite: {len(results['records'])} trained, "
        f"{results['skipped_cells']} skipped, {results['missing_cells']} not run yet",
        "",
        "Top-1 on the test split in %, mean ± sample std over seeds. Stored params: what must be kept "
        "to initialise every shape of the suite (the learngene; one whole model per shape for "
        "pretrain-finetune). Pre-train + extract FLOPs: the ancestry's training (for learngenes that "
        "store something) plus the learngene's extraction. Fine-tune FLOPs per run.", "",
        markdown_table(results["summary"]), "",
    ]
    distilled = [r for r in results["summary"] if "teacher" in r]
    if distilled:
        lines += ["## Teachers", "",
                  "A distilling row's fine-tune FLOPs include its teacher's forwards; the teacher's own "
                  "fine-tuning (below, per run) is not in them.", "",
                  "| method | dataset | depth | teacher | teacher top-1 | teacher fine-tune FLOPs |",
                  "|---|---|---:|---|---:|---:|"]
        for r in distilled:
            t = r["teacher"]
            lines.append(f"| {r['method']} | {r['dataset']} | {r['depth']} | {t['label']} "
                         f"| {100 * t['top1_mean']:.1f} | {t['finetune_flops']:.3g} |")
        lines.append("")
    if results["skipped"]:
        lines += ["## Skipped", ""]
        for s in results["skipped"]:
            where = f"{s['dataset']}, depth {s['depth']} ({s['embed_dim']}/{s['num_heads']})" if s["depth"] else "all cells"
            lines.append(f"- {s['method']}, {where}: {s['reason']}")
        lines.append("")
    return "\n".join(lines)


def write_results(results: dict[str, Any], results_dir: Path) -> list[Path]:
    name = results["suite"]
    files = [atomic_write_json(results_dir / f"{name}.json", results),
             atomic_write_text(results_dir / f"{name}.md", results_markdown(results))]
    files += plot_results(results, results_dir)
    return files


# -- plots ----------------------------------------------------------------------------------


def save_figure(fig: Any, path: Path, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


def _panels(count: int, rows: int = 1) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, math.ceil(count / rows))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _method_style(methods: list[str]) -> dict[str, dict[str, Any]]:
    import matplotlib.pyplot as plt

    colors = plt.cm.tab10.colors if len(methods) <= 10 else plt.cm.tab20.colors  # distinct up to 20 methods
    markers = "osD^vP*Xh<>"
    return {m: {"color": colors[i % len(colors)], "marker": markers[i % len(markers)]} for i, m in enumerate(methods)}


def _figure_legend(fig: Any, style: dict[str, dict[str, Any]], methods: list[str]) -> None:
    """One legend for all panels, below them (a method may be absent from any one panel)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], label=m, **style[m]) for m in methods]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)


def plot_results(results: dict[str, Any], results_dir: Path) -> list[Path]:
    from matplotlib.ticker import MaxNLocator

    rows = results["summary"]
    suite = results["suite"]
    methods = [m["label"] for m in results["config"]["methods"] if any(r["method"] == m["label"] for r in rows)]
    legend_rows = math.ceil(len(methods) / 5)
    datasets = results["config"]["datasets"]
    style = _method_style(methods)
    paths = []

    # 1. accuracy vs descendant parameters: one panel per dataset, one line per method.
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets):
        for method in methods:
            points = sorted((r["params"], r["top1_mean"], r["top1_std"]) for r in rows
                            if r["method"] == method and r["dataset"] == dataset)
            if points:
                x, y, err = zip(*points)
                ax.errorbar(x, y, yerr=err, label=method, capsize=3, markersize=4, **style[method])
        ax.set(title=dataset, xlabel="descendant parameters", ylabel="test top-1 (mean ± std over seeds)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{suite}: accuracy vs descendant size")
    _figure_legend(fig, style, methods)
    fig.tight_layout(rect=(0, 0.05 * legend_rows + 0.02, 1, 1))
    paths.append(save_figure(fig, results_dir / f"{suite}-params.png"))

    # 2. accuracy vs fine-tuning epochs: rows = datasets, columns = shapes (or the chosen depth).
    curve_depth = results["config"].get("curve_depth")
    shapes = sorted({(r["depth"], r["embed_dim"], r["num_heads"]) for r in rows
                     if curve_depth is None or r["depth"] == curve_depth})
    shapes = shapes or [(curve_depth or 0, 0, 0)]
    fig, axes = _panels(len(datasets) * len(shapes), rows=len(datasets))
    for i, dataset in enumerate(datasets):
        for j, shape in enumerate(shapes):
            ax = axes[i * len(shapes) + j]
            for method in methods:
                for r in rows:
                    if r["method"] == method and r["dataset"] == dataset and (r["depth"], r["embed_dim"], r["num_heads"]) == shape:
                        epochs = list(range(1, len(r["curve_mean"]) + 1))
                        ax.plot(epochs, r["curve_mean"], label=method, markersize=3, **style[method])
            ax.set(title=f"{dataset}, depth {shape[0]} ({shape[1]}/{shape[2]})", xlabel="fine-tuning epoch",
                   ylabel="test top-1 (mean over seeds)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    fig.suptitle(f"{suite}: accuracy vs training epochs")
    _figure_legend(fig, style, methods)
    fig.tight_layout(rect=(0, 0.05 * legend_rows / len(datasets) + 0.02, 1, 1))
    paths.append(save_figure(fig, results_dir / f"{suite}-epochs.png"))

    # 3. accuracy vs parameters stored: one point per method (mean over the shapes it made).
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets):
        for method in methods:
            mine = [r for r in rows if r["method"] == method and r["dataset"] == dataset]
            if mine:
                accuracy = sum(r["top1_mean"] for r in mine) / len(mine)
                ax.plot([mine[0]["stored_params"]], [accuracy], linestyle="none", markersize=7,
                        label=f"{method} ({len(mine)} shapes)", **style[method])
        ax.set_xscale("symlog", linthresh=1e4)
        ax.set(title=dataset, xlabel="parameters stored (all suite shapes)", ylabel="test top-1 (mean over shapes)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{suite}: accuracy vs parameters stored")
    fig.tight_layout()
    paths.append(save_figure(fig, results_dir / f"{suite}-stored.png"))
    return paths
