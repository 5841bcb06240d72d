"""Which conclusions change between two suite results (e.g. mini and strong, issue 21).

    python benchmarks/compare_suites.py benchmarks/results/mini.json runs/bench/results/strong.json \
        [--out strong-vs-mini.md]

Reads the ``summary`` rows (mean over seeds) of both files and, over the (method, dataset, depth)
cells the two share, reports per cell the top-1 of each and these conclusions, marking every one
that flips between the files:
  - beats scratch: the method's mean is above scratch's at the same dataset and depth;
  - beats ws-uniform: above weight selection's (the simple inheriting baseline), where it has one;
  - best: the method with the highest mean at that dataset and depth (among the shared methods);
  - mean rank of each method over the shared cells where it has a value (1 = best).
Only json: no torch, runs anywhere.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

BASELINES = ("scratch", "ws-uniform")


def cells(results: dict) -> dict[tuple[str, str, int], float]:
    """(method, dataset, depth) -> mean top-1, at the ancestry's width (rows of other widths dropped)."""
    arch = results.get("ancestry", {}).get("arch", {})
    out = {}
    for row in results["summary"]:
        if arch and (row.get("embed_dim"), row.get("num_heads")) != (arch.get("embed_dim"), arch.get("num_heads")):
            continue
        out[(row["method"], row["dataset"], row["depth"])] = float(row["top1_mean"])
    return out


def conclusions(table: dict[tuple[str, str, int], float], keys: set[tuple[str, str, int]]) -> dict:
    """The conclusions above over ``keys`` (cells present in both files)."""
    verdicts: dict[tuple, bool] = {}
    best: dict[tuple[str, int], str] = {}
    ranks: dict[str, list[int]] = defaultdict(list)
    by_place: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for method, dataset, depth in keys:
        by_place[(dataset, depth)][method] = table[(method, dataset, depth)]
    for place, scores in sorted(by_place.items()):
        order = sorted(scores, key=lambda m: (-scores[m], m))
        best[place] = order[0]
        for rank, method in enumerate(order, 1):
            ranks[method].append(rank)
        for method, value in scores.items():
            for baseline in BASELINES:
                if method != baseline and baseline in scores:
                    verdicts[(method, *place, f"beats {baseline}")] = value > scores[baseline]
    mean_rank = {m: sum(r) / len(r) for m, r in ranks.items()}
    return {"verdicts": verdicts, "best": best, "mean_rank": mean_rank}


def compare(a: dict, b: dict, name_a: str, name_b: str) -> tuple[str, dict]:
    """(markdown report, the flips as data)."""
    ta, tb = cells(a), cells(b)
    shared = set(ta) & set(tb)
    if not shared:
        raise SystemExit("the two results share no (method, dataset, depth) cell")
    ca, cb = conclusions(ta, shared), conclusions(tb, shared)
    flips = sorted(k for k in ca["verdicts"] if ca["verdicts"][k] != cb["verdicts"][k])
    best_changes = sorted(p for p in ca["best"] if ca["best"][p] != cb["best"][p])
    lines = [f"# {name_b} vs {name_a}", ""]
    for name, res in ((name_a, a), (name_b, b)):
        anc = res.get("ancestry", {})
        arch = anc.get("arch", {})
        lines.append(f"- {name}: ancestry test accuracy {anc.get('eval_acc', float('nan')):.4f}, patch "
                     f"{arch.get('patch_size')}, {len(res['summary'])} summary rows")
    lines += ["", f"{len(shared)} shared cells; {len(flips)} of {len(ca['verdicts'])} verdicts flip; "
              f"the best method changes in {len(best_changes)} of {len(ca['best'])} (dataset, depth) places.", "",
              f"| method | dataset | depth | {name_a} | {name_b} | change |", "|---|---|---:|---:|---:|---:|"]
    for key in sorted(shared, key=lambda k: (k[1], k[2], k[0])):
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {100 * ta[key]:.1f} | {100 * tb[key]:.1f} | "
                     f"{100 * (tb[key] - ta[key]):+.1f} |")
    lines += ["", "## Verdicts that flip", ""]
    lines += [f"- {m} {claim} at {d} depth {depth}: {ca['verdicts'][(m, d, depth, claim)]} -> "
              f"{cb['verdicts'][(m, d, depth, claim)]}" for m, d, depth, claim in flips] or ["- none"]
    lines += ["", "## Best method per (dataset, depth)", "", f"| dataset | depth | {name_a} | {name_b} |",
              "|---|---:|---|---|"]
    lines += [f"| {d} | {depth} | {ca['best'][(d, depth)]} | {cb['best'][(d, depth)]}"
              f"{' (changed)' if (d, depth) in best_changes else ''} |" for d, depth in sorted(ca["best"])]
    lines += ["", "## Mean rank over the shared cells (1 = best)", "", f"| method | {name_a} | {name_b} |",
              "|---|---:|---:|"]
    lines += [f"| {m} | {ca['mean_rank'][m]:.2f} | {cb['mean_rank'][m]:.2f} |"
              for m in sorted(ca["mean_rank"], key=lambda m: cb["mean_rank"][m])]
    data = {"shared_cells": len(shared),
            "flips": [{"method": m, "dataset": d, "depth": depth, "claim": claim,
                       name_a: ca["verdicts"][(m, d, depth, claim)], name_b: cb["verdicts"][(m, d, depth, claim)]}
                      for m, d, depth, claim in flips],
            "best_changes": [{"dataset": d, "depth": depth, name_a: ca["best"][(d, depth)],
                              name_b: cb["best"][(d, depth)]} for d, depth in best_changes]}
    return "\n".join(lines) + "\n", data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the first results json (e.g. mini.json)")
    parser.add_argument("b", type=Path, help="the second results json (e.g. strong.json)")
    parser.add_argument("--out", type=Path, help="write the markdown here (and the flips as .json beside it)")
    args = parser.parse_args(argv)
    a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
    text, data = compare(a, b, a.get("suite", args.a.stem), b.get("suite", args.b.stem))
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
