"""`benchmarks/mmlg_seeds.py`: MM-LG against TLEG per tower over the committed seeds of mmlg.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmlg_seeds  # noqa: E402

RUNS = [ROOT / "benchmarks/results/mmlg.json", ROOT / "benchmarks/results/mmlg-seed1.json"]


def test_seed_summary_and_target_from_the_committed_runs(tmp_path):
    out = tmp_path / "seeds.json"
    assert mmlg_seeds.main(["--runs", *map(str, RUNS), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = [json.loads(p.read_text()) for p in RUNS]
    zero_shot = [100 * next(r["zero_shot_acc"] for r in run["rows"] if r["kind"] == "clip" and r["method"] == "mm-lg")
                 for run in runs]
    mm = result["scores"]["mm-lg"]["zero-shot"]
    assert mm["mean"] == pytest.approx(sum(zero_shot) / 2, abs=0.01)
    assert mm["spread"] == pytest.approx(abs(zero_shot[0] - zero_shot[1]), abs=0.01)
    gap = result["target"]["zero-shot"]
    assert gap["holds"] == (gap["mm_lg_minus_tleg_points"] >= -2 and gap["mm_lg_spread_points"] < 3)
    assert "mm-lg" in out.with_suffix(".md").read_text()


def test_one_run_per_seed_and_missing_files(tmp_path, capsys):
    with pytest.raises(SystemExit, match="share a seed"):
        mmlg_seeds.main(["--runs", str(RUNS[0]), str(RUNS[0]), "--out", str(tmp_path / "x.json")])
    assert mmlg_seeds.main(["--runs", str(tmp_path / "absent.json"), "--out", str(tmp_path / "x.json")]) == 2
    assert "run benchmarks/mmlg.py" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
