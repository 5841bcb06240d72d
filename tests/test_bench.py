"""`learngene bench`: the smoke suite end to end (cache, selection, skips), results schema, bad suites."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import learngene

from learngene.bench import RECORD_FIELDS, aggregate, ancestry_key, bench, load_suite, mean_std
from learngene.bench.suite import find_suite
from learngene.cli import main
from learngene.train import precision

SMOKE = find_suite("smoke")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke suite run once: (report, cache folder, results folder)."""
    root = tmp_path_factory.mktemp("bench")
    report = bench("smoke", out=str(root / "cache"), results_dir=str(root / "results"))
    return report, root / "cache", root / "results"


def smoke_ancestry(cache: Path) -> Path:
    (path,) = cache.glob("ancestry-*")
    return path


def write_suite(path: Path, **changes) -> Path:
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del suite[key]
    path.write_text(yaml.safe_dump(suite))
    return path


def test_smoke_trains_every_cell_once_and_skips_unshapeable(smoke):
    report, cache, _ = smoke
    # scratch: depths 1, 2 x 2 seeds; heuristic k=2: depth 2 x 2 seeds (depth 1 is skipped)
    assert (report.trained, report.cached, report.skipped) == (6, 0, 2)
    assert len(list((cache / "smoke" / "cells").glob("*.json"))) == 8
    assert len(list((cache / "genes").iterdir())) == 2
    (skip,) = report.results["skipped"]
    assert (skip["method"], skip["depth"]) == ("heuristic-last2", 1)
    assert "depth" in skip["reason"] and "2" in skip["reason"]


def test_results_json_schema(smoke):
    _, _, results_dir = smoke
    results = json.loads((results_dir / "smoke.json").read_text())
    assert results["suite"] == "smoke"
    assert results["command"].startswith("learngene bench smoke")
    assert isinstance(results["commit"], str) and results["commit"]
    for key in ("platform", "cpu", "cpu_count", "torch", "device"):
        assert results["machine"][key]
    assert results["cells"] == 8 and results["missing_cells"] == 0 and results["skipped_cells"] == 2
    records = results["records"]
    assert len(records) == 6
    for r in records:
        for name, kind in RECORD_FIELDS.items():
            assert isinstance(r[name], kind), (name, r[name])
        assert r["method"] in ("scratch", "heuristic-last2") and r["dataset"] == "digits"
        assert r["depth"] in (1, 2) and (r["embed_dim"], r["num_heads"]) == (48, 3)
        assert r["seed"] in (0, 1) and r["epochs"] == 2
        assert 0.0 <= r["top1"] <= 1.0 and r["top1"] == r["curve"][-1]
        assert len(r["curve"]) == r["epochs"] and all(0.0 <= a <= 1.0 for a in r["curve"])
        assert r["params"] > 0 and r["finetune_samples"] > 0 and r["finetune_flops"] > 0
        assert r["wall_time_s"] > 0
        assert min(r["stored_params"], r["extract_flops"], r["ancestry_flops"], r["extract_samples"]) >= 0
    scratch = [r for r in records if r["method"] == "scratch"]
    heuristic = [r for r in records if r["method"] == "heuristic-last2"]
    # scratch stores nothing and needs no ancestry; the heuristic learngene pays the ancestry's training
    assert all(r["stored_params"] == 0 and r["ancestry_flops"] == 0 for r in scratch)
    assert all(0 < r["stored_params"] < r["params"] and r["ancestry_flops"] == results["ancestry"]["flops"] > 0
               for r in heuristic)


def test_summary_is_mean_and_std_over_seeds(smoke):
    report, _, _ = smoke
    rows = report.results["summary"]
    assert len(rows) == 3  # scratch x 2 depths, heuristic x depth 2
    for row in rows:
        mine = [r["top1"] for r in report.results["records"]
                if (r["method"], r["depth"]) == (row["method"], row["depth"])]
        assert row["n_seeds"] == 2 and row["seeds"] == [0, 1]
        assert row["top1_mean"] == pytest.approx(sum(mine) / 2)
        assert row["top1_std"] == pytest.approx(abs(mine[0] - mine[1]) / math.sqrt(2))
        assert len(row["curve_mean"]) == 2


