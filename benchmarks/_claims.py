"""What the claim scripts share (``tleg_report.py``, ``newer_claims.py``): reading a suite's
results JSON (``learngene bench``'s format, e.g. ``results/mini.json``), grouping its records,
the verdict rules, and writing a claims table as JSON and markdown.

Verdict rules, the same for every claim script:
  - accuracy: "better" / "comparable" / "worse" than a reference, "comparable" meaning within
    ``COMPARABLE_POINTS`` top-1 points;
  - "about Nx" (a paper's saving): holds when the measured factor is at least ``ABOUT`` x N.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

from learngene._io import atomic_write_json, atomic_write_text
from learngene.errors import ConfigError

COMPARABLE_POINTS = 1.0  # "comparable": within this many top-1 points
ABOUT = 0.75             # "about Nx" holds from 0.75 N up

Shape = tuple[int, int, int]  # (depth, embed_dim, num_heads)


def verdict(difference_points: float) -> str:
    if difference_points > COMPARABLE_POINTS:
        return "better"
    return "comparable" if difference_points >= -COMPARABLE_POINTS else "worse"


def about(measured: float, claimed: float) -> bool:
    return measured >= ABOUT * claimed


def load_results(path: str | Path) -> dict[str, Any]:
    """A suite's results JSON, with its records and summary (ConfigError naming the fix otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no results file {path}: run the suite first (learngene bench <suite> --results-dir "
                          f"{path.parent}) or pass --results")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not JSON ({e.msg}, line {e.lineno}): pass a `learngene bench` results file")
    for key in ("records", "summary", "ancestry", "command"):
        if key not in results:
            raise ConfigError(f"{path} has no {key!r}: pass a `learngene bench` results file (like results/mini.json)")
    return results


def load_merged(paths: list[str | Path]) -> dict[str, Any]:
    """Several suites' results over the same ancestry read as one (records and summaries joined),
    so a claim can span their shapes (mini's full width and narrow's half width). ``suite`` is
    their names joined by "+", ``sources`` maps each suite to its command. ConfigError when the
    ancestries differ or two files hold the same (method label, dataset, shape)."""
    parts = [load_results(p) for p in paths]
    keys = {r["ancestry"].get("key") for r in parts}
    if len(parts) > 1 and None in keys:
        raise ConfigError("a results file names no ancestry key, so it cannot be matched with the others: pass "
                          "results written by `learngene bench`")
    if len(keys) > 1:
        raise ConfigError(f"these results come from different ancestries ({sorted(map(str, keys))}): pass suites "
                          "run on the same one (learngene bench SUITE --ancestry DIR)")
    finetunes = {json.dumps((r.get("config") or {}).get("finetune"), sort_keys=True) for r in parts}
    if len(finetunes) > 1:
        raise ConfigError(f"these suites fine-tune differently ({sorted(finetunes)}): their accuracies do not compare")
    merged = {**parts[0], "records": [], "summary": [], "sources": {}}
    seen: dict[tuple, str] = {}
    for path, part in zip(paths, parts):
        for s in part["summary"]:
            cell = (s["method"], s["dataset"], s["depth"], s["embed_dim"], s["num_heads"])
            if cell in seen:
                raise ConfigError(f"{path} and {seen[cell]} both hold {cell}: pass suites with distinct cells")
            seen[cell] = str(path)
        merged["records"] += part["records"]
        merged["summary"] += part["summary"]
        name = part["suite"] if part["suite"] not in merged["sources"] else f"{part['suite']} ({path})"
        merged["sources"][name] = part["command"]
    merged["suite"] = "+".join(part["suite"] for part in parts)
    return merged


def by_method_depth(records: list[dict]) -> dict[tuple[str, str, int], list[dict]]:
    groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for r in records:
        groups[r["method"], r["dataset"], r["depth"]].append(r)
    return groups


def summary_by_cell(results: dict) -> dict[tuple[str, Shape], dict[str, dict]]:
    """{(dataset, (depth, embed_dim, num_heads)): {method label: its summary row}}."""
    table: dict[tuple[str, Shape], dict[str, dict]] = defaultdict(dict)
    for s in results["summary"]:
        table[s["dataset"], (s["depth"], s["embed_dim"], s["num_heads"])][s["method"]] = s
    return dict(table)


def linear_fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys against xs."""
    n, mx, my = len(xs), mean(xs), mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs) if n > 1 else 0.0
    return my - slope * mx, slope


def shape_text(shape: Shape) -> str:
    depth, embed_dim, num_heads = shape
    return f"depth {depth}, {embed_dim}/{num_heads}"


def markdown(title: str, sources: dict[str, str], rows: list[dict[str, Any]], notes: list[str]) -> str:
    """The claims table: one line per (method, claim) with what was measured and whether it holds."""
    mark = {True: "yes", False: "no", None: "not testable here"}
    lines = [f"# {title}", ""]
    lines += [f"- {name}: `{command}`" for name, command in sources.items()]
    lines += ["", "| method | claim | measured | holds? |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['claim']} | {r['measured']} | {mark[r['holds']]} |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_claims(out: str | Path, result: dict[str, Any], text: str) -> tuple[Path, Path]:
    """``out`` (JSON) and the markdown beside it (same name, ``.md``), each written atomically."""
    out = Path(out)
    md = out.with_suffix(".md")
    atomic_write_json(out, result)
    atomic_write_text(md, text)
    return out, md
