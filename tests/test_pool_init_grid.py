"""`benchmarks/pool_init_grid.py`: the Learngene Pool stitch-init x lr x seed grid at tiny settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import pool_init_grid  # noqa: E402

INITS = ["maps", "maps-gain", "pinv", "random", "least-squares"]


@pytest.mark.slow  # distils two tiny students, then 20 supernet trainings of 2 steps: ~15 s of CPU
def test_tiny_grid_writes_every_cell(tmp_path):
    out = tmp_path / "grid.json"
    argv = ["--tiny", "--threads", "1", "--finetune-lrs", "1e-4,1e-3", "--seeds", "0,1", "--work",
            str(tmp_path / "work"), "--out", str(out)]
    assert pool_init_grid.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["command"] == "python benchmarks/pool_init_grid.py " + " ".join(argv)
    assert result["commit"] and result["machine"] and result["settings"]["inits"] == ",".join(INITS)
    rows = result["rows"]
    assert sorted((r["init"], r["finetune_lr"], r["seed"]) for r in rows) == sorted(
        (i, lr, s) for i in INITS for lr in (1e-4, 1e-3) for s in (0, 1))
    configurations = 2 + 7  # two students of depth 3: each alone + 7 window positions
    assert result["configurations"] == configurations
    for r in rows:
        assert len(r["step0_top1"]) == len(r["trained_top1"]) == configurations
        assert r["step0"]["best_top1"] == max(r["step0_top1"]) and r["trained"]["best_top1"] == max(r["trained_top1"])
        assert r["steps"] == 2 and r["train_s"] > 0 and r["wall_time_s"] > 0 and r["init_summary"]["init"] == r["init"]
    step0 = {(r["init"], r["seed"]): r["step0_top1"] for r in rows}
    assert step0["maps", 0] != step0["least-squares", 0]  # the init changes the stitched models at step 0
    assert all(r["step0_top1"] == step0[r["init"], r["seed"]] for r in rows)  # step 0 does not depend on the lr
    gains = next(r for r in rows if r["init"] == "maps-gain")["init_summary"]["gains"]
    assert len(gains) == 2  # one per stitching layer of the one pair
    assert [(c["init"], c["finetune_lr"]) for c in result["table"]] == [(i, lr) for i in INITS for lr in (1e-4, 1e-3)]
    text = out.with_suffix(".md").read_text()
    assert all(f"| {init} |" in text for init in INITS) and "lr 0.001" in text
    assert out.with_suffix(".png").stat().st_size > 10_000

    # --reuse loads the pool just distilled instead of distilling again; other shapes are refused
    assert pool_init_grid.main(argv + ["--reuse", "--inits", "pinv", "--seeds", "0", "--finetune-lrs", "1e-3"]) == 0
    again = json.loads(out.read_text())
    assert again["stage1"]["reused"] == str(tmp_path / "work" / "learngene-pool") and len(again["rows"]) == 1
    pinv = next(r for r in rows if (r["init"], r["finetune_lr"], r["seed"]) == ("pinv", 1e-3, 0))
    assert again["rows"][0]["step0_top1"] == pinv["step0_top1"]
    with pytest.raises(SystemExit):
        pool_init_grid.main(argv + ["--reuse", "--widths", "24,36"])

    # --finetune-epochs 0 scores the starts only: no training, "trained" repeats step 0
    assert pool_init_grid.main(argv + ["--reuse", "--inits", "maps", "--seeds", "0", "--finetune-lrs", "1e-3",
                                       "--finetune-epochs", "0"]) == 0
    starts = json.loads(out.read_text())["rows"][0]
    assert starts["steps"] == 0 and starts["trained_top1"] == starts["step0_top1"]
    maps = next(r for r in rows if (r["init"], r["finetune_lr"], r["seed"]) == ("maps", 1e-3, 0))
    assert starts["step0_top1"] == maps["step0_top1"]


def test_bad_arguments_are_refused(tmp_path, capsys):
    for extra, message in ((["--inits", "maps,magic"], "unknown inits ['magic']"),
                           (["--widths", "24,36,48"], "two students' widths"),
                           (["--finetune-epochs", "-1"], "--finetune-epochs must be >= 0")):
        with pytest.raises(SystemExit):
            pool_init_grid.main(["--tiny", "--work", str(tmp_path), "--out", str(tmp_path / "x.json"), *extra])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pool_init_grid.main(["--out", str(tmp_path / "x.json")])
    assert "--ancestry is required" in capsys.readouterr().err
