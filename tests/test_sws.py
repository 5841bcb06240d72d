"""SWS (Xia et al., IJCAI 2024): stage sizes, the staged auxiliary model, extraction, descendants."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import learngene
import learngene.methods.sws  # noqa: F401  (registers the method)
from learngene import Learngene
from learngene.arch import arch_of
from learngene.errors import ArtifactError, ConfigError
from learngene.methods._narrow import spaced
from learngene.methods.sws import SwsAuxiliary, SwsConfig, layer_stages, stage_sizes
from learngene.methods.sws.method import init_tensors, sws_arch
from learngene.registry import config_to_dict
from learngene.stack import to_stack
from learngene.train.optim import no_decay_names

from conftest import randomize_, tiny_vit

REFERENCE = [3, 3, 4, 3, 3]  # the reference's Aux-S/B stages (aux_deit_*_L16_33433)


def random_gene(ancestry, stages=REFERENCE, seed: int = 0) -> Learngene:
    """An SWS learngene (no training) whose every tensor is distinct random values."""
    arch = arch_of(ancestry)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(t.shape, generator=g) for k, t in init_tensors(arch, len(stages)).items()}
    return Learngene(method="sws", config=config_to_dict(SwsConfig(stages=list(stages))), tensors=tensors,
                     provenance={"ancestry": {"arch": arch.to_dict()}})


def stage_block(gene: Learngene, s: int) -> dict[str, torch.Tensor]:
    start = f"stages.{s}."
    return {k[len(start):]: v for k, v in gene.tensors.items() if k.startswith(start)}


@pytest.fixture(scope="module")
def tiny_ancestry():
    torch.manual_seed(0)
    return randomize_(tiny_vit())  # depth 4, width 48, 3 heads of 16, MLP 192, 10 classes, 4x4 patches


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g))


@pytest.fixture(scope="module")
def extracted(tiny_ancestry, data):
    """One real extraction: stages 1, 2, 1; 1 epoch, 6 steps of 16; 1/4 of the data held out."""
    options = dict(stages=[1, 2, 1], epochs=1, batch_size=16, warmup_epochs=0.0, lr=2e-3, holdout=0.25, seed=0)
    return learngene.extract("sws", tiny_ancestry, data=data, **options), options


# -- how many layers each stage gets ------------------------------------------------------
def test_stage_sizes_reproduce_the_reference_configurations():
    assert stage_sizes(REFERENCE, 16) == REFERENCE                # the auxiliary model itself
    assert stage_sizes(REFERENCE, 12) == [3, 3, 2, 2, 2]          # the reference's Des-S/B map ...
    assert layer_stages(stage_sizes(REFERENCE, 12)) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]  # ... '0,0,0,1,1,1,2,2,3,3,4,4'
    assert stage_sizes(REFERENCE, 6) == [2, 1, 1, 1, 1]
    assert stage_sizes(REFERENCE, 17) == [4, 3, 4, 3, 3]          # growing: the smallest, earliest stage
    assert stage_sizes(REFERENCE, 3) == [1, 0, 1, 0, 1]           # fewer layers than stages: spaced stages
    assert stage_sizes([1, 5], 4) == [1, 3]


@pytest.mark.parametrize("stages", [REFERENCE, [1], [2, 7], [4, 1, 1, 2]])
def test_stage_sizes_add_up_and_keep_every_stage(stages):
    for depth in range(1, 30):
        sizes = stage_sizes(stages, depth)
        assert sum(sizes) == depth and len(sizes) == len(stages)
        if depth >= len(stages):
            assert min(sizes) >= 1, (depth, sizes)
        else:
            assert sizes.count(1) == depth and sizes[0] == 1
        assert layer_stages(sizes) == sorted(layer_stages(sizes))  # stages in order, first stage first
    with pytest.raises(ConfigError, match="positive integer"):
        stage_sizes(stages, 0)


# -- the auxiliary model ------------------------------------------------------------------
def test_auxiliary_model_is_the_descendant_at_its_depth(tiny_ancestry):
    """The learned function is what the descendant computes: same logits at the auxiliary depth."""
    gene = random_gene(tiny_ancestry)
    aux = SwsAuxiliary(sws_arch(gene.ancestry_arch, 16), REFERENCE, gene.tensors).eval()
    child = gene.expand(depth=16, seed=0).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(aux(x), child(x), rtol=1e-5, atol=1e-5)
    assert set(aux.state_dict()) == set(gene.tensors)  # the auxiliary model's weights are the learngene
    assert list(aux.template.parameters()) == []


def test_layers_of_a_stage_share_one_block(tiny_ancestry):
    """16 layers, 5 blocks of parameters; a stage's gradient is the sum over its layers."""
    arch = arch_of(tiny_ancestry)
    torch.manual_seed(0)
    aux = SwsAuxiliary(sws_arch(arch, 16), REFERENCE, init_tensors(arch, 5))
    stack = aux.stack()
    for layer, s in enumerate(layer_stages(REFERENCE)):
        assert stack.blocks[layer]["fc1.weight"] is aux.get_parameter(f"stages.{s}.fc1.weight")
    block = sum(t.numel() for t in to_stack(tiny_ancestry).blocks[0].values())
    assert sum(p.numel() for n, p in aux.named_parameters() if n.startswith("stages.")) == 5 * block
    aux(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    for name, p in aux.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    skip = no_decay_names(aux)
    assert {"stem.pos_embed", "stages.2.norm1.weight", "stages.0.q.bias", "head.norm.weight"} <= skip
    assert not {"stages.4.q.weight", "stages.1.fc2.weight", "stem.patch.weight", "head.head.weight"} & skip


def test_initialisation_is_timm_per_stage(tiny_ancestry):
    torch.manual_seed(0)
    t = init_tensors(arch_of(tiny_ancestry), 3)
    assert torch.equal(t["stages.1.norm1.weight"], torch.ones(48)) and not t["stages.2.q.bias"].any()
    for s in range(3):
        assert 0.015 < t[f"stages.{s}.fc1.weight"].std() < 0.025
    assert not torch.equal(t["stages.0.fc1.weight"], t["stages.1.fc1.weight"])  # one draw per stage
    assert t["stem.pos_embed"].shape == (1, 16, 48)  # patch tokens only: no class token


@pytest.mark.parametrize("overrides", [dict(init_values=1e-5), dict(qkv_bias=False)], ids=["layer-scale", "no-qkv-bias"])
def test_other_block_layouts(overrides):
    ancestry = randomize_(tiny_vit(depth=2, **overrides))
    gene = random_gene(ancestry, stages=[2, 1])
    aux = SwsAuxiliary(sws_arch(gene.ancestry_arch, 3), [2, 1], gene.tensors).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(aux(x), gene.expand(depth=3, seed=0).eval()(x), rtol=1e-5, atol=1e-5)
    assert ("stages.0.ls1.gamma" in gene.tensors) == ("init_values" in overrides)
    assert ("stages.0.q.bias" in gene.tensors) == ("qkv_bias" not in overrides)


# -- a real extraction --------------------------------------------------------------------
def test_stored_parameters_are_one_block_per_stage_plus_stem_norm_head(extracted, tiny_ancestry):
    gene, _ = extracted
    parent = to_stack(tiny_ancestry)
    D = 48
    block = sum(t.numel() for t in parent.blocks[0].values())
    ancestry_stem = parent.num_parameters("stem") - parent.stem["cls_token"].numel() - D  # minus the class slot
    assert gene.num_parameters == 3 * block + ancestry_stem + parent.num_parameters("head")
    assert sorted({k.split(".")[1] for k in gene.tensors if k.startswith("stages.")}) == ["0", "1", "2"]


def test_extraction_trains_and_round_trips(extracted, tiny_ancestry, data, tmp_path):
    gene, options = extracted
    distillation = gene.provenance["sws"]["distillation"]
    assert gene.provenance["cost"]["samples_seen"] == 96 and gene.provenance["cost"]["flops"] > 0
    assert distillation["eval_acc"] is not None and distillation["steps"] == 6
    assert gene.provenance["sws"]["stages"] == [1, 2, 1] and gene.config["stages"] == [1, 2, 1]
    # the distillation loss (KD against the ancestry) went down from the initial learngene's
    arch = arch_of(tiny_ancestry)
    torch.manual_seed(options["seed"])
    before = SwsAuxiliary(sws_arch(arch, 4), [1, 2, 1], init_tensors(arch, 3)).eval()
    after = SwsAuxiliary(sws_arch(arch, 4), [1, 2, 1], gene.tensors).eval()
    x = data.tensors[0]
    with torch.no_grad():
        t = F.log_softmax(tiny_ancestry.eval()(x), -1)
        kd = lambda m: F.kl_div(F.log_softmax(m(x), -1), t, reduction="batchmean", log_target=True)  # noqa: E731
        assert kd(after) < kd(before)
    gene.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.config == gene.config and loaded.tensors.keys() == gene.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], gene.tensors[k]) for k in gene.tensors)
    for depth in (1, 2, 4, 7):
        a, b = gene.expand(depth=depth, seed=0), loaded.expand(depth=depth, seed=0)
        assert type(b) is timm.models.vision_transformer.VisionTransformer and len(b.blocks) == depth
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
        assert b(x[:2]).shape == (2, 10)


