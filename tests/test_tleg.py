"""TLEG (Xia et al., AAAI 2024): linear expansion, auxiliary model, extraction, descendants."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import learngene
import learngene.methods.tleg  # noqa: F401  (registers the method)
from learngene import Learngene
from learngene.errors import ArtifactError, ConfigError
from learngene.methods.tleg import TlegAuxiliary, TlegConfig, linear_expand
from learngene.methods.tleg.method import init_tensors, tleg_arch
from learngene.methods._narrow import spaced
from learngene.registry import config_to_dict
from learngene.stack import to_stack
from learngene.arch import arch_of
from learngene.train.optim import no_decay_names

from conftest import randomize_, tiny_vit


def random_gene(ancestry, aux_depth: int = 12, seed: int = 0) -> Learngene:
    """A TLEG learngene (no training) whose every tensor is distinct random values."""
    arch = arch_of(ancestry)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(t.shape, generator=g) for k, t in init_tensors(arch).items()}
    return Learngene(method="tleg", config=config_to_dict(TlegConfig(aux_depth=aux_depth)), tensors=tensors,
                     provenance={"ancestry": {"arch": arch.to_dict()}})


def theta(gene: Learngene, which: str) -> dict[str, torch.Tensor]:
    start = f"theta_{which}."
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
    """One real extraction: 1 epoch, 6 steps of 16, depth-4 auxiliary model, 1/4 of the data held out."""
    options = dict(aux_depth=4, epochs=1, batch_size=16, warmup_epochs=0.0, lr=2e-3, holdout=0.25, seed=0)
    return learngene.extract("tleg", tiny_ancestry, data=data, **options), options


# -- the expansion rule -------------------------------------------------------------------
def test_linear_expansion_by_hand(tiny_ancestry):
    gene = random_gene(tiny_ancestry)
    a, b = theta(gene, "A"), theta(gene, "B")
    child = to_stack(gene.expand(depth=4, seed=0))
    for key in a:
        assert torch.equal(child.blocks[0][key], a[key]), key                # l = 0: exactly theta_A
        assert torch.equal(child.blocks[2][key], a[key] + 0.5 * b[key]), key  # l = 2 of 4: A + 0.5 B
        torch.testing.assert_close(child.blocks[1][key], a[key] + 0.25 * b[key])
        torch.testing.assert_close(child.blocks[3][key], a[key] + 0.75 * b[key])  # not A + B: l/L, l < L
    assert len(linear_expand(a, b, 1)) == 1 and torch.equal(linear_expand(a, b, 1)[0]["fc1.weight"], a["fc1.weight"])
    with pytest.raises(ConfigError, match="positive integer"):
        linear_expand(a, b, 0)


def test_auxiliary_model_is_the_descendant_at_aux_depth(tiny_ancestry):
    """Same weights: the auxiliary model and the depth-12 descendant compute the same function."""
    gene = random_gene(tiny_ancestry, aux_depth=12)
    aux = TlegAuxiliary(tleg_arch(gene.ancestry_arch, 12), gene.tensors).eval()
    child = gene.expand(depth=12, seed=0).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(aux(x), child(x), rtol=1e-5, atol=1e-5)
    assert set(aux.state_dict()) == set(gene.tensors)  # the auxiliary model's weights are the learngene


@pytest.mark.parametrize("overrides", [dict(init_values=1e-5), dict(qkv_bias=False)], ids=["layer-scale", "no-qkv-bias"])
def test_other_block_layouts(overrides):
    ancestry = randomize_(tiny_vit(depth=2, **overrides))
    gene = random_gene(ancestry, aux_depth=3)
    aux = TlegAuxiliary(tleg_arch(gene.ancestry_arch, 3), gene.tensors).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(aux(x), gene.expand(depth=3, seed=0).eval()(x), rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    initial = init_tensors(arch_of(ancestry))
    if "init_values" in overrides:  # layer-scale (not in the reference): theta_A = init_values, theta_B = 0
        assert torch.equal(initial["theta_A.ls1.gamma"], torch.full((48,), 1e-5)) and not initial["theta_B.ls2.gamma"].any()
    else:
        assert "theta_A.q.bias" not in initial


def test_gradients_reach_theta_b_and_weight_decay_rule(tiny_ancestry):
    arch = arch_of(tiny_ancestry)
    torch.manual_seed(0)
    aux = TlegAuxiliary(tleg_arch(arch, 4), init_tensors(arch))
    aux(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    for name, p in aux.named_parameters():
        if name.startswith("theta_B."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    skip = no_decay_names(aux)
    assert {"stem.pos_embed", "theta_B.norm1.weight", "theta_A.q.bias", "head.norm.weight"} <= skip
    assert not {"theta_A.q.weight", "theta_B.fc1.weight", "stem.patch.weight", "head.head.weight"} & skip
    assert list(aux.template.parameters()) == []  # the timm template holds no weights of its own


def test_reference_initialisation(tiny_ancestry):
    torch.manual_seed(0)
    t = init_tensors(arch_of(tiny_ancestry))
    assert torch.equal(t["theta_A.norm1.weight"], torch.ones(48)) and not t["theta_B.norm1.weight"].any()
    assert not t["theta_A.norm2.bias"].any() and not t["theta_B.fc1.bias"].any() and not t["theta_A.q.bias"].any()
    for key in ("q.weight", "proj.weight", "fc2.weight"):
        for which in "AB":
            assert 0.015 < t[f"theta_{which}.{key}"].std() < 0.025
    assert t["stem.pos_embed"].shape == (1, 16, 48)  # patch tokens only: no class token


# -- a real extraction --------------------------------------------------------------------
def test_stored_parameters_are_two_blocks_plus_stem_norm_head(extracted, tiny_ancestry):
    """Stored = theta_A + theta_B (2 x one block) + stem (patch weight/bias + 16 patch positions) + norm + head."""
    gene, _ = extracted
    D, F_, C, p, T, K = 48, 192, 1, 7, 16, 10
    block = 2 * D + 3 * (D * D + D) + (D * D + D) + 2 * D + (F_ * D + F_) + (D * F_ + D)
    stem = D * C * p * p + D + T * D  # no class token, no class position
    assert gene.num_parameters == 2 * block + stem + 2 * D + (K * D + K) == 60298
    parent = to_stack(tiny_ancestry)
    ancestry_stem = parent.num_parameters("stem") - parent.stem["cls_token"].numel() - D  # minus the class slot
    assert gene.num_parameters == 2 * sum(t.numel() for t in parent.blocks[0].values()) + ancestry_stem \
        + parent.num_parameters("head")


def test_extraction_trains_and_round_trips(extracted, tiny_ancestry, data, tmp_path):
    gene, options = extracted
    distillation = gene.provenance["tleg"]["distillation"]
    assert gene.provenance["cost"]["samples_seen"] == 96 and gene.provenance["cost"]["flops"] > 0
    assert distillation["eval_acc"] is not None and distillation["steps"] == 6
    # the distillation loss (KD against the ancestry) went down from the initial learngene's
    arch = arch_of(tiny_ancestry)
    torch.manual_seed(options["seed"])
    before = TlegAuxiliary(tleg_arch(arch, 4), init_tensors(arch)).eval()
    after = TlegAuxiliary(tleg_arch(arch, 4), gene.tensors).eval()
    x = data.tensors[0]
    with torch.no_grad():
        t = F.log_softmax(tiny_ancestry.eval()(x), -1)
        kd = lambda m: F.kl_div(F.log_softmax(m(x), -1), t, reduction="batchmean", log_target=True)  # noqa: E731
        assert kd(after) < kd(before)
    gene.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.config == gene.config and loaded.tensors.keys() == gene.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], gene.tensors[k]) for k in gene.tensors)
    for depth in range(1, 6):
        a, b = gene.expand(depth=depth, seed=0), loaded.expand(depth=depth, seed=0)
        assert type(b) is timm.models.vision_transformer.VisionTransformer and len(b.blocks) == depth
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
        assert b(x[:2]).shape == (2, 10)


def test_extract_does_not_touch_the_ancestry(extracted, tiny_ancestry):
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(tiny_ancestry.state_dict().values(),
                                                 randomize_(tiny_vit()).state_dict().values()))


def test_inherit_stem_starts_from_the_ancestry(tiny_ancestry, data):
    small = torch.utils.data.TensorDataset(data.tensors[0][:16], data.tensors[1][:16])
    gene = learngene.extract("tleg", tiny_ancestry, data=small, aux_depth=2, epochs=1, batch_size=16, lr=1e-5,
                             warmup_epochs=0.0, inherit_stem=True)
    parent = to_stack(tiny_ancestry).stem
    torch.testing.assert_close(gene.tensors["stem.patch.weight"], parent["patch.weight"], atol=1e-3, rtol=0)
    torch.testing.assert_close(gene.tensors["stem.pos_embed"], parent["pos_embed"][:, 1:], atol=1e-3, rtol=0)


# -- descendants --------------------------------------------------------------------------
def test_descendant_is_avg_pooled_without_class_token(tiny_ancestry):
    gene = random_gene(tiny_ancestry)
    child = gene.expand(depth=3, global_pool="token", seed=0)  # TLEG forces avg pooling, no class token
    assert child.global_pool == "avg" and child.cls_token is None and isinstance(child.fc_norm, torch.nn.LayerNorm)
    twin = timm.models.vision_transformer.VisionTransformer(**learngene.arch_of(child).to_dict())
    twin.load_state_dict(child.state_dict())
    assert torch.equal(child.fc_norm.weight, gene.tensors["head.norm.weight"])
    assert torch.equal(child.pos_embed, gene.tensors["stem.pos_embed"])


def test_head_copied_only_when_labels_match(tiny_ancestry):
    gene = random_gene(tiny_ancestry)
    same = gene.expand(depth=2, seed=0)
    assert torch.equal(same.head.weight, gene.tensors["head.head.weight"])
    assert torch.equal(same.head.bias, gene.tensors["head.head.bias"])
    other = gene.expand(depth=2, num_classes=7, seed=0)
    assert other.head.weight.shape == (7, 48) and not other.head.bias.any()  # timm's fresh head
    assert torch.equal(other.fc_norm.weight, gene.tensors["head.norm.weight"])  # the final norm always comes


def test_narrower_descendant_takes_whole_heads(tiny_ancestry):
    gene = random_gene(tiny_ancestry)
    wide = to_stack(gene.expand(depth=3, seed=0))  # the learngene's own width: 3 heads of 16
    res, dims = spaced(48, 24), spaced(16, 12)
    child = gene.expand(depth=3, embed_dim=24, num_heads=2, seed=0)  # 2 heads of 12
    assert child(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    narrow = to_stack(child)
    for l in range(3):
        sources = []
        for h in range(2):
            matches = [j for j in range(3)
                       if torch.equal(narrow.blocks[l]["q.weight"][h], wide.blocks[l]["q.weight"][j][dims][:, res])]
            assert len(matches) == 1, (l, h, matches)  # one learngene head, sliced, never a mixture
            j = matches[0]
            for key in ("k.weight", "v.weight"):
                assert torch.equal(narrow.blocks[l][key][h], wide.blocks[l][key][j][dims][:, res])
            assert torch.equal(narrow.blocks[l]["proj.weight"][:, h], wide.blocks[l]["proj.weight"][res][:, j][:, dims])
            sources.append(j)
        assert sources == [0, 2]  # evenly spaced heads (3 -> 2: both ends)
    assert torch.equal(narrow.stem["pos_embed"], wide.stem["pos_embed"][..., res])
    with pytest.raises(ConfigError, match="can only narrow"):
        gene.expand(depth=2, embed_dim=96, num_heads=3)
    with pytest.raises(ConfigError, match="head_dim"):
        gene.expand(depth=2, embed_dim=48, num_heads=2)  # 24-dim heads from 16-dim heads


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("options,match", [
    (dict(aux_depth=0), "aux_depth must be an integer"),
    (dict(distill_alpha=1.5), "distill_alpha"),
    (dict(holdout=1.0), "holdout"),
    (dict(epochs=1, warmup_epochs=2), "warmup_epochs"),
    (dict(stages=3), "has no option 'stages'"),
])
def test_bad_options(tiny_ancestry, data, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("tleg", tiny_ancestry, data=data, **options)


def test_needs_data(tiny_ancestry):
    with pytest.raises(ConfigError, match="needs data"):
        learngene.extract("tleg", tiny_ancestry)


def test_load_rejects_mismatched_slopes(tiny_ancestry, tmp_path):
    gene = random_gene(tiny_ancestry)
    gene.tensors["theta_B.fc1.weight"] = torch.zeros(3, 3)
    gene.save(tmp_path / "bad")
    with pytest.raises(ArtifactError, match="theta_B.fc1.weight"):
        learngene.load(tmp_path / "bad")
