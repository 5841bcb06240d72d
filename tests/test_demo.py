"""The demo's recipe on a tiny ancestry: every descendant fine-tuned once, rows in table order,
results and plot written, and the same numbers whether descendants train in this process or in
worker processes."""

import json

import pytest

from learngene.arch import create_vit
from learngene.demo import DemoConfig, run_demo
from learngene.errors import ConfigError
from learngene.models import save_model


@pytest.fixture(scope="module")
def tiny_ancestry(tmp_path_factory):
    model = create_vit("vit-mini", depth=3, embed_dim=32, num_heads=2, num_classes=10)
    return save_model(model, tmp_path_factory.mktemp("ancestry") / "ancestry")


def demo(ancestry, out, workers):
    return run_demo(DemoConfig(out=str(out), ancestry=str(ancestry), depths=[1, 2], downstream="digits", epochs=1,
                               batch_size=128, method_options={"rule": "first", "k": 1}, workers=workers))


def test_demo_in_worker_processes_matches_one_process(tiny_ancestry, tmp_path):
    serial = demo(tiny_ancestry, tmp_path / "serial", workers=1)
    parallel = demo(tiny_ancestry, tmp_path / "parallel", workers=2)
    # table order (depth, then method), whatever finished first
    assert [(r["method"], r["depth"]) for r in parallel] == \
        [("heuristic", 1), ("scratch", 1), ("heuristic", 2), ("scratch", 2)]
    for a, b in zip(serial, parallel):
        assert {k: a[k] for k in ("params", "stored_params", "finetune_samples", "finetune_flops")} == \
            {k: b[k] for k in ("params", "stored_params", "finetune_samples", "finetune_flops")}
        assert b["top1"] == pytest.approx(a["top1"], abs=0.02)  # 1 vs 2 threads: float rounding only
    assert parallel[0]["stored_params"] > 0 and parallel[1]["stored_params"] == 0  # heuristic vs scratch
    written = json.loads((tmp_path / "parallel" / "results.json").read_text())
    assert written["config"]["workers"] == 2 and written["records"] == parallel
    assert (tmp_path / "parallel" / "accuracy_vs_epochs.png").stat().st_size > 0
    assert (tmp_path / "parallel" / "learngene-heuristic" / "learngene.safetensors").is_file()


def test_bad_workers_is_a_config_error():
    with pytest.raises(ConfigError, match="workers"):
        DemoConfig(workers=0)
