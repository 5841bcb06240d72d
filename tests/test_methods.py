"""Shared properties of every registered method, over one table, plus method specifics."""

from __future__ import annotations

import pytest
import timm
import torch

import learngene
from learngene.errors import ConfigError, UnknownMethodError
from learngene.stack import to_stack

from conftest import randomize_, tiny_vit

# (method, options, a descendant shape it must support)
METHODS = [
    ("scratch", {}, dict(depth=2, embed_dim=32, num_heads=2)),
    ("pretrain-finetune", {}, dict()),
    ("heuristic", dict(rule="last", k=2), dict(depth=3)),
    ("heuristic", dict(rule="first", k=1), dict(depth=5)),
    ("heuristic", dict(layers=[0, 3]), dict(depth=6)),
    ("auto-learngene", dict(criterion="first-half"), dict(depth=3)),
    ("weight-selection", {}, dict(depth=2, embed_dim=24, num_heads=3)),
    ("weight-selection", dict(selection="head-aware", keep_head=True), dict(depth=3, embed_dim=32, num_heads=2)),
    ("mimetic", {}, dict(depth=2, embed_dim=32, num_heads=2)),
    ("peg", dict(epochs=0), dict(depth=3, num_heads=2)),
]


def test_registry_lists_the_table():
    assert {m for m, _, _ in METHODS} <= set(learngene.list_methods())


def test_unknown_method_lists_valid_ones():
    with pytest.raises(UnknownMethodError, match="choose one of: .*heuristic"):
        learngene.extract("no-such-method", tiny_vit())


@pytest.mark.parametrize("method,options,shape", METHODS)
def test_expand_gives_a_plain_timm_vit(method, options, shape, tmp_path):
    gene = learngene.extract(method, randomize_(tiny_vit()), **options)
    model = gene.expand(num_classes=7, seed=0, **shape)
    assert type(model) is timm.models.vision_transformer.VisionTransformer
    # timm.create_model with the same arguments accepts the descendant's state dict
    arch = learngene.arch_of(model).to_dict()
    twin = timm.models.vision_transformer.VisionTransformer(**arch)
    twin.load_state_dict(model.state_dict())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    assert len(model.blocks) == shape.get("depth", 4)


@pytest.mark.parametrize("method,options,shape", METHODS)
def test_save_load_round_trip(method, options, shape, tmp_path):
    gene = learngene.extract(method, randomize_(tiny_vit()), **options)
    gene.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.method == gene.method and loaded.config == gene.config
    assert loaded.num_parameters == gene.num_parameters
    assert loaded.tensors.keys() == gene.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], gene.tensors[k]) for k in gene.tensors)
    a = gene.expand(seed=3, **shape).state_dict()
    b = loaded.expand(seed=3, **shape).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method,options,shape", METHODS)
def test_expand_seed_controls_fresh_init(method, options, shape):
    gene = learngene.extract(method, randomize_(tiny_vit()), **options)
    a = gene.expand(seed=1, **shape).state_dict()
    b = gene.expand(seed=1, **shape).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_heuristic_three_of_twelve_stores_exactly_those_blocks(ancestry):
    """vit-mini, k=3 last layers: stored = 3 blocks + the stem, and nothing else."""
    stack = to_stack(ancestry)
    gene = learngene.extract("heuristic", ancestry, rule="last", k=3)
    expected = sum(stack.num_parameters_of_block(i) for i in (9, 10, 11)) if hasattr(stack, "num_parameters_of_block") \
        else sum(t.numel() for i in (9, 10, 11) for t in stack.blocks[i].values())
    expected += stack.num_parameters("stem")
    assert gene.num_parameters == expected
    assert gene.config["layers"] == [9, 10, 11]


