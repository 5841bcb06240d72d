"""Learngene Pool (Shi et al., AAAI 2024) and SN-Net (Pan et al., CVPR 2023): stitching, the pool's
distillation loss, stitching-layer initialisation, artifacts, bad input."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import learngene
from learngene import Learngene
from learngene.errors import ArtifactError, ConfigError
from learngene.methods import sn_net
from learngene.methods._stitching import (StitchedSupernet, StitchedViT, enumerate_stitches, initialise, load_stitched,
                                          paired_stitching, save_stitched, stitch_token_pairs)
from learngene.methods.learngene_pool import (PoolStudent, default_matches, map_stitch_weight, pinv_stitch_weight,
                                              pool_loss, recording, stitch_supernet)
from learngene.methods.learngene_pool.distill import make_extra_loss
from learngene.train import TrainConfig, fit
from learngene.train.distill import train_loss
from learngene.train.flops import forward_flops_per_sample

from conftest import randomize_, tiny_vit


@pytest.fixture(scope="module")
def tiny_ancestry():
    torch.manual_seed(0)
    return randomize_(tiny_vit())  # depth 4, width 48, 3 heads, 10 classes, 28x28x1, patch 7


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))


POOL_OPTIONS = dict(widths=[24, 48], depth=3, batch_size=16, warmup_epochs=0.0, lr=2e-3)


@pytest.fixture(scope="module")
def pool_gene(tiny_ancestry, data):
    """One real distillation: 2 students of depth 3, 1 epoch of 4 steps each."""
    return learngene.extract("learngene-pool", tiny_ancestry, data=data, epochs=1, **POOL_OPTIONS)


@pytest.fixture(scope="module")
def snnet_gene(tiny_ancestry):
    return learngene.extract("sn-net", tiny_ancestry, widths=[24, 48], depth=3, epochs=0)


# -- enumeration ----------------------------------------------------------------------------
@pytest.mark.parametrize("depth,positions,layers", [(12, 34, 11), (9, 25, 8), (6, 16, 5), (2, 4, 1), (1, 1, 1)])
def test_sliding_window_positions(depth, positions, layers):
    found = paired_stitching(depth)
    assert len(found) == positions and 1 + max(layer for _, _, layer in found) == layers
    assert len({(j, k) for j, k, _ in found}) == positions  # no duplicates
    assert all(abs(j - k) <= 1 for j, k, _ in found)      # kernel 2: within one window


def test_sliding_window_matches_the_reference_order():
    # the reference's comment for depth 6 (superselll/learngenepool, ziplab/SN-Net paired_stitching)
    expected = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 3), (4, 4),
                (4, 5), (5, 4), (5, 5)]
    assert [(j, k) for j, k, _ in paired_stitching(6)] == expected
    assert [layer for _, _, layer in paired_stitching(6)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


@pytest.mark.parametrize("anchors,depth,pairs,count", [
    (3, 12, "nearest", 71),       # SN-Net's DeiT-Ti/S/B: 71 configurations
    (3, 6, "all", 3 + 3 * 16),
    (2, 9, "all", 2 + 25),
])
def test_configuration_counts(anchors, depth, pairs, count):
    assert len(enumerate_stitches(anchors, depth, pairs=pairs)) == count


def test_default_matches_scale_the_papers():
    assert default_matches(9, 12) == [[2, 3], [5, 7], [8, 11]]  # the paper's / reference's
    assert default_matches(6, 12) == [[1, 3], [3, 7], [5, 11]]
    assert default_matches(2, 12) == [[0, 5], [1, 11]]


# -- every configuration: forward, parameter count, export ----------------------------------
@pytest.mark.parametrize("method", ["learngene-pool", "sn-net"])
def test_every_configuration_runs_and_counts_its_parameters(method, pool_gene, snnet_gene, data):
    gene = pool_gene if method == "learngene-pool" else snnet_gene
    build = stitch_supernet if method == "learngene-pool" else sn_net.stitch_supernet
    supernet = build(gene, num_classes=7, init_data=data, pairs="all", seed=0).eval()
    assert supernet.num_configs == 2 + paired_stitching(3).__len__()
    x = torch.randn(2, 1, 28, 28)
    rows = supernet.describe()
    for i in range(supernet.num_configs):
        with torch.no_grad():
            out = supernet.select(i)(x)
            standalone = supernet.export(i)
            assert out.shape == (2, 7)
            torch.testing.assert_close(standalone(x), out, rtol=1e-5, atol=1e-5)
        assert sum(p.numel() for p in standalone.parameters()) == supernet.config_params(i) == rows[i]["params"]
        assert len(standalone.front_blocks) + len(standalone.end_blocks) == rows[i]["blocks"]
    # a stitched configuration costs between its two widths; every one is counted
    assert all(forward_flops_per_sample(supernet.export(i), x[0]) > 0 for i in (0, 1, 2))


ARCH_VARIANTS = [
    dict(),                                                  # class token, token pooling (DeiT)
    dict(global_pool="avg", class_token=False),              # TLEG-style: no class token, fc_norm
    dict(no_embed_class=True),                               # DeiT-3 position embeddings
    dict(init_values=1e-5, qkv_bias=False),                  # layer-scale, no qkv bias
]


@pytest.mark.parametrize("variant", ARCH_VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v) or "deit")
def test_standalone_model_computes_what_timm_computes(variant):
    """An anchor exported alone equals the timm ViT; stitched exports equal the supernet."""
    anchors = [randomize_(tiny_vit(depth=2, embed_dim=w, num_heads=h, **variant), seed=w) for w, h in ((16, 2), (32, 2))]
    gene = sn_net.from_anchors(anchors)
    supernet = sn_net.stitch_supernet(gene, init="random").eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for a, anchor in enumerate(anchors):
            torch.testing.assert_close(supernet.export(a)(x), anchor.eval()(x), rtol=1e-4, atol=1e-4)
        for i in range(len(anchors), supernet.num_configs):
            torch.testing.assert_close(supernet.export(i)(x), supernet.select(i)(x), rtol=1e-4, atol=1e-4)


def test_standalone_model_round_trips_and_refuses_bad_files(pool_gene, tmp_path):
    supernet = stitch_supernet(pool_gene).eval()
    model = supernet.export(5)
    save_stitched(model, tmp_path / "m", stitch=supernet.configs[5].to_dict())
    loaded = load_stitched(tmp_path / "m")
    assert type(loaded) is StitchedViT and not isinstance(loaded, timm.models.vision_transformer.VisionTransformer)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    (tmp_path / "m" / "stitched_config.json").write_text('{"format": "stitched-vit", "front_depth": -1}')
    with pytest.raises(ArtifactError, match="invalid stitched model config"):
        load_stitched(tmp_path / "m")
    with pytest.raises(ArtifactError, match="not a stitched model"):
        load_stitched(tmp_path / "nothing")


# -- stitching-layer initialisation -----------------------------------------------------------
def _stitch_errors(supernet: StitchedSupernet, images: torch.Tensor) -> dict[tuple[int, int, int], float]:
    """Relative squared error of every stitched position's layer on ``images``."""
    errors = {}
    with torch.no_grad():
        feats = [supernet.token_features(a, images) for a in range(len(supernet.anchors))]
        for c in supernet.configs:
            if c.stitched:
                x, y = feats[c.front][c.front_last + 1], feats[c.end][c.end_first]
                err = (supernet.stitch_layer(c)(x) - y).pow(2).sum() / y.pow(2).sum()
                errors[(c.front_last, c.end_first, c.layer)] = float(err)
    return errors


