"""Cluster-Learngene (Wang et al., NeurIPS 2024): attention distances, head/FFN clustering,
priority weight-sharing, the trainable FFN layer transform and its exact folding."""

from __future__ import annotations

import math

import pytest
import timm
import torch

import learngene
from learngene.cli import main as cli_main
from learngene.errors import ArtifactError, ConfigError
from learngene.methods.cluster_learngene import (cluster_heads, fold, group_ffns, mean_attention_distance,
                                                 share_heads, source_layers)
from learngene.methods.cluster_learngene.clustering import attention_maps
from learngene.stack import to_stack

from conftest import tiny_vit

EXACT = dict(eps=1e-6, ffn_threshold=2.0, sample_size=8)  # every head its own cluster, every FFN kept


def scaled_random_(model: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Distinct random values everywhere, small enough that softmax and GELU stay in range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name and "weight" in name else 0.0))
    return model


def plant_twins(model: torch.nn.Module, layer: int, pairs: list[tuple[int, int]]) -> torch.nn.Module:
    """Make head b of ``layer`` an exact copy of head a (q/k/v with biases, and its proj columns)."""
    block = to_stack(model).blocks[layer]  # views of the model's own tensors
    with torch.no_grad():
        for a, b in pairs:
            for key in ("q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias"):
                block[key][b].copy_(block[key][a])
            block["proj.weight"][:, b].copy_(block["proj.weight"][:, a])
    return model


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    return torch.utils.data.TensorDataset(images, labels)


@pytest.fixture(scope="module")
def twins():
    """4 layers, 4 heads of 12; in layer 0 head 2 = head 0 and head 3 = head 1."""
    return plant_twins(scaled_random_(tiny_vit(num_heads=4)), 0, [(0, 2), (1, 3)])


def block_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outputs = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for b in model.blocks]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return outputs


def block0_attention(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, T] attention maps of block 0 (its input is the stem's output)."""
    seen = {}
    hook = model.blocks[0].norm1.register_forward_hook(lambda _m, _i, out: seen.setdefault("x", out))
    with torch.no_grad():
        model.eval()(x)
    hook.remove()
    return attention_maps(to_stack(model).blocks[0], seen["x"])


# -- measuring and clustering -------------------------------------------------------------------
def one_hot_attention(targets: list[int], tokens: int = 5) -> torch.Tensor:
    """[1, H, T, T]: in head h every query attends only to token targets[h]."""
    attn = torch.zeros(1, len(targets), tokens, tokens)
    for h, t in enumerate(targets):
        attn[0, h, :, t] = 1.0
    return attn


@pytest.mark.parametrize("target,expected", [
    (1, (0 + 4 + 4 + 4 * math.sqrt(2)) / 4),  # patch (0,0), from the 2x2 grid of 4-px patches
    (4, (4 * math.sqrt(2) + 4 + 4 + 0) / 4),  # patch (1,1)
    (0, 0.0),                                 # the class token: excluded, counts as distance 0
])
def test_mean_attention_distance_by_hand(target, expected):
    got = mean_attention_distance(one_hot_attention([target]), grid=(2, 2), patch_size=(4, 4), num_prefix_tokens=1)
    assert got.shape == (1, 1) and got.item() == pytest.approx(expected)


def test_mean_attention_distance_self_and_rectangular_patches():
    attn = torch.eye(4).expand(1, 1, 4, 4)  # every patch attends to itself; no class token
    assert mean_attention_distance(attn, (2, 2), (4, 4), 0).item() == 0.0
    # 1x2 grid of 3x5 patches: the two patches are 5 px apart
    assert mean_attention_distance(torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]), (1, 2), (3, 5), 0).item() == 5.0


