"""Every shipped YAML preset parses and resolves against its subcommand's signature."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from learngene._cli_args import resolve_call
from learngene.cli import COMMANDS
from learngene.registry import get_method, make_config
from learngene.train import TrainConfig

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
COMMAND_OF = {"ancestry": "ancestry", "extract": "extract", "finetune": "finetune"}


def method_of(path: Path) -> str | None:
    """extract-<method>[-<variant>].yaml -> the longest registered method name it starts with."""
    from learngene.registry import list_methods

    rest = path.stem.split("-", 1)[1]
    names = [m for m in list_methods() if rest == m or rest.startswith(m + "-")]
    return max(names, key=len) if names else rest


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_preset_resolves(path):
    command = COMMAND_OF[path.stem.split("-")[0]]
    func = COMMANDS[command]
    positional = {"extract": {"method": method_of(path)}, "finetune": {"model": "x"}}
    namespace = argparse.Namespace(_config=str(path), overrides=[], **positional.get(command, {}))
    values = resolve_call(func, namespace)
    extra = values.get("overrides", {})
    if "train" in extra:
        TrainConfig.from_dict(extra["train"])
    if command == "extract":
        assert values["method"] == namespace.method  # the YAML must not clobber the positional method
        make_config(get_method(values["method"]), extra.get("options", {}))


# -- the papers' setups at their real shapes: resolved, then built (meta device, no training) --
DEIT_LR = 5e-4 / 512  # DeiT's rule: lr = 5e-4 x global batch / 512
# file -> (the model it builds: preset + shape, and the numbers it promises, as the header states them)
PAPER_SETUPS = {
    "extract-tleg-deit-small.yaml": dict(
        build="ancestry", shape=(12, 384, 6), options=dict(aux_depth=12, epochs=150, distill_alpha=1.0, distill_tau=1.0),
        lr_rule=True),
    "extract-tleg-deit-base.yaml": dict(
        build="ancestry", shape=(12, 768, 12), options=dict(aux_depth=12, epochs=100, distill_alpha=1.0, distill_tau=1.0),
        lr_rule=True),
    "finetune-tleg-descendant.yaml": dict(
        build="descendant", preset="deit-small", shape=(6, 384, 6), train=dict(epochs=40, repeated_aug=3,
                                                                               ema_decay=0.99996), lr_rule=True),
    "extract-peg-deit-small.yaml": dict(
        build="ancestry", shape=(12, 384, 6), options=dict(learngene_heads=4, learngene_layers=6)),
    "finetune-peg-downstream.yaml": dict(
        build="descendant", preset="deit-small", shape=(12, 384, 6), num_classes=100,
        train=dict(epochs=100, batch_size=1600, clip_grad=5.0, warmup_epochs=5, min_lr=5e-6 * 1600 / 512,
                   repeated_aug=1, ema_decay=None), lr_rule=True),
    "extract-cluster-learngene-deit-small.yaml": dict(
        build="ancestry", shape=(12, 384, 6), options=dict(sample_size=1000, eps=10.0, min_samples=1)),
    "finetune-cluster-learngene-downstream.yaml": dict(
        build="descendant", preset="deit-small", shape=(12, 384, 6), num_classes=1010,
        train=dict(epochs=500, batch_size=1280, warmup_epochs=10, repeated_aug=3), lr_rule=True),
    "extract-weight-selection-vit-s-in21k.yaml": dict(
        build="ancestry", shape=(12, 384, 6), options=dict(selection="uniform", keep_head=False)),
    "finetune-weight-selection-downstream.yaml": dict(
        build="descendant", preset="deit-small", shape=(12, 192, 3), num_classes=100,
        train=dict(epochs=300, batch_size=512, lr=2e-3, warmup_epochs=50, min_lr=1e-6, accum_steps=1,
                   layer_decay=None, ema_decay=None)),
}


def resolved(path: Path) -> dict:
    command = COMMAND_OF[path.stem.split("-")[0]]
    positional = {"extract": {"method": method_of(path)}, "finetune": {"model": "x"}}
    namespace = argparse.Namespace(_config=str(path), overrides=[], **positional.get(command, {}))
    return resolve_call(COMMANDS[command], namespace)


def test_every_paper_setup_is_shipped():
    assert set(PAPER_SETUPS) <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("name", sorted(PAPER_SETUPS))
def test_paper_setup_resolves_and_builds(name):
    import torch

    from learngene.arch import arch_of, create_vit
    from learngene.models import load_ancestry
    from learngene.train.augment import build_mixup, rand_augment

    path = Path(__file__).parent.parent / "configs" / name
    setup, values = PAPER_SETUPS[name], resolved(path)
    text = path.read_text()
    assert text.startswith(f"# learngene {COMMAND_OF[name.split('-')[0]]} ") and f"--config configs/{name}" in text
    extra = values.get("overrides", {})
    for key, want in setup.get("options", {}).items():
        assert extra["options"][key] == want, key
    with torch.device("meta"):  # the real shapes, without allocating or initialising the weights' storage
        if setup["build"] == "ancestry":
            model = load_ancestry(values["ancestry"], pretrained=False)
        else:
            depth, width, heads = (values.get(k) for k in ("depth", "embed_dim", "num_heads"))
            model = create_vit(setup["preset"], depth=depth, embed_dim=width, num_heads=heads,
                               num_classes=setup["num_classes"] if "num_classes" in setup else None)
    arch = arch_of(model)
    assert (arch.depth, arch.embed_dim, arch.num_heads, arch.side) == (*setup["shape"], 224)
    if "train" not in extra:
        return
    cfg = TrainConfig.from_dict(extra["train"])
    for key, want in setup.get("train", {}).items():
        assert getattr(cfg, key) == pytest.approx(want) if isinstance(want, float) else getattr(cfg, key) == want, key
    if setup.get("lr_rule"):
        assert cfg.lr == pytest.approx(DEIT_LR * cfg.batch_size)
    assert values["augment"] is True  # DeiT's transforms run on the training images
    # the recipe's own pieces, built from the config: timm's RandAugment string and Mixup/CutMix
    assert rand_augment(cfg.rand_augment, image_size=224, mean=(0.485, 0.456, 0.406)) is not None
    mixup = build_mixup(cfg, num_classes=setup.get("num_classes", 1000))
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.label_smoothing) == (0.8, 1.0, 0.1)
