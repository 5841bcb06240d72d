"""The width-and-depth table: every method that made descendants narrower *and* shallower than the
ancestry, side by side at each shape, from suites run on the same ancestry (no training here).

    python benchmarks/width_depth.py --results benchmarks/results/mini.json benchmarks/results/narrow.json \\
        --out benchmarks/results/width-depth.json      # also width-depth.md and width-depth.png

A method enters the table when it has cells at more than one width (mini's 96/6 and narrow's 48/3
for the vit-mini ancestry); the columns are the shapes at which at least two such methods ran. Each cell is
the method's mean top-1 over its seeds (± the seed standard deviation), per dataset, with the best
method of the column in bold; "stored" is the parameters the method keeps to make all of them (its
learngene; weight selection and the other ancestry-reading methods keep the whole ancestry). The
plot draws top-1 against the descendant's parameter count, one line per (method, width).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from _claims import load_merged
from learngene._io import atomic_write_json, atomic_write_text
from learngene.errors import LearngeneError

Shape = tuple[int, int, int]  # (depth, embed_dim, num_heads)


def table(results: dict) -> dict[str, Any]:
    """{"shapes": [...], "methods": [...], "cells": {dataset: {method: {shape: summary}}}} for the
    methods with cells at more than one width, over the shapes every such method shares a width with."""
    by_method: dict[str, dict[str, dict[Shape, dict]]] = defaultdict(lambda: defaultdict(dict))
    for s in results["summary"]:
        by_method[s["method"]][s["dataset"]][(s["depth"], s["embed_dim"], s["num_heads"])] = s
    widths = {m: {shape[1:] for cells in d.values() for shape in cells} for m, d in by_method.items()}
    methods = sorted(m for m, w in widths.items() if len(w) > 1)
    if not methods:
        raise LearngeneError("no method has cells at more than one width: pass suites of different widths over one "
                             "ancestry (e.g. mini.json and narrow.json)")
    # the shapes the narrow-capable methods were all run at, per dataset
    datasets = sorted({d for m in methods for d in by_method[m]})
    shapes = sorted({shape for m in methods for d in datasets for shape in by_method[m].get(d, {})},
                    key=lambda s: (-s[1], s[0]))
    shapes = [s for s in shapes if sum(any(s in by_method[m].get(d, {}) for d in datasets) for m in methods) > 1]
    if not shapes:
        raise LearngeneError(f"no shape was run by two of the methods {methods}: nothing to compare side by side")
    cells = {d: {m: {s: by_method[m][d][s] for s in shapes if s in by_method[m].get(d, {})} for m in methods}
             for d in datasets}
    stored = {m: max(s["stored_params"] for d in by_method[m].values() for s in d.values()) for m in methods}
    return {"shapes": shapes, "methods": methods, "datasets": datasets, "cells": cells, "stored_params": stored}


def _label(shape: Shape) -> str:
    return f"d{shape[0]} {shape[1]}/{shape[2]}"


def markdown(t: dict, sources: dict[str, str], ancestry: dict) -> str:
    lines = ["# Descendants of every depth and width, side by side", ""]
    lines += [f"- {name}: `{command}`" for name, command in sources.items()]
    lines += [f"- the ancestry is {ancestry['embed_dim']} wide and {ancestry['depth']} deep; top-1 %, mean ± std over seeds; "
              "best of each column in bold", ""]
    for dataset in t["datasets"]:
        shapes = [s for s in t["shapes"] if any(s in t["cells"][dataset][m] for m in t["methods"])]
        lines += [f"## {dataset}", "", "| method | stored | " + " | ".join(map(_label, shapes)) + " |",
                  "|---|---:|" + "---:|" * len(shapes)]
        best = {s: max((t["cells"][dataset][m][s]["top1_mean"] for m in t["methods"] if s in t["cells"][dataset][m]),
                       default=None) for s in shapes}
        for m in t["methods"]:
            row = []
            for s in shapes:
                cell = t["cells"][dataset][m].get(s)
                if cell is None:
                    row.append("-")
                    continue
                text = f"{100 * cell['top1_mean']:.1f} ± {100 * cell['top1_std']:.1f}"
                row.append(f"**{text}**" if cell["top1_mean"] == best[s] else text)
            lines.append(f"| {m} | {t['stored_params'][m]:,} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(t: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(t["datasets"]), figsize=(6 * len(t["datasets"]), 5.5), squeeze=False)
    for ax, dataset in zip(axes[0], t["datasets"]):
        for i, m in enumerate(t["methods"]):
            by_width: dict[tuple[int, int], list[dict]] = defaultdict(list)
            for shape, cell in t["cells"][dataset][m].items():
                by_width[shape[1:]].append(cell)
            for (width, _), cells in sorted(by_width.items()):
                cells.sort(key=lambda c: c["params"])
                ax.plot([c["params"] for c in cells], [100 * c["top1_mean"] for c in cells], color=f"C{i % 10}",
                        marker="o" if width == max(w for w, _ in by_width) else "s",
                        linestyle="-" if width == max(w for w, _ in by_width) else "--",
                        label=f"{m} ({width} wide)")
        ax.set_xscale("log")
        ax.set_xlabel("descendant parameters")
        ax.set_ylabel("top-1 %")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)  # below the plots, off the data
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", nargs="+", required=True, help="`learngene bench` results JSON over one ancestry")
    p.add_argument("--out", default="benchmarks/results/width-depth.json", help="the table JSON (.md, .png beside)")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    try:
        results = load_merged(args.results)
        t = table(results)
    except LearngeneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/width_depth.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cells = {d: {m: [{"depth": s[0], "embed_dim": s[1], "num_heads": s[2], **c} for s, c in row.items()]
                 for m, row in by_m.items()} for d, by_m in t["cells"].items()}
    atomic_write_json(out, {"command": command, "sources": results["sources"], "methods": t["methods"],
                            "shapes": [list(s) for s in t["shapes"]], "stored_params": t["stored_params"],
                            "cells": cells})
    text = markdown(t, results["sources"], results["ancestry"]["arch"])
    atomic_write_text(out.with_suffix(".md"), text + "\n")
    print(text)
    written = [out, out.with_suffix(".md")]
    if not args.no_plot:
        plot(t, out.with_suffix(".png"))
        written.append(out.with_suffix(".png"))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
