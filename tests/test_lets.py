"""LeTs (Xia et al., NeurIPS 2024): learngene + width/depth transformation matrices, the
auxiliary model, row selection, descendants of many sizes, the artifact."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import learngene
from learngene import Learngene
from learngene.arch import arch_of
from learngene.errors import ArtifactError, ConfigError
from learngene.methods.lets import LetsAuxiliary, LetsConfig, select_rows
from learngene.methods.lets.method import aux_arch, init_tensors, resolve
from learngene.registry import config_to_dict, get_method
from learngene.stack import to_stack
from learngene.train.optim import no_decay_names

from conftest import randomize_, tiny_vit


@pytest.fixture(scope="module")
def tiny_ancestry():
    torch.manual_seed(0)
    return randomize_(tiny_vit())  # depth 4, width 48, 3 heads of 16, MLP 192, 10 classes, 4x4 patches


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(96, 1, 28, 28, generator=g),
                                          torch.randint(0, 10, (96,), generator=g))


def random_gene(ancestry, selection: str = "continuous", seed: int = 0, **sizes) -> Learngene:
    """A LeTs learngene (no training) whose every tensor, matrices included, is distinct random values."""
    arch = arch_of(ancestry)
    config = resolve(LetsConfig(selection=selection, **sizes), arch)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(t.shape, generator=g) for k, t in init_tensors(config, arch).items()}
    return Learngene(method="lets", config=config_to_dict(config), tensors=tensors,
                     provenance={"ancestry": {"arch": arch.to_dict()}})


def part(gene: Learngene, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in gene.tensors.items() if k.startswith(prefix + ".")}


@pytest.fixture(scope="module")
def extracted(tiny_ancestry, data):
    """One real extraction: 1 epoch of 4 steps, an auxiliary model deeper (6) than the ancestry (4)."""
    return learngene.extract("lets", tiny_ancestry, data=data, aux_depth=6, epochs=1, batch_size=16,
                             warmup_epochs=0.0, lr=2e-3, holdout=1 / 3)


# -- the transformation ------------------------------------------------------------------
def test_descendant_weights_are_the_transformation_by_hand(tiny_ancestry):
    """Continuous selection: the first rows of every matrix, applied as the docstring writes."""
    gene = random_gene(tiny_ancestry)                  # learngene: 2 blocks, 1 head of 16; aux: 4 x 48, 3 heads
    T = part(gene, "transform")
    depth, D, H, hd, F = 3, 32, 2, 16, 128
    E, A, B, M, G = T["embed"][:D], T["heads"][:H], T["head_dim"][:hd], T["mlp"][:F], T["depth"][:depth]
    child = to_stack(gene.expand(depth=depth, embed_dim=D, num_heads=H, seed=0))
    blocks = [part(gene, f"blocks.{j}") for j in range(2)]
    for l in range(depth):
        mix = {k: G[l, 0] * blocks[0][k] + G[l, 1] * blocks[1][k] for k in blocks[0]}
        want_fc1 = M @ mix["fc1.weight"] @ E.T
        want_q = torch.einsum("ah,bd,ce,hde->abc", A, B, E, mix["q.weight"])
        want_proj = torch.einsum("ce,ah,bd,ehd->cab", E, A, B, mix["proj.weight"])
        for key, want in (("fc1.weight", want_fc1), ("q.weight", want_q), ("proj.weight", want_proj),
                          ("fc2.bias", E @ mix["fc2.bias"]), ("norm1.weight", E @ mix["norm1.weight"]),
                          ("v.bias", A @ mix["v.bias"] @ B.T)):
            torch.testing.assert_close(child.blocks[l][key], want, rtol=1e-4, atol=1e-4, msg=f"block {l} {key}")
    torch.testing.assert_close(child.stem["pos_embed"], gene.tensors["stem.pos_embed"] @ E.T)
    torch.testing.assert_close(child.stem["patch.weight"],
                               torch.einsum("ce,eijk->cijk", E, gene.tensors["stem.patch.weight"]))
    torch.testing.assert_close(child.head["head.weight"], gene.tensors["head.head.weight"] @ E.T)  # same 10 classes


def test_auxiliary_model_is_the_descendant_at_its_shape(extracted):
    """The trained auxiliary model and the descendant grown at the auxiliary shape give the same logits."""
    config = LetsConfig(**extracted.config)
    arch = aux_arch(config, extracted.ancestry_arch)
    aux = LetsAuxiliary(arch, extracted.tensors).eval()
    child = extracted.expand(depth=arch.depth, seed=0).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(aux(x), child(x), rtol=1e-5, atol=1e-5)


def test_norm_selection_takes_the_rows_of_largest_norm(tiny_ancestry):
    """l1-top at depth 2: the descendant's blocks are the auxiliary model's blocks of the two rows
    of G with the largest L1 norm, in their order."""
    gene = random_gene(tiny_ancestry, selection="l1-top")
    gene.tensors["transform.depth"][[1, 3]] *= 10.0          # rows 1 and 3 of 4 have the largest norms
    want = [1, 3]
    full = to_stack(gene.expand(seed=0))                   # every row: the auxiliary model
    child = to_stack(gene.expand(depth=2, seed=0))
    for position, row in enumerate(want):
        for key, tensor in child.blocks[position].items():
            # float32 sums of terms up to ~100 that cancel: an absolute tolerance of 1e-5 of the
            # tensor's largest value (matmul kernels differ in summation order between CPUs)
            expected = full.blocks[row][key]
            torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("selection", ["continuous", "l2-top", "l2-bottom", "l1-top", "l1-bottom"])
def test_select_rows(selection):
    matrix = torch.tensor([[3.0, 0.0], [0.0, 0.5], [2.0, 2.0], [-1.0, 0.0]])  # L1: 3, .5, 4, 1; L2: 3, .5, 2.83, 1
    want = {"continuous": [0, 1], "l2-top": [0, 2], "l2-bottom": [1, 3], "l1-top": [0, 2], "l1-bottom": [1, 3]}
    assert select_rows(matrix, 2, selection).tolist() == want[selection]
    assert select_rows(matrix, 4, selection).tolist() == [0, 1, 2, 3]
    l2_vs_l1 = torch.tensor([[3.0, 0.0], [1.8, 1.8]])  # L2 3 > 2.55 but L1 3 < 3.6
    assert select_rows(l2_vs_l1, 1, "l2-top").tolist() == [0] and select_rows(l2_vs_l1, 1, "l1-top").tolist() == [1]


@pytest.mark.parametrize("shape", [
    dict(depth=1), dict(depth=6), dict(depth=5, embed_dim=48, num_heads=3),   # deeper than the ancestry's 4
    dict(depth=2, embed_dim=16, num_heads=1), dict(depth=3, embed_dim=30, num_heads=3),  # head_dim 10 < 16
    dict(depth=4, embed_dim=32, num_heads=2, num_classes=5, global_pool="avg"),
])
def test_descendants_of_many_sizes(extracted, shape):
    child = extracted.expand(seed=0, **shape)
    arch = arch_of(child)
    assert len(child.blocks) == shape["depth"]
    assert arch.embed_dim == shape.get("embed_dim", 48) and arch.num_heads == shape.get("num_heads", 3)
    assert child(torch.randn(2, 1, 28, 28)).shape == (2, shape.get("num_classes", 10))
    to_stack(child).validate()


@pytest.mark.parametrize("shape,match", [
    (dict(depth=7), r"depth is 7 .* 6 rows: choose depth <= 6, or re-extract with a larger aux_depth"),
    (dict(embed_dim=64, num_heads=4), r"embed_dim is 64 .* choose embed_dim <= 48"),
    (dict(embed_dim=48, num_heads=4), r"num_heads is 4 .* choose num_heads <= 3"),
    (dict(embed_dim=40, num_heads=2), r"head_dim is 20 .* choose head_dim <= 16"),
])
def test_too_large_descendants_are_refused(extracted, shape, match):
    with pytest.raises(ConfigError, match=match):
        extracted.expand(seed=0, **shape)


# -- learning ----------------------------------------------------------------------------
def test_extraction_trains_learngene_and_matrices(tiny_ancestry, extracted):
    config = resolve(LetsConfig(**{**extracted.config}), extracted.ancestry_arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        start = init_tensors(config, extracted.ancestry_arch)
    assert start.keys() == extracted.tensors.keys()
    for name in ("transform.embed", "transform.heads", "transform.head_dim", "transform.mlp", "transform.depth",
                 "blocks.0.fc1.weight", "stem.patch.weight"):
        assert not torch.equal(start[name], extracted.tensors[name]), f"{name} did not train"
    distill = extracted.provenance["lets"]["distillation"]
    assert distill["steps"] == 4 and distill["eval_acc"] is not None   # 64 of 96 images in batches of 16
    assert extracted.provenance["cost"]["samples_seen"] == 64
    assert extracted.config["gene_depth"] == 2 and extracted.config["aux_depth"] == 6


def test_gradients_reach_the_matrices_and_only_weights_decay(tiny_ancestry):
    gene = random_gene(tiny_ancestry)
    aux = LetsAuxiliary(aux_arch(LetsConfig(**gene.config), gene.ancestry_arch), gene.tensors)
    aux(torch.randn(2, 1, 28, 28)).square().sum().backward()
    for name, p in aux.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    no_decay = no_decay_names(aux)
    assert {f"transform.{k}" for k in ("embed", "heads", "head_dim", "mlp", "depth")} <= no_decay
    assert "blocks.0.q.weight" not in no_decay and "blocks.1.fc2.weight" not in no_decay
    assert "blocks.0.q.bias" in no_decay and "stem.pos_embed" in no_decay


def test_initial_matrices_copy_the_learngene(tiny_ancestry):
    """noise=0, untrained: the first rows of each width matrix are the identity, so a descendant
    at the learngene's width whose depth rows pick learngene block j is that block unchanged."""
    gene = learngene.extract("lets", tiny_ancestry, epochs=0, noise=0.0, aux_depth=4)  # G: rows 0,1 -> block 0
    child = to_stack(gene.expand(depth=3, embed_dim=16, num_heads=1, seed=0))
    for key, tensor in part(gene, "blocks.0").items():
        assert torch.equal(child.blocks[0][key], tensor) and torch.equal(child.blocks[1][key], tensor), key
    assert torch.equal(child.blocks[2]["fc1.weight"], gene.tensors["blocks.1.fc1.weight"])
    W = gene.tensors["transform.embed"]
    assert torch.equal(W[16:32], W[:16])  # the copy pattern: row i = column i mod 16


