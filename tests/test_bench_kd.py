"""The knowledge-distillation baseline of the suites: a scratch descendant distilled from the
suite's pretrain-finetune cell at the same training FLOPs (a tiny suite on the smoke ancestry)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import learngene
from learngene.bench import bench, load_suite
from learngene.bench.suite import find_suite, plan_cells
from learngene.errors import ConfigError

KD = {"label": "kd", "method": "scratch", "teacher": "pretrain-finetune", "finetune": {"distill": "soft"}}
METHODS = [{"label": "scratch", "method": "scratch"},
           {"label": "pretrain-finetune", "method": "pretrain-finetune"}, KD]


def write_suite(path: Path, **changes) -> Path:
    suite = yaml.safe_load(find_suite("smoke").read_text())
    suite.update({"methods": METHODS, "seeds": [0], **changes})
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory):
    """Only the kd row selected: its teacher cell must be trained first. Then scratch, then all
    (cached). Returns (suite path, cache, results folder, the kd-only run's stdout, the last report)."""
    root = tmp_path_factory.mktemp("kd")
    suite = write_suite(root / "kd.yaml")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        first = bench(str(suite), methods="kd", out=str(root / "cache"), results_dir=str(root / "results"))
        bench(str(suite), methods="scratch", out=str(root / "cache"), results_dir=str(root / "results"))
        last = bench(str(suite), out=str(root / "cache"), results_dir=str(root / "results"))
    return suite, root / "cache", root / "results", buffer.getvalue(), first, last


def records(report, method):
    return {r["depth"]: r for r in report.results["records"] if r["method"] == method}


def test_a_missing_teacher_cell_is_trained_first_and_keeps_its_model(kd_run):
    suite, cache, _, out, first, _ = kd_run
    # the teacher (pretrain-finetune at the ancestry's depth 2) trained first, outside the selection
    assert "teacher: pretrain-finetune digits depth  2 (48/3) seed 0 (training it first)" in out
    assert first.trained == 3 and first.skipped == 0        # the teacher + kd at depths 1 and 2
    (teacher,) = records(first, "pretrain-finetune").values()
    assert (cache / "kd" / "models" / teacher["cell"] / "model.safetensors").is_file()
    for depth, r in records(first, "kd").items():
        assert r["teacher"]["cell"] == teacher["cell"] and r["teacher"]["label"] == "pretrain-finetune"
        assert r["teacher"]["finetune_flops"] == teacher["finetune_flops"]   # reported beside, not inside
        assert r["teacher"]["top1"] == teacher["top1"]
        assert r["ancestry_flops"] > 0          # the teacher was fine-tuned from the ancestry


def test_kd_cells_distil_at_the_plain_cells_flops(kd_run):
    _, _, results, _, _, last = kd_run
    assert last.trained == 0 and last.cached == 5           # every cell cached, the teacher not retrained
    plain, kd = records(last, "scratch"), records(last, "kd")
    for depth in (1, 2):
        p, k = plain[depth], kd[depth]
        f = p["finetune_flops"] / (3 * p["finetune_samples"])  # the student's forward FLOPs per sample
        t = k["teacher"]["flops_per_sample"]
        assert t > 0 and k["finetune_flops"] == pytest.approx((3 * f + t) * k["finetune_samples"], rel=1e-9)
        assert k["finetune_samples"] < p["finetune_samples"]   # fewer steps pay for the teacher's forwards
        kd_step = (3 * f + t) * 128                             # within half a step of the plain cell's FLOPs
        assert abs(k["finetune_flops"] - p["finetune_flops"]) <= kd_step / 2 + 1
        assert abs(k["finetune_flops"] / p["finetune_flops"] - 1) < 0.05
    # depth 2 is the teacher's own shape: t = f, so 3/4 of the plain steps
    assert kd[2]["teacher"]["steps"] == round(0.75 * plain[2]["finetune_samples"] / 128)
    md = (results / "kd.md").read_text()
    assert "## Teachers" in md and "| kd | digits | 1 | pretrain-finetune |" in md


def test_teacher_model_missing_is_trained_again(kd_run, tmp_path, capsys):
    suite, cache, _, _, _, _ = kd_run
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    shutil.rmtree(copy / "kd" / "models")
    for record in (copy / "kd" / "cells").glob("*.json"):  # the kd cells not run: they need the teacher
        if "teacher" in json.loads(record.read_text()):
            record.unlink()
    report = bench(str(suite), methods="kd", out=str(copy), results_dir=str(tmp_path / "results"))
    assert "(cached without its model: training it again)" in capsys.readouterr().out
    assert report.trained == 3 and len(list((copy / "kd" / "models").iterdir())) == 1


def test_cache_key_follows_the_teacher(tmp_path):
    def kd_keys(methods):
        suite = load_suite(str(write_suite(tmp_path / "s.yaml", methods=methods)))
        cells, _ = plan_cells(suite, "anc", learngene.ViTArch(depth=2, embed_dim=48, num_heads=3),
                              methods=["kd"], datasets=["digits"], seeds=[0])
        return {c.shape[0]: (c.key, c.teacher.key, c.teacher.shape) for c in cells}

    base = kd_keys(METHODS)
    assert all(shape == (2, 48, 3) for _, _, shape in base.values())   # the ancestry's shape at every depth
    longer_teacher = [METHODS[0], {**METHODS[1], "finetune": {"epochs": 3}}, KD]
    changed = kd_keys(longer_teacher)
    for depth in (1, 2):
        assert changed[depth][1] != base[depth][1] and changed[depth][0] != base[depth][0]
    assert kd_keys([*METHODS[:2], {**KD, "match_flops": False}])[1][0] != base[1][0]
    # the plain rows keep their keys: adding a kd row changes no other cell
    plain = load_suite(str(write_suite(tmp_path / "p.yaml", methods=METHODS[:2])))
    with_kd = load_suite(str(write_suite(tmp_path / "k.yaml", methods=METHODS)))
    arch = learngene.ViTArch(depth=2, embed_dim=48, num_heads=3)
    keys = [{c.key for c in plan_cells(s, "anc", arch, methods=["scratch", "pretrain-finetune"],
                                       datasets=["digits"], seeds=[0])[0]} for s in (plain, with_kd)]
    assert keys[0] == keys[1]


@pytest.mark.parametrize("methods, message", [
    ([METHODS[0], KD], "teacher 'pretrain-finetune' is not another method of the suite; choose among scratch"),
    ([*METHODS[:2], {**KD, "finetune": {}}], "a teacher is named but finetune.distill is not set"),
    ([*METHODS[:2], {"label": "kd", "method": "scratch", "finetune": {"distill": "hard"}}],
     "finetune.distill is 'hard' but no teacher is named"),
    ([*METHODS, {**KD, "label": "kd2", "teacher": "kd"}], "teacher 'kd' itself distils from 'pretrain-finetune'"),
    ([*METHODS[:2], {**KD, "match_flops": "yes"}], "match_flops must be true or false"),
])
def test_bad_teacher_is_a_one_line_config_error(tmp_path, methods, message):
    with pytest.raises(ConfigError, match="^[^\n]*" + re.escape(message)):
        load_suite(str(write_suite(tmp_path / "bad.yaml", methods=methods)))


def test_a_skipped_teacher_skips_the_kd_cell_with_its_reason(tmp_path):
    from learngene.bench.run import train_cell

    suite = load_suite(str(write_suite(tmp_path / "s.yaml")))
    arch = learngene.ViTArch(depth=2, embed_dim=48, num_heads=3)
    (cell,) = plan_cells(suite, "anc", arch, methods=["kd"], datasets=["digits"], seeds=[0])[0][:1]
    teacher = {"cell": cell.teacher.key, "label": "pretrain-finetune", "status": "skipped",
               "reason": "pretrain-finetune can only rebuild the ancestry"}
    record = train_cell(cell, None, None, None, suite.finetune_config(0, cell.entry), {}, teacher=teacher)
    assert record["status"] == "skipped" and record["teacher"]["cell"] == cell.teacher.key
    assert record["reason"] == "its teacher cell (pretrain-finetune) was skipped: " + teacher["reason"]