@pytest.mark.parametrize("distances,eps,min_samples,expected", [
    ([8, 8, 1, 2, 2, 25], 3, 2, [[3, 2, 4], [0, 1]]),   # the reference notebook's example: 25 is noise, dropped
    ([5.0, 1.0, 5.2, 9.0], 0.5, 1, [[0, 2], [1], [3]]),  # biggest cluster first, then DBSCAN's order
    ([1.0, 2.0, 3.0], 10, 1, [[1, 0, 2]]),               # one cluster; the head at the centroid represents it
])
def test_cluster_heads_table(distances, eps, min_samples, expected):
    assert cluster_heads(distances, eps, min_samples) == expected


def test_group_ffns_complete_linkage_and_medoid():
    sim = torch.tensor([[1.0, 0.9, 0.7, 0.1], [0.9, 1.0, 0.9, 0.1], [0.7, 0.9, 1.0, 0.2], [0.1, 0.1, 0.2, 1.0]])
    assert group_ffns(sim, 0.8) == ([[0, 1], [2], [3]], [0, 2, 3])  # 2 is close to 1 but not to 0
    assert group_ffns(sim, 0.6) == ([[0, 1, 2], [3]], [1, 3])       # the medoid of 0-2 is 1
    assert group_ffns(sim, 2.0) == ([[0], [1], [2], [3]], [0, 1, 2, 3])


def test_planted_identical_heads_cluster_together(twins, data):
    gene = learngene.extract("cluster-learngene", twins, data=data, **EXACT)
    clusters = gene.config["head_clusters"]
    assert clusters[0] == [[0, 2], [1, 3]]  # the twins, representative = the lower index
    assert all(len(layer) == 4 for layer in clusters[1:])  # distinct heads stay apart
    d = gene.config["distances"][0]
    assert d[0] == d[2] and d[1] == d[3] and d[0] != d[1]
    assert gene.tensors["layers.0.q.weight"].shape == (2, 12, 48)  # only the representatives are stored
    assert gene.tensors["layers.0.proj.weight"].shape == (48, 2, 12)
    assert gene.config["ffn_groups"] == [[0], [1], [2], [3]]
    assert gene.provenance["cost"]["samples_seen"] == 8


def test_random_head_grouping_keeps_sizes_and_heads_but_not_the_clusters(twins, data):
    """The control: DBSCAN's cluster sizes in priority order, over the same heads, assigned at random.
    (``seed`` also picks the measuring sample, so each draw is compared with its own seed's clusters.)"""
    options = {**EXACT, "eps": 0.5}
    changed = False
    for seed in range(4):
        measured = learngene.extract("cluster-learngene", twins, data=data, seed=seed, **options)
        gene = learngene.extract("cluster-learngene", twins, data=data, seed=seed, head_grouping="random", **options)
        assert gene.config["distances"] == measured.config["distances"]
        for by_distance, randomised in zip(measured.config["head_clusters"], gene.config["head_clusters"]):
            assert [len(c) for c in randomised] == [len(c) for c in by_distance]
            assert sorted(h for c in randomised for h in c) == sorted(h for c in by_distance for h in c)
        changed |= gene.config["head_clusters"] != measured.config["head_clusters"]
        for layer, clusters in enumerate(gene.config["head_clusters"]):  # the stored heads: the random representatives
            reps = torch.tensor([members[0] for members in clusters])
            assert torch.equal(gene.tensors[f"layers.{layer}.q.weight"], to_stack(twins).blocks[layer]["q.weight"][reps])
    assert changed
    again = learngene.extract("cluster-learngene", twins, data=data, seed=3, head_grouping="random", **options)
    assert again.config["head_clusters"] == gene.config["head_clusters"]  # seeded


def test_identical_ffns_are_grouped(data):
    model = scaled_random_(tiny_vit())
    blocks = to_stack(model).blocks
    with torch.no_grad():
        for key in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
            blocks[2][key].copy_(blocks[1][key])
    gene = learngene.extract("cluster-learngene", model, data=data, eps=1e-6, ffn_threshold=0.999, sample_size=8)
    assert gene.config["ffn_groups"] == [[0], [1, 2], [3]] and gene.config["ffn_kept"] == [0, 1, 3]
    assert "ffn.2.fc1.weight" not in gene.tensors and "ffn.1.fc1.weight" in gene.tensors


