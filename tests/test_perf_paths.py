"""The fast paths keep their promises: fresh init only where needed and with timm's
distributions, one copy per weight, exact expansion, mimetic's truncated SVD, a teacher
without autograd, tensor datasets without a DataLoader."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch.utils.data import TensorDataset

import learngene
import learngene.stack.init as stack_init
from learngene.methods._common import fresh_stack
from learngene.methods.mimetic.method import top_singular_triplets
from learngene.stack import from_stack, to_stack
from learngene.stack.init import blank_stack, has_table_init, materialize
from learngene.train import TrainConfig, fit
from learngene.train.data import TensorSource, as_source

from conftest import randomize_, tiny_vit

BASE = dict(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=48, depth=2, num_heads=3)
ARCHS = [  # (name, arch): the variants whose init differs
    ("class token", BASE),
    ("avg pool, no class token, fc_norm", {**BASE, "class_token": False, "global_pool": "avg", "fc_norm": True}),
    ("layer-scale, no qkv bias", {**BASE, "init_values": 0.1, "qkv_bias": False}),
    ("no classifier, RGB", {**BASE, "num_classes": 0, "in_chans": 3}),
    ("CLIP-style pre-norm, no patch bias", {**BASE, "pre_norm": True}),
]


def _rule_holds(key: str, t: torch.Tensor, arch: dict) -> bool:
    """``t`` looks drawn from timm's init for canonical ``key`` (exact for constants, loose for draws)."""
    short = key.split(".", 2)[-1] if key.startswith("blocks.") else key.split(".", 1)[1]
    if short in stack_init.ZERO_BIASES:
        return not t.any()
    if short in stack_init.NORM_WEIGHTS:
        return bool((t == 1).all())
    if short in stack_init.LAYER_SCALES:
        return bool((t == arch["init_values"]).all())
    if short == "cls_token":
        return 0 < t.abs().max() < 1e-5
    if short in ("patch.weight", "patch.bias"):
        bound = 1 / math.sqrt(arch["in_chans"] * arch["patch_size"] ** 2)
        return t.abs().max() <= bound and (t.numel() < 100 or abs(t.std() - bound / math.sqrt(3)) < 0.2 * bound)
    return abs(t.std().item() - 0.02) < 0.004 and abs(t.mean().item()) < 0.004  # trunc_normal(std .02)


def _named(stack) -> dict[str, torch.Tensor]:
    out = {f"stem.{k}": v for k, v in stack.stem.items()}
    out.update({f"blocks.{i}.{k}": v for i, b in enumerate(stack.blocks) for k, v in b.items()})
    out.update({f"head.{k}": v for k, v in stack.head.items()})
    return out


@pytest.mark.parametrize("name,arch", ARCHS)
def test_fresh_stack_has_timm_keys_shapes_and_distributions(name, arch):
    torch.manual_seed(0)
    timm_stack = _named(to_stack(learngene.create_vit(arch)))
    ours = _named(fresh_stack(arch))
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in timm_stack.items()}
    for key, t in ours.items():
        assert t.device.type == "cpu" and t.dtype == torch.float32, key
        assert _rule_holds(key, t, arch), key
        assert _rule_holds(key, timm_stack[key], arch), key  # the checker itself agrees with timm


def test_fresh_values_are_seeded_and_independent_of_what_is_provided():
    torch.manual_seed(3)
    full = _named(fresh_stack(BASE))
    torch.manual_seed(3)
    again = _named(fresh_stack(BASE))
    torch.manual_seed(4)
    other = _named(fresh_stack(BASE))
    assert all(torch.equal(full[k], again[k]) for k in full)
    assert not torch.equal(full["blocks.0.fc1.weight"], other["blocks.0.fc1.weight"])
    # A blank stack with block 1 provided: every other tensor is what the full fresh stack has.
    torch.manual_seed(3)
    blank = blank_stack(BASE)
    blank.blocks[1] = {k: torch.full(v.shape, 7.0) for k, v in blank.blocks[1].items()}
    rebuilt = _named(to_stack(from_stack(blank)))
    assert rebuilt.keys() == full.keys()
    for key in full:
        expected = torch.full_like(full[key], 7.0) if key.startswith("blocks.1.") else full[key]
        assert torch.equal(rebuilt[key], expected), key


