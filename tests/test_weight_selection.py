"""weight-selection (Xu et al., ICLR 2024): index rule, head mixing vs head-aware, exact copies, shapes."""

from __future__ import annotations

import pytest
import timm
import torch

import learngene
import learngene.methods.weight_selection  # noqa: F401  (registers the method)
from learngene.errors import ConfigError
from learngene.methods._indices import uniform_indices
from learngene.stack import to_stack

from conftest import randomize_, tiny_vit


@pytest.fixture(scope="module")
def wide():
    """depth 2, D=64, 4 heads of 16: every tensor value distinct, so copies are traceable by value."""
    return randomize_(tiny_vit(depth=2, embed_dim=64, num_heads=4), seed=1).eval()


@pytest.mark.parametrize("n,m,expected", [
    (8, 4, [0, 2, 4, 6]),          # divisible: arange(m) * (n // m), the first index 0
    (9, 3, [0, 3, 6]),
    (6, 4, [0, 2, 3, 5]),          # not divisible: round(linspace(0, n-1, m)) = round([0, 1.67, 3.33, 5])
    (4, 3, [0, 2, 3]),             # round(1.5) = 2 (halves to even)
    (6, 5, [0, 1, 2, 4, 5]),       # round(2.5) = 2
    (5, 5, [0, 1, 2, 3, 4]),       # same size: identity
    (7, 1, [0]),
])
def test_uniform_indices_hand_worked(n, m, expected):
    assert uniform_indices(n, m).tolist() == expected


def _source(rows: torch.Tensor, table: torch.Tensor) -> list[int]:
    """For each row of ``rows`` [m, d], the index of the identical row in ``table`` [N, d]."""
    hits = (rows[:, None, :] == table[None, :, :]).all(-1)  # [m, N]
    assert (hits.sum(1) == 1).all(), "every selected row must be an unchanged ancestry row"
    return hits.int().argmax(1).tolist()


def _trace_heads(parent, kid, e):
    """Per descendant head: the (ancestry head, within-head row) of its q, k, v rows and proj columns."""
    H, hd, _ = parent["q.weight"].shape
    h, hd2, _ = kid["q.weight"].shape
    origin = {}
    for name in ("q", "k", "v"):
        table = parent[f"{name}.weight"][:, :, e].reshape(H * hd, -1)           # ancestry rows, embedding cols e
        flat = _source(kid[f"{name}.weight"].reshape(h * hd2, -1), table)
        origin[name] = [[divmod(i, hd) for i in flat[j * hd2:(j + 1) * hd2]] for j in range(h)]
    table = parent["proj.weight"][e].reshape(len(e), H * hd).T                   # ancestry proj columns
    flat = _source(kid["proj.weight"].reshape(len(e), h * hd2).T, table)
    origin["proj"] = [[divmod(i, hd) for i in flat[j * hd2:(j + 1) * hd2]] for j in range(h)]
    return origin


