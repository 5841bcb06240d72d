"""mimetic (Trockman & Kolter, ICML 2023): W_q W_k^T ~ alpha1 Z + beta1 I per head, W_v W_proj ~ alpha2 Z - beta2 I."""

from __future__ import annotations

import pytest
import timm
import torch

import learngene
import learngene.methods.mimetic  # noqa: F401  (registers the method)
from learngene.errors import ConfigError
from learngene.stack import to_stack

from conftest import tiny_vit


def _qk(block, h):
    """Head h's query-key form W_q^h W_k^h^T = q.weight[h]^T k.weight[h]  [D, D]."""
    return block["q.weight"][h].T @ block["k.weight"][h]


def _vo(block):
    """All heads' value-projection map W_v W_proj = v.weight(D, D)^T proj.weight(D, D)^T  [D, D]."""
    D = block["proj.weight"].shape[0]
    return block["v.weight"].reshape(D, D).T @ block["proj.weight"].reshape(D, D).T


@pytest.fixture(scope="module")
def child():
    gene = learngene.extract("mimetic", tiny_vit())  # D=48, 3 heads of 16, depth 4
    return gene, gene.expand(seed=0)


def test_stores_nothing_and_gives_a_timm_vit(child):
    gene, model = child
    assert gene.num_parameters == 0 and gene.tensors == {}
    assert gene.config == {"alpha1": 0.7, "beta1": 0.7, "alpha2": 0.4, "beta2": 0.4}
    assert type(model) is timm.models.vision_transformer.VisionTransformer
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_query_key_is_a_rank_hd_scaled_identity_plus_noise(child):
    _, model = child
    D, hd = 48, 16
    for block in to_stack(model).blocks:
        for h in range(3):
            P = _qk(block, h)
            assert torch.linalg.matrix_rank(P) == hd  # a head realises the rank-hd part of the D x D target
            diag = P.diagonal().mean()
            off = (P.sum() - P.trace()) / (D * D - D)
            # the top hd singular values of 0.7 Z + 0.7 I lie within about 0.7 +- 2 * 0.7; the
            # diagonal carries beta1 * hd / D at least, and at most (beta1 + 2 alpha1) * hd / D
            assert 0.7 * hd / D < diag < (0.7 + 2 * 0.7) * hd / D
            assert abs(off) < diag / 20
            # near-aligned singular vectors: trace close to the nuclear norm (random factors give ~0)
            assert P.trace() > 0.7 * torch.linalg.matrix_norm(P, ord="nuc")
    # timm's own init has no such structure
    scratch = to_stack(tiny_vit()).blocks[0]
    assert abs(_qk(scratch, 0).diagonal().mean()) < 0.01


def test_value_projection_is_minus_identity_plus_noise(child):
    _, model = child
    for block in to_stack(model).blocks:
        M = _vo(block)                             # = 0.4 Z2 - 0.4 I, Z2 ~ N(0, 1/48)
        assert abs(M.diagonal().mean() + 0.4) < 0.05
        off = M - torch.diag(M.diagonal())
        assert abs(off.mean()) < 0.01 and 0.3 < off.std() * 48 ** 0.5 < 0.5  # the noise: alpha2 * N(0, 1/D)


def test_noise_free_targets_are_exact():
    """alpha = 0: each head's W_q W_k^T is beta1 times a rank-hd projector, W_v W_proj = -beta2 I."""
    gene = learngene.extract("mimetic", tiny_vit(), alpha1=0, beta1=0.5, alpha2=0, beta2=0.3)
    block = to_stack(gene.expand(depth=1, seed=0)).blocks[0]
    for h in range(3):
        P = _qk(block, h)
        assert torch.allclose(P, P.T, atol=1e-6) and torch.allclose(P @ P, 0.5 * P, atol=1e-6)
        assert P.trace().item() == pytest.approx(0.5 * 16, abs=1e-4)
    assert torch.allclose(_vo(block), -0.3 * torch.eye(48), atol=1e-6)


def test_only_attention_weights_change():
    """Biases and everything outside q/k/v/proj weights are timm's init (same seed as scratch)."""
    gene = learngene.extract("mimetic", tiny_vit())
    torch.manual_seed(5)
    plain = learngene.create_vit(gene.descendant_arch(depth=2)).state_dict()
    mim = gene.expand(depth=2, seed=5).state_dict()
    for key in plain:
        if key.endswith(("attn.qkv.weight", "attn.proj.weight")):
            assert not torch.equal(plain[key], mim[key]), key
        else:
            assert torch.equal(plain[key], mim[key]), key


def test_seeds(child):
    gene, model = child
    again = gene.expand(seed=0).state_dict()
    other = gene.expand(seed=1).state_dict()
    ref = model.state_dict()
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    assert not torch.equal(ref["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])
    assert not torch.equal(ref["blocks.0.attn.proj.weight"], other["blocks.0.attn.proj.weight"])


def test_any_shape_and_round_trip(tmp_path):
    gene = learngene.extract("mimetic", tiny_vit(), alpha1=0.5)
    gene.save(tmp_path / "g")
    loaded = learngene.load(tmp_path / "g")
    assert loaded.config == gene.config and loaded.num_parameters == 0
    model = loaded.expand(depth=2, embed_dim=32, num_heads=4, num_classes=3, seed=0)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 3)
    assert "any depth" in loaded.describe_shapes()


@pytest.mark.parametrize("options,match", [
    (dict(alpha1=-0.1), "alpha1 must be a finite number >= 0"),
    (dict(beta2=float("nan")), "beta2 must be"),
    (dict(beta1="big"), "beta1 must be"),
    (dict(alpha2=True), "alpha2 must be"),
    (dict(gamma=1.0), "has no option 'gamma'"),
])
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        learngene.extract("mimetic", tiny_vit(), **options)