def test_heuristic_descendant_carries_inherited_tensors_unchanged(ancestry):
    gene = learngene.extract("heuristic", ancestry, rule="last", k=3)
    child = gene.expand(depth=6, num_classes=5, seed=0)
    parent, kid = to_stack(ancestry), to_stack(child)
    # rule "last": ancestry layers 9, 10, 11 sit at descendant positions 3, 4, 5
    for layer, position in zip((9, 10, 11), (3, 4, 5)):
        for key, tensor in parent.blocks[layer].items():
            assert torch.equal(kid.blocks[position][key], tensor), (layer, key)
    for key in ("patch.weight", "patch.bias", "pos_embed", "cls_token"):
        assert torch.equal(kid.stem[key], parent.stem[key])
    # fresh layers are not copies of any ancestry layer
    assert not any(torch.equal(kid.blocks[0]["fc1.weight"], b["fc1.weight"]) for b in parent.blocks)


def test_heuristic_spread_places_layers_by_relative_depth(ancestry):
    from learngene.methods._indices import place_layers

    assert place_layers([0, 5, 11], "spread", 12, 12) == [0, 5, 11]
    assert place_layers([0, 5, 11], "spread", 12, 6) == [0, 2, 5]
    assert place_layers([0, 1, 2], "spread", 12, 3) == [0, 1, 2]
    assert place_layers([9, 10, 11], "last", 12, 4) == [1, 2, 3]


@pytest.mark.parametrize("options,match", [
    (dict(rule="middle"), "rule must be one of"),
    (dict(k=0), "k must be a positive integer"),
    (dict(layers=[0, 0]), "duplicates"),
    (dict(layers=[40]), r"layers \[40\] do not exist"),
    (dict(k=13), "only 12 layers"),
    (dict(nonsense=1), "has no option 'nonsense'"),
])
def test_heuristic_bad_options(ancestry, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("heuristic", ancestry, **options)


@pytest.mark.parametrize("shape,match", [
    (dict(depth=0), "depth must be a positive integer"),
    (dict(depth=-3), "depth must be a positive integer"),
    (dict(embed_dim=50, num_heads=3), "not divisible by num_heads"),
    (dict(depth=2), "needs depth >= 3"),
    (dict(embed_dim=48, num_heads=3), "embed_dim must be the ancestry's"),
])
def test_heuristic_bad_shapes(ancestry, shape, match):
    gene = learngene.extract("heuristic", ancestry, k=3)
    with pytest.raises(ConfigError, match=match):
        gene.expand(**shape)


def test_pretrain_finetune_rebuilds_the_ancestry(ancestry):
    gene = learngene.extract("pretrain-finetune", ancestry)
    assert gene.num_parameters == sum(p.numel() for p in ancestry.parameters())
    child = gene.expand()
    a, b = ancestry.state_dict(), child.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    new_head = gene.expand(num_classes=3, seed=0)
    assert new_head.head.weight.shape == (3, 96)
    with pytest.raises(ConfigError, match="can only rebuild the ancestry"):
        gene.expand(depth=6)


def test_stem_adapts_to_new_grid_and_channels(ancestry):
    gene = learngene.extract("heuristic", ancestry, k=2)
    child = gene.expand(img_size=56, in_chans=3, num_classes=4, seed=0)
    assert child.pos_embed.shape == (1, 1 + 64, 96)
    assert child(torch.randn(1, 3, 56, 56)).shape == (1, 4)


def test_scratch_stores_nothing(ancestry):
    gene = learngene.extract("scratch", ancestry)
    assert gene.num_parameters == 0
    assert gene.expand(depth=2, embed_dim=24, num_heads=2, num_classes=3).embed_dim == 24


def test_extract_does_not_modify_the_ancestry(ancestry):
    before = {k: v.clone() for k, v in ancestry.state_dict().items()}
    gene = learngene.extract("heuristic", ancestry, k=3)
    child = gene.expand(seed=0)
    with torch.no_grad():
        for p in child.parameters():
            p.add_(1.0)
    for key, value in ancestry.state_dict().items():
        assert torch.equal(value, before[key]), key
