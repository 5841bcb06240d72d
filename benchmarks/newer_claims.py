"""The headline claims of SWS, WAVE and LeTs, read from one suite's results (no training here).

    python benchmarks/newer_claims.py [--results benchmarks/results/newer.json [MORE.json ...]]
                                      [--out benchmarks/results/newer-claims.json]
    python benchmarks/newer_claims.py --results benchmarks/results/mini.json benchmarks/results/narrow.json \
        --out benchmarks/results/newer-claims-mini-narrow.json      # depth and width together

The input is a `learngene bench` results file (the `newer` suite's: SWS, WAVE and LeTs beside
weight selection and scratch, at full and half width); the output is a claims table, JSON
(``--out``) and markdown (the same name, ``.md``): per method and claim, what was measured and
whether it holds (yes / no / not testable here), with the per-cell numbers behind it.

Claims (from the papers' abstracts) and how each is measured from the records' own costs:

SWS (Xia et al., IJCAI 2024):
  1. "better than many models trained from scratch": per (dataset, shape) cell, SWS's mean
     top-1 against scratch's after the same fine-tuning epochs E (better / comparable within
     1 point / worse).
  2. "while reducing around 6.6x total training costs": for the same accuracy. Per cell, the
     first fine-tuning epoch e at which SWS's mean curve reaches scratch's final top-1; SWS's
     cost is e/E of its fine-tuning FLOPs, plus its learngene's distillation (``extract_flops``,
     paid once for every descendant the suite grows); scratch's is its E epochs. Ratio = sum of
     scratch's FLOPs / SWS's, over the cells; it holds if SWS matched in every cell and the ratio
     is about 6.6 (>= 0.75 x 6.6). SWS needs at least one epoch, so a suite of E epochs cannot
     show more than E x (its ceiling is reported); the ratio counting the ancestry's own training
     is reported too (the paper's teacher was off the shelf).
  3. "in some cases, SWS performs better only after 1 epoch tuning": SWS after one epoch above
     scratch after E, in at least one cell.
  4. "around 20x parameters stored": SWS's learngene against one model per shape SWS made in the
     suite (pre-train + fine-tune stores a pre-trained model per size; each shape's parameter
     count is the SWS descendant's of that shape). Judged on the count derived for depths 1..12
     at each suite width ("many sizes"; parameters are linear in depth: fitted on the measured
     depths), or on the measured shapes when a width has a single depth.
  5. "around 10x pre-training costs": SWS's distillation FLOPs against pre-training each of those
     shapes with the ancestry's recipe (the ancestry's training samples x that shape's measured
     training FLOPs per sample); with and without the ancestry's own training; judged, like 4,
     on depths 1..12 without the ancestry's training (the paper's teacher was off the shelf).
WAVE (Feng et al., CVPR 2025):
  6. "state-of-the-art performance in initializing models of various depth and width": in every
     cell WAVE made, its mean top-1 is not below the best other method's by more than 1 point;
     the cells must span more than one depth and more than one width.
LeTs (Xia et al., NeurIPS 2024):
  7. better than training from scratch, along width and depth: LeTs above scratch in every cell
     it made, cells spanning more than one depth and width.
  8. better than the existing initialisation methods: not below the best other method by more
     than 1 point in any cell; WAVE (published after LeTs) is left out of LeTs' rivals.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from _claims import (ABOUT, COMPARABLE_POINTS, Shape, about, linear_fit, load_merged, markdown, shape_text,
                     summary_by_cell, verdict, write_claims)
from learngene.errors import ConfigError, LearngeneError

SWS_TOTAL_TRAINING = 6.6   # "around 6.6x total training costs"
SWS_STORED = 20.0          # "around 20x parameters stored"
SWS_PRETRAINING = 10.0     # "around 10x pre-training costs"
NEWER = ("sws", "wave", "lets")
ALL_DEPTHS = range(1, 13)  # the derived counts: descendants of every depth 1..12 at each suite width


def label_of(results: dict, method: str) -> str | None:
    """The suite label whose records ran ``method`` (the label equal to the method name if several)."""
    labels = sorted({r["method"] for r in results["records"] if r.get("method_name") == method})
    if len(labels) > 1:
        if method in labels:
            return method
        raise ConfigError(f"the results hold {method} under several labels {labels}; label one of them {method!r} "
                          "in the suite and rerun it")
    return labels[0] if labels else None


def one_value(records: list[dict], key: str, label: str) -> float:
    """A cost every record of ``label`` shares (its one learngene's); ConfigError if they differ."""
    values = {float(r[key]) for r in records if r["method"] == label}
    if len(values) != 1:
        raise ConfigError(f"{label}'s records disagree on {key} ({sorted(values)}): the suite extracted more than "
                          "one learngene for it; rerun it into a fresh --out")
    return values.pop()


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def sws_claims(results: dict, sws: str) -> tuple[list[dict], dict]:
    cells = summary_by_cell(results)
    extract = one_value(results["records"], "extract_flops", sws)
    ancestry = one_value(results["records"], "ancestry_flops", sws)
    ancestry_samples = results["ancestry"]["samples"]
    mine = {key: row[sws] for key, row in cells.items() if sws in row}
    rows, details = [], {"label": sws, "extract_flops": extract, "ancestry_flops": ancestry}

    # 1-3: against scratch at equal fine-tuning epochs, and the cost of matching it
    versus = []
    for (dataset, shape), row in sorted(cells.items()):
        if sws not in row or "scratch" not in row:
            continue
        s, z = row[sws], row["scratch"]
        epochs = len(s["curve_mean"])
        diff = 100 * (s["top1_mean"] - z["top1_mean"])
        match = next((e + 1 for e, acc in enumerate(s["curve_mean"]) if acc >= z["top1_mean"]), None)
        versus.append({
            "dataset": dataset, "depth": shape[0], "embed_dim": shape[1], "num_heads": shape[2],
            "sws_top1": s["top1_mean"], "scratch_top1": z["top1_mean"], "sws_minus_scratch_points": round(diff, 2),
            "verdict": verdict(diff), "epochs": epochs, "sws_epochs_to_match_scratch": match,
            "sws_after_1_epoch": s["curve_mean"][0],
            "sws_finetune_flops_to_match": s["finetune_flops"] * (match or epochs) / epochs,
            "scratch_flops": z["finetune_flops"],
        })
    if not versus:
        missing = "no scratch records" if not any("scratch" in row for row in cells.values()) else "no shared cells"
        for claim in ("better than models trained from scratch at equal epochs",
                      f"about {SWS_TOTAL_TRAINING}x less total training than scratch for the same accuracy",
                      "better than scratch after only 1 epoch of tuning, in some cases"):
            rows.append({"method": "sws", "claim": claim, "measured": f"{missing} beside sws", "holds": None})
    else:
        n = len(versus)
        ahead = sum(v["verdict"] != "worse" for v in versus)
        rows.append({"method": "sws", "claim": "better than models trained from scratch at equal epochs",
                     "measured": f"better in {sum(v['verdict'] == 'better' for v in versus)}/{n} cells, comparable "
                                 f"(within {COMPARABLE_POINTS:g} point) in {sum(v['verdict'] == 'comparable' for v in versus)}"
                                 f", worse in {n - ahead}; SWS minus scratch "
                                 f"{min(v['sws_minus_scratch_points'] for v in versus):+.1f} to "
                                 f"{max(v['sws_minus_scratch_points'] for v in versus):+.1f} points",
                     "holds": ahead == n})
        matched = [v for v in versus if v["sws_epochs_to_match_scratch"] is not None]
        scratch_total = sum(v["scratch_flops"] for v in versus)
        sws_finetune = sum(v["sws_finetune_flops_to_match"] for v in versus)
        ceiling = min(v["epochs"] for v in versus)
        total = {"scratch_flops": scratch_total, "sws_finetune_flops": sws_finetune, "sws_extract_flops": extract,
                 "ratio": _ratio(scratch_total, sws_finetune + extract),
                 "ratio_finetune_only": _ratio(scratch_total, sws_finetune),
                 "ratio_with_ancestry": _ratio(scratch_total, sws_finetune + extract + ancestry),
                 "ceiling": ceiling, "cells_matched": len(matched), "cells": n}
        details["total_training"] = total
        ratio = total["ratio"] or 0.0
        rows.append({"method": "sws",
                     "claim": f"about {SWS_TOTAL_TRAINING}x less total training than scratch for the same accuracy",
                     "measured": f"SWS reached scratch's final top-1 in {len(matched)}/{n} cells; scratch "
                                 f"{scratch_total:.3g} FLOPs vs SWS {sws_finetune + extract:.3g} (fine-tuning to match "
                                 f"{sws_finetune:.3g} + distillation {extract:.3g}) = {ratio:.2f}x "
                                 f"({total['ratio_finetune_only'] or 0:.2f}x fine-tuning only, "
                                 f"{total['ratio_with_ancestry'] or 0:.2f}x counting the ancestry); "
                                 f"at E = {ceiling} epochs the fine-tuning ratio cannot exceed {ceiling}x",
                     "holds": len(matched) == n and about(ratio, SWS_TOTAL_TRAINING)})
        early = [v for v in versus if v["sws_after_1_epoch"] > v["scratch_top1"]]
        rows.append({"method": "sws", "claim": "better than scratch after only 1 epoch of tuning, in some cases",
                     "measured": f"SWS after 1 epoch above scratch after {ceiling} in {len(early)}/{n} cells"
                                 + (f" (e.g. {early[0]['dataset']}, {shape_text((early[0]['depth'], early[0]['embed_dim'], early[0]['num_heads']))}:"
                                    f" {100 * early[0]['sws_after_1_epoch']:.1f} vs {100 * early[0]['scratch_top1']:.1f})"
                                    if early else ""),
                     "holds": bool(early)})
        details["versus_scratch"] = versus

    # 4-5: storage and pre-training against one pre-trained model per shape
    shapes: dict[Shape, dict] = {}
    for (dataset, shape), s in sorted(mine.items()):
        shapes.setdefault(shape, s)  # one row per shape: the first dataset's (the class count is the suite's)
    stored = mine[next(iter(mine))]["stored_params"]
    per_shape = [{"depth": d, "embed_dim": w, "num_heads": h, "params": s["params"],
                  "pretrain_flops": s["finetune_flops"] * ancestry_samples / s["finetune_samples"]}
                 for (d, w, h), s in sorted(shapes.items())]
    prefin_params = sum(p["params"] for p in per_shape)
    prefin_flops = sum(p["pretrain_flops"] for p in per_shape)
    derived = derive_all_depths(per_shape)
    if derived:
        derived["stored_ratio"] = derived["pre_finetune_params"] / stored
        derived["pretrain_ratio"] = _ratio(derived["pre_finetune_pretrain_flops"], extract)
        derived["pretrain_ratio_with_ancestry"] = _ratio(derived["pre_finetune_pretrain_flops"], extract + ancestry)
    details["storage_and_pretraining"] = {
        "shapes": per_shape, "sws_stored_params": stored, "pre_finetune_params": prefin_params,
        "stored_ratio": prefin_params / stored, "pre_finetune_pretrain_flops": prefin_flops,
        "pretrain_ratio": _ratio(prefin_flops, extract), "pretrain_ratio_with_ancestry": _ratio(prefin_flops, extract + ancestry),
        "derived_for_depths_1_to_12": derived}
    widths = sorted({(w, h) for (_, w, h) in shapes})
    where = f"{len(shapes)} shapes (depths {sorted({d for d, _, _ in shapes})}, widths {[f'{w}/{h}' for w, h in widths]})"
    text = (f"; derived for depths 1-12 at each width: {derived['stored_ratio']:.1f}x" if derived else "")
    rows.append({"method": "sws", "claim": f"about {SWS_STORED:g}x fewer parameters stored than pre-train + fine-tune "
                                           "over many sizes",
                 "measured": f"{stored:,} vs {prefin_params:,} for one model per shape of {where} = "
                             f"{prefin_params / stored:.1f}x{text}",
                 "holds": about(derived["stored_ratio"] if derived else prefin_params / stored, SWS_STORED)})
    pre = details["storage_and_pretraining"]
    text = (f"; derived for depths 1-12: {derived['pretrain_ratio']:.1f}x ({derived['pretrain_ratio_with_ancestry']:.1f}x)"
            if derived and extract else "")
    rows.append({"method": "sws", "claim": f"about {SWS_PRETRAINING:g}x less pre-training than pre-train + fine-tune",
                 "measured": (f"distillation {extract:.3g} FLOPs vs pre-training the same shapes with the ancestry's "
                              f"recipe {prefin_flops:.3g} = {pre['pretrain_ratio']:.1f}x "
                              f"({pre['pretrain_ratio_with_ancestry']:.1f}x counting the ancestry's training){text}")
                 if extract else "the records carry no distillation cost (extract_flops 0)",
                 "holds": about(derived["pretrain_ratio"] if derived else pre["pretrain_ratio"], SWS_PRETRAINING)
                 if extract else None})
    return rows, details


def derive_all_depths(per_shape: list[dict]) -> dict | None:
    """Storage and pre-training summed over depths 1..12 at each width, from a fit linear in depth
    per width (None unless every width has two measured depths)."""
    by_width: dict[tuple[int, int], list[dict]] = {}
    for p in per_shape:
        by_width.setdefault((p["embed_dim"], p["num_heads"]), []).append(p)
    if any(len({p["depth"] for p in ps}) < 2 for ps in by_width.values()):
        return None
    params = flops = 0.0
    for ps in by_width.values():
        depths = [p["depth"] for p in ps]
        (p0, p1), (f0, f1) = (linear_fit(depths, [p[key] for p in ps]) for key in ("params", "pretrain_flops"))
        params += sum(p0 + p1 * d for d in ALL_DEPTHS)
        flops += sum(f0 + f1 * d for d in ALL_DEPTHS)
    return {"widths": sorted(by_width), "depths": list(ALL_DEPTHS), "pre_finetune_params": params,
            "pre_finetune_pretrain_flops": flops, "how": "per-width fits linear in depth, summed over depths 1..12"}


def initialisation_rows(results: dict, label: str, rivals_out: tuple[str, ...] = ()) -> list[dict]:
    """Per cell ``label`` made: its mean top-1, scratch's, the best other method's (not ``rivals_out``)."""
    out = []
    for (dataset, shape), row in sorted(summary_by_cell(results).items()):
        if label not in row:
            continue
        others = {m: s["top1_mean"] for m, s in row.items() if m != label and m not in rivals_out}
        best = max(others, key=others.get) if others else None
        mine = row[label]["top1_mean"]
        out.append({"dataset": dataset, "depth": shape[0], "embed_dim": shape[1], "num_heads": shape[2],
                    label: mine, **others, "best_rival": best,
                    "minus_best_rival_points": round(100 * (mine - others[best]), 2) if best else None,
                    "minus_scratch_points": round(100 * (mine - others["scratch"]), 2) if "scratch" in others else None})
    return out


def _spans(cells: list[dict]) -> tuple[int, int]:
    return len({c["depth"] for c in cells}), len({(c["embed_dim"], c["num_heads"]) for c in cells})


def _best_rival_row(method: str, claim: str, cells: list[dict]) -> dict:
    ranked = [c for c in cells if c["best_rival"] is not None]
    if not ranked:
        return {"method": method, "claim": claim, "measured": "no other method in its cells", "holds": None}
    fine = [c for c in ranked if c["minus_best_rival_points"] >= -COMPARABLE_POINTS]
    first = sum(c["minus_best_rival_points"] > 0 for c in ranked)
    margins = [c["minus_best_rival_points"] for c in ranked]
    low = min(ranked, key=lambda c: c["minus_best_rival_points"])
    depths, widths = _spans(ranked)
    return {"method": method, "claim": claim,
            "measured": f"best in {first}/{len(ranked)} cells, within {COMPARABLE_POINTS:g} point of the best in "
                        f"{len(fine)}/{len(ranked)} ({depths} depths, {widths} widths); margin over the best other "
                        f"method {min(margins):+.1f} to {max(margins):+.1f} points (lowest: vs {low['best_rival']}, "
                        f"{low['dataset']}, {shape_text((low['depth'], low['embed_dim'], low['num_heads']))})",
            "holds": len(fine) == len(ranked) and depths > 1 and widths > 1}


def wave_claims(results: dict, wave: str) -> tuple[list[dict], dict]:
    cells = initialisation_rows(results, wave)
    row = _best_rival_row("wave", "state-of-the-art initialisation of models of various depth and width", cells)
    return [row], {"label": wave, "cells": cells}


def lets_claims(results: dict, lets: str) -> tuple[list[dict], dict]:
    wave = label_of(results, "wave")
    later = (wave,) if wave else ()
    cells = initialisation_rows(results, lets, rivals_out=later)
    vs_scratch = [c for c in cells if c["minus_scratch_points"] is not None]
    depths, widths = _spans(vs_scratch)
    above = sum(c["minus_scratch_points"] > 0 for c in vs_scratch)
    rows = [{"method": "lets", "claim": "better than training from scratch, descendants varied in width and depth",
             "measured": (f"above scratch in {above}/{len(vs_scratch)} cells ({depths} depths, {widths} widths), by "
                          f"{min(c['minus_scratch_points'] for c in vs_scratch):+.1f} to "
                          f"{max(c['minus_scratch_points'] for c in vs_scratch):+.1f} points") if vs_scratch
             else "no scratch records beside lets",
             # every cell above scratch over one width (or one depth) cannot show "varied in width
             # and depth": not testable there, rather than refuted
             "holds": (None if above == len(vs_scratch) and (depths < 2 or widths < 2)
                       else above == len(vs_scratch)) if vs_scratch else None},
            _best_rival_row("lets", "better than the existing initialisation methods (WAVE, later, left out)", cells)]
    return rows, {"label": lets, "rivals_left_out": list(later), "cells": cells}


def claims(results: dict) -> dict[str, Any]:
    """Every claim of the methods present in ``results`` (ConfigError if none of them is)."""
    labels = {m: label_of(results, m) for m in NEWER}
    if not any(labels.values()):
        raise ConfigError(f"the results of suite {results.get('suite')!r} hold no sws, wave or lets records: run "
                          "`learngene bench newer` and pass its results (benchmarks/results/newer.json)")
    rows: list[dict] = []
    details: dict[str, Any] = {}
    for method, build in (("sws", sws_claims), ("wave", wave_claims), ("lets", lets_claims)):
        if labels[method] is None:
            rows.append({"method": method, "claim": "(all)", "measured": f"no {method} records in these results",
                         "holds": None})
            continue
        method_rows, details[method] = build(results, labels[method])
        rows.extend(method_rows)
    return {"rows": rows, "details": details}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", nargs="+", default=["benchmarks/results/newer.json"],
                   help="`learngene bench` results JSON; several suites over the same ancestry are read as one "
                        "(e.g. mini.json narrow.json: full and half width)")
    p.add_argument("--out", default="benchmarks/results/newer-claims.json", help="the claims JSON (and .md beside it)")
    args = p.parse_args(argv)
    try:
        results = load_merged(args.results)
        table = claims(results)
    except LearngeneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"command": "python benchmarks/newer_claims.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "sources": results["sources"], "comparable_points": COMPARABLE_POINTS, **table}
    mark = {True: "yes", False: "no", None: "-"}
    for r in table["rows"]:
        print(f"{r['method']:>5s}  {mark[r['holds']]:>3s}  {r['claim']}: {r['measured']}")
    notes = ["a cell is one (dataset, depth, width) of the suite, each method's top-1 the mean over its seeds",
             f"comparable: within {COMPARABLE_POINTS:g} top-1 point; \"about Nx\" holds from {ABOUT:g} N up",
             "per-cell numbers and every cost behind the ratios: the JSON beside this file"]
    text = markdown(f"Claims of the newer methods, measured on the `{results['suite']}` suite",
                    result["sources"], table["rows"], notes)
    for path in write_claims(args.out, result, text):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