@pytest.mark.parametrize("shape", [dict(embed_dim=32, num_heads=2), dict(embed_dim=24, num_heads=3)])
def test_head_aware_keeps_each_head_from_one_ancestry_head(wide, shape):
    gene = learngene.extract("weight-selection", wide, selection="head-aware")
    kid = to_stack(gene.expand(seed=0, **shape))
    parent = to_stack(wide)
    h, d = shape["num_heads"], shape["embed_dim"]
    heads, within = uniform_indices(4, h).tolist(), uniform_indices(16, d // h).tolist()
    e = uniform_indices(64, d)
    for layer in range(2):
        origin = _trace_heads(parent.blocks[layer], kid.blocks[layer], e)
        for j in range(h):
            for name in ("q", "k", "v", "proj"):
                assert {a for a, _ in origin[name][j]} == {heads[j]}, (layer, name, j)
                assert [r for _, r in origin[name][j]] == within, (layer, name, j)  # same dims for q, k, v, proj
        # biases follow the same heads and dims
        for name in ("q", "k", "v"):
            assert torch.equal(kid.blocks[layer][f"{name}.bias"],
                               parent.blocks[layer][f"{name}.bias"][heads][:, within])


def test_uniform_mixes_heads(wide):
    """D 64 -> 32, 4 -> 2 heads of 16: fused qkv keeps every 2nd row, so descendant head 0 = halves of heads 0 and 1."""
    gene = learngene.extract("weight-selection", wide, selection="uniform")
    kid = to_stack(gene.expand(embed_dim=32, num_heads=2, seed=0))
    parent = to_stack(wide)
    origin = _trace_heads(parent.blocks[0], kid.blocks[0], uniform_indices(64, 32))
    assert {a for a, _ in origin["q"][0]} == {0, 1}
    assert [r for _, r in origin["q"][0]] == [0, 2, 4, 6, 8, 10, 12, 14] * 2
    assert {a for a, _ in origin["v"][1]} == {2, 3}
    # and it is exactly the reference's per-dimension selection of timm's fused tensors
    a, b = wide.state_dict(), gene.expand(embed_dim=32, num_heads=2, seed=0).state_dict()
    rows, cols = uniform_indices(192, 96), uniform_indices(64, 32)
    assert torch.equal(b["blocks.1.attn.qkv.weight"], a["blocks.1.attn.qkv.weight"][rows][:, cols])
    assert torch.equal(b["blocks.1.attn.qkv.bias"], a["blocks.1.attn.qkv.bias"][rows])
    assert torch.equal(b["blocks.1.attn.proj.weight"], a["blocks.1.attn.proj.weight"][cols][:, cols])
    assert torch.equal(b["blocks.1.mlp.fc1.weight"], a["blocks.1.mlp.fc1.weight"][uniform_indices(256, 128)][:, cols])


def test_uniform_misaligns_q_k_v_when_not_divisible(wide):
    """64 -> 24 (3 heads of 8): 192 -> 72 rows by linspace, so q, k and v keep different dims.

    Descendant q dim i and k dim i then come from different ancestry dims (their product no
    longer pairs what the ancestry paired), and proj's columns do not follow the v rows.
    """
    rows = uniform_indices(192, 72)
    q, k, v = rows[:24], rows[24:48] - 64, rows[48:] - 128
    assert q.max() < 64 and k.min() >= 0 and v.min() >= 0  # the q/k/v blocks themselves stay apart
    assert q.tolist()[:6] == [0, 3, 5, 8, 11, 13] and k.tolist()[:6] == [1, 3, 6, 9, 11, 14]
    assert not torch.equal(q, k) and not torch.equal(v, uniform_indices(64, 24))
    gene = learngene.extract("weight-selection", wide)
    child = gene.expand(embed_dim=24, num_heads=3, seed=0)
    a = wide.state_dict()["blocks.0.attn.qkv.weight"]
    assert torch.equal(child.state_dict()["blocks.0.attn.qkv.weight"], a[rows][:, uniform_indices(64, 24)])


@pytest.mark.parametrize("selection", ["uniform", "head-aware"])
def test_same_shape_reproduces_the_ancestry(wide, selection):
    gene = learngene.extract("weight-selection", wide, selection=selection, keep_head=True)
    child = gene.expand(seed=0).eval()
    a, b = wide.state_dict(), child.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(child(x), wide(x))


def test_first_layers_and_residual_indices(wide):
    """Depth 1 takes ancestry block 0; every residual-stream tensor uses the same embedding indices."""
    gene = learngene.extract("weight-selection", wide, selection="head-aware", keep_head=True)
    child = gene.expand(depth=1, embed_dim=32, num_heads=2, seed=0)
    assert type(child) is timm.models.vision_transformer.VisionTransformer and len(child.blocks) == 1
    a, b = wide.state_dict(), child.state_dict()
    e, f = uniform_indices(64, 32), uniform_indices(256, 128)
    assert torch.equal(b["patch_embed.proj.weight"], a["patch_embed.proj.weight"][e])
    assert torch.equal(b["pos_embed"], a["pos_embed"][..., e])
    assert torch.equal(b["cls_token"], a["cls_token"][..., e])
    assert torch.equal(b["blocks.0.norm1.weight"], a["blocks.0.norm1.weight"][e])
    assert torch.equal(b["blocks.0.attn.proj.bias"], a["blocks.0.attn.proj.bias"][e])
    assert torch.equal(b["blocks.0.mlp.fc2.weight"], a["blocks.0.mlp.fc2.weight"][e][:, f])
    assert torch.equal(b["norm.weight"], a["norm.weight"][e])
    assert torch.equal(b["head.weight"], a["head.weight"][:, e])  # same labels: classifier copied
    other = gene.expand(depth=1, embed_dim=32, num_heads=2, num_classes=3, seed=0).state_dict()
    assert other["head.weight"].shape == (3, 32) and torch.equal(other["norm.bias"], a["norm.bias"][e])


def test_stores_first_max_depth_blocks_stem_and_norm(wide):
    gene = learngene.extract("weight-selection", wide, max_depth=1)
    stack = to_stack(wide)
    expected = stack.num_parameters("stem") + sum(t.numel() for t in stack.blocks[0].values()) + 2 * 64
    assert gene.num_parameters == expected
    assert gene.config == {"selection": "uniform", "max_depth": 1, "keep_head": False}
    assert "depth <= 1" in gene.describe_shapes()


def test_save_load_keeps_selection(wide, tmp_path):
    gene = learngene.extract("weight-selection", wide, selection="head-aware", max_depth=1)
    gene.save(tmp_path / "g")
    loaded = learngene.load(tmp_path / "g")
    assert loaded.config == gene.config
    a = gene.expand(depth=1, embed_dim=32, num_heads=2, seed=0).state_dict()
    b = loaded.expand(depth=1, embed_dim=32, num_heads=2, seed=0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("selection,shape,match", [
    ("uniform", dict(depth=3), "depth is 3 but the learngene stores 2 blocks"),
    ("uniform", dict(embed_dim=96, num_heads=4), "embed_dim is 96"),
    ("uniform", dict(mlp_ratio=5.0), "MLP hidden size"),
    ("uniform", dict(embed_dim=50, num_heads=4), "not divisible by num_heads"),
    ("head-aware", dict(embed_dim=64, num_heads=8), "num_heads is 8"),
    ("head-aware", dict(embed_dim=64, num_heads=2), "head_dim"),
    ("head-aware", dict(embed_dim=48, num_heads=5), "not divisible by num_heads"),
])
def test_bad_shapes(wide, selection, shape, match):
    gene = learngene.extract("weight-selection", wide, selection=selection)
    with pytest.raises(ConfigError, match=match):
        gene.expand(**shape)


def test_uniform_allows_more_narrower_heads(wide):
    """The paper's mode never looks at heads: 64 dims as 8 heads of 8 is a regrouping, not a larger model."""
    gene = learngene.extract("weight-selection", wide)
    assert gene.expand(num_heads=8, seed=0).state_dict()["blocks.0.attn.qkv.weight"].shape == (192, 64)


@pytest.mark.parametrize("options,match", [
    (dict(selection="strided"), "selection must be one of"),
    (dict(max_depth=0), "max_depth must be a positive integer"),
    (dict(max_depth=3), "only 2 blocks"),
    (dict(keep_head="yes"), "keep_head must be"),
])
def test_bad_options(wide, options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("weight-selection", wide, **options)
