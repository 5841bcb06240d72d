"""auto-learngene: first-half / similarity (linear CKA) / gradient criteria, on tiny models."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import learngene
import learngene.methods.auto_learngene  # noqa: F401  (registers the method)
from learngene.errors import ConfigError
from learngene.methods.auto_learngene import AutoLearngeneConfig, layer_scores, linear_cka
from learngene.methods.auto_learngene import method as auto
from learngene.methods._indices import place_layers
from learngene.stack import from_stack, to_stack

from conftest import tiny_vit

CLASSES = 5


def tiled_data(n: int = 200, seed: int = 0) -> TensorDataset:
    """28x28 images made of one random 7x7 tile repeated 4x4; the tile's first 5 pixels are
    the one-hot label (a weak label signal next to 44 noise pixels)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    tile = torch.randn(n, 49, generator=g)
    tile[:, :CLASSES] = F.one_hot(labels, CLASSES).float()
    return TensorDataset(tile.reshape(n, 1, 7, 7).repeat(1, 1, 4, 4), labels)


def planted_vit(j: int, depth: int = 4, gain: float = 20.0):
    """A tiny ViT whose block ``j`` amplifies the label pixels and whose later blocks amplify the noise.

    Stem: token dim d = pixel d of its patch (all patch tokens are equal for tiled images);
    no position embedding, zero class token. Attention adds nothing (proj = 0). An MLP
    computes an exact linear map of LN(x) (GELU(u) - GELU(-u) = u, two hidden units per
    dim): block j adds gain * LN(x) on the 5 label dims, blocks after j add 4 * gain * LN(x)
    on the noise dims, blocks before j are identities. So only block j's output is
    dominated by the label signal.
    """
    s = to_stack(tiny_vit(depth=depth, num_classes=CLASSES)).clone()
    D = s.embed_dim
    s.stem["patch.weight"] = torch.eye(49)[:D].reshape(D, 1, 7, 7)
    s.stem["patch.bias"] = torch.zeros(D)
    s.stem["pos_embed"] = torch.zeros_like(s.stem["pos_embed"])
    s.stem["cls_token"] = torch.zeros_like(s.stem["cls_token"])
    for i, b in enumerate(s.blocks):
        for key in ("proj.weight", "proj.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
            b[key] = torch.zeros_like(b[key])
        b["norm2.weight"], b["norm2.bias"] = torch.ones(D), torch.zeros(D)
        dims, g = (range(CLASSES), gain) if i == j else (range(CLASSES, D), 4 * gain) if i > j else ((), 0.0)
        for h, d in enumerate(dims):
            b["fc1.weight"][2 * h, d], b["fc1.weight"][2 * h + 1, d] = 1.0, -1.0
            b["fc2.weight"][d, 2 * h], b["fc2.weight"][d, 2 * h + 1] = g, -g
    return from_stack(s)


# -- linear CKA ---------------------------------------------------------------------------
def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 12, generator=g), torch.randn(60, 7, generator=g)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    rotated = 3.5 * (x.double() @ q) + 2.0  # orthogonal map, isotropic scale, translation
    assert linear_cka(rotated, x) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(rotated, y) == pytest.approx(linear_cka(x, y), abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert 0.0 <= linear_cka(x, y) <= 1.0
    assert linear_cka(torch.ones(60, 3), x) == 0.0  # constant features carry nothing
    # the wide (n x n Gram) form and the feature form agree
    wide = torch.randn(10, 40, generator=g, dtype=torch.float64)
    kx, ky = wide - wide.mean(0), wide[:, :3] - wide[:, :3].mean(0)
    kx, ky = kx @ kx.T, ky @ ky.T
    assert linear_cka(wide, wide[:, :3]) == pytest.approx(float((kx * ky).sum() / (kx.norm() * ky.norm())), rel=1e-10)


def test_label_encoding_features_beat_noise():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(100) % 4
    target = F.one_hot(labels).double()
    noise = torch.randn(100, 16, generator=g)
    encoded = noise.clone()
    encoded[:, :4] += 3 * F.one_hot(labels).float()
    assert linear_cka(encoded, target) > 0.5 > 0.2 > linear_cka(noise, target)


# -- similarity ---------------------------------------------------------------------------
@pytest.mark.parametrize("j", [1, 2])
def test_similarity_scores_the_planted_layer_highest(j):
    images, labels = tiled_data().tensors
    scores = layer_scores(planted_vit(j), images, labels)
    assert scores.shape == (4,) and scores.dtype == torch.float64
    assert int(scores.argmax()) == j and scores[j] > 0.9
    assert all(scores[i] < 0.3 for i in range(4) if i != j)


def test_similarity_extract_keeps_the_planted_layer_and_descendants_carry_it(tmp_path):
    model, data = planted_vit(2), tiled_data()
    gene = learngene.extract("auto-learngene", model, data=data, criterion="similarity", k=1, probe_size=100)
    assert gene.config["layers"] == [2]
    assert len(gene.config["scores"]) == 4 and max(gene.config["scores"]) == gene.config["scores"][2]
    assert gene.provenance["cost"]["samples_seen"] == 100 and gene.provenance["cost"]["flops"] > 0
    gene = learngene.extract("auto-learngene", model, data=data, criterion="similarity", k=2, probe_size=100)
    assert gene.config["layers"] == [0, 2]  # the identity layers 0, 1 tie: lower index wins
    parent = to_stack(model)
    assert gene.num_parameters == sum(t.numel() for i in (0, 2) for t in parent.blocks[i].values()) \
        + parent.num_parameters("stem")
    gene.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.config == gene.config
    child = loaded.expand(depth=7, num_classes=3, seed=0)
    assert type(child) is timm.models.vision_transformer.VisionTransformer
    kid = to_stack(child)
    for layer, position in zip((0, 2), place_layers([0, 2], "spread", 4, 7)):
        assert all(torch.equal(kid.blocks[position][k], t) for k, t in parent.blocks[layer].items())
    assert all(torch.equal(kid.stem[k], parent.stem[k]) for k in parent.stem)
    assert child(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_top_k_ties_go_to_the_lower_index():
    assert auto.top_k(torch.tensor([0.5, 0.9, 0.5, 0.9]), 3, largest=True) == [0, 1, 3]
    assert auto.top_k(torch.tensor([0.5, 0.9, 0.5, 0.9]), 1, largest=False) == [0]


# -- gradient ------------------------------------------------------------------------------
def test_gradient_criterion_picks_k_valid_layers_and_records_cost():
    torch.manual_seed(0)
    model = tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gene = learngene.extract("auto-learngene", model, data=tiled_data(60), criterion="gradient", k=2,
                             num_tasks=2, task_classes=3, grad_steps=3, batch_size=8)
    layers, scores = gene.config["layers"], gene.config["scores"]
    assert len(layers) == 2 == len(set(layers)) and layers == sorted(layers) and all(0 <= i < 4 for i in layers)
    assert len(scores) == 4 and all(math.isfinite(s) and 0 <= s <= 1 for s in scores)
    assert max(scores[i] for i in layers) <= min(s for i, s in enumerate(scores) if i not in layers)
    assert gene.provenance["cost"]["samples_seen"] == 2 * 3 * 8 and gene.provenance["cost"]["flops"] > 0
    assert [len(t) for t in gene.provenance["selection"]["tasks"]] == [3, 3]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the ancestry is untouched
    child = gene.expand(depth=4, seed=0)
    kid, parent = to_stack(child), to_stack(model)
    for layer, position in zip(layers, place_layers(layers, "spread", 4, 4)):
        assert position == layer
        assert all(torch.equal(kid.blocks[position][k], t) for k, t in parent.blocks[layer].items())


# -- first-half -----------------------------------------------------------------------------
def test_first_half_stores_half_the_blocks_and_the_stem(ancestry):
    gene = auto.extract(ancestry, AutoLearngeneConfig(), data=None)  # reads no data
    stack = to_stack(ancestry)
    assert gene.config["layers"] == [0, 1, 2, 3, 4, 5] and gene.config["scores"] is None
    assert gene.num_parameters == sum(t.numel() for i in range(6) for t in stack.blocks[i].values()) \
        + stack.num_parameters("stem")
    assert {k.split(".")[0] for k in gene.tensors} == {"blocks", "stem"}
    # through the API (the spec asks for data, first-half ignores it)
    api_gene = learngene.extract("auto-learngene", ancestry, data=tiled_data(10))
    assert api_gene.config["layers"] == gene.config["layers"]
    child = api_gene.expand(depth=8, num_classes=4, seed=0)
    kid = to_stack(child)
    for i in range(6):  # placement "first": ancestry layer i at position i
        assert all(torch.equal(kid.blocks[i][k], t) for k, t in stack.blocks[i].items())
    assert not any(torch.equal(kid.blocks[7]["fc1.weight"], b["fc1.weight"]) for b in stack.blocks)
    with pytest.raises(ConfigError, match="needs depth >= 6"):
        api_gene.expand(depth=5)


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["similarity", "gradient"])
def test_missing_data_is_a_config_error(criterion):
    with pytest.raises(ConfigError, match="pass data="):
        auto.extract(tiny_vit(), AutoLearngeneConfig(criterion=criterion), data=None)
    with pytest.raises(ConfigError, match="data"):
        learngene.extract("auto-learngene", tiny_vit(), criterion=criterion)


@pytest.mark.parametrize("options,match", [
    (dict(criterion="middle"), "criterion must be one of"),
    (dict(k=0), "k must be an integer >= 1"),
    (dict(pool="max"), "pool must be one of"),
    (dict(lr=-1.0), "lr must be a positive number"),
    (dict(criterion="similarity", k=5), "only 4 layers"),
    (dict(layers=[0, 1]), "fills in `layers`"),
])
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("auto-learngene", tiny_vit(), data=tiled_data(20), **options)


def test_wrong_image_size_is_a_config_error():
    data = TensorDataset(torch.randn(8, 1, 8, 8), torch.arange(8) % 2)
    with pytest.raises(ConfigError, match="ancestry takes"):
        learngene.extract("auto-learngene", tiny_vit(), data=data, criterion="similarity")
