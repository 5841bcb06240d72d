"""AT-TPC event classification (proton / carbon / junk): learngene descendants vs CNN baselines.

The downstream task of Kuchera et al. (NIM A 2019): simulated 46Ar(p,p) events from
attpc-engine (``learngene.data.attpc``; needs ``pip install -e .[attpc]``), rendered as 28x28
grey images (xy | zy side by side), the vit-mini ancestry's input.

Models, all fine-tuned with ONE recipe (same epochs, batch, lr schedule, seed: equal training
budget in samples seen; FLOPs differ with model size and are recorded):

* ViT descendants of the vit-mini Fashion-MNIST ancestry at several depths, from learngenes
  (heuristic last-3 blocks, TLEG, weight selection head-aware), plus scratch ViTs of the same
  shapes and the ancestry itself (pretrain-finetune, depth 12). Learngenes are reused from
  ``--genes`` (``learngene bench`` writes them there) or extracted once.
* The paper's baseline at CPU scale: a small VGG-style CNN (``learngene.bench.attpc_cnn``) pretrained on
  Fashion-MNIST (the source task), then a new head (Dense 256, dropout 0.5) and fine-tuning of
  every layer; and the same CNN from scratch. Departure: the paper's VGG16 (ImageNet, Adam
  lr 1e-5) is too large for this CPU budget; the CNN follows the same recipe as the ViTs.

Reported as physicists do: per-class precision / recall / F1 and confusion matrix, accuracy vs
parameters and vs inference speed (events/s on this CPU, batch 256, the torch threads in use),
and a robustness row: the same models (trained on clean simulation) on a noisier test set (the
same simulated test events with up to ``--noise-hits`` random junk-like hits added to every
proton and carbon event). Writes ``<results>/<name>.json`` (command, commit, machine, config,
records), ``<name>.md`` and PNG plots; each trained model's record is cached under
``<out>/cells`` by its config hash, so an interrupted run resumes.

    # defaults (~15-20 min on 2 CPU cores, simulation of ~7,200 events included on a first run)
    python benchmarks/attpc.py
    # tiny check (< 3 min)
    python benchmarks/attpc.py --tiny --name attpc-tiny --results /tmp/attpc-tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ANCESTRY = REPO / "runs" / "ancestry-vit-mini-fashion-mnist-7fe3e19704"
# (label, method, options, depths or None for the run's depths)
VIT_ENTRIES = {
    "scratch": ("scratch", {}, None),
    "heuristic-last3": ("heuristic", {"rule": "last", "k": 3}, None),
    "tleg": ("tleg", {"epochs": 2}, None),
    "ws-head-aware": ("weight-selection", {"selection": "head-aware"}, None),
    "pretrain-finetune": ("pretrain-finetune", {}, [12]),
}
CNN_LABELS = ("cnn-pretrained", "cnn-scratch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ancestry", default=str(DEFAULT_ANCESTRY), help="vit-mini ancestry folder")
    parser.add_argument("--genes", default=str(REPO / "runs" / "bench" / "genes"),
                        help="folder of learngenes (reused by key; missing ones are extracted there)")
    parser.add_argument("--out", default=str(REPO / "runs" / "attpc"), help="cache of trained records and the CNN")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--name", default="attpc", help="results file stem")
    parser.add_argument("--methods", default=",".join(list(VIT_ENTRIES) + list(CNN_LABELS)))
    parser.add_argument("--depths", default="2,4,6", help="ViT descendant depths")
    parser.add_argument("--cnn-widths", default="8,16,32/16,32,64", help="CNN sizes: channel lists split by '/'")
    parser.add_argument("--cnn-pretrain-epochs", type=int, default=2, help="CNN epochs on Fashion-MNIST")
    parser.add_argument("--cnn-pretrain-samples", type=int, default=0, help="use only the first N source images (0 = all)")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (every model)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train-per-class", type=int, default=1200)
    parser.add_argument("--test-per-class", type=int, default=400)
    parser.add_argument("--noise-hits", type=int, default=60, help="robustness test: max noise hits per real event")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--tiny", action="store_true",
                        help="a quick check: 40/20 events per class, depths 2, 3 epochs, 1 small CNN, 4k source images")
    args = parser.parse_args(argv)
    if args.tiny:
        args.train_per_class, args.test_per_class, args.depths, args.epochs = 40, 20, "2", 3
        args.cnn_widths, args.cnn_pretrain_epochs, args.cnn_pretrain_samples = "8,16,32", 1, 4000
        args.methods = "scratch,tleg,ws-head-aware,cnn-pretrained,cnn-scratch"
    return args


# --------------------------------------------------------------------------- helpers


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def _hash(obj: Any) -> str:
    from learngene.bench.suite import config_hash

    return config_hash(obj)


def events_per_second(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 256, min_seconds: float = 1.0) -> float:
    """Inference throughput on CPU: repeated eval-mode passes over up to 1,024 images."""
    model.eval()
    sample = images[:1024]
    with torch.inference_mode():
        model(sample[:batch_size])  # warm-up
        seen, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            for i in range(0, len(sample), batch_size):
                model(sample[i : i + batch_size])
            seen += len(sample)
        return seen / (time.perf_counter() - start)


def evaluate_model(model: torch.nn.Module, clean: Any, noisy: Any) -> dict[str, Any]:
    from learngene.train.metrics import classification_report, predict

    names = clean.info.class_names
    return {
        "clean": classification_report(clean.labels, predict(model, clean.images), names),
        "noisy": classification_report(noisy.labels, predict(model, noisy.images), names),
        "events_per_s": events_per_second(model, clean.images),
    }


def _train_config(args: argparse.Namespace, seed: int):
    from learngene.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=1.0,
                       seed=seed, checkpoint=False, device="cpu")


def _fit_and_report(model, data: dict[str, Any], config, record: dict[str, Any]) -> dict[str, Any]:
    from learngene.train import fit

    result = fit(model, data["train"], data["test"], config, progress=False)
    return {
        **record, "status": "trained", "params": sum(p.numel() for p in model.parameters()),
        "finetune": config.to_dict(), "train_samples": result.samples_seen, "train_flops": result.train_flops,
        "forward_flops": result.forward_flops_per_sample, "wall_time_s": result.wall_time_s,
        "history": result.history, **evaluate_model(model, data["test"], data["noisy"]),
    }


# --------------------------------------------------------------------------- models


def vit_records(args, data, seeds: list[int], depths: list[int], labels: list[str], run_key: dict):
    from learngene._io import atomic_write_json
    from learngene.bench.run import extract_or_reuse_gene, recorded_ancestry_key
    from learngene.bench.suite import MethodEntry, gene_key, method_config
    from learngene.errors import ConfigError

    ancestry = Path(args.ancestry)
    meta = json.loads((ancestry / "model_config.json").read_text())
    akey, source_data = recorded_ancestry_key(ancestry), meta.get("data", "fashion-mnist")
    for label in labels:
        method, options, fixed_depths = VIT_ENTRIES[label]
        entry = MethodEntry(label=label, method=method, options=options)
        gkey = gene_key(akey, method, method_config(entry), source_data)
        gene, gene_path = extract_or_reuse_gene(entry, gkey, ancestry, source_data, Path(args.genes))
        for depth in fixed_depths or depths:
            for seed in seeds:
                config = _train_config(args, seed)
                key = _hash({**run_key, "family": "vit", "gene": gkey, "depth": depth, "train": config.to_dict()})
                record = {"family": "vit", "label": label, "method": method, "options": options, "depth": depth,
                          "seed": seed, "gene": str(gene_path), "stored_params": gene.num_parameters, "key": key}
                cached = Path(args.out) / "cells" / f"{key}.json"
                if cached.is_file():
                    yield json.loads(cached.read_text()), True
                    continue
                try:
                    model = gene.expand(depth=depth, num_classes=3, seed=seed)
                except ConfigError as error:
                    yield {**record, "status": "skipped", "reason": str(error)}, False
                    continue
                record = _fit_and_report(model, data, config, record)
                atomic_write_json(cached, record)
                yield record, False


def pretrained_cnn(args, widths: tuple[int, ...]):
    """A VggSmall trained on Fashion-MNIST (the source task), cached in <out>/cnn-fashion-mnist-<key>."""
    from learngene.bench.attpc_cnn import create_cnn, load_cnn, save_cnn
    from learngene.data import load_dataset
    from learngene.train import TrainConfig, fit

    config = TrainConfig(epochs=args.cnn_pretrain_epochs, batch_size=128, lr=1e-3, warmup_epochs=1.0 if
                         args.cnn_pretrain_epochs >= 1 else 0.0, seed=0, checkpoint=False, device="cpu")
    recipe = {"widths": list(widths), "data": "fashion-mnist", "samples": args.cnn_pretrain_samples,
              "train": config.to_dict()}
    folder = Path(args.out) / f"cnn-fashion-mnist-{_hash(recipe)}"
    if (folder / "cnn_config.json").is_file():
        return load_cnn(folder), json.loads((folder / "cnn_config.json").read_text())["pretrain"]
    train = load_dataset("fashion-mnist", "train", image_size=28, in_chans=1)
    test = load_dataset("fashion-mnist", "test", image_size=28, in_chans=1)
    if args.cnn_pretrain_samples:
        from learngene.data import ImageDataset

        count = args.cnn_pretrain_samples  # a prefix of the source task, for quick checks
        train = ImageDataset(train.images[:count], train.labels[:count], train.info)
    torch.manual_seed(0)
    model = create_cnn(widths=widths, num_classes=10)
    print(f"cnn {widths}: pretraining on Fashion-MNIST ({len(train):,} images x {config.epochs} epochs)", flush=True)
    result = fit(model, train, test, config, progress=False)
    pretrain = {**recipe, "eval_acc": result.eval_acc, "train_samples": result.samples_seen,
                "train_flops": result.train_flops, "wall_time_s": result.wall_time_s}
    save_cnn(model, folder, pretrain=pretrain)
    print(f"cnn {widths}: Fashion-MNIST test accuracy {result.eval_acc:.3f}", flush=True)
    return model, pretrain


def cnn_records(args, data, seeds: list[int], labels: list[str], run_key: dict):
    from learngene._io import atomic_write_json
    from learngene.bench.attpc_cnn import create_cnn

    for widths in [tuple(_ints(w)) for w in args.cnn_widths.split("/") if w.strip()]:
        for label in labels:
            for seed in seeds:
                config = _train_config(args, seed)
                pretrain_recipe = ({"epochs": args.cnn_pretrain_epochs, "samples": args.cnn_pretrain_samples}
                                   if label == "cnn-pretrained" else None)
                key = _hash({**run_key, "family": "cnn", "label": label, "widths": list(widths),
                             "pretrain": pretrain_recipe, "train": config.to_dict()})
                cached = Path(args.out) / "cells" / f"{key}.json"
                if cached.is_file():
                    yield json.loads(cached.read_text()), True
                    continue
                record: dict[str, Any] = {"family": "cnn", "label": label, "method": label, "widths": list(widths),
                                          "seed": seed, "key": key}
                if label == "cnn-pretrained":
                    model, pretrain = pretrained_cnn(args, widths)
                    # stored = the pretrained convolutions that are carried over (the head is new)
                    record["stored_params"] = sum(p.numel() for p in model.features.parameters())
                    record["pretrain"] = pretrain
                    torch.manual_seed(seed)
                    model.new_head(3)
                else:
                    torch.manual_seed(seed)
                    model = create_cnn(widths=widths, num_classes=3)
                    record["stored_params"] = 0
                record = _fit_and_report(model, data, config, record)
                atomic_write_json(cached, record)
                yield record, False


# --------------------------------------------------------------------------- report


def model_name(record: dict[str, Any]) -> str:
    if record["family"] == "vit":
        return f"{record['label']} d{record['depth']}"
    return f"{record['label']} {'-'.join(map(str, record['widths']))}"


def markdown(records: list[dict[str, Any]], class_names: tuple[str, ...]) -> str:
    header = ("| model | params | stored | events/s | acc clean | acc noisy | "
              + " | ".join(f"{c} P / R / F1" for c in class_names) + " |")
    lines = [header, "|" + "---|" * (6 + len(class_names))]
    for r in records:
        per_class = r["clean"]["per_class"]
        cells = " | ".join(f"{per_class[c]['precision']:.2f} / {per_class[c]['recall']:.2f} / {per_class[c]['f1']:.2f}"
                           for c in class_names)
        lines.append(f"| {model_name(r)} | {r['params']:,} | {r['stored_params']:,} | {r['events_per_s']:,.0f} | "
                     f"{100 * r['clean']['accuracy']:.1f} | {100 * r['noisy']['accuracy']:.1f} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_confusions(records: list[dict[str, Any]], class_names: tuple[str, ...], which: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learngene.bench.report import save_figure

    columns = min(4, len(records))
    rows = -(-len(records) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(records):]:
        ax.axis("off")
    for ax, record in zip(axes.flat, records):
        matrix = np.asarray(record[which]["confusion"], dtype=float)  # rows = true, columns = predicted
        fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
        for t in range(len(class_names)):
            for p in range(len(class_names)):
                ax.text(p, t, f"{int(matrix[t, p])}", ha="center", va="center",
                        color="white" if fractions[t, p] > 0.5 else "black", fontsize=8)
        ax.set_xticks(range(len(class_names)), class_names, fontsize=7)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
        ax.set_title(f"{model_name(record)}: {100 * record[which]['accuracy']:.1f}%", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(f"AT-TPC confusion matrices, {which} test set (counts; colour = row fraction)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_accuracy(records: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from learngene.bench.report import save_figure

    labels = list(dict.fromkeys(r["label"] for r in records))
    colours = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x_key, x_name in ((axes[0], "params", "parameters"), (axes[1], "events_per_s", "inference events/s (CPU)")):
        for label in labels:
            rows = sorted((r for r in records if r["label"] == label), key=lambda r: r[x_key])
            xs = [r[x_key] for r in rows]
            ax.plot(xs, [100 * r["clean"]["accuracy"] for r in rows], "o-", color=colours[label], label=label)
            ax.plot(xs, [100 * r["noisy"]["accuracy"] for r in rows], "x--", color=colours[label], alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels
        ax.set_xlabel(x_name)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy vs size (o clean, x noisy test)", fontsize=9)
    axes[1].set_title("accuracy vs inference speed", fontsize=9)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from learngene._io import atomic_write_json, atomic_write_text
    from learngene.bench.report import git_commit, machine_info
    from learngene.data.attpc import CLASS_NAMES, AttpcConfig, cache_key, load_attpc, load_split
    from learngene.data.processing import compute_mean_std

    started = time.perf_counter()
    labels = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in labels if m not in VIT_ENTRIES and m not in CNN_LABELS]
    if unknown:
        sys.exit(f"attpc.py: unknown method {unknown[0]!r}; choose among {', '.join(list(VIT_ENTRIES) + list(CNN_LABELS))}")
    seeds, depths = _ints(args.seeds), _ints(args.depths)

    clean = AttpcConfig(train_per_class=args.train_per_class, test_per_class=args.test_per_class)
    noisy = dataclasses.replace(clean, noise_hits=args.noise_hits)
    train_images, _ = load_split(clean, "train")
    stats = compute_mean_std(torch.from_numpy(np.ascontiguousarray(train_images)).unsqueeze(1))  # clean train
    data = {
        "train": load_attpc(clean, "train", image_size=28, in_chans=1, stats=stats),
        "test": load_attpc(clean, "test", image_size=28, in_chans=1, stats=stats),
        "noisy": load_attpc(noisy, "test", image_size=28, in_chans=1, stats=stats),
    }
    print(f"data: {len(data['train'])} train / {len(data['test'])} test events "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    run_key = {"data": cache_key(clean, "train"), "noisy": cache_key(noisy, "test"), "format": 1}

    records = []
    vit_labels = [m for m in labels if m in VIT_ENTRIES]
    cnn_labels = [m for m in labels if m in CNN_LABELS]
    for record, cached in [*vit_records(args, data, seeds, depths, vit_labels, run_key),
                           *cnn_records(args, data, seeds, cnn_labels, run_key)]:
        if record["status"] != "trained":
            print(f"{record['label']} d{record.get('depth')}: skipped: {record['reason']}", flush=True)
            continue
        records.append(record)
        print(f"{model_name(record):>26s}: clean {100 * record['clean']['accuracy']:5.1f}%  "
              f"noisy {100 * record['noisy']['accuracy']:5.1f}%  proton F1 "
              f"{record['clean']['per_class']['proton']['f1']:.3f}  {record['params']:>9,} params  "
              f"{record['events_per_s']:>8,.0f} ev/s{'  (cached)' if cached else ''}", flush=True)

    results_dir = Path(args.results)
    results = {
        "benchmark": "attpc",
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "commit": git_commit(),
        "machine": machine_info(),
        "config": {"data": clean.to_dict(), "noise_hits": args.noise_hits, "image_size": 28,
                   "ancestry": args.ancestry, "depths": depths, "seeds": seeds, "cnn_widths": args.cnn_widths,
                   "cnn_pretrain_epochs": args.cnn_pretrain_epochs, "epochs": args.epochs,
                   "batch_size": args.batch_size, "lr": args.lr},
        "class_names": list(CLASS_NAMES),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "records": records,
    }
    atomic_write_json(results_dir / f"{args.name}.json", results)
    atomic_write_text(results_dir / f"{args.name}.md", markdown(records, CLASS_NAMES))
    if records:
        plot_confusions(records, CLASS_NAMES, "clean", results_dir / f"{args.name}-confusion.png")
        plot_confusions(records, CLASS_NAMES, "noisy", results_dir / f"{args.name}-confusion-noisy.png")
        plot_accuracy(records, results_dir / f"{args.name}-accuracy_vs_size.png")
    print(markdown(records, CLASS_NAMES))
    print(f"wrote {results_dir / (args.name + '.json')} and plots in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
