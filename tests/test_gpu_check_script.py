"""`benchmarks/gpu_check.py --tiny --device cpu` runs every part and writes its JSON files.

Fashion-MNIST comes from a small IDX copy found through a *relative* ``LEARNGENE_DATA`` (the
layout the GPU run uses: ``$LEARNGENE_DATA/fashion-mnist/*.gz``), so the torchrun worker must
find it too. On CPU the resume and DDP comparisons must be bitwise exact.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _write_fashion_mnist(folder: Path, counts=(("train", 300), ("test", 150))) -> None:
    """Random 28x28 pixels and labels as the 4 gzipped IDX files."""
    from learngene.data.sources import FASHION_MNIST_FILES

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n in counts:
        for stem, array in zip(FASHION_MNIST_FILES[split],
                               (rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)), strict=True):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            (folder / f"{stem}.gz").write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_tiny_run_writes_every_part(tmp_path):
    _write_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    out = tmp_path / "out"
    env = {**os.environ, "LEARNGENE_DATA": "data", "LEARNGENE_NO_SYSTEM_DATA": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--threads", "1", "--out-dir", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu-ddp.json", "gpu-fit.json", "gpu-matmul.json", "gpu-speed.json", "gpu-summary.json",
                     "gpu-trainer.json"]
    assert all((out / name).stat().st_size < 64 * 1024 for name in files)
    summary = json.loads((out / "gpu-summary.json").read_text())
    assert summary["command"].startswith("python benchmarks/gpu_check.py --tiny") and summary["tiny"]
    assert {part: e["status"] for part, e in summary["parts"].items()} == dict.fromkeys(
        ["matmul", "fit", "ddp", "speed", "trainer", "compile"], "ok")

    matmul = json.loads((out / "gpu-matmul.json").read_text())["result"]
    assert set(matmul["peaks"]) == {"fp32", "tf32", "bf16"}

    fit = json.loads((out / "gpu-fit.json").read_text())["result"]
    assert fit["data"] == f"fashion-mnist from {tmp_path / 'data' / 'fashion-mnist'}"
    assert all(run["weights_fp32"] and run["test_acc"] is not None for run in fit["amp"].values())
    resume = fit["resume"]
    assert resume["checkpoint_epoch_when_cut"] == 1 and resume["bitwise_exact"]
    assert resume["resume_max_abs_diff"] == resume["rerun_max_abs_diff"] == 0.0

    ddp = json.loads((out / "gpu-ddp.json").read_text())["result"]
    assert ddp["data"] == fit["data"]  # the torchrun worker found the same data
    assert ddp["worker"]["backend"] == "gloo" and ddp["worker"]["wrapped_in"] == ["DistributedDataParallel"]
    assert ddp["ddp_max_abs_diff"] == ddp["plain_torchrun_max_abs_diff"] == 0.0

    speed = json.loads((out / "gpu-speed.json").read_text())
    rows = speed["result"]["rows"]
    assert len(rows) == 3 * 3 * 2 + 3 and all(row["images_per_s"] > 0 for row in rows)
    assert set(speed["result"]["fastest"]) == {"vit-mini", "deit-tiny", "deit-small"}
    assert speed["compile"]["status"] == "ok" and speed["compile"]["result"]["speedup"] > 0

    trainer = json.loads((out / "gpu-trainer.json").read_text())["result"]
    assert trainer["median_fit_images_per_s"] > 0 and trainer["median_bare_images_per_s"] > 0