# -- the artifact and config --------------------------------------------------------------
def test_artifact_round_trip(extracted, tmp_path):
    extracted.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.config == extracted.config and loaded.config["gene_embed_dim"] == 16
    assert all(torch.equal(loaded.tensors[k], extracted.tensors[k]) for k in extracted.tensors)
    assert "depth <= 6, embed_dim <= 48" in get_method("lets").describe_shapes(loaded)
    a = extracted.expand(depth=5, embed_dim=32, num_heads=2, seed=1).state_dict()
    b = loaded.expand(depth=5, embed_dim=32, num_heads=2, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_rejects_matrices_that_disagree_with_the_config(tiny_ancestry, tmp_path):
    gene = random_gene(tiny_ancestry)
    gene.tensors["transform.mlp"] = gene.tensors["transform.mlp"][:100]
    gene.save(tmp_path / "bad")
    with pytest.raises(ArtifactError, match=r"transform.mlp is \(100, 64\) but the config gives \(192, 64\)"):
        learngene.load(tmp_path / "bad")


def test_load_rejects_mixed_dtypes(tiny_ancestry, tmp_path):
    gene = random_gene(tiny_ancestry)
    gene.tensors["transform.depth"] = gene.tensors["transform.depth"].half()
    gene.save(tmp_path / "bad")
    with pytest.raises(ArtifactError, match="share one floating-point dtype"):
        learngene.load(tmp_path / "bad")


@pytest.mark.parametrize("overrides", [
    dict(init_values=1e-5, qkv_bias=False),                     # layer-scale gammas, no q/k/v biases
    dict(global_pool="avg", class_token=False, fc_norm=True),   # TLEG-style pooling, no class token
])
def test_other_ancestry_layouts(overrides):
    """The transformation covers layer-scale gammas and a missing class token / q/k/v bias, and the
    auxiliary model is still exactly the descendant at its shape (narrower descendants grow too)."""
    ancestry = randomize_(tiny_vit(**overrides))
    gene = learngene.extract("lets", ancestry, epochs=0, noise=0.1)
    config = LetsConfig(**gene.config)
    aux = LetsAuxiliary(aux_arch(config, gene.ancestry_arch), gene.tensors).eval()
    child = gene.expand(seed=0).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(aux(x), child(x), rtol=1e-5, atol=1e-5)
    small = gene.expand(depth=2, embed_dim=32, num_heads=2, seed=0)
    assert small(x).shape == (2, 10)
    assert set(to_stack(small).blocks[0]) == set(to_stack(ancestry).blocks[0])


@pytest.mark.parametrize("options,match", [
    (dict(selection="middle"), "selection must be one of continuous"),
    (dict(gene_heads=0), "gene_heads must be a positive integer"),
    (dict(aux_embed_dim=50, aux_heads=3), "aux_embed_dim 50 is not divisible by aux_heads 3"),
    (dict(gene_depth=8, epochs=0), "learngene's depth size 8 exceeds the auxiliary model's 4"),
    (dict(gene_embed_dim=40, gene_heads=3), "gene_embed_dim 40 is not divisible by gene_heads 3"),
    (dict(gene_embed_dim=32, gene_heads=1, epochs=0), "learngene's head_dim size 32 exceeds the auxiliary model's 16"),
    (dict(noise=-1), "noise must be a number >= 0"),
    (dict(aux_mlp_ratio=0), "aux_mlp_ratio must be a number > 0"),
    (dict(epochs=1), "needs data"),
    (dict(nonsense=1), "has no option 'nonsense'"),
])
def test_bad_options(tiny_ancestry, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("lets", tiny_ancestry, **options)


def test_config_is_stored_resolved(tiny_ancestry):
    gene = learngene.extract("lets", tiny_ancestry, epochs=0, gene_embed_dim=32)
    assert (gene.config["gene_heads"], gene.config["gene_embed_dim"]) == (2, 32)   # 32 / head_dim 16
    assert (gene.config["aux_depth"], gene.config["aux_embed_dim"], gene.config["aux_heads"]) == (4, 48, 3)
    assert dataclasses.asdict(LetsConfig(**gene.config)) == gene.config