# -- descendants ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ancestry_depth,depth,placement,expected", [
    (12, 12, "spread", list(range(12))),
    (12, 6, "spread", [0, 2, 4, 6, 8, 10]),
    (12, 6, "first", [0, 1, 2, 3, 4, 5]),
    (12, 1, "spread", [0]),
    (4, 8, "spread", [0, 0, 1, 1, 2, 2, 3, 3]),
])
def test_source_layers(ancestry_depth, depth, placement, expected):
    assert source_layers(ancestry_depth, depth, placement) == expected


@pytest.mark.parametrize("heads,expected_reps,expected_scale", [
    (6, [0, 1, 2, 0, 1, 2], [1.5, 1.0, 0.5, 1.5, 1.0, 0.5]),  # each representative twice: s_c / 2
    (3, [0, 1, 2], [3.0, 2.0, 1.0]),                          # once each: the whole cluster's weight
    (4, [0, 1, 2, 0], [1.5, 2.0, 1.0, 1.5]),                  # priority: the biggest cluster gets the extra head
])
def test_priority_weight_sharing_table(heads, expected_reps, expected_scale):
    g = torch.Generator().manual_seed(0)
    k, hd, d = 3, 4, heads * 4  # same head_dim as the stored heads
    stored = {key: torch.randn(k, hd, d, generator=g) for key in ("q.weight", "k.weight", "v.weight")}
    stored["proj.weight"] = torch.randn(d, k, hd, generator=g)
    fresh = {key: torch.zeros(heads, hd, d) for key in ("q.weight", "k.weight", "v.weight")}
    fresh["proj.weight"] = torch.zeros(d, heads, hd)
    out = share_heads(stored, [3, 2, 1], fresh, share_noise=0.0)
    for i, (rep, scale) in enumerate(zip(expected_reps, expected_scale)):
        assert torch.equal(out["q.weight"][i], stored["q.weight"][rep])
        torch.testing.assert_close(out["proj.weight"][:, i], stored["proj.weight"][:, rep] * scale)
    noisy = share_heads(stored, [3, 2, 1], fresh, share_noise=0.01)
    assert torch.equal(noisy["v.weight"][:3], stored["v.weight"])  # first copies exact
    assert heads == 3 or not torch.equal(noisy["v.weight"][3], stored["v.weight"][0])  # later copies perturbed


@pytest.mark.parametrize("arch", [dict(), dict(qkv_bias=False), dict(init_values=0.1), dict(class_token=False,
                                                                                            global_pool="avg")])
