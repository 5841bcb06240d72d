"""When does ``torch.compile`` pay back inside ``fit``? Fixed cost and per-step time, eager vs compiled.

For each mode (eager, compiled with a cold inductor cache, compiled with the cache the cold
run left), ``fit`` runs twice in a fresh process, for ``--short`` and ``--long`` optimizer
steps, on random in-memory images of the model's shape (no evaluation, no checkpoint). The
two wall times give a line per mode, time = fixed + steps x per_step; the fixed cost covers
``fit``'s setup and, compiled, the compilation (the first steps run it). Break-even steps =
(fixed_compiled - fixed_eager) / (per_step_eager - per_step_compiled): runs longer than that
finish sooner compiled. ``TrainConfig(compile="auto")`` (``train/precision.py``) compiles from
``COMPILE_AUTO_MIN_STEPS`` steps, a margin above what this measures.

    python benchmarks/compile_breakeven.py --threads 2   # vit-mini, batch 128, 20 and 120 steps, ~5 min on 2 CPU cores
    python benchmarks/compile_breakeven.py --model deit-tiny --batch 32 --short 4 --long 24

Each run is a subprocess (python start-up and imports outside the timed ``fit`` call), with
``TORCHINDUCTOR_CACHE_DIR`` pointing at a fresh folder for the cold runs and at the cold run's
folder for the warm ones. Writes ``benchmarks/results/compile-breakeven.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODES = ("eager", "compiled-cold", "compiled-warm")


def one_fit(args) -> None:
    """In the subprocess: one timed fit() call; prints its record as JSON."""
    import torch
    from torch.utils.data import TensorDataset

    from learngene.arch import create_vit, vit_kwargs
    from learngene.train import TrainConfig, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    arch = vit_kwargs(args.model)
    g = torch.Generator().manual_seed(0)
    n = args.batch * args.steps  # one epoch of exactly `steps` steps
    images = torch.randn(n, arch["in_chans"], arch["img_size"], arch["img_size"], generator=g)
    labels = torch.randint(0, arch["num_classes"], (n,), generator=g)
    torch.manual_seed(0)
    model = create_vit(args.model)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=1e-3, warmup_epochs=0.0, checkpoint=False,
                      compile=args.run_mode != "eager")
    t0 = time.perf_counter()
    result = fit(model, TensorDataset(images, labels), None, cfg, progress=False)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "steps": args.steps, "train_loss": result.history[-1]["train_loss"],
                      "compute_path": result.compute_path}))


def run(args, mode: str, steps: int, cache: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    cmd = [sys.executable, __file__, "--run-mode", mode, "--steps", str(steps), "--model", args.model,
           "--batch", str(args.batch), "--threads", str(args.threads)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} {steps} steps failed:\n{out.stderr[-3000:]}")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["process_s"] = time.perf_counter() - t0
    print(f"  {mode:14s} {steps:4d} steps: fit {record['wall_s']:.1f} s (process {record['process_s']:.1f} s)",
          flush=True)
    return record


def line(short: dict, long: dict) -> dict:
    per_step = (long["wall_s"] - short["wall_s"]) / (long["steps"] - short["steps"])
    return {"per_step_s": per_step, "fixed_s": short["wall_s"] - short["steps"] * per_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-mini")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--short", type=int, default=20, help="optimizer steps of the short fit")
    ap.add_argument("--long", type=int, default=120, help="optimizer steps of the long fit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile-breakeven.json"))
    ap.add_argument("--run-mode", choices=MODES, help=argparse.SUPPRESS)  # internal: one fit in this process
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_mode:
        one_fit(args)
        return

    from learngene._io import atomic_write_json
    from perf import _commit, machine_info

    import torch

    runs: dict[str, dict[int, dict]] = {m: {} for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (args.short, args.long):
            runs["eager"][steps] = run(args, "eager", steps, str(Path(tmp) / f"unused-{steps}"))
            cache = str(Path(tmp) / f"cache-{steps}")  # fresh: cold; then the same folder: warm
            runs["compiled-cold"][steps] = run(args, "compiled-cold", steps, cache)
            runs["compiled-warm"][steps] = run(args, "compiled-warm", steps, cache)
    lines = {m: line(runs[m][args.short], runs[m][args.long]) for m in MODES}
    eager = lines["eager"]
    result = {}
    for mode in ("compiled-cold", "compiled-warm"):
        gain = eager["per_step_s"] - lines[mode]["per_step_s"]
        extra = lines[mode]["fixed_s"] - eager["fixed_s"]
        result[mode] = {"speedup_per_step": eager["per_step_s"] / lines[mode]["per_step_s"],
                        "extra_fixed_s": extra,
                        "breakeven_steps": extra / gain if gain > 0 else None}
        b = result[mode]["breakeven_steps"]
        print(f"{mode}: {result[mode]['speedup_per_step']:.2f}x per step, +{extra:.1f} s fixed, break-even "
              f"{'never' if b is None else f'{b:.0f} steps'}", flush=True)
    record = {
        "benchmark": "compile-breakeven",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "commit": _commit(), "machine": machine_info(torch.device("cpu")),
        "model": args.model, "batch": args.batch, "steps": [args.short, args.long],
        "runs": {m: {str(s): r for s, r in v.items()} for m, v in runs.items()},
        "lines": lines, "result": result,
        "notes": "fit() wall time of one epoch of random in-memory images, no eval/checkpoint, TrainConfig's "
                 "defaults otherwise (amp/attention auto); each run in a fresh process; cold = empty "
                 "TORCHINDUCTOR_CACHE_DIR, warm = the cold run's cache; line through the two step counts",
    }
    atomic_write_json(Path(args.out), record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
