"""How much of the ancestry's function a learngene carries: descendants scored before any training.

Every learngene folder given (or found under a bench cache's ``genes/``) is expanded at each
depth with the ancestry's classes, and the descendant's top-1 on the ancestry data's test
split is measured as grown (no fine-tuning), next to the ancestry's own. A learngene that keeps
the ancestry's function scores near the ancestry at the depth it was condensed for (TLEG's
auxiliary depth, PEG's ancestry shape); a random control scores about chance (10%), and so
does a descendant whose classifier is fresh (methods that store no head, such as heuristic):
such a row says nothing about its blocks. Depths a method cannot make are listed with the reason.

    python benchmarks/zero_shot.py --ancestry ANCESTRY_DIR --genes runs/bench/genes \\
        --depths 2,6,12 --out benchmarks/results/zero_shot.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import learngene  # noqa: E402
from learngene._io import atomic_write_json, atomic_write_text  # noqa: E402
from learngene.arch import arch_of  # noqa: E402
from learngene.artifact import CONFIG_NAME  # noqa: E402
from learngene.errors import LearngeneError  # noqa: E402
from learngene.models import load_ancestry  # noqa: E402
from learngene.recipes import load_split  # noqa: E402
from learngene.train import evaluate  # noqa: E402


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def score(model: torch.nn.Module, test, device: str) -> float:
    return float(evaluate(model, test, batch_size=500, device=None if device == "auto" else device)["acc"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ancestry", required=True, help="the ancestry folder the learngenes came from")
    ap.add_argument("--genes", nargs="+", required=True,
                    help="learngene folders, or folders holding them (a bench cache's genes/)")
    ap.add_argument("--data", default="fashion-mnist", help="the ancestry's data (its test split is scored)")
    ap.add_argument("--depths", default="2,6,12")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zero_shot.json"))
    args = ap.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    depths = [int(d) for d in args.depths.split(",")]

    folders = []
    for g in map(Path, args.genes):
        folders += [g] if (g / CONFIG_NAME).is_file() else sorted(p for p in g.iterdir() if p.is_dir())
    ancestry = load_ancestry(args.ancestry)
    arch = arch_of(ancestry)
    test = load_split(args.data, arch, "test")
    start = time.perf_counter()
    rows = [{"gene": "ancestry", "method": "ancestry", "depth": arch.depth, "top1": score(ancestry, test, args.device)}]
    print(f"ancestry depth {arch.depth}: top-1 {rows[0]['top1']:.4f}", flush=True)
    for folder in folders:
        try:
            gene = learngene.load(folder)
        except LearngeneError as e:
            print(f"{folder.name}: not a learngene ({e})")
            continue
        for depth in depths:
            row = {"gene": folder.name, "method": gene.method, "options": gene.config, "depth": depth}
            try:
                child = gene.expand(depth=depth, num_classes=arch.num_classes, seed=0)
            except LearngeneError as e:
                row["skipped"] = str(e).splitlines()[0]
            else:
                row["top1"] = score(child, test, args.device)
            rows.append(row)
            print(f"{folder.name} depth {depth}: " + (f"top-1 {row['top1']:.4f}" if "top1" in row
                                                     else f"skipped: {row['skipped']}"), flush=True)
    out = Path(args.out)
    report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "commit": _commit(),
              "machine": {"platform": platform.platform(), "device": device,
                          "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None},
              "ancestry": str(args.ancestry), "data": args.data, "chance": 1.0 / arch.num_classes,
              "wall_time_s": round(time.perf_counter() - start, 1), "rows": rows}
    atomic_write_json(out, report)
    lines = ["| learngene | " + " | ".join(f"depth {d}" for d in depths) + " |", "|---|" + "---:|" * len(depths)]
    lines.append(f"| ancestry (depth {arch.depth}) | " + " | ".join(
        f"{rows[0]['top1']:.3f}" if d == arch.depth else "" for d in depths) + " |")
    for name in dict.fromkeys(r["gene"] for r in rows[1:]):
        cells = {r["depth"]: (f"{r['top1']:.3f}" if "top1" in r else "-") for r in rows if r["gene"] == name}
        lines.append(f"| {name} | " + " | ".join(cells.get(d, "") for d in depths) + " |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