def test_least_squares_init_beats_random(snnet_gene, data):
    images = data.tensors[0]
    fit_on, held_out = images[:32], images[32:]
    random_init = sn_net.stitch_supernet(snnet_gene, init="random", seed=0)
    least_squares = sn_net.stitch_supernet(snnet_gene, init="least-squares", init_data=fit_on, seed=0)
    assert least_squares.init_summary["samples"] == 32
    random_err, lsq_err = _stitch_errors(random_init, held_out), _stitch_errors(least_squares, held_out)
    assert all(lsq_err[p] < random_err[p] for p in random_err), (lsq_err, random_err)
    assert max(lsq_err.values()) < 0.9  # it explains most of the target tokens, also on images it did not see


def test_map_init_is_the_transpose_of_the_mean_map(tiny_ancestry):
    gene = learngene.extract("learngene-pool", tiny_ancestry, widths=[12, 24, 48], depth=2, epochs=0)
    m = [gene.tensors[f"maps.{s}.block"] for s in range(3)]
    assert [tuple(t.shape) for t in m] == [(12, 48), (24, 48), (48, 48)]
    supernet = stitch_supernet(gene, init="maps", pairs="all")
    for (f, e), expected in {(0, 2): m[0].T, (1, 2): m[1].T, (0, 1): m[1] @ m[0].T}.items():
        for layer in supernet.stitch_layers[f"{f}-{e}"]:  # every layer of the pair starts the same
            torch.testing.assert_close(layer.weight.detach(), expected)
            assert torch.equal(layer.bias.detach(), torch.zeros(layer.bias.shape))