def test_aggregate_over_three_seeds():
    base = dict(method="m", dataset="d", depth=2, embed_dim=48, num_heads=3, params=10, stored_params=5,
                ancestry_flops=100, extract_flops=1.0, finetune_flops=7, finetune_samples=3, wall_time_s=1.0)
    records = [dict(base, seed=s, top1=t, curve=[t / 2, t]) for s, t in ((0, 0.5), (1, 0.6), (2, 0.7))]
    (row,) = aggregate(records)
    assert row["n_seeds"] == 3 and row["top1_mean"] == pytest.approx(0.6)
    assert row["top1_std"] == pytest.approx(0.1)  # sample std (n - 1)
    assert row["curve_mean"] == pytest.approx([0.3, 0.6])
    assert row["pretrain_flops"] == 101
    assert mean_std([0.25]) == (0.25, 0.0)


def test_markdown_and_plots_written(smoke):
    _, _, results_dir = smoke
    table = (results_dir / "smoke.md").read_text()
    assert "| method | dataset | depth" in table and "heuristic-last2" in table and "## Skipped" in table
    for name in ("params", "epochs", "stored"):
        png = results_dir / f"smoke-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_rerun_hits_the_cache(smoke, capsys):
    _, cache, results_dir = smoke
    before = json.loads((results_dir / "smoke.json").read_text())["records"]
    code, out, _ = run(capsys, "bench", "smoke", "--out", cache, "--results-dir", results_dir)
    assert code == 0
    assert "0 cells trained, 8 cached, 2 skipped" in out
    assert out.count("(cached)") == 8 and "reusing ancestry" in out and "extracting" not in out
    after = json.loads((results_dir / "smoke.json").read_text())["records"]
    assert [r["top1"] for r in after] == [r["top1"] for r in before]


def test_results_go_to_the_out_folder_by_default(smoke, tmp_path, capsys, monkeypatch):
    """Run from a checkout, a bench leaves the committed benchmarks/results alone unless
    --results-dir names it: by default the results go to OUT/results."""
    _, cache, _ = smoke
    committed = tmp_path / "benchmarks" / "results"
    committed.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "bench", SMOKE, "--out", cache)
    assert code == 0 and "0 cells trained, 8 cached" in out
    assert not list(committed.iterdir())
    results = json.loads((cache / "results" / "smoke.json").read_text())
    assert "--results-dir" not in results["command"] and len(results["records"]) == 6
    assert {p.name for p in (cache / "results").iterdir()} >= {"smoke.json", "smoke.md", "smoke-params.png"}


def test_methods_seeds_and_ancestry_restrict_the_run(smoke, tmp_path, capsys):
    _, cache, _ = smoke
    code, out, _ = run(capsys, "bench", SMOKE, "--methods", "scratch", "--seeds", "0", "--out", tmp_path / "cache",
                       "--results-dir", tmp_path / "results", "--ancestry", smoke_ancestry(cache))
    assert code == 0 and "recipe matches" in out
    assert "2 cells trained, 0 cached, 0 skipped" in out
    assert not any("heuristic" in line for line in out.splitlines() if line.startswith("["))
    results = json.loads((tmp_path / "results" / "smoke.json").read_text())
    assert {(r["method"], r["seed"]) for r in results["records"]} == {("scratch", 0)}
    assert results["missing_cells"] == 6
    assert not list(tmp_path.glob("cache/ancestry-*"))  # the given ancestry was used, none trained


