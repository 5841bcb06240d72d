"""End to end at 224 px on the CPU, through the command line and the streaming path: a
DeiT-Tiny-shaped ancestry -> a TLEG learngene -> a depth-6 descendant fine-tuned with DeiT's recipe.

    python benchmarks/e2e_224.py                  # ~22 min on 2 CPU cores; writes results/e2e-224.json
    python benchmarks/e2e_224.py --tiny --out /tmp/e2e-tiny.json   # proof it runs: a handful of steps, ~1-2 min

The data: a subset of Fashion-MNIST (``--train-images`` of its train split, ``--test-images`` of
its test split, the first ones of each class) written as RGB JPEGs (quality 90) in the
``imagefolder:`` layout ``DIR/train/<class>/*.jpg`` + ``DIR/test/<class>/*.jpg``. The 28 px images are
upsampled (bicubic) to ``--side`` 256 px when written: 256 is the short side DeiT's evaluation
transform resizes to before its 224 centre crop, so evaluation is a plain crop and
RandomResizedCrop samples at least the model's resolution, as from a photo; the workers decode
and resize a 256 px JPEG per image, closer to ImageNet's cost than a 28 px file would be. Every
command reads it as ``imagefolder:DIR?memory=0``: ``memory=0`` forces the streaming path
(``StreamingImageDataset``: the file list in memory, each image decoded when read, by the
``train.num_workers`` DataLoader workers in training); without it a folder this small would be
decoded into memory (``IN_MEMORY_MAX_BYTES``).

The commands, run one after the other as a user would type them (``python -m learngene.cli`` is
the ``learngene`` console script; each is timed as a whole, start-up and evaluation included):

1. ``learngene ancestry --config configs/ancestry-deit-tiny.yaml --preset deit-tiny --augment``
   (DeiT-Ti: 12 blocks, width 192, 3 heads, patch 16, 224 px, with DeiT's recipe from the config:
   Mixup 0.8 / CutMix 1.0, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, repeated
   augmentation x3, label smoothing 0.1, AdamW wd 0.05, no gradient clipping, EMA; with ``--augment``
   the streamed train split runs RandomResizedCrop, flip, RandAugment and erasing per image in the
   DataLoader workers, Mixup/CutMix on the batch in the training process) for ``--ancestry-steps`` optimizer steps
   (``train.max_steps``; the cosine schedule ends there).
2. ``learngene extract tleg --ancestry <that run>``: TLEG's theta_A/theta_B learned by soft
   distillation of the ancestry into its depth-12 auxiliary model, ``--extract-epochs`` passes
   over the train images (TLEG's options count epochs, not steps: steps = epochs x
   train images // batch). Then ``learngene expand --depth 12`` + ``learngene eval``: the depth-12
   descendant computes the auxiliary model's function exactly, so this is its test accuracy.
3. ``learngene finetune <gene> --depth 6 --config configs/finetune-deit.yaml --augment``: the
   descendant (depth 6, TLEG's avg-pooled head) fine-tuned with DeiT's recipe plus layer decay
   0.75 for ``--finetune-steps`` steps.

Scaled to a run of a few hundred steps at batch 32 (one process, ``accum_steps`` 1): peak lr 5e-4
(DeiT's base lr; its rule 5e-4 x batch / 512 is for 300 epochs), warmup 10% of the steps, EMA
decay ``1 - 15 / steps`` (DeiT's 0.99996 over its ~375k steps has a time constant of 6.7% of the
run; kept at that share), evaluation once at the end. TLEG keeps its own defaults (lr 1e-3,
gradient clipping 1.0, no augmentation) with warmup 0.2 epochs.

Per command: wall seconds, steps, images, images/s (samples seen / the trainer's own wall time,
and / the command's wall time), test accuracy (and the EMA's), the compute path (from
train_summary.json; ``extract`` does not record it, so the path ``TrainConfig()``'s "auto"
resolves to here is given), the peak PSS and process count of the command's process tree
(sampled every 0.5 s: the DataLoader workers show up as processes), and which output files exist.

Estimate for the defaults on 2 CPU cores with native bf16 (DeiT-Ti trains at ~31.6 img/s on the
bf16 path with tensors in memory, ``perf-trainer-deit-tiny.json``; here the two workers' decoding,
cropping, RandAugment and erasing, ~20 CPU ms per image, share the same two cores): ancestry 300 steps x 32 = 9,600 images at ~23 img/s ~ 7.5 min; TLEG 2 epochs = 200 steps
(6,400 images; student + teacher ~ 4/3 of the ancestry's compute, no augmentation) at ~22 img/s
~ 5 min; the depth-6 descendant 300 steps (9,600 images) at ~35 img/s ~ 4.5 min; writing 4,200
JPEGs, the evaluations (1,000 test images, model and EMA) and 5 start-ups ~ 3 min: ~20-22 min.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Fashion-MNIST's classes, label order; folder names sort in that order.
CLASSES = ("t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
FULL = dict(train_images=3200, test_images=1000, side=256, batch=32, ancestry_steps=300, extract_epochs=2,
            finetune_steps=300, depth=6, workers=2)
TINY = dict(train_images=40, test_images=20, side=256, batch=8, ancestry_steps=3, extract_epochs=1,
            finetune_steps=3, depth=6, workers=2)
LR = 5e-4  # ancestry and fine-tuning peak lr
WARMUP_SHARE = 0.1
TLEG_WARMUP_EPOCHS = 0.2


# ---- data ------------------------------------------------------------------------------------
def write_fashion_mnist_jpegs(folder: Path, n_train: int, n_test: int, side: int) -> dict[str, Any]:
    """The first n/10 images of each class of Fashion-MNIST's train and test splits, as RGB JPEGs
    (quality 90) of side x side (bicubic upsampling) in folder/{train,test}/<i>-<class>/."""
    import numpy as np
    from PIL import Image

    from learngene.data.sources import read_fashion_mnist

    counts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = read_fashion_mnist(split)
        per_class = n // len(CLASSES)
        if per_class < 1:
            raise SystemExit(f"--{split}-images must be at least {len(CLASSES)} (one per class)")
        for c, name in enumerate(CLASSES):
            target = folder / split / f"{c}-{name}"
            target.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == c)[:per_class]:
                grey = Image.fromarray(images[i]).resize((side, side), Image.Resampling.BICUBIC)
                grey.convert("RGB").save(target / f"{i:05d}.jpg", quality=90)
        counts[split] = per_class * len(CLASSES)
    return counts


def check_streamed(spec: str) -> str:
    """The class of the train split ``spec`` loads as at 224 px (must be the streaming one)."""
    from learngene.data import load_dataset
    from learngene.data.streaming import StreamingDataset

    data = load_dataset(spec, "train", image_size=224, in_chans=3, augment=True)
    if not isinstance(data, StreamingDataset):
        raise SystemExit(f"{spec} loads as {type(data).__name__}, not a streaming dataset")
    return type(data).__name__


# ---- running one command -------------------------------------------------------------------------
def run(name: str, args: list[str], log_dir: Path) -> dict[str, Any]:
    """Run ``python -m learngene.cli ARGS`` (the worktree's library first on the path), timed, with its
    process tree's peak PSS; stops the benchmark if it fails."""
    from streaming import TreeMemory

    cmd = [sys.executable, "-m", "learngene.cli", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    shown = "learngene " + shlex.join(args)
    print(f"[{name}] {shown}", flush=True)
    log = log_dir / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
        with TreeMemory(proc.pid, every_s=0.5) as memory:
            out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"[{name}] failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    printed = json.loads(lines[-1]) if lines else None
    print(f"[{name}] {wall:.1f} s", flush=True)
    return {"command": shown, "wall_s": round(wall, 1), "printed": printed,
            "peak_pss_mib": round(memory.peak_pss / 1024, 1), "processes": memory.peak_processes}


def train_row(row: dict[str, Any], folder: Path, files: tuple[str, ...]) -> dict[str, Any]:
    """Add what train_summary.json says (steps, images, images/s, accuracy, compute path) and which files exist."""
    summary = json.loads((folder / "train_summary.json").read_text())
    row.update(steps=summary["steps"], images=summary["samples_seen"], train_wall_s=round(summary["wall_time_s"], 1),
               images_per_s=round(summary["samples_seen"] / summary["wall_time_s"], 2),
               images_per_s_whole_command=round(summary["samples_seen"] / row["wall_s"], 2),
               eval_acc=summary["eval_acc"], eval_acc_ema=(summary.get("ema") or {}).get("eval_acc"),
               compute_path=summary["compute_path"], batch=summary["batch"],
               outputs={f: (folder / f).is_file() for f in files})
    return row


def recipe_overrides(steps: int, steps_per_epoch: int, workers: int) -> tuple[int, list[str]]:
    """(epochs, train.* overrides) of a run of ``steps`` optimizer steps at one process."""
    epochs = math.ceil(steps / steps_per_epoch)
    warmup_epochs = round(max(1, round(WARMUP_SHARE * steps)) / steps_per_epoch, 4)
    ema = round(max(0.5, 1 - 15 / steps), 6)
    return epochs, [f"train.max_steps={steps}", "train.accum_steps=1", f"train.warmup_epochs={warmup_epochs}",
                    f"train.ema_decay={ema}", f"train.num_workers={workers}", f"train.eval_every={epochs}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="proof it runs: 40 train / 20 test images, batch 8, "
                        "3 + 5 + 3 steps (other options still override)")
    parser.add_argument("--train-images", type=int, help=f"Fashion-MNIST train images written (default {FULL['train_images']})")
    parser.add_argument("--test-images", type=int, help=f"test images written (default {FULL['test_images']})")
    parser.add_argument("--side", type=int, help=f"JPEG side, pixels (default {FULL['side']})")
    parser.add_argument("--batch", type=int, help=f"batch of every step (default {FULL['batch']})")
    parser.add_argument("--ancestry-steps", type=int, help=f"default {FULL['ancestry_steps']}")
    parser.add_argument("--extract-epochs", type=int, help="TLEG distillation passes over the train images "
                        f"(steps = epochs x train images // batch; default {FULL['extract_epochs']})")
    parser.add_argument("--finetune-steps", type=int, help=f"default {FULL['finetune_steps']}")
    parser.add_argument("--depth", type=int, help=f"descendant depth (default {FULL['depth']})")
    parser.add_argument("--workers", type=int, help=f"DataLoader workers (train.num_workers; default {FULL['workers']})")
    parser.add_argument("--work", default=None, help="folder for the JPEGs and the runs (kept); default a temp "
                        "folder, deleted at the end")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "e2e-224.json"))
    args = parser.parse_args()
    setting = {**(TINY if args.tiny else FULL),
               **{k: v for k, v in vars(args).items() if k in FULL and v is not None}}

    import timm
    import torch

    from learngene._io import atomic_write_json
    from learngene.models import load_ancestry
    from learngene.train.precision import choose_path
    from perf import _commit, machine_info

    machine = machine_info(torch.device("cpu"))
    started = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lg-e2e-224-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data_dir, logs = work / "data", work / "logs"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        logs.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        counts = write_fashion_mnist_jpegs(data_dir, setting["train_images"], setting["test_images"], setting["side"])
        data = {"source": "fashion-mnist (the first images of each class of its train and test splits)",
                "layout": "DIR/train/<i>-<class>/*.jpg, DIR/test/<i>-<class>/*.jpg", **counts,
                "side": setting["side"], "jpeg": "RGB, quality 90, bicubic upsampling from 28 px",
                "jpeg_mib": round(sum(p.stat().st_size for p in data_dir.rglob("*.jpg")) / 2**20, 1),
                "write_s": round(time.perf_counter() - t0, 1)}
        spec = f"imagefolder:{data_dir}?memory=0"
        data["spec"], data["loads_as"] = spec, check_streamed(spec)
        print(f"wrote {counts} JPEGs ({data['jpeg_mib']} MiB) in {data['write_s']} s; {spec} loads as {data['loads_as']}",
              flush=True)

        batch, workers = setting["batch"], setting["workers"]
        steps_per_epoch = counts["train"] // batch
        steps: dict[str, Any] = {}

        # 1. the ancestry
        epochs, train = recipe_overrides(setting["ancestry_steps"], steps_per_epoch, workers)
        ancestry = work / "ancestry"
        row = run("ancestry", ["ancestry", "--config", "configs/ancestry-deit-tiny.yaml", "--preset", "deit-tiny",
                               "--data", spec, "--out", str(ancestry), "--epochs", str(epochs), "--batch-size", str(batch),
                               "--lr", str(LR), "--augment", *train], logs)
        steps["ancestry"] = train_row(row, ancestry, ("model.safetensors", "ema.safetensors", "model_config.json"))

        # 2. the TLEG learngene, and its depth-12 descendant (= the auxiliary model) evaluated
        gene = work / "tleg"
        row = run("extract", ["extract", "tleg", "--ancestry", str(ancestry), "--data", spec, "--out", str(gene),
                              f"epochs={setting['extract_epochs']}", f"batch_size={batch}",
                              f"warmup_epochs={min(TLEG_WARMUP_EPOCHS, setting['extract_epochs'])}"], logs)
        config = json.loads((gene / "learngene_config.json").read_text())
        distill = config["provenance"]["tleg"]["distillation"]
        row.update(steps=distill["steps"], images=config["provenance"]["cost"]["samples_seen"],
                   train_wall_s=round(distill["wall_time_s"], 1),
                   images_per_s=round(config["provenance"]["cost"]["samples_seen"] / distill["wall_time_s"], 2),
                   images_per_s_whole_command=round(config["provenance"]["cost"]["samples_seen"] / row["wall_s"], 2),
                   stored_parameters=row["printed"]["stored_parameters"],
                   compute_path=choose_path("auto", "auto", torch.device("cpu")).to_dict(),
                   compute_path_note="extract does not record its path: what TrainConfig's amp/attention 'auto' "
                                     "resolve to on this machine",
                   outputs={f: (gene / f).is_file() for f in ("learngene.safetensors", "learngene_config.json")})
        aux = work / "tleg-d12"
        expand = run("expand", ["expand", str(gene), "--depth", "12", "--out", str(aux)], logs)
        evaluated = run("eval", ["eval", str(aux), "--data", spec], logs)
        row.update(eval_acc=evaluated["printed"]["acc"],
                   eval={"what": "the depth-12 descendant (the auxiliary model's function) on the test split",
                         "expand_s": expand["wall_s"], "eval_s": evaluated["wall_s"], "commands": [expand["command"],
                                                                                                  evaluated["command"]]})
        steps["extract"] = row

        # 3. the descendant, fine-tuned
        epochs, train = recipe_overrides(setting["finetune_steps"], steps_per_epoch, workers)
        descendant = work / "descendant"
        row = run("finetune", ["finetune", str(gene), "--config", "configs/finetune-deit.yaml", "--depth",
                               str(setting["depth"]), "--data", spec, "--out", str(descendant), "--epochs", str(epochs),
                               "--batch-size", str(batch), "--lr", str(LR), "--augment", *train], logs)
        steps["finetune"] = train_row(row, descendant, ("model.safetensors", "ema.safetensors", "model_config.json"))
        model = load_ancestry(descendant)  # the plain timm ViT the folder holds
        steps["finetune"]["model"] = {"class": f"{type(model).__module__}.{type(model).__name__}",
                                      "depth": len(model.blocks), "embed_dim": model.embed_dim,
                                      "img_size": list(model.patch_embed.img_size), "num_classes": model.num_classes,
                                      "global_pool": model.global_pool,
                                      "parameters": sum(p.numel() for p in model.parameters())}
        if len(model.blocks) != setting["depth"]:
            raise SystemExit(f"the descendant has {len(model.blocks)} blocks, not {setting['depth']}")
        missing = [f"{name}/{f}" for name, s in steps.items() for f, ok in s["outputs"].items() if not ok]
        if missing:
            raise SystemExit(f"missing outputs: {missing}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    total = time.perf_counter() - started
    machine["loadavg_at_end"] = list(os.getloadavg())
    result = {
        "benchmark": "e2e-224",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "commit": _commit(),
        "machine": {**machine, "timm": timm.__version__},
        "tiny": args.tiny,
        "setting": setting,
        "recipe": {"lr": LR, "warmup_share": WARMUP_SHARE, "ema_decay": "1 - 15 / steps (at least 0.5)",
                   "from_configs": ["configs/ancestry-deit-tiny.yaml", "configs/finetune-deit.yaml"],
                   "tleg": {"warmup_epochs": TLEG_WARMUP_EPOCHS, "other options": "TLEG's defaults"}},
        "data": data,
        "steps": steps,
        "total_s": round(total, 1),
        "notes": "wall_s: the whole command (python start-up, data scan, training, evaluation, writing); "
                 "images_per_s: samples seen / the trainer's wall time; peak_pss_mib and processes: the command's "
                 "process tree (its DataLoader workers included), sampled every 0.5 s. extract's DataLoader runs in "
                 "the main process (TLEG's options have no num_workers), so its images are decoded there",
    }
    atomic_write_json(args.out, result)
    print(json.dumps({name: {k: s.get(k) for k in ("wall_s", "steps", "images_per_s", "eval_acc")}
                      for name, s in steps.items()}, indent=1))
    print(f"total {total / 60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
