"""`benchmarks/perf.py` runs: its expand part times every kind of expansion (a single ViT, a
stitched supernet, mm-lg's CLIP ancestry) and writes its JSON with the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_expand_part_times_every_kind_of_descendant(tmp_path):
    methods = "heuristic,sn-net,mm-lg"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "perf.py"), "--tiny", "--only", "expand",
                           "--methods", methods, "--threads", "1", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "perf-expand.json").read_text())
    assert record["command"].startswith("python benchmarks/perf.py --tiny") and record["tiny"]
    rows = {row["method"]: row for row in record["result"]["rows"]}
    assert list(rows) == methods.split(",")
    for name, row in rows.items():
        assert "error" not in row, (name, row.get("error"))
        assert row["expand_s"] > 0 and row["descendant_params"] > 0 and row["expand_peak_extra_mib"] >= 0, name
    assert "stitched supernet" in rows["sn-net"]["descendant"]
    assert rows["mm-lg"]["clip_descendant_params"] > rows["mm-lg"]["descendant_params"]  # both towers vs the image one


def test_training_parts_compare_the_compute_paths_side_by_side(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "perf.py"), "--tiny", "--only",
                           "matmul,paths,trainer", "--threads", "1", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    matmul = json.loads((tmp_path / "perf-matmul.json").read_text())["result"]
    assert {"fp32", "bf16"} == set(matmul["peaks"]) and all(p["flops_per_s"] > 0 for p in matmul["peaks"].values())
    rows = json.loads((tmp_path / "perf-paths.json").read_text())["result"]["rows"]
    assert {(r["precision"], r["attention"]) for r in rows} == {(p, k) for p in ("fp32", "bf16")
                                                                 for k in ("fused", "explicit")}
    assert all(r["images_per_s"] > 0 and r["mfu"] > 0 for r in rows)
    trainer = json.loads((tmp_path / "perf-trainer.json").read_text())["result"]
    assert set(trainer["paths"]) == {"fp32-fused", "auto"} and trainer["fit_speedup_auto_over_fp32_fused"] > 0
    legacy = trainer["paths"]["fp32-fused"]
    assert legacy["compute_path"]["amp"] == "off" and legacy["compute_path"]["attention"] == "fused"
    assert legacy["mfu_peak"]["precision"] == "fp32"
    auto = trainer["paths"]["auto"]
    assert auto["mfu_peak"]["precision"] == ("bf16" if auto["compute_path"]["amp"] == "bf16" else "fp32")