def test_map_gain_init_keeps_the_maps_direction_and_fits_its_scale(pool_gene, data):
    images = data.tensors[0][:32]
    maps = stitch_supernet(pool_gene, init="maps", seed=0)
    gained = stitch_supernet(pool_gene, init="maps-gain", init_data=images, init_samples=32, seed=0)
    summary = gained.init_summary
    assert summary["init"] == "maps-gain" and summary["samples"] == 32
    pairs = stitch_token_pairs(gained, images)  # every image is drawn when init_samples = N: the same tokens
    assert set(summary["gains"]) == {f"{f}-{e}/{layer}" for f, e, layer in pairs}
    moved = 0
    for (f, e, layer), tokens in pairs.items():
        w = maps.stitch_layers[f"{f}-{e}"][layer].weight.detach()
        layer_module = gained.stitch_layers[f"{f}-{e}"][layer]
        g = summary["gains"][f"{f}-{e}/{layer}"]
        torch.testing.assert_close(layer_module.weight.detach(), g * w)  # the direction is the map's
        assert torch.equal(layer_module.bias.detach(), torch.zeros(layer_module.bias.shape))

        def residual(gain):  # over every position sharing the layer, as the gain is fitted
            err = sum(float((gain * x.double() @ w.double().T - y.double()).pow(2).sum()) for x, y in tokens)
            return err / sum(float(y.double().pow(2).sum()) for _, y in tokens)

        assert residual(g) <= residual(1.0) and residual(g) <= residual(1.05 * g) and residual(g) <= residual(0.95 * g)
        assert summary["relative_residuals"][f"{f}-{e}/{layer}"] == pytest.approx(residual(g), rel=1e-6, abs=1e-9)
        assert summary["relative_residuals_gain_1"][f"{f}-{e}/{layer}"] == pytest.approx(residual(1.0), rel=1e-6)
        moved += abs(g - 1) > 0.05
    assert moved > 0, summary["gains"]  # the fit did something: the maps' scale is not already right
    with pytest.raises(ConfigError, match="init='maps-gain' fits the stitching layers on images: pass init_data"):
        stitch_supernet(pool_gene, init="maps-gain")