def test_inherit_stem_starts_from_the_ancestry(tiny_ancestry, data):
    small = torch.utils.data.TensorDataset(data.tensors[0][:16], data.tensors[1][:16])
    gene = learngene.extract("sws", tiny_ancestry, data=small, stages=[1, 1], epochs=1, batch_size=16, lr=1e-5,
                             warmup_epochs=0.0, inherit_stem=True)
    parent = to_stack(tiny_ancestry).stem
    torch.testing.assert_close(gene.tensors["stem.patch.weight"], parent["patch.weight"], atol=1e-3, rtol=0)
    torch.testing.assert_close(gene.tensors["stem.pos_embed"], parent["pos_embed"][:, 1:], atol=1e-3, rtol=0)


# -- descendants --------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 3, 5, 12, 20])
def test_each_layer_is_a_copy_of_its_stage_block(tiny_ancestry, depth):
    gene = random_gene(tiny_ancestry)
    child = gene.expand(depth=depth, seed=0)
    kid = to_stack(child)
    assert len(kid.blocks) == depth
    for layer, s in enumerate(layer_stages(stage_sizes(REFERENCE, depth))):
        for key, tensor in stage_block(gene, s).items():
            assert torch.equal(kid.blocks[layer][key], tensor), (layer, s, key)
    # copies, not ties: the layers of a stage train apart, and the learngene is left alone
    ptrs = [p.untyped_storage().data_ptr() for p in child.parameters()]
    assert len(set(ptrs)) == len(ptrs)
    assert not {t.untyped_storage().data_ptr() for t in gene.tensors.values()} & set(ptrs)
    assert child(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_descendant_is_avg_pooled_and_takes_head_only_for_same_labels(tiny_ancestry):
    gene = random_gene(tiny_ancestry)
    child = gene.expand(depth=3, global_pool="token", seed=0)  # SWS forces avg pooling, no class token
    assert child.global_pool == "avg" and child.cls_token is None and isinstance(child.fc_norm, torch.nn.LayerNorm)
    assert torch.equal(child.fc_norm.weight, gene.tensors["head.norm.weight"])
    assert torch.equal(child.pos_embed, gene.tensors["stem.pos_embed"])
    assert torch.equal(child.head.weight, gene.tensors["head.head.weight"])
    other = gene.expand(depth=2, num_classes=7, seed=0)
    assert other.head.weight.shape == (7, 48) and not other.head.bias.any()  # timm's fresh head
    big = gene.expand(depth=2, img_size=56, in_chans=3, num_classes=4, seed=0)  # stem resampled and adapted
    assert big.pos_embed.shape == (1, 64, 48) and big(torch.randn(1, 3, 56, 56)).shape == (1, 4)


def test_narrower_descendant_takes_whole_heads_of_its_stage_blocks(tiny_ancestry):
    """TLEG's width rule (``methods._narrow``): evenly spaced whole heads, then dims within heads,
    the same slices for every layer of a stage."""
    gene = random_gene(tiny_ancestry)
    res, dims, hidden = spaced(48, 24), spaced(16, 12), spaced(192, 96)
    child = gene.expand(depth=7, embed_dim=24, num_heads=2, mlp_ratio=4.0, seed=0)  # 2 heads of 12, MLP 96
    assert child(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    kid = to_stack(child)
    for layer, s in enumerate(layer_stages(stage_sizes(REFERENCE, 7))):
        block = stage_block(gene, s)
        for key in ("q.weight", "k.weight", "v.weight"):
            assert torch.equal(kid.blocks[layer][key], block[key][[0, 2]][:, dims][:, :, res]), (layer, key)
        assert torch.equal(kid.blocks[layer]["proj.weight"], block["proj.weight"][res][:, [0, 2]][:, :, dims])
        assert torch.equal(kid.blocks[layer]["fc1.weight"], block["fc1.weight"][hidden][:, res])
        assert torch.equal(kid.blocks[layer]["fc2.weight"], block["fc2.weight"][res][:, hidden])
        assert torch.equal(kid.blocks[layer]["norm1.weight"], block["norm1.weight"][res])
    assert torch.equal(kid.stem["pos_embed"], gene.tensors["stem.pos_embed"][..., res])
    assert torch.equal(child.fc_norm.weight, gene.tensors["head.norm.weight"][res])
    assert torch.equal(child.head.weight, gene.tensors["head.head.weight"][:, res])
    # independent parameters, none sharing the learngene's storage
    ptrs = [p.untyped_storage().data_ptr() for p in child.parameters()]
    assert len(set(ptrs)) == len(ptrs)
    assert not {t.untyped_storage().data_ptr() for t in gene.tensors.values()} & set(ptrs)
    assert "embed_dim <= 48, num_heads <= 3, head_dim <= 16" in gene.describe_shapes()


@pytest.mark.parametrize("shape,match", [
    (dict(embed_dim=96, num_heads=6), "can only narrow"),
    (dict(embed_dim=36, num_heads=4), "num_heads is 4 but the learngene has 3"),
    (dict(embed_dim=48, num_heads=2), "head_dim"),  # 24-dim heads from 16-dim heads
    (dict(mlp_ratio=5.0), "MLP hidden size"),
])
def test_width_can_only_narrow(tiny_ancestry, shape, match):
    with pytest.raises(ConfigError, match=match):
        random_gene(tiny_ancestry).expand(depth=2, **shape)


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("options,match", [
    (dict(stages=[]), "stages must be a non-empty list"),
    (dict(stages=[3, 0]), "stages must be a non-empty list"),
    (dict(stages=3), "stages must be a non-empty list"),
    (dict(stages=[2.5]), "stages must be a non-empty list"),
    (dict(stages=[40, 40]), "keep the total <= 64"),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(distill_alpha=1.5), "distill_alpha"),
    (dict(holdout=1.0), "holdout"),
    (dict(inherit_stem="yes"), "inherit_stem"),
    (dict(aux_depth=12), "has no option 'aux_depth'"),
])
def test_bad_options(tiny_ancestry, data, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("sws", tiny_ancestry, data=data, **options)


def test_needs_data(tiny_ancestry):
    with pytest.raises(ConfigError, match="needs data"):
        learngene.extract("sws", tiny_ancestry)


@pytest.mark.parametrize("damage,match", [
    (lambda t: t.pop("stages.4.fc1.weight"), "stages.4.fc1.weight is missing"),
    (lambda t: t.update({"stages.5.fc1.weight": torch.zeros(192, 48)}), "config lists 5 stages"),
    (lambda t: t.update({"stages.2.fc1.weight": torch.zeros(3, 3)}), "fc1"),
    (lambda t: t.update({"theta_A.fc1.weight": torch.zeros(3, 3)}), "unexpected tensors"),
])
def test_load_rejects_damaged_learngenes(tiny_ancestry, tmp_path, damage, match):
    gene = random_gene(tiny_ancestry)
    damage(gene.tensors)
    gene.save(tmp_path / "bad")
    with pytest.raises(ArtifactError, match=match):
        learngene.load(tmp_path / "bad")
