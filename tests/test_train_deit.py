"""DeiT's training recipe in learngene.train: each TrainConfig field off by default (cache keys
unchanged), gradient accumulation = one big batch, repeated augmentation's index lists, Mixup /
CutMix soft targets, RandAugment + random erasing on tensors, model EMA, layer-wise lr decay.

Tiny models on 8x8 synthetic images, CPU, a few seconds each. SIGKILL + resume with the recipe
on: tests/test_faults.py; 2 processes: tests/test_train_ddp.py.
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import TensorDataset

from learngene.errors import ConfigError
from learngene.train import TrainConfig, fit
from learngene.train.augment import BatchAugment, RandomStream, _posterize
from learngene.train.checkpoint import load_checkpoint
from learngene.train.config import DEIT_RECIPE, RECIPE_DEFAULTS
from learngene.train.data import epoch_batches
from learngene.train.distill import train_loss
from learngene.train.optim import build_optimizer

from conftest import Killed, zero_extra_loss

K = 3


class PixelData:
    """A tensor dataset built from 8-bit pixels, normalized with a known mean/std (as learngene's)."""

    def __init__(self, n: int = 64, seed: int = 0, chans: int = 1):
        g = torch.Generator().manual_seed(seed)
        protos = torch.randint(0, 256, (K, chans, 8, 8), generator=torch.Generator().manual_seed(1234))
        self.labels = torch.randint(0, K, (n,), generator=g)
        noise = torch.randint(-40, 41, (n, chans, 8, 8), generator=g)
        self.pixels = (protos[self.labels] + noise).clamp(0, 255)  # [n,C,8,8] integers
        mean, std = (0.5,) * chans, (0.25,) * chans
        self.info = SimpleNamespace(mean=mean, std=std)
        self.images = (self.pixels.float() / 255 - 0.5) / 0.25

    def __len__(self) -> int:
        return len(self.labels)


def model(seed: int = 0, drop: float = 0.0, depth: int = 2) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=depth, num_heads=2,
                             num_classes=K, drop_rate=drop, drop_path_rate=drop)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=2, batch_size=16, lr=3e-3, warmup_epochs=1, seed=7, device="cpu",
                                 amp="off"), **kw})


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ---- config -----------------------------------------------------------------------------------


def test_recipe_fields_default_off_and_out_of_the_cache_key():
    base = TrainConfig()
    assert not set(RECIPE_DEFAULTS) & set(base.key_dict())  # keys recorded before the fields existed hold
    assert set(DEIT_RECIPE) <= set(RECIPE_DEFAULTS) and "accum_steps" in RECIPE_DEFAULTS
    assert all(getattr(base, k) == v for k, v in RECIPE_DEFAULTS.items())
    on = TrainConfig(mixup=0.8, accum_steps=2)
    assert on.key_dict()["mixup"] == 0.8 and on.key_dict()["accum_steps"] == 2 and "cutmix" not in on.key_dict()
    assert on.key_dict() != base.key_dict()
    deit = TrainConfig(**DEIT_RECIPE)
    assert TrainConfig.from_dict(deit.to_dict()) == deit


@pytest.mark.parametrize("kw, field", [
    (dict(mixup=-0.1), "mixup"), (dict(cutmix=float("nan")), "cutmix"), (dict(mixup_prob=1.5), "mixup_prob"),
    (dict(mixup_switch_prob=-1), "mixup_switch_prob"), (dict(mixup_mode="row"), "mixup_mode"),
    (dict(rand_augment="m9"), "rand_augment"), (dict(random_erasing=2), "random_erasing"),
    (dict(repeated_aug=0), "repeated_aug"), (dict(accum_steps=1.5), "accum_steps"),
    (dict(ema_decay=1.0), "ema_decay"), (dict(layer_decay=0), "layer_decay"),
])
def test_recipe_field_validation(kw, field):
    with pytest.raises(ConfigError, match=f"TrainConfig.{field} must be"):
        TrainConfig(**kw)


# ---- gradient accumulation --------------------------------------------------------------------


