"""The canonical stack round-trips timm ViTs bit-exactly, over a table of shapes."""

from __future__ import annotations

import pytest
import torch

from learngene.errors import ConfigError
from learngene.arch import create_vit
from learngene.stack import VitStack, from_stack, to_stack

from conftest import randomize_

SHAPES = [
    pytest.param(dict(), id="vit-mini-default"),
    pytest.param(dict(qkv_bias=False), id="no-qkv-bias"),
    pytest.param(dict(class_token=False, global_pool="avg"), id="avg-pool-no-cls"),
    pytest.param(dict(init_values=1e-5), id="layer-scale"),
    pytest.param(dict(no_embed_class=True), id="no-embed-class"),
    pytest.param(dict(num_classes=0), id="headless"),
    pytest.param(dict(depth=1, embed_dim=32, num_heads=1), id="one-block-one-head"),
    pytest.param(dict(img_size=32, patch_size=4, in_chans=3, embed_dim=64, num_heads=8, mlp_ratio=2.0), id="rgb-8-heads"),
    pytest.param(dict(pre_norm=True), id="clip-style-pre-norm"),  # norm_pre in the stem, no patch bias
]


@pytest.mark.parametrize("overrides", SHAPES)
def test_round_trip_is_bitwise(overrides):
    kwargs = dict(depth=3)
    kwargs.update(overrides)
    model = randomize_(create_vit("vit-mini", **kwargs))
    rebuilt = from_stack(to_stack(model))
    a, b = model.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    x = torch.randn(2, model.patch_embed.proj.in_channels, *model.patch_embed.img_size)
    model.eval(), rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))


def test_heads_are_true_heads():
    """Head h of the stack is rows h*hd:(h+1)*hd of timm's q, k and v, and those columns of proj."""
    model = randomize_(create_vit("vit-mini", depth=1, embed_dim=48, num_heads=3))
    stack = to_stack(model)
    D, hd = 48, 16
    qkv = model.blocks[0].attn.qkv.weight.detach()  # [3*D, D], rows [q; k; v]
    proj = model.blocks[0].attn.proj.weight.detach()  # [D, D]
    for h in range(3):
        rows = slice(h * hd, (h + 1) * hd)
        assert torch.equal(stack.blocks[0]["q.weight"][h], qkv[rows])
        assert torch.equal(stack.blocks[0]["k.weight"][h], qkv[D:][rows])
        assert torch.equal(stack.blocks[0]["v.weight"][h], qkv[2 * D:][rows])
        assert torch.equal(stack.blocks[0]["proj.weight"][:, h], proj[:, rows])


def test_canonical_shapes_and_counts():
    model = create_vit("vit-mini", depth=2)
    stack = to_stack(model)
    assert stack.blocks[0]["q.weight"].shape == (6, 16, 96)
    assert stack.blocks[0]["proj.weight"].shape == (96, 6, 16)
    assert stack.num_parameters() == sum(p.numel() for p in model.parameters())
    assert stack.num_parameters("blocks") == sum(p.numel() for p in model.blocks.parameters())


def test_from_stack_refuses_wrong_shapes():
    stack = to_stack(create_vit("vit-mini", depth=2))
    stack.blocks[1]["fc1.weight"] = torch.zeros(10, 96)
    with pytest.raises(ConfigError, match="block 1: fc1.weight"):
        from_stack(stack)


def test_unsupported_features_are_named():
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1, num_heads=2, reg_tokens=2)
    with pytest.raises(ConfigError, match="register tokens"):
        to_stack(model)


def test_clone_is_independent():
    stack = to_stack(create_vit("vit-mini", depth=1))
    copy = stack.clone()
    copy.blocks[0]["q.weight"].add_(1.0)
    assert not torch.equal(copy.blocks[0]["q.weight"], stack.blocks[0]["q.weight"])
    assert isinstance(copy, VitStack)
