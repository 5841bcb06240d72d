"""WAVE: Kronecker-sum weights, the auxiliary model is the depth-L descendant, sizes, scalers, errors."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

import learngene
from learngene.errors import ArtifactError, ConfigError
from learngene.methods.wave import WaveModel, add_sizes, compose, nearest_kronecker_sum
from learngene.methods.wave.method import GROUPS, aux_arch_of, size_key, sized
from learngene.stack import to_stack

from conftest import randomize_, tiny_vit

TRAIN = dict(epochs=1, batch_size=16, warmup_epochs=0.0, lr=2e-3)


def images(n: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


@functools.cache
def gene_with_sizes() -> learngene.Learngene:
    """Tiny ancestry (depth 4, width 48, 3 heads of 16); scalers trained for depth 2 / width 32."""
    return learngene.extract("wave", randomize_(tiny_vit()), data=images(), sizes=[[2, 32, 2]], scaler_samples=32,
                             **TRAIN)


def matrices(model) -> list[dict[str, torch.Tensor]]:
    """Each block's Linear weights [out, in] of a timm ViT, by kind."""
    out = []
    for block in to_stack(model).blocks:
        out.append({"q": block["q.weight"].flatten(0, 1), "proj": block["proj.weight"].flatten(1),
                    "fc1": block["fc1.weight"], "fc2": block["fc2.weight"]})
    return out


def test_compose_is_a_sum_of_kronecker_products():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 2, 5, generator=g), torch.randn(3, 4, 4, generator=g)
    want = sum(torch.kron(s[n], t[n]) for n in range(3))
    torch.testing.assert_close(compose(s, t), want)
    # block (i, j) is the templates weighted by the scalers at (i, j)
    torch.testing.assert_close(compose(s, t)[4:8, 12:16], torch.einsum("n,nrc->rc", s[:, 1, 3], t))


def test_nearest_kronecker_sum_is_exact_at_full_rank_and_shared():
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(8, 12, generator=g) for _ in range(3)]  # 6 blocks of 4x4 each: 18 rows of 16 -> rank 16
    templates, scalers = nearest_kronecker_sum(ws, 4, 16)
    for w, s in zip(ws, scalers):
        assert s.shape == (16, 2, 3)
        torch.testing.assert_close(compose(s, templates), w, rtol=1e-4, atol=1e-4)
    # fewer templates: an approximation, no better than the SVD's truncation allows, but not worse than nothing
    t2, s2 = nearest_kronecker_sum(ws, 4, 2)
    err = sum(float((compose(s, t2) - w).pow(2).sum()) for w, s in zip(ws, s2))
    assert 0 < err < sum(float(w.pow(2).sum()) for w in ws)