def test_unregistered_method_is_skipped_with_a_reason(smoke, tmp_path, capsys):
    _, cache, _ = smoke
    suite = write_suite(tmp_path / "future.yaml", methods=[
        {"label": "scratch", "method": "scratch"},
        {"label": "not-yet", "method": "no-such-method", "options": {"x": 1}},
    ])
    code, out, _ = run(capsys, "bench", suite, "--out", tmp_path / "cache", "--results-dir", tmp_path / "results",
                       "--ancestry", smoke_ancestry(cache), "--methods", "not-yet")
    assert code == 0
    assert "skipping not-yet: method 'no-such-method' is not registered" in out
    results = json.loads((tmp_path / "results" / "future.json").read_text())
    assert results["records"] == []
    (skip,) = results["skipped"]
    assert skip["method"] == "not-yet" and "not registered" in skip["reason"]


@pytest.mark.parametrize("changes,message", [
    ({"epochs": 3}, "unknown key 'epochs'"),
    ({"datasets": None}, "missing required key 'datasets'"),
    ({"methods": [{"label": "h", "method": "heuristic", "options": {"kk": 3}}]}, "has no option 'kk'"),
    ({"methods": [{"method": "scratch", "colour": "red"}]}, "unknown key 'colour'"),
    ({"methods": [{"label": "a"}]}, "missing required key 'method'"),
    ({"depths": [0, 2]}, "depths must be a non-empty list of integers >= 1"),
    ({"datasets": ["no-such-data"]}, "no-such-data"),
    ({"finetune": {"epochs": 2, "seed": 1}}, "finetune.seed"),
    ({"finetune": {"epoch": 2}}, "unknown TrainConfig field"),
    ({"ancestry": {"preset": "vit-mini", "colour": 1}}, "unknown key 'colour'"),
    ({"widths": [[100, 6]]}, "not divisible by num_heads 6"),
    ({"curve_depth": 7}, "curve_depth 7 is not one of the depths"),
    ({"methods": [{"method": "scratch", "extract_on": "test"}]}, "extract_on must be one of ancestry, target"),
    ({"methods": [{"method": "scratch", "finetune": {"epoch": 1}}]}, "method 'scratch': finetune"),
])
def test_bad_suite_is_a_one_line_config_error(tmp_path, capsys, changes, message):
    suite = write_suite(tmp_path / "bad.yaml", **changes)
    code, out, err = run(capsys, "bench", suite, "--out", tmp_path / "cache", "--results-dir", tmp_path / "res")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("learngene bench: error: suite ")
    assert message in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "res").exists()


def test_bad_selection_and_unknown_suite(smoke, tmp_path, capsys):
    _, cache, _ = smoke
    code, _, err = run(capsys, "bench", "smoke", "--methods", "nope", "--out", cache, "--results-dir", tmp_path)
    assert code == 2 and "--methods 'nope' is not in the suite" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "bench", "no-such-suite")
    assert code == 2 and "no suite 'no-such-suite'" in err and "smoke" in err


def test_widths_make_shapes(tmp_path):
    from learngene.bench.suite import suite_shapes

    suite = load_suite(str(write_suite(tmp_path / "wide.yaml", widths=[[48, 3], [24, 2]])))
    arch = learngene.ViTArch(embed_dim=48, num_heads=3)
    assert suite_shapes(suite, arch) == [(1, 48, 3), (2, 48, 3), (1, 24, 2), (2, 24, 2)]
    assert suite_shapes(load_suite("smoke"), arch) == [(1, 48, 3), (2, 48, 3)]  # default: the ancestry's width


