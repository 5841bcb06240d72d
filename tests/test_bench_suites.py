"""Every shipped suite (benchmarks/suites/*.yaml) resolves without training anything: it loads,
its ancestry's architecture builds, and its cells plan. Plus the `strong` suite's facts (issue
21) and the ancestry patch_size override it uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import learngene
from learngene.arch import ViTArch, create_vit, vit_kwargs
from learngene.bench import ancestry_key, load_suite
from learngene.bench.run import recorded_ancestry_key
from learngene.bench.suite import REPO_ROOT, SUITES_DIR, plan_cells, suite_shapes
from learngene.data import dataset_info
from learngene.models import save_model
from learngene.train import TrainConfig

SUITES = sorted(p.stem for p in (REPO_ROOT / SUITES_DIR).glob("*.yaml"))


def suite_arch(suite) -> ViTArch:
    """The architecture the suite's ancestry is trained with (classifier sized to its data)."""
    a = suite.ancestry
    return ViTArch.from_dict(vit_kwargs(a.preset, num_classes=dataset_info(a.data).num_classes,
                                        **a.model_overrides()))


@pytest.mark.parametrize("name", SUITES)
def test_shipped_suite_resolves(name):
    suite = load_suite(name)
    arch = suite_arch(suite)
    key = ancestry_key(suite.ancestry.preset, suite.ancestry.data, TrainConfig.from_dict(suite.ancestry.train),
                       suite.ancestry.model_overrides())
    labels = [m.label for m in suite.methods]
    cells, unavailable = plan_cells(suite, key, arch, methods=labels, datasets=suite.datasets, seeds=suite.seeds)
    assert unavailable == {}, unavailable
    assert len(cells) == len(labels) * len(suite.datasets) * len(suite_shapes(suite, arch)) * len(suite.seeds)
    assert len({c.key for c in cells}) == len(cells)


def test_strong_suite():
    strong, mini = load_suite("strong"), load_suite("mini")
    arch = suite_arch(strong)
    # vit-mini's shape at patch 4: a 7x7 grid, 49 patch tokens + the class token
    assert (arch.depth, arch.embed_dim, arch.num_heads, arch.side, arch.in_chans) == (12, 96, 6, 28, 1)
    assert arch.patch_hw == (4, 4) and arch.grid == (7, 7)
    assert create_vit(arch.timm_kwargs()).patch_embed.num_patches == 49
    assert strong.ancestry.data == "fashion-mnist" and strong.ancestry.train["epochs"] >= 10
    mini_key = ancestry_key(mini.ancestry.preset, mini.ancestry.data, TrainConfig.from_dict(mini.ancestry.train))
    same_recipe_at_patch4 = ancestry_key(mini.ancestry.preset, mini.ancestry.data,
                                         TrainConfig.from_dict(mini.ancestry.train), {"patch_size": 4})
    assert same_recipe_at_patch4 != mini_key  # the patch size is part of the ancestry's key
    # descendants as in mini: its fine-tuning recipe, datasets and seeds; the rows and depths
    assert strong.finetune == mini.finetune and strong.datasets == mini.datasets and strong.seeds == mini.seeds
    assert strong.depths == [2, 6, 12]
    assert [m.label for m in strong.methods] == [
        "scratch", "pretrain-finetune", "heuristic-last3", "auto-similarity3", "ws-uniform", "tleg", "sws",
        "peg", "cluster-eps0.2", "mimetic"]
    by_label = {m.label: m for m in mini.methods}
    for entry in strong.methods:  # each row is mini's row of the same label (options, extraction data)
        twin = by_label[entry.label]
        assert (entry.method, entry.options, entry.extract_on, entry.finetune) == \
            (twin.method, twin.options, twin.extract_on, twin.finetune), entry.label


def test_descendants_keep_the_ancestrys_patch_grid():
    ancestry = create_vit("vit-mini", patch_size=4)
    gene = learngene.extract("heuristic", ancestry, rule="last", k=3)
    child = gene.expand(depth=6, num_classes=10, seed=0)
    assert child.patch_embed.grid_size == (7, 7) and child.pos_embed.shape[1] == 50


def test_a_trained_folder_at_patch_4_has_the_suites_key(tmp_path):
    """recorded_ancestry_key reads the patch size back from model_config.json (JSON pairs), so
    `--ancestry FOLDER` recognises a folder trained with the suite's recipe."""
    suite = load_suite("strong")
    spec = suite.ancestry
    train = TrainConfig.from_dict(spec.train)
    folder = tmp_path / "ancestry"
    save_model(create_vit(spec.preset, **spec.model_overrides()), folder, data=spec.data, preset=spec.preset)
    (folder / "train_summary.json").write_text(json.dumps({"config": train.to_dict()}))
    assert recorded_ancestry_key(folder) == ancestry_key(spec.preset, spec.data, train, spec.model_overrides())
    # at the preset's own patch size nothing is recorded as an override: mini's keys are unchanged
    plain = tmp_path / "plain"
    save_model(create_vit("vit-mini"), plain, data="fashion-mnist", preset="vit-mini")
    (plain / "train_summary.json").write_text(json.dumps({"config": train.to_dict()}))
    assert recorded_ancestry_key(plain) == ancestry_key("vit-mini", "fashion-mnist", train)


@pytest.mark.parametrize("patch,message", [
    (5, "patch_size 5 does not divide the 28x28 input of preset 'vit-mini'; choose one of [1, 2, 4, 7, 14, 28]"),
    (0, "patch_size must be a positive integer"),
    ("4", "patch_size must be a positive integer"),
    (56, "patch_size 56 is larger than img_size 28"),
])
def test_bad_patch_size_is_a_config_error(tmp_path, patch, message):
    text = (REPO_ROOT / SUITES_DIR / "strong.yaml").read_text().replace("patch_size: 4 ", f"patch_size: {patch!r} ")
    path = Path(tmp_path / "bad.yaml")
    path.write_text(text)
    with pytest.raises(learngene.ConfigError, match="ancestry") as info:
        load_suite(str(path))
    assert message in str(info.value)


def test_compare_suites_reports_the_flips():
    """benchmarks/compare_suites.py on mini's committed results against a copy where PEG gains
    20 points: PEG's verdicts against scratch/ws-uniform flip where they were false, nothing else."""
    import copy
    import sys

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import compare_suites

    mini = json.loads((REPO_ROOT / "benchmarks" / "results" / "mini.json").read_text())
    text, same = compare_suites.compare(mini, mini, "mini", "mini")
    assert same["flips"] == [] and same["best_changes"] == [] and "- none" in text
    other = copy.deepcopy(mini)
    other["summary"] = [r for r in other["summary"] if r["depth"] in (2, 6, 12)]
    for row in other["summary"]:
        if row["method"] == "peg":
            row["top1_mean"] += 0.2
    _, diff = compare_suites.compare(mini, other, "mini", "strong")
    assert diff["shared_cells"] == len(other["summary"])
    assert diff["flips"] and all(f["method"] == "peg" and not f["mini"] and f["strong"] for f in diff["flips"])
