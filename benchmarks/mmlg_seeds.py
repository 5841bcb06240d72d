"""MM-LG against TLEG per tower over several seeds of ``benchmarks/mmlg.py`` (no training here).

    python benchmarks/mmlg_seeds.py --runs benchmarks/results/mmlg.json benchmarks/results/mmlg-seed1.json \\
        benchmarks/results/mmlg-seed2.json --out benchmarks/results/mmlg-seeds.json   # and .md beside it

Per method and score (CLIP zero-shot accuracy, R@1 and R@5, the image tower's classifier top-1):
the per-seed values, mean and seed spread (max - min, in points). Then issue 21's target for MM-LG:
within 2 points of TLEG per tower on zero-shot and R@1 (means over the seeds), with a seed spread
under 3 points on both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean

from learngene._io import atomic_write_json, atomic_write_text

SCORES = (("clip", "zero_shot_acc", "zero-shot"), ("clip", "r1", "R@1"), ("clip", "r5", "R@5"),
          ("image-classifier", "top1", "classifier top-1"))
WITHIN_POINTS, SPREAD_POINTS = 2.0, 3.0


def summarise(runs: list[dict]) -> dict:
    seeds = [r["args"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: two runs share a seed ({seeds}): pass one run per seed")
    methods = [r["method"] for r in runs[0]["rows"] if r["kind"] == "clip"]
    table: dict[str, dict[str, dict]] = {}
    for method in methods:
        table[method] = {}
        for kind, key, name in SCORES:
            values = [100 * next(row[key] for row in run["rows"] if row["kind"] == kind and row["method"] == method)
                      for run in runs]
            table[method][name] = {"per_seed": [round(v, 2) for v in values], "mean": round(mean(values), 2),
                                   "spread": round(max(values) - min(values), 2)}
    target = {}
    for name in ("zero-shot", "R@1"):
        gap = table["mm-lg"][name]["mean"] - table["tleg-towers"][name]["mean"]
        target[name] = {"mm_lg_minus_tleg_points": round(gap, 2), "mm_lg_spread_points": table["mm-lg"][name]["spread"],
                        "holds": gap >= -WITHIN_POINTS and table["mm-lg"][name]["spread"] < SPREAD_POINTS}
    return {"seeds": seeds, "scores": table, "target": target}


def markdown(result: dict) -> str:
    names = [name for _, _, name in SCORES]
    lines = ["# MM-LG and TLEG per tower over seeds", "", f"- `{result['command']}`",
             f"- seeds {result['seeds']}; each cell: mean (per seed), spread = max - min, points", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for method, scores in result["scores"].items():
        cells = [f"{s['mean']:.1f} ({' / '.join(f'{v:.1f}' for v in s['per_seed'])}; spread {s['spread']:.1f})"
                 for s in (scores[n] for n in names)]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"Target: MM-LG within {WITHIN_POINTS:g} points of TLEG per tower, seed spread under "
              f"{SPREAD_POINTS:g} points:", ""]
    for name, t in result["target"].items():
        lines.append(f"- {name}: MM-LG minus TLEG {t['mm_lg_minus_tleg_points']:+.1f} points, MM-LG spread "
                     f"{t['mm_lg_spread_points']:.1f}: {'holds' if t['holds'] else 'does not hold'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="results of benchmarks/mmlg.py, one per seed")
    p.add_argument("--out", default="benchmarks/results/mmlg-seeds.json")
    args = p.parse_args(argv)
    runs = []
    for path in args.runs:
        if not Path(path).is_file():
            print(f"error: no file {path}: run benchmarks/mmlg.py --seed N --out {path} first", file=sys.stderr)
            return 2
        runs.append(json.loads(Path(path).read_text()))
    result = {"command": "python benchmarks/mmlg_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "sources": {str(p): r["command"] for p, r in zip(args.runs, runs)}, **summarise(runs)}
    out = Path(args.out)
    atomic_write_json(out, result)
    text = markdown(result)
    atomic_write_text(out.with_suffix(".md"), text)
    print(text + f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