def test_uncompressed_descendant_reproduces_the_ancestry(arch, data):
    ancestry = scaled_random_(tiny_vit(**arch))
    gene = learngene.extract("cluster-learngene", ancestry, data=data, keep_head=True, **EXACT)
    assert all(len(c) == 3 for c in gene.config["head_clusters"]) and len(gene.config["ffn_kept"]) == 4
    child = gene.expand(seed=0)
    x = data.tensors[0][:4]
    for ours, theirs in zip(block_outputs(child, x), block_outputs(ancestry, x)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(child(x), ancestry.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_heads", [4, 2])
def test_heads_are_true_heads_and_shared_output_is_preserved(twins, data, num_heads):
    """Descendant head i's attention map is the ancestry's representative (i mod k)'s map; with
    identical heads in a cluster, block 0's output is preserved, also with fewer, wider heads."""
    gene = learngene.extract("cluster-learngene", twins, data=data, share_noise=0.0, **EXACT)
    reps = [c[0] for c in gene.config["head_clusters"][0]]  # [0, 1]
    child = gene.expand(num_heads=num_heads, seed=0)
    x = data.tensors[0][:3]
    ours, theirs = block0_attention(child, x), block0_attention(twins, x)
    for i in range(num_heads):
        torch.testing.assert_close(ours[:, i], theirs[:, reps[i % len(reps)]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(block_outputs(child, x)[0], block_outputs(twins, x)[0], rtol=1e-5, atol=1e-5)


def test_more_heads_than_the_ancestry_share_representatives(twins, data):
    gene = learngene.extract("cluster-learngene", twins, data=data, **EXACT)
    child = gene.expand(depth=6, num_heads=8, num_classes=5, seed=0)  # head_dim 6 < 12: evenly spaced dims
    assert type(child) is timm.models.vision_transformer.VisionTransformer
    assert child(data.tensors[0][:2]).shape == (2, 5) and len(child.blocks) == 6
    q = to_stack(child).blocks[0]["q.weight"]  # [8, 6, 48]
    stored = gene.tensors["layers.0.q.weight"]
    assert torch.equal(q[0], stored[0, ::2]) and torch.equal(q[1], stored[1, ::2])


def test_ffn_transform_trains_and_fold_is_exact(data, monkeypatch):
    import learngene.methods._weight_maps as peg_maps  # the chunked maps the transforms run through
    from learngene.train import TrainConfig, fit

    gene = learngene.extract("cluster-learngene", scaled_random_(tiny_vit()), data=data, eps=1e-6,
                             ffn_threshold=-1.0, sample_size=8)  # all 4 FFNs in one group: one kept
    assert gene.config["ffn_groups"] == [[0, 1, 2, 3]] and len(gene.config["ffn_kept"]) == 1
    kept = gene.config["ffn_kept"][0]
    desc = gene.expand(depth=6, num_heads=2, seed=0, trainable=True)
    assert not isinstance(desc, timm.models.vision_transformer.VisionTransformer)
    start = to_stack(gene.fold(desc))
    for block in start.blocks:  # the transform starts as an exact copy into all 6 layers
        assert torch.equal(block["fc1.weight"], gene.tensors[f"ffn.{kept}.fc1.weight"])
    plain = gene.expand(depth=6, num_heads=2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), gene.fold(desc).state_dict().values()))

    desc(data.tensors[0][:4]).logsumexp(1).mean().backward()
    transform = [(n, p) for n, p in desc.named_parameters() if n.startswith("transforms.")]
    assert transform and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in transform)
    assert all(n in desc.no_weight_decay() for n, _ in transform)
    before = {n: p.detach().clone() for n, p in transform}
    fit(desc, data, config=TrainConfig(epochs=1, batch_size=16, warmup_epochs=0.0, checkpoint=False, device="cpu"),
        progress=False)
    assert all(not torch.equal(before[n], p) for n, p in transform)
    with torch.no_grad():  # far from the start: the ReLU bites
        for _, p in transform:
            p.add_(0.3 * torch.randn_like(p))
    monkeypatch.setattr(peg_maps, "FOLD_CHUNK", 100)  # folding runs in many chunks, through its buffers
    folded = fold(desc)
    assert type(folded) is timm.models.vision_transformer.VisionTransformer
    x = torch.randn(3, 1, 28, 28)
    desc.eval(), folded.eval()
    assert torch.equal(desc(x), folded(x))
    layers = to_stack(folded).blocks
    assert not torch.equal(layers[0]["fc1.weight"], layers[5]["fc1.weight"])  # the layers now differ

    # By hand: layer j's FFN is the transform Linear(1 -> 2n) -> ReLU -> Linear(2n -> n) applied to
    # every element of the (trained) kept FFN, output j; its attention tensors are its own parameters.
    ffn = desc.group(f"ffn.{kept}")
    assert not torch.equal(ffn["fc1.weight"], gene.tensors[f"ffn.{kept}.fc1.weight"])  # trained, not the stored
    seq = desc.transforms[str(kept)]
    (w1, b1), (w2, b2) = ((seq[i].weight.detach(), seq[i].bias.detach()) for i in (0, 2))  # [2n, 1], [n, 2n]
    assert desc.members == {kept: [0, 1, 2, 3, 4, 5]}
    for j, block in enumerate(layers):
        for key, t in ffn.items():
            hidden = torch.relu(torch.einsum("m,...->m...", w1[:, 0], t.detach()) + b1.view(-1, *[1] * t.dim()))
            by_hand = torch.einsum("m,m...->...", w2[j], hidden) + b2[j]
            torch.testing.assert_close(block[key], by_hand, rtol=1e-5, atol=1e-6, msg=f"layer {j} {key}")
        for key, t in desc.group(f"blocks.{j}").items():
            assert torch.equal(block[key], t), (j, key)


# -- config, artifact, CLI --------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(eps=0), dict(eps=-1.0), dict(eps=float("nan")), dict(min_samples=0), dict(sample_size=0),
    dict(ffn_threshold=-2.0), dict(ffn_threshold="high"), dict(placement="middle"), dict(share_noise=-0.1),
    dict(head_grouping="shuffled"),
    dict(keep_head="yes"), dict(batch_size=1.5), dict(no_such_option=1),
    dict(distances=[[1.0, 2.0, 3.0]] * 4),  # outputs are filled in by extraction
    dict(min_samples=4),                     # DBSCAN: every one of the 3 heads is noise
])
def test_bad_config_is_a_config_error(options, data):
    with pytest.raises(ConfigError):
        learngene.extract("cluster-learngene", tiny_vit(), data=data, **{"sample_size": 4, **options})