def test_fresh_values_do_not_depend_on_the_thread_count():
    """materialize draws tensors on a thread pool; each tensor's own generator fixes its values."""
    threads = torch.get_num_threads()
    try:
        drawn = []
        for n in (1, 3):
            torch.set_num_threads(n)
            torch.manual_seed(5)
            drawn.append(_named(fresh_stack(BASE)))
    finally:
        torch.set_num_threads(threads)
    assert drawn[0].keys() == drawn[1].keys()
    assert all(torch.equal(drawn[0][k], drawn[1][k]) for k in drawn[0])


def test_from_stack_materialises_placeholders_without_touching_the_callers_stack():
    torch.manual_seed(0)
    blank = blank_stack(BASE)
    inherited = {k: torch.randn(v.shape) for k, v in blank.blocks[0].items()}
    blank.blocks[0] = inherited
    model = from_stack(blank)
    assert all(t.device.type == "meta" for t in blank.blocks[1].values())  # still placeholders for the caller
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert not params & {t.untyped_storage().data_ptr() for t in inherited.values()}  # copied, never aliased
    assert torch.equal(model.blocks[0].mlp.fc1.weight, inherited["fc1.weight"])
    assert torch.equal(model.blocks[0].attn.qkv.weight[:48], inherited["q.weight"].reshape(48, 48))
    assert all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())


def test_from_stack_consume_hands_over_owned_tensors_and_copies_the_rest():
    """consume=True: a computed tensor that owns its storage goes into the model as it is; views
    into a larger tensor, protected tensors (a learngene's) and a second use of one storage are
    cloned; the stack is emptied; the weights are those of the default (copying) mode."""
    torch.manual_seed(0)
    blank = blank_stack(BASE)
    owned = {k: torch.randn(v.shape) for k, v in blank.blocks[0].items()}
    big = torch.randn(2, *blank.blocks[1]["fc1.weight"].shape)
    protected = torch.randn(blank.blocks[1]["fc2.weight"].shape)
    blank.blocks[0] = dict(owned)
    blank.blocks[1]["fc1.weight"] = big[1]                # a view into a larger tensor
    blank.blocks[1]["fc2.weight"] = protected             # e.g. a learngene's tensor
    blank.blocks[1]["norm1.weight"] = owned["norm1.weight"]  # one storage used twice
    want = from_stack(blank).state_dict()  # default mode first: it leaves the stack as it was
    model = from_stack(blank, consume=True, protect=[protected])
    got = model.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)  # fresh ones too: the same init_seed
    assert torch.equal(got["blocks.1.mlp.fc1.weight"], big[1]) and torch.equal(got["blocks.1.mlp.fc2.weight"], protected)
    ptr = lambda t: t.untyped_storage().data_ptr()  # noqa: E731
    assert ptr(model.blocks[0].mlp.fc1.weight) == ptr(owned["fc1.weight"])        # handed over, not copied
    assert ptr(model.blocks[0].norm1.weight) == ptr(owned["norm1.weight"])
    assert ptr(model.blocks[1].norm1.weight) != ptr(owned["norm1.weight"])        # the second use is a copy
    assert ptr(model.blocks[1].mlp.fc1.weight) != ptr(big)
    assert ptr(model.blocks[1].mlp.fc2.weight) != ptr(protected)
    assert len({ptr(p) for p in model.parameters()}) == len(list(model.parameters()))  # no two weights share
    assert not blank.stem and not blank.head and all(not b for b in blank.blocks)     # given away


def test_tleg_expansion_without_autograd_is_the_same_arithmetic():
    from learngene.methods._linear_expand import linear_expand

    g = torch.Generator().manual_seed(0)
    a, b = {"w": torch.randn(6, 5, generator=g)}, {"w": torch.randn(6, 5, generator=g)}
    plain = linear_expand(a, b, 7)
    tracked = linear_expand({"w": a["w"].clone().requires_grad_()}, b, 7)
    assert tracked[3]["w"].requires_grad and not plain[3]["w"].requires_grad
    assert all(torch.equal(p["w"], t["w"]) for p, t in zip(plain, tracked))
    assert torch.equal(plain[0]["w"], a["w"]) and len({x["w"].data_ptr() for x in plain}) == 7