def test_pinv_weight_inverts_the_front_map():
    """Tokens made by the maps from one teacher token t: the pinv stitch takes the front's to the end's."""
    g = torch.Generator().manual_seed(0)
    teacher_width = 16
    t = torch.randn(50, teacher_width, generator=g, dtype=torch.float64)
    square = torch.randn(16, 16, generator=g, dtype=torch.float64) + 4 * torch.eye(16)  # invertible M_front
    wide_end = torch.randn(32, 16, generator=g, dtype=torch.float64)
    w = pinv_stitch_weight(square.float(), wide_end.float(), teacher_width)
    assert w.shape == (32, 16) and w.dtype == torch.float32
    torch.testing.assert_close(t @ square.T @ w.double().T, t @ wide_end.T, rtol=1e-4, atol=1e-4)
    # a narrower front (M_front [8, 16] of full row rank) is inverted on its row space; end at the teacher's
    # width: the stitch alone recovers t, as the paper's transpose would only for orthonormal rows
    narrow = torch.randn(8, 16, generator=g, dtype=torch.float64) * 0.05  # a small map, as distillation leaves them
    end_at_teacher = torch.randn(16, 16, generator=g, dtype=torch.float64)
    in_row_space = torch.randn(50, 8, generator=g, dtype=torch.float64) @ narrow
    w = pinv_stitch_weight(narrow.float(), end_at_teacher.float(), teacher_width)
    assert w.shape == (16, 8)
    torch.testing.assert_close(in_row_space @ narrow.T @ w.double().T, in_row_space, rtol=1e-3, atol=1e-3)
    transposed = map_stitch_weight(narrow, end_at_teacher, teacher_width)
    assert float((in_row_space @ narrow.T @ transposed.T).norm()) < 0.1 * float(in_row_space.norm())


def test_pinv_init_sets_every_layer_from_the_pseudo_inverse(tiny_ancestry):
    gene = learngene.extract("learngene-pool", tiny_ancestry, widths=[12, 24, 48], depth=2, epochs=0)
    m = [gene.tensors[f"maps.{s}.block"].double() for s in range(3)]
    supernet = stitch_supernet(gene, init="pinv", pairs="all")
    assert supernet.init_summary["init"] == "pinv"
    for (f, e), expected in {(0, 2): torch.linalg.pinv(m[0]), (1, 2): torch.linalg.pinv(m[1]),
                             (0, 1): m[1] @ torch.linalg.pinv(m[0])}.items():
        for layer in supernet.stitch_layers[f"{f}-{e}"]:
            torch.testing.assert_close(layer.weight.detach().double(), expected, rtol=1e-4, atol=1e-5)
            assert torch.equal(layer.bias.detach(), torch.zeros(layer.bias.shape))
    with pytest.raises(ConfigError, match="pair_weights has no weight for the stitched pairs"):
        initialise(supernet, "pinv", pair_weights={(0, 1): torch.zeros(24, 12)})

# -- the distillation loss --------------------------------------------------------------------
def test_feature_losses_by_hand():
    """One match, maps fixed by hand: block map 2x + 1, attention map 0."""
    student = PoolStudent(tiny_vit(depth=1, embed_dim=24, num_heads=2), teacher_width=24, matches=[[0, 0]])
    with torch.no_grad():
        student.block_maps[0].weight.copy_(2 * torch.eye(24))
        student.block_maps[0].bias.fill_(1.0)
        student.attn_maps[0].weight.zero_()
        student.attn_maps[0].bias.zero_()
    s_feats = {("block", 0): torch.ones(2, 17, 24), ("attn", 0): torch.full((2, 17, 24), 3.0)}
    t_feats = {("block", 0): torch.full((2, 17, 24), 0.5), ("attn", 0): torch.randn(2, 17, 24)}
    rep, att = student.feature_losses(s_feats, t_feats)
    assert float(rep.detach()) == pytest.approx(1.0)  # mean((1 - (2 * 0.5 + 1))^2)
    assert float(att.detach()) == pytest.approx(9.0)  # mean((3 - 0)^2)


def test_total_loss_is_the_papers_and_fit_computes_it():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    labels = torch.tensor([0, 3, 1, 4])
    rep, att, a = torch.tensor(0.7), torch.tensor(0.2), 0.1
    by_hand_kl = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum() / s.numel()
    by_hand = a * F.cross_entropy(s, labels) + (1 - a) * (by_hand_kl + rep + att)
    torch.testing.assert_close(pool_loss(s, t, labels, rep, att, alpha=a, tau=1.0), by_hand)
    # fit: (1 - alpha) CE + alpha KD with alpha = 1 - a, plus extra_loss = (1 - a)(rep + att)
    via_fit = train_loss(s, labels, label_smoothing=0.0, distill="soft", teacher_logits=t, alpha=1 - a, tau=1.0)
    torch.testing.assert_close(via_fit + (1 - a) * (rep + att), by_hand)