def test_needs_data_and_the_ancestry_width():
    with pytest.raises(ConfigError, match="needs data"):
        learngene.extract("cluster-learngene", tiny_vit())


def test_descendant_width_is_fixed(twins, data):
    gene = learngene.extract("cluster-learngene", twins, data=data, **EXACT)
    for shape in (dict(embed_dim=24, num_heads=2), dict(mlp_ratio=2.0)):
        with pytest.raises(ConfigError):
            gene.expand(seed=0, **shape)


def test_save_load_and_tampered_structure(twins, data, tmp_path):
    gene = learngene.extract("cluster-learngene", twins, data=data, eps=1e-6, sample_size=8)
    gene.save(tmp_path / "g")
    loaded = learngene.load(tmp_path / "g")
    assert loaded.config == gene.config and loaded.tensors.keys() == gene.tensors.keys()
    a, b = gene.expand(depth=3, seed=4).state_dict(), loaded.expand(depth=3, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for field, value in (("head_clusters", [[[0]]] * 4), ("ffn_groups", [[0, 2], [1, 3]]), ("ffn_kept", [9]),
                         ("distances", [[1.0]]), ("ffn_groups", "all")):
        tampered = learngene.Learngene(method=gene.method, config={**gene.config, field: value},
                                       tensors=gene.tensors, provenance=gene.provenance)
        tampered.save(tmp_path / "t")
        with pytest.raises(ArtifactError):
            learngene.load(tmp_path / "t")


def test_info_prints_clusters_and_plots(twins, data, tmp_path, capsys):
    gene = learngene.extract("cluster-learngene", twins, data=data, **EXACT)
    gene.save(tmp_path / "g")
    png = tmp_path / "plots" / "distances.png"
    assert cli_main(["info", str(tmp_path / "g"), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "layer  0: 2 clusters {0,2}@" in out and "FFN 3" in out and str(png) in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["distances.png"]  # no temp file left behind
    learngene.extract("heuristic", twins, k=1).save(tmp_path / "h")
    assert cli_main(["info", str(tmp_path / "h"), "--plot", str(tmp_path / "h.png")]) == 2
    assert "only cluster-learngene" in capsys.readouterr().err
