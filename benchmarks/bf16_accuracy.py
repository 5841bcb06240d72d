"""Does bf16 cost accuracy? The demo's (and the mini suite's) ancestry recipe, trained on each
compute path with several seeds: test accuracy, images/s and wall time per run, and the
seed-to-seed spread of each path.

    python benchmarks/bf16_accuracy.py                       # 2 paths x 3 seeds, ~20 min on 2 CPU cores
    python benchmarks/bf16_accuracy.py --epochs 1 --seeds 0  # a quick look

Paths: "fp32-fused" (fp32, fused attention: every run's path before amp/attention "auto"
picked per machine) and "auto" (what ``TrainConfig()`` now resolves to here). Writes
``benchmarks/results/bf16-accuracy.json`` with the command, commit and machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learngene._io import atomic_write_json  # noqa: E402
from learngene.arch import create_vit  # noqa: E402
from learngene.data import load_dataset  # noqa: E402
from learngene.train import TrainConfig, fit  # noqa: E402
from learngene.train.precision import choose_path  # noqa: E402
from perf import PATHS, _commit, machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vit-mini")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--paths", default="fp32-fused,auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bf16-accuracy.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    paths = args.paths.split(",")
    probe = create_vit(args.preset)
    side, chans = probe.patch_embed.img_size[0], probe.patch_embed.proj.in_channels
    train = load_dataset(args.data, "train", image_size=side, in_chans=chans)
    test = load_dataset(args.data, "test", image_size=side, in_chans=chans)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = {"benchmark": "bf16-accuracy", "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
              "commit": _commit(), "machine": machine_info(device), "preset": args.preset, "data": args.data,
              "recipe": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3, "warmup_epochs": 1}, "runs": [],
              "summary": {}}
    for seed in seeds:  # paths alternate within a seed, so drift in machine speed hits both alike
        for path in (paths if seed % 2 == 0 else paths[::-1]):
            amp, attention = PATHS[path]
            torch.manual_seed(seed)
            model = create_vit(args.preset)
            cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, warmup_epochs=1, seed=seed,
                              amp=amp, attention=attention, checkpoint=False)
            t0 = time.perf_counter()
            result = fit(model, train, test, cfg, progress=False)
            run = {"path": path, "compute_path": choose_path(amp, attention, device).to_dict(), "seed": seed,
                   "eval_acc": result.eval_acc, "train_loss": result.train_loss,
                   "images_per_s": statistics.mean(h["images_per_s"] for h in result.history),
                   "wall_s": time.perf_counter() - t0}
            record["runs"].append(run)
            print(f"{path} seed {seed}: test acc {run['eval_acc']:.4f}, {run['images_per_s']:.0f} img/s, "
                  f"{run['wall_s']:.0f} s", flush=True)
            for name in paths:
                accs = [r["eval_acc"] for r in record["runs"] if r["path"] == name]
                speeds = [r["images_per_s"] for r in record["runs"] if r["path"] == name]
                if accs:
                    record["summary"][name] = {
                        "n": len(accs), "mean_acc": statistics.mean(accs),
                        "std_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                        "min_acc": min(accs), "max_acc": max(accs), "mean_images_per_s": statistics.mean(speeds)}
            atomic_write_json(Path(args.out), record)  # after every run: a cut run keeps what it measured
    print(record["summary"], flush=True)


if __name__ == "__main__":
    main()
