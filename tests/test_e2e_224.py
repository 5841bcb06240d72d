"""`benchmarks/e2e_224.py --tiny` runs: a DeiT-Tiny ancestry -> TLEG -> depth-6 descendant at 224 px
through the command line on a streamed JPEG folder, and writes its JSON with the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_run_goes_ancestry_to_tleg_to_a_depth_6_descendant(tmp_path):
    pytest.importorskip("PIL")
    from learngene.data.sources import find_fashion_mnist
    from learngene.errors import DatasetNotFoundError

    try:
        find_fashion_mnist()
    except DatasetNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "e2e.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "e2e_224.py"), "--tiny", "--work",
                           str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["command"].startswith("python benchmarks/e2e_224.py --tiny") and record["tiny"]
    assert record["commit"] is None or len(record["commit"]) == 40
    assert record["machine"]["cpu_count"] >= 1
    assert record["data"]["loads_as"] == "StreamingImageDataset" and "?memory=0" in record["data"]["spec"]
    steps = record["steps"]
    assert list(steps) == ["ancestry", "extract", "finetune"]
    assert steps["ancestry"]["steps"] == 3 and steps["extract"]["steps"] == 5 and steps["finetune"]["steps"] == 3
    for name, step in steps.items():
        assert step["wall_s"] > 0 and step["images_per_s"] > 0 and 0 <= step["eval_acc"] <= 1, name
        assert all(step["outputs"].values()), (name, step["outputs"])
        assert step["compute_path"]["amp"] in ("off", "bf16"), name
    assert steps["ancestry"]["processes"] >= 3  # the training process and its 2 DataLoader workers
    assert steps["ancestry"]["command"].startswith("learngene ancestry --config configs/ancestry-deit-tiny.yaml")
    assert steps["finetune"]["model"]["depth"] == 6 and steps["finetune"]["model"]["img_size"] == [224, 224]

    # the descendant's weights load into a plain timm ViT of depth 6 (TLEG's avg-pooled head)
    import timm
    from safetensors.torch import load_file

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=6, num_classes=10, global_pool="avg",
                              class_token=False, fc_norm=True)
    weights = load_file(str(tmp_path / "work" / "descendant" / "model.safetensors"))
    model.load_state_dict(weights, strict=True)
    assert len(model.blocks) == 6