def test_hooks_record_the_matched_features_and_gradients_reach_the_maps(tiny_ancestry):
    teacher = tiny_ancestry.eval()
    student = PoolStudent(tiny_vit(depth=3, embed_dim=24, num_heads=2), teacher_width=48, matches=[[0, 1], [2, 3]])
    x = torch.randn(2, 1, 28, 28)
    with recording(student.student, [0, 2]) as s_feats, recording(teacher, [1, 3]) as t_feats:
        logits = student(x)
        with torch.inference_mode():
            teacher(x)
        extra = make_extra_loss(student, s_feats, t_feats, alpha=0.1)(student, x, None, logits)

    def by_hand(model, index):  # the input of block `index`, its attention output and its output
        h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        for block in model.blocks[:index]:
            h = block(h)
        return model.blocks[index].attn(model.blocks[index].norm1(h)), model.blocks[index](h)

    expected = 0.0
    for m, (si, ti) in enumerate(student.matches):
        s_attn, s_out = by_hand(student.student, si)
        with torch.no_grad():
            t_attn, t_out = by_hand(teacher, ti)
        expected = expected + F.mse_loss(s_out, student.block_maps[m](t_out))
        expected = expected + F.mse_loss(s_attn, student.attn_maps[m](t_attn))
    torch.testing.assert_close(extra, 0.9 * expected)
    extra.backward()  # teacher features came from inference mode: they must still work in autograd
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.block_maps.parameters())
    assert student.student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_extraction_distils_through_fit(pool_gene, tiny_ancestry):
    assert pool_gene.config["matches"] == [[0, 0], [1, 1], [2, 3]] and pool_gene.config["num_heads"] == [2, 3]
    cost = pool_gene.provenance["cost"]
    assert cost["samples_seen"] == 2 * 64 and cost["flops"] > 0  # two students, 4 steps of 16 each
    runs = pool_gene.provenance["learngene_pool"]["distillation"]
    assert [r["steps"] for r in runs] == [4, 4] and all(r["teacher_flops_per_sample"] > 0 for r in runs)
    untrained = learngene.extract("learngene-pool", tiny_ancestry, epochs=0, **POOL_OPTIONS)
    assert untrained.tensors.keys() == pool_gene.tensors.keys()
    for key in ("students.0.blocks.2.fc1.weight", "students.1.stem.patch.weight", "maps.0.block", "maps.1.block"):
        assert not torch.equal(untrained.tensors[key], pool_gene.tensors[key]), key  # training moved them
    stored = sum(t.numel() for t in pool_gene.tensors.values())
    assert pool_gene.num_parameters == stored


# -- training the supernet -------------------------------------------------------------------
def test_training_samples_one_configuration_per_step_deterministically(snnet_gene, data):
    def draws(seed):
        supernet = sn_net.stitch_supernet(snnet_gene, init="random", seed=seed).train()
        return [supernet.sample_config() for _ in range(40)]

    assert draws(3) == draws(3) and draws(3) != draws(4)
    assert len(set(draws(3))) > 5
    supernet = sn_net.stitch_supernet(snnet_gene, num_classes=10, init_data=data, seed=0)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    result = fit(supernet, data, data, TrainConfig(epochs=1, batch_size=16, warmup_epochs=0.0, checkpoint=False),
                 progress=False)
    assert int(supernet.draws) == result.steps == 4  # one configuration per step (eval forwards draw none)
    after = supernet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("stitch_layers.") for k in changed) and any(k.startswith("anchors.") for k in changed)