def test_shipped_suites_are_valid(monkeypatch):
    from learngene.demo import DemoConfig
    from learngene.train import TrainConfig

    mini = load_suite("mini")
    assert mini.depths == [2, 4, 6, 8, 12] and mini.datasets == ["mnist-5k", "digits"] and len(mini.seeds) >= 3
    labels = {m.label for m in mini.methods}
    assert {"scratch", "pretrain-finetune", "heuristic-last3", "tleg"} <= labels
    # the mini ancestry is the demo's recipe: the two share one cached ancestry
    demo = DemoConfig()
    demo_train = TrainConfig(epochs=demo.ancestry_epochs, batch_size=128, lr=1e-3,
                             warmup_epochs=min(1, demo.ancestry_epochs), seed=demo.seed)
    a = mini.ancestry
    assert ancestry_key(a.preset, a.data, TrainConfig.from_dict(a.train), a.model_overrides()) == \
        ancestry_key(demo.ancestry_preset, demo.ancestry_data, demo_train)
    # speed-only fields stay out of keys: the key of the committed mini results (trained in fp32,
    # the path amp="auto" takes on a CPU without native bf16) still names its ancestry
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    compiled = TrainConfig.from_dict({**demo_train.to_dict(), "compile": True, "attention": "fused"})
    assert ancestry_key(demo.ancestry_preset, demo.ancestry_data, compiled) == \
        ancestry_key(demo.ancestry_preset, demo.ancestry_data, demo_train) == "7fe3e19704"
    # on a CPU with native bf16 the same recipe trains in bf16: another ancestry, another key
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert ancestry_key(demo.ancestry_preset, demo.ancestry_data, demo_train) != "7fe3e19704"
    smoke = load_suite("smoke")
    assert len(smoke.seeds) >= 2 and len(smoke.datasets) == 1


def test_extract_on_target_and_per_method_finetune_change_only_their_cells(tmp_path):
    from learngene.bench.suite import plan_cells

    methods = [{"label": "sim", "method": "auto-learngene", "options": {"criterion": "similarity", "k": 1},
                "extract_on": "target"},
               {"label": "sim-anc", "method": "auto-learngene", "options": {"criterion": "similarity", "k": 1}},
               {"label": "scratch-2x", "method": "scratch", "finetune": {"epochs": 4}},
               {"label": "scratch", "method": "scratch"}]
    suite = load_suite(str(write_suite(tmp_path / "s.yaml", methods=methods, datasets=["digits", "mnist-5k"])))
    arch = learngene.ViTArch(embed_dim=48, num_heads=3)
    cells, _ = plan_cells(suite, "anc", arch, methods=[m["label"] for m in methods],
                          datasets=suite.datasets, seeds=[0])
    genes = {(c.entry.label, c.dataset): c.gene_key for c in cells}
    assert genes["sim", "digits"] != genes["sim", "mnist-5k"]           # one learngene per target dataset
    assert genes["sim-anc", "digits"] == genes["sim-anc", "mnist-5k"]   # one for all
    # the smoke ancestry is trained on digits: extracting on the target digits is the same extraction
    assert genes["sim-anc", "digits"] == genes["sim", "digits"] != genes["sim", "mnist-5k"]
    by = {(c.entry.label, c.dataset, c.shape): c for c in cells}
    twice, once = by["scratch-2x", "digits", (1, 48, 3)], by["scratch", "digits", (1, 48, 3)]
    assert twice.key != once.key
    assert suite.finetune_config(0, twice.entry).epochs == 4 and suite.finetune_config(0, once.entry).epochs == 2


def test_workers_train_the_same_cells(smoke, tmp_path, capsys):
    """Two worker processes: every cell trained once, records written, same accuracy as in-process
    (one thread each there, and the fixture's one thread here)."""
    _, cache, _ = smoke
    code, out, _ = run(capsys, "bench", SMOKE, "--methods", "scratch", "--out", tmp_path / "cache",
                       "--results-dir", tmp_path / "results", "--ancestry", smoke_ancestry(cache), "--workers", "2")
    assert code == 0 and "4 cells trained, 0 cached, 0 skipped" in out
    mine = json.loads((tmp_path / "results" / "smoke.json").read_text())["records"]
    reference = {(r["method"], r["depth"], r["seed"]): r["top1"]
                 for r in json.loads((smoke[2] / "smoke.json").read_text())["records"]}
    assert len(mine) == 4
    for r in mine:
        assert r["top1"] == pytest.approx(reference[r["method"], r["depth"], r["seed"]], abs=0.02)