def test_the_auxiliary_model_is_the_descendant_at_its_size():
    """The function distillation learned is exactly what the expanded depth-4 descendant computes."""
    gene = gene_with_sizes()
    aux = aux_arch_of(gene)
    model = WaveModel(aux, sized(gene.tensors, aux, aux)).eval()
    child = gene.expand(seed=0).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(child(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [dict(depth=2, embed_dim=32, num_heads=2), dict(depth=3, embed_dim=16, num_heads=1),
                                   dict(depth=7, embed_dim=48, num_heads=6), dict(depth=1, embed_dim=32, num_heads=4)])
def test_every_block_matrix_is_a_kronecker_sum_of_the_stored_templates(shape):
    """At any depth and width, each 16x16 block of every q/proj/fc1/fc2 lies in the span of the
    stored templates of its kind (least squares leaves no residual); the shapes are the size's."""
    gene = gene_with_sizes()
    child = gene.expand(seed=0, **shape)
    assert len(child.blocks) == shape["depth"] and child.embed_dim == shape["embed_dim"]
    assert child.blocks[0].attn.num_heads == shape["num_heads"]
    assert child.blocks[0].mlp.fc1.weight.shape == (4 * shape["embed_dim"], shape["embed_dim"])
    for layer in matrices(child):
        for kind, w in layer.items():
            basis = gene.tensors[f"templates.{kind}"].reshape(12, -1).T  # [256, N]
            rows = w.reshape(w.shape[0] // 16, 16, w.shape[1] // 16, 16).permute(0, 2, 1, 3).reshape(-1, 256).T
            coef = torch.linalg.lstsq(basis, rows).solution
            torch.testing.assert_close(basis @ coef, rows, rtol=1e-4, atol=1e-5)
    assert child(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_a_listed_size_gets_trained_scalers_and_leaves_the_templates_alone():
    gene = gene_with_sizes()
    aux = aux_arch_of(gene)
    small = aux.replace(depth=2, embed_dim=32, num_heads=2)
    key = size_key(small)
    assert key == "d2_w32_h2_f128" and f"scalers.{key}.1.fc2" in gene.tensors
    # the starting point: the auxiliary scalers selected by depth and width (what an unlisted size gets)
    bare = {k: v for k, v in gene.tensors.items() if not k.startswith(f"scalers.{key}.")}
    start = sized(bare, aux, small)["scalers"]
    trained = sized(gene.tensors, aux, small)["scalers"]
    assert start.keys() == trained.keys()
    assert all(start[k].shape == trained[k].shape for k in start)
    assert any(not torch.equal(start[k], trained[k]) for k in start), "scaler training changed nothing"
    # the templates of the artifact are the auxiliary model's (scaler training froze them): the
    # auxiliary-size descendant with and without the trained size is the same
    a = gene.expand(seed=0).state_dict()
    b = dataclasses.replace(gene, tensors=bare).expand(seed=0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the trained size's descendant is built from the trained scalers, not the selected ones
    c = gene.expand(seed=0, depth=2, embed_dim=32, num_heads=2).state_dict()
    d = dataclasses.replace(gene, tensors=bare).expand(
        seed=0, depth=2, embed_dim=32, num_heads=2).state_dict()
    assert not torch.equal(c["blocks.0.attn.qkv.weight"], d["blocks.0.attn.qkv.weight"])
    assert torch.equal(c["blocks.0.norm1.weight"], d["blocks.0.norm1.weight"])  # only scalers train


def test_add_sizes_later_gives_what_extraction_gives():
    """Scalers added to a learngene without them equal those extracted with the size listed;
    the templates and every other tensor stay as they were."""
    ancestry = randomize_(tiny_vit())
    plain = learngene.extract("wave", ancestry, data=images(), **TRAIN, scaler_samples=32)
    listed = gene_with_sizes()
    grown = add_sizes(plain, ancestry, images(), [[2, 32, 2]])
    assert grown.config["sizes"] == [[2, 32, 2]] and grown.tensors.keys() == listed.tensors.keys()
    assert all(torch.equal(grown.tensors[k], listed.tensors[k]) for k in listed.tensors)
    assert grown.provenance["cost"]["samples_seen"] == listed.provenance["cost"]["samples_seen"]
    assert plain.config["sizes"] is None and "scalers.d2_w32_h2_f128.0.q" not in plain.tensors  # not modified
    with pytest.raises(ConfigError, match="already holds scalers for d2_w32_h2_f128"):
        add_sizes(grown, ancestry, images(), [[2, 32, 2]])
    with pytest.raises(ConfigError, match="auxiliary model's own size"):
        add_sizes(plain, ancestry, images(), [[4, 48, 3]])
    with pytest.raises(ConfigError, match="trains scalers on images"):
        add_sizes(plain, ancestry, None, [[2, 32, 2]])


def test_narrower_descendant_takes_whole_template_blocks_of_vectors_and_stem():
    """Width 32 of 48 keeps template blocks 0 and 2 (evenly spaced: round(linspace(0, 2, 2)))."""
    gene = gene_with_sizes()
    child = to_stack(gene.expand(seed=0, depth=3, embed_dim=32, num_heads=2))
    keep = torch.cat([torch.arange(0, 16), torch.arange(32, 48)])  # uniform_indices(3, 2) = [0, 2]
    torch.testing.assert_close(child.stem["patch.weight"], gene.tensors["stem.patch.weight"][keep])
    torch.testing.assert_close(child.stem["pos_embed"], gene.tensors["stem.pos_embed"][..., keep])
    # depth 3 of 4 layers: layers 0, 2, 3 (round(linspace(0, 3, 3)) = 0, 2, 3)
    for j, layer in enumerate((0, 2, 3)):
        torch.testing.assert_close(child.blocks[j]["norm2.weight"], gene.tensors[f"layers.{layer}.norm2.weight"][keep])


def test_init_from_the_ancestry_at_full_rank_reproduces_it():
    """init='ancestry' with as many templates as the blocks' rank and no distillation: the
    descendant at the ancestry's shape computes the ancestry's logits."""
    ancestry = randomize_(tiny_vit(), seed=3).eval()
    # each kind has 4 layers x (3x3 .. 12x3) blocks of 16x16: rank <= 256; 36 rows for q (3x3 x 4)
    gene = learngene.extract("wave", ancestry, data=images(), init="ancestry", epochs=0, num_templates=256)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(gene.expand().eval()(x), ancestry(x), rtol=1e-3, atol=1e-3)


def test_artifact_round_trip_keeps_every_size(tmp_path):
    gene = gene_with_sizes()
    gene.save(tmp_path / "gene")
    loaded = learngene.load(tmp_path / "gene")
    assert loaded.tensors.keys() == gene.tensors.keys()
    assert "d2_w32_h2_f128" in loaded.describe_shapes() and "d4_w48_h3_f192 (auxiliary)" in loaded.describe_shapes()
    for shape in (dict(), dict(depth=2, embed_dim=32, num_heads=2), dict(depth=5, embed_dim=16, num_heads=1)):
        a, b = gene.expand(seed=1, **shape).state_dict(), loaded.expand(seed=1, **shape).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_broken_artifact_is_refused_on_load(tmp_path):
    gene = gene_with_sizes()
    tensors = dict(gene.tensors)
    tensors["scalers.d2_w32_h2_f128.0.q"] = tensors["scalers.d2_w32_h2_f128.0.q"][:, :1]
    dataclasses.replace(gene, tensors=tensors).save(tmp_path / "bad")
    with pytest.raises(ArtifactError, match=r"scalers.d2_w32_h2_f128.0.q is \(12, 1, 2\)"):
        learngene.load(tmp_path / "bad")
    del tensors["templates.fc1"]
    dataclasses.replace(gene, tensors=tensors).save(tmp_path / "bad2")
    with pytest.raises(ArtifactError, match="templates.fc1 is missing"):
        learngene.load(tmp_path / "bad2")


@pytest.mark.parametrize("shape,match", [
    (dict(embed_dim=40, num_heads=2), "embed_dim must be a multiple of 16"),
    (dict(embed_dim=64, num_heads=4), "cannot widen; choose embed_dim <= 48"),
])
def test_bad_shapes(shape, match):
    with pytest.raises(ConfigError, match=match):
        gene_with_sizes().expand(**shape)


@pytest.mark.parametrize("options,match", [
    (dict(num_templates=0), "num_templates must be an integer >= 1"),
    (dict(template_size=-4), "template_size must be a positive integer"),
    (dict(init="svd"), r"init must be one of \['random', 'ancestry'\]"),
    (dict(epochs=0), "epochs=0 leaves random templates untrained"),
    (dict(sizes=[[2, 32]]), r"sizes must be a list of \[depth, embed_dim, num_heads\]"),
    (dict(sizes=[[2, 32, 3]]), "embed_dim 32 is not divisible by num_heads 3"),
    (dict(sizes=[[2, 32, 2], [2, 32, 2]]), "duplicates"),
    (dict(sizes=[[2, 40, 2]]), "embed_dim must be a multiple of 16"),
    (dict(sizes=[[4, 48, 3]]), "the auxiliary model's own size"),
    (dict(template_size=32), "embed_dim must be a multiple of 32"),
    (dict(scaler_samples=0), "scaler_samples must be an integer >= 1"),
    (dict(scaler_lr=0), "scaler_lr must be a number > 0"),
])
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("wave", tiny_vit(), data=images(), **{**TRAIN, **options})


def test_needs_data():
    with pytest.raises(ConfigError, match="needs data"):
        learngene.extract("wave", tiny_vit(), **TRAIN)


def test_groups_cover_every_stored_tensor():
    assert {k.split(".", 1)[0] for k in gene_with_sizes().tensors} == set(GROUPS)


def test_only_templates_and_patch_and_classifier_weights_decay():
    gene = gene_with_sizes()
    aux = aux_arch_of(gene)
    model = WaveModel(aux, sized(gene.tensors, aux, aux))
    decayed = {n for n, _ in model.named_parameters()} - model.no_weight_decay()
    assert decayed == {f"templates.{k}" for k in ("q", "k", "v", "proj", "fc1", "fc2")} | {
        "stem.patch.weight", "head.head.weight"}
    model.train_only_scalers()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("scalers.")}