def test_growing_initialises_only_what_the_learngene_lacks(monkeypatch):
    """heuristic last-2 of 4 into depth 4: the stem and blocks 2-3 come from the learngene;
    only blocks 0-1 and the head are initialised, and timm's own init never runs on real tensors."""
    gene = learngene.extract("heuristic", randomize_(tiny_vit()), rule="last", k=2)
    drawn, timm_inits = [], []
    real_fresh = stack_init._fresh
    monkeypatch.setattr(stack_init, "_fresh", lambda name, *a: drawn.append(name) or real_fresh(name, *a))
    for module, name in ((timm.models.vision_transformer, "trunc_normal_"), (torch.nn.init, "kaiming_uniform_")):
        def spy(tensor, *a, _real=getattr(module, name), **kw):
            if tensor.device.type != "meta":
                timm_inits.append(tuple(tensor.shape))
            return _real(tensor, *a, **kw)

        monkeypatch.setattr(module, name, spy)
    child = gene.expand(depth=4, seed=0)
    assert not timm_inits
    kid = to_stack(child)
    fresh = {f"blocks.{i}.{k}" for i in (0, 1) for k in kid.blocks[i]} | {f"head.{k}" for k in kid.head}
    assert set(drawn) == fresh
    for i in (2, 3):  # inherited at the same positions (rule "last"), bit for bit
        for key in kid.blocks[i]:
            assert torch.equal(kid.blocks[i][key], gene.tensors[f"blocks.{i}.{key}"]), (i, key)


def test_full_learngene_expands_to_exactly_the_ancestry():
    """pretrain-finetune stores everything: the descendant is the ancestry, bit for bit (as before)."""
    ancestry = randomize_(tiny_vit())
    child = learngene.extract("pretrain-finetune", ancestry).expand(seed=0)
    want = ancestry.state_dict()
    got = child.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert not {p.untyped_storage().data_ptr() for p in child.parameters()} & {
        p.untyped_storage().data_ptr() for p in ancestry.parameters()}


def test_unknown_init_falls_back_to_timms_own_model():
    arch = {**BASE, "weight_init": "jax"}
    assert not has_table_init(arch) and has_table_init(BASE)
    torch.manual_seed(1)
    ours = fresh_stack(arch)
    torch.manual_seed(1)
    theirs = to_stack(learngene.create_vit(arch))
    assert ours.init_seed is None and materialize(ours) == []
    assert all(torch.equal(a, b) for a, b in zip(_named(ours).values(), _named(theirs).values()))


@pytest.mark.parametrize("d,rank,alpha", [(12, 4, 0.7), (24, 8, 0.7), (16, 16, 0.3)])  # alpha 0: test_mimetic.py
def test_mimetic_truncation_is_the_truncated_svd(d, rank, alpha):
    g = torch.Generator().manual_seed(d)
    m = alpha * torch.randn(3, d, d, generator=g) / math.sqrt(d) + 0.7 * torch.eye(d)  # [3, d, d]
    u, s, v = top_singular_triplets(m, rank)
    uu, ss, vh = torch.linalg.svd(m)
    assert u.shape == (3, d, rank) and s.shape == (3, rank) and v.shape == (3, d, rank)
    torch.testing.assert_close(s, ss[:, :rank], atol=1e-5, rtol=1e-5)
    reference = (uu[:, :, :rank] * ss[:, None, :rank]) @ vh[:, :rank]  # best rank-r approximation
    torch.testing.assert_close((u * s[:, None, :]) @ v.transpose(1, 2), reference, atol=1e-5, rtol=1e-5)
    eye = torch.eye(rank).expand(3, rank, rank)
    torch.testing.assert_close(u.transpose(1, 2) @ u, eye, atol=1e-5, rtol=0)


def test_teacher_runs_in_inference_mode_and_is_restored():
    student, teacher = tiny_vit(depth=1), tiny_vit(depth=1)
    teacher.train()
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append((torch.is_grad_enabled(),
                                                                torch.is_inference_mode_enabled(), m.training)))
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
    cfg = TrainConfig(epochs=1, batch_size=8, distill="soft", checkpoint=False, warmup_epochs=0, device="cpu")
    fit(student, data, None, cfg, teacher=teacher, progress=False)
    training_steps = [s for s in seen if s[1]]
    assert len(training_steps) == 2 and all(s == (False, True, False) for s in training_steps)
    assert all(p.grad is None for p in teacher.parameters())
    assert teacher.training  # put back as it was given


def test_tensor_datasets_are_indexed_directly_on_cpu():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(10, 1, 4, 4, generator=g), torch.arange(10)
    source = as_source(TensorDataset(images, labels), pin_memory=False, device=torch.device("cpu"))
    assert isinstance(source, TensorSource) and not source.pin_memory and source.images is images
    idx = torch.tensor([3, 1, 7])
    (x, y), = list(source.batches([idx], None))
    assert torch.equal(x, images[idx]) and torch.equal(y, labels[idx])
