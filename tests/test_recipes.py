"""The recipe layer: fine-tuning every kind of descendant, folder kinds from the registry, and a
command line that names no method."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import learngene
from learngene.errors import ConfigError
from learngene.recipes import Shape, evaluate_model, expand_to_folder, finetune, folder_kind, grow
from learngene.registry import list_methods
from learngene.train import TrainConfig, fit

from conftest import randomize_, tiny_vit

CONFIG = TrainConfig(epochs=1, batch_size=16, warmup_epochs=0.0, lr=2e-3, seed=0, checkpoint=False)


@pytest.fixture(scope="module")
def tiny_ancestry():
    torch.manual_seed(0)
    return randomize_(tiny_vit())  # depth 4, width 48, 3 heads, 10 classes, 28x28x1


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g))


def test_learngene_descendant_trains_its_maps_then_folds(tiny_ancestry, data):
    """A PEG learngene: the trainable descendant is trained and folded, exactly as by hand."""
    gene = learngene.extract("peg", tiny_ancestry, epochs=0)
    model, result = finetune(gene, (data, None), CONFIG, shape=Shape(depth=3), progress=False)
    assert isinstance(model, VisionTransformer) and len(model.blocks) == 3 and result.samples_seen == 32

    by_hand = gene.expand(depth=3, seed=CONFIG.seed, trainable=True)
    assert not isinstance(by_hand, VisionTransformer)  # the maps train with it
    fit(by_hand, data, None, CONFIG, progress=False)
    expected = gene.fold(by_hand).state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())

    child = grow(gene, shape=Shape(depth=3), seed=CONFIG.seed)
    again, _ = finetune(child, (data, None), CONFIG, progress=False)
    assert all(torch.equal(value, expected[key]) for key, value in again.state_dict().items())


def test_plain_vit_gets_the_datas_classes(tmp_path):
    model = tiny_vit(depth=1, num_classes=3)
    tuned, result = finetune(model, "digits", CONFIG, tmp_path / "run", progress=False)
    assert tuned is model and model.num_classes == 10 and (tmp_path / "run" / "metrics.jsonl").is_file()
    assert evaluate_model(model, "digits")["acc"] == pytest.approx(result.eval_acc)
    with pytest.raises(ConfigError, match="only when growing a learngene"):
        finetune(model, "digits", CONFIG, shape=Shape(depth=2))


def test_stitched_supernet_trains_as_it_is(tiny_ancestry, data):
    from learngene.methods import sn_net

    gene = learngene.extract("sn-net", tiny_ancestry, widths=[24, 48], depth=2, epochs=0)
    with pytest.raises(ConfigError, match="stitch"):  # no single-shape descendant: built by stitch_supernet
        finetune(gene, (data, None), CONFIG, progress=False)
    supernet = sn_net.stitch_supernet(gene, init="random")
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    trained, result = finetune(supernet, (data, None), CONFIG, progress=False)
    assert trained is supernet and result.samples_seen == 32
    assert any(not torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    with pytest.raises(ConfigError, match="datasets"):
        finetune(supernet, "digits", CONFIG)


def test_folder_kinds_come_from_the_registry(tiny_ancestry, tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "clip_arch.json").write_text("{}")
    assert folder_kind(tmp_path / "clip").name == "clip" and folder_kind(tmp_path) is None
    learngene.extract("heuristic", tiny_ancestry, k=1).save(tmp_path / "gene")
    with pytest.raises(ConfigError, match="grows no CLIP descendants.*mm-lg"):
        expand_to_folder(tmp_path / "gene", tmp_path / "child", kind="clip")
    assert not (tmp_path / "child").exists()
    summary = expand_to_folder(tmp_path / "gene", tmp_path / "child", shape=Shape(depth=2), seed=1)
    assert summary["depth"] == 2 and summary["method"] == "heuristic"


def test_the_command_line_names_no_method():
    """What a method adds to the CLI comes from its registration, not from cli.py."""
    source = (Path(learngene.__file__).parent / "cli.py").read_text()
    named = [m for m in list_methods() if re.search(rf"(?<![\w-]){re.escape(m)}(?![\w-])", source)]
    assert named == []