def test_accumulation_equals_one_big_batch(tmp_path):
    """accum_steps 2 at batch B: the same samples per step, gradient = mean over B -> the same
    weights as accum 1 at batch B (fp32, no dropout), up to summation order."""
    data = PixelData(64)
    one, two, half = model(0), model(0), model(0)
    fit(one, data, None, cfg(), progress=False)
    r2 = fit(two, data, None, cfg(accum_steps=2), out_dir=tmp_path, progress=False)
    r_half = fit(half, data, None, cfg(batch_size=8), progress=False)  # what a wrong split would give
    # Not bitwise: the two half-batch gradients are summed in another order than one batch's, and
    # AdamW's first steps (update ~ lr * g / |g|) carry that ~1e-7 relative rounding to ~1e-5 over
    # 8 steps; a wrong split (batch B/2 steps) is off by ~lr = 3e-3.
    assert max_diff(one.state_dict(), two.state_dict()) < 5e-5
    assert max_diff(one.state_dict(), half.state_dict()) > 1e-3
    assert r2.steps == 2 * (64 // 16) and r_half.steps == 2 * (64 // 8)  # the schedule counts optimizer steps
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["batch"] == {"effective": 16, "world_size": 1, "per_rank": 16, "micro_batch": 8, "accum_steps": 2}


def test_batch_must_split_into_ranks_and_micro_batches():
    with pytest.raises(ConfigError, match=r"batch_size 16 .*divisible by 1 process\(es\) x accum_steps 3"):
        fit(model(0), PixelData(64), None, cfg(accum_steps=3), progress=False)
    with pytest.raises(ConfigError, match="micro-batch, which must be even; it is 5"):
        fit(model(0), PixelData(64), None, cfg(batch_size=10, accum_steps=2, mixup=0.8), progress=False)


# ---- repeated augmentation --------------------------------------------------------------------


def test_repeated_augmentation_index_lists():
    n, B = 50, 12
    one = epoch_batches(n, global_batch=B, seed=3, epoch=1, rank=0, world_size=1, repeats=3)
    assert len(one) == n // B and all(len(b) == B for b in one)  # the epoch keeps its length
    stream = torch.cat(one)
    assert torch.equal(stream.view(-1, 3), stream.view(-1, 3)[:, :1].expand(-1, 3))  # each sample 3x in a row
    assert len(set(stream.tolist())) == len(stream) // 3
    per_rank = [epoch_batches(n, global_batch=B, seed=3, epoch=1, rank=r, world_size=2, repeats=3) for r in (0, 1)]
    for step, batch in enumerate(one):
        r0, r1 = per_rank[0][step], per_rank[1][step]
        assert torch.equal(torch.stack([r0, r1], 1).flatten(), batch)  # RASampler's indices[rank::world]
        assert set(r0.tolist()) & set(r1.tolist())  # copies of a sample land on both ranks
    plain = epoch_batches(n, global_batch=B, seed=3, epoch=1, rank=0, world_size=1)
    assert torch.equal(torch.cat(plain), torch.randperm(n, generator=torch.Generator().manual_seed(3 * 1000003 + 1))[
        : (n // B) * B])  # repeats=1 stays the plain permutation
    other = epoch_batches(n, global_batch=B, seed=3, epoch=2, rank=0, world_size=1, repeats=3)
    assert not torch.equal(torch.cat(other), stream)


# ---- Mixup / CutMix ---------------------------------------------------------------------------


def test_soft_target_loss_is_cross_entropy_against_the_mixed_targets():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, K, generator=g), torch.rand(6, K, generator=g)
    targets = targets / targets.sum(1, keepdim=True)
    want = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(train_loss(logits, targets, label_smoothing=0.1), want)
    hard = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(train_loss(logits, F.one_hot(hard, K).float(), label_smoothing=0.0),
                          F.cross_entropy(logits, hard))


def test_mixup_cutmix_change_training_and_are_seeded():
    data = PixelData(64)
    mix = dict(mixup=0.8, cutmix=1.0)
    a, b, c, plain = model(0), model(0), model(0), model(0)
    np.random.seed(123)
    ra = fit(a, data, None, cfg(**mix), progress=False)
    np.random.seed(456)  # the global numpy state must not matter
    fit(b, data, None, cfg(**mix), progress=False)
    fit(c, data, None, cfg(seed=8, **mix), progress=False)
    fit(plain, data, None, cfg(), progress=False)
    assert max_diff(a.state_dict(), b.state_dict()) == 0
    assert max_diff(a.state_dict(), c.state_dict()) > 1e-4
    assert max_diff(a.state_dict(), plain.state_dict()) > 1e-4
    assert all(np.isfinite(r["train_loss"]) for r in ra.history)
    with pytest.raises(ConfigError, match="loss_fn"):
        fit(model(0), data, None, cfg(**mix), loss_fn=lambda m, x, y: (m(x).mean(), m(x), y), progress=False)


# ---- RandAugment and random erasing on tensors --------------------------------------------------


@pytest.mark.parametrize("chans", [1, 3])
def test_batch_augment_roundtrip_determinism_and_private_streams(chans):
    data = PixelData(8, chans=chans)
    identity = BatchAugment(cfg(rand_augment="rand-n0-m9"), data, image_size=8, in_chans=chans)  # zero ops
    assert torch.allclose(identity(data.images, RandomStream(0)), data.images, atol=1e-5)  # lossless 8-bit trip

    aug = BatchAugment(cfg(rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25), data, image_size=8,
                       in_chans=chans)
    random.seed(1)
    torch.manual_seed(1)
    before = random.getstate(), torch.get_rng_state(), np.random.get_state()[1].copy()
    x1 = aug(data.images, RandomStream(5))
    assert random.getstate() == before[0] and torch.equal(torch.get_rng_state(), before[1])
    assert np.array_equal(np.random.get_state()[1], before[2])  # the global streams are untouched
    x2 = aug(data.images, RandomStream(5))
    x3 = aug(data.images, RandomStream(6))
    assert torch.equal(x1, x2) and not torch.equal(x1, x3) and not torch.equal(x1, data.images)
    assert x1.shape == data.images.shape and x1.dtype == torch.float32


def test_random_erasing_boxes_and_missing_normalisation_error():
    data = PixelData(16)
    erase = BatchAugment(cfg(random_erasing=1.0), data, image_size=8, in_chans=1)
    out = erase(data.images, RandomStream(0))
    changed = (out != data.images).flatten(1).sum(1)  # pixels replaced by noise, per image
    assert (changed > 0).all() and (changed < 64).all()  # a box, not the whole image
    with pytest.raises(ConfigError, match="how the training images were normalized"):
        fit(model(0), TensorDataset(data.images, data.labels), None, cfg(rand_augment="rand-m9"), progress=False)


def test_posterize_keeps_zero_bits_as_black():
    img = Image.fromarray(np.full((4, 4), 200, dtype=np.uint8), "L")
    assert np.asarray(_posterize(img, 0)).max() == 0
    assert np.asarray(_posterize(img, 4)).max() == 192
    assert _posterize(img, 8) is img


# ---- EMA --------------------------------------------------------------------------------------


def test_ema_is_evaluated_saved_and_averages(tmp_path):
    data, test = PixelData(64), PixelData(32, seed=1)
    init = {k: v.clone() for k, v in model(0).state_dict().items()}
    slow = model(0)
    r = fit(slow, data, test, cfg(ema_decay=0.99), out_dir=tmp_path / "slow", progress=False)
    ema = load_file(str(tmp_path / "slow" / "ema.safetensors"))
    # 8 steps at decay 0.99 keep the EMA within ~8% of the way from the initial weights
    moved, ema_moved = max_diff(slow.state_dict(), init), max_diff(ema, init)
    assert 0 < ema_moved < 0.2 * moved
    assert all(rec["eval_acc_ema"] is not None for rec in r.history)
    summary = json.loads((tmp_path / "slow" / "train_summary.json").read_text())
    assert summary["ema"]["weights"] == "ema.safetensors" and summary["ema"]["decay"] == 0.99
    assert summary["ema"]["eval_acc"] == r.history[-1]["eval_acc_ema"]
    assert "ema" in load_checkpoint(tmp_path / "slow" / "checkpoint.pt")

    fast = model(0)
    fit(fast, data, None, cfg(ema_decay=1e-9), out_dir=tmp_path / "fast", progress=False)
    assert max_diff(load_file(str(tmp_path / "fast" / "ema.safetensors")), fast.state_dict()) < 1e-6
    fit(model(0), data, None, cfg(), out_dir=tmp_path / "fast", progress=False)  # no EMA: the stale file goes
    assert not (tmp_path / "fast" / "ema.safetensors").exists()


# ---- layer-wise lr decay ----------------------------------------------------------------------


def test_layer_decay_groups_and_the_lrs_used(tmp_path):
    m = model(0, depth=3)
    opt = build_optimizer(m, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {}
    for g in opt.param_groups:
        for p in g["params"]:
            scale[next(n for n, q in m.named_parameters() if q is p)] = (g["lr_scale"], g["weight_decay"])
    # layers: stem 0, blocks 1..3, final norm + head 4 = L + 1
    assert scale["head.weight"] == (1.0, 0.05) and scale["head.bias"] == (1.0, 0.0)
    assert scale["blocks.2.attn.qkv.weight"] == (0.5, 0.05)
    assert scale["blocks.0.mlp.fc1.weight"] == (0.125, 0.05)
    assert scale["patch_embed.proj.weight"] == (0.0625, 0.05)
    assert scale["pos_embed"] == (0.0625, 0.0) and scale["cls_token"] == (0.0625, 0.0)  # the no-decay rule holds
    with pytest.raises(ConfigError, match="group_matcher"):
        build_optimizer(torch.nn.Sequential(torch.nn.Linear(2, 2)), lr=1.0, weight_decay=0.0, layer_decay=0.5)

    r = fit(model(0), PixelData(64), None, cfg(layer_decay=0.65), out_dir=tmp_path, progress=False)
    groups = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert sorted({g["lr_scale"] for g in groups}) == pytest.approx([0.65 ** i for i in (3, 2, 1, 0)])
    for g in groups:
        assert g["lr"] == pytest.approx(r.history[-1]["lr"] * g["lr_scale"])


# ---- resume -----------------------------------------------------------------------------------


def test_checkpoint_from_before_the_recipe_fields_resumes(tmp_path):
    """A checkpoint whose config lacks the recipe fields (written before they existed) resumes
    under a default TrainConfig, to the weights of an uninterrupted run."""
    data = PixelData(64)
    steps = 64 // 16
    with pytest.raises(Killed):
        fit(model(0), data, None, cfg(epochs=3), out_dir=tmp_path, extra_loss=zero_extra_loss(steps + 2),
            progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in RECIPE_DEFAULTS}
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    resumed, ref = model(9), model(0)
    fit(resumed, data, None, cfg(epochs=3), out_dir=tmp_path, resume=True, progress=False)
    fit(ref, data, None, cfg(epochs=3), progress=False)
    assert max_diff(resumed.state_dict(), ref.state_dict()) == 0
    with pytest.raises(ConfigError, match="mixup: 0.0 -> 0.8"):
        fit(model(0), data, None, cfg(epochs=3, mixup=0.8), out_dir=tmp_path, resume=True, progress=False)


# ---- a dataset with its own per-image transform ------------------------------------------------


def test_dataset_level_transform_from_the_same_fields_turns_the_batch_hook_off(tmp_path):
    from learngene.train.augment import train_transform

    c = cfg(rand_augment="rand-m9-mstd0.5-inc1", random_erasing=1.0)
    transform = train_transform(c, image_size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    names = [type(t).__name__ for t in transform.transforms]
    assert "RandAugment" in names and "RandomErasing" in names
    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (12, 12, 3), dtype=np.uint8), "RGB")
    assert transform(img).shape == (3, 8, 8)

    data = PixelData(64)
    own = TensorDataset(data.images, data.labels)  # no .info: the batch hook could not run
    own.applies_train_transform = True
    fit(model(0), own, None, c, progress=False)  # the loop leaves RandAugment / erasing to the dataset

    # resuming on the other path would draw differently: refused, naming why
    fit(model(0), own, None, c, out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="applies_train_transform changed"):
        fit(model(0), data, None, c, out_dir=tmp_path, resume=True, progress=False)