# -- artifacts ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["learngene-pool", "sn-net"])
def test_artifact_round_trips(method, pool_gene, snnet_gene, tmp_path):
    gene = pool_gene if method == "learngene-pool" else snnet_gene
    build = stitch_supernet if method == "learngene-pool" else sn_net.stitch_supernet
    gene.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.method == method and loaded.config == gene.config and loaded.num_parameters == gene.num_parameters
    assert all(torch.equal(loaded.tensors[k], gene.tensors[k]) for k in gene.tensors)
    x = torch.randn(2, 1, 28, 28)
    a, b = build(gene, init="random").eval().select(4), build(loaded, init="random").eval().select(4)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert "stitched descendants only" in loaded.describe_shapes()
    # a stored tensor missing (with a consistent manifest) is refused by the method's own check
    broken = Learngene(method=gene.method, config=gene.config, provenance=gene.provenance,
                       tensors={k: v for k, v in gene.tensors.items() if not k.endswith("blocks.1.fc1.weight")})
    broken.save(tmp_path / "broken")
    with pytest.raises(ArtifactError, match="config and tensors disagree"):
        learngene.load(tmp_path / "broken")


# -- bad input ------------------------------------------------------------------------------
BAD_OPTIONS = [
    (dict(widths=[48, 24]), "strictly increasing"),
    (dict(widths=[24]), "list of 2 to"),
    (dict(widths=[24, 48], num_heads=[5, 3]), "not divisible by 5 heads"),
    (dict(depth=0), "depth must be a positive integer"),
    (dict(matches=[[5, 0]], depth=3), r"match \[5, 0\] is out of range"),
    (dict(matches=[[1]]), "pairs of integers"),
    (dict(loss_alpha=1.5), r"loss_alpha must be a number in \[0, 1\]"),
    (dict(epochs=-1), "epochs must be an integer >= 0"),
    (dict(epochs=1), "needs data"),
    (dict(nonsense=1), "has no option 'nonsense'"),
]


@pytest.mark.parametrize("options,match", BAD_OPTIONS)
def test_bad_extraction_options(tiny_ancestry, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("learngene-pool", tiny_ancestry, **{"epochs": 0, **options})


def test_bad_descendant_requests(pool_gene, snnet_gene):
    cases = [
        (lambda: pool_gene.expand(depth=3), "stitch_supernet"),
        (lambda: snnet_gene.expand(depth=3), "stitch_supernet"),
        (lambda: sn_net.stitch_supernet(snnet_gene, init="maps"), "only learngene-pool stores"),
        (lambda: sn_net.stitch_supernet(snnet_gene, init="pinv"), "only learngene-pool stores"),
        (lambda: sn_net.stitch_supernet(snnet_gene, init="maps-gain"), "only learngene-pool stores"),
        (lambda: sn_net.stitch_supernet(snnet_gene, init="least-squares"), "pass init_data"),
        (lambda: stitch_supernet(snnet_gene), "takes a learngene-pool learngene"),
        (lambda: stitch_supernet(pool_gene, init="magic"), "init must be one of"),
        (lambda: stitch_supernet(pool_gene, pairs="every"), "pairs must be one of"),
        (lambda: stitch_supernet(pool_gene, num_classes=0), "num_classes must be a positive integer"),
        (lambda: stitch_supernet(pool_gene).select(99), r"configuration id must be an integer in \[0, 8\]"),
        (lambda: StitchedSupernet([tiny_vit(depth=2, embed_dim=24, num_heads=2), tiny_vit(depth=3)]), "one depth"),
        (lambda: StitchedSupernet([tiny_vit(depth=2), tiny_vit(depth=2, embed_dim=24, num_heads=2)]), "increasing width"),
        (lambda: StitchedSupernet([tiny_vit(depth=2)]), "at least 2 anchors"),
        (lambda: StitchedViT(learngene.arch_of(tiny_vit()), 0), "front_depth must be an integer"),
    ]
    for call, match in cases:
        with pytest.raises(ConfigError, match=match):
            call()
    assert math.isfinite(float(stitch_supernet(pool_gene).config_params(0)))
