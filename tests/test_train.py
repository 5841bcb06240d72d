"""learngene.train: exact resume, learning, losses, optimizer groups, schedule, config, checkpoints.

All on CPU with a 2-block, 16-dim timm ViT on 8x8 synthetic images (a few seconds in all).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from learngene.errors import ArtifactError, ConfigError
from learngene.train import TrainConfig, TrainResult, evaluate, fit
from learngene.train.checkpoint import load_checkpoint
from learngene.train.distill import hard_distill_loss, soft_distill_loss, train_loss
from learngene.train.optim import lr_at, param_groups

from conftest import Killed, zero_extra_loss

K = 3  # classes


def make_data(n: int = 96, seed: int = 0) -> TensorDataset:
    """A learnable task: each class has a fixed random 8x8 pattern; samples add noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(K, 1, 8, 8, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(0, K, (n,), generator=g)
    images = protos[labels] + 0.8 * torch.randn(n, 1, 8, 8, generator=g)
    return TensorDataset(images, labels)


def make_model(seed: int = 0, drop_path: float = 0.1) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                             num_classes=K, drop_rate=0.1, drop_path_rate=drop_path)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=1, seed=7)
    return TrainConfig(**{**base, **kw})


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def strip_timing(history):
    return [{k: v for k, v in r.items() if k not in ("wall_time", "images_per_s")} for r in history]


# ---- resume --------------------------------------------------------------------------------


def test_resume_after_kill_is_bitwise_exact(tmp_path):
    train, test = make_data(100, seed=0), make_data(40, seed=1)  # 100 % 16 != 0: last batch dropped
    steps = 100 // 16

    ref = make_model(0)
    r_ref = fit(ref, train, test, cfg(), out_dir=tmp_path / "ref", extra_loss=zero_extra_loss(), progress=False)

    # Same run, killed in the middle of epoch 3 (after the epoch-2 checkpoint was written).
    run = tmp_path / "run"
    killed = make_model(0)
    with pytest.raises(Killed):
        fit(killed, train, test, cfg(), out_dir=run, extra_loss=zero_extra_loss(2 * steps + 3), progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    # Resume into a *differently initialised* model: everything must come from the checkpoint.
    resumed = make_model(99)
    r_res = fit(resumed, train, test, cfg(), out_dir=run, extra_loss=zero_extra_loss(), resume=True, progress=False)

    assert_same_weights(ref, resumed)
    assert strip_timing(r_ref.history) == strip_timing(r_res.history)
    assert (r_res.steps, r_res.samples_seen) == (3 * steps, 3 * steps * 16)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert list(lines[0]) == ["epoch", "train_loss", "train_acc", "eval_loss", "eval_acc", "lr", "images_per_s",
                              "samples_seen", "flops_so_far", "wall_time"]
    assert strip_timing(lines) == strip_timing(r_ref.history)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["samples_seen"] == r_res.samples_seen and summary["train_flops"] == r_res.train_flops
    assert (run / "model.safetensors").is_file()

    # Resuming a finished run trains nothing and returns the same result.
    again = make_model(5)
    r_again = fit(again, train, test, cfg(), out_dir=run, resume=True, progress=False)
    assert_same_weights(ref, again)
    assert r_again.steps == r_res.steps


def test_resume_rejects_changed_config(tmp_path):
    fit(make_model(), make_data(32), None, cfg(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="lr"):
        fit(make_model(), make_data(32), None, cfg(epochs=1, lr=1e-2), out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ConfigError, match="steps per epoch"):  # another dataset size: another schedule
        fit(make_model(), make_data(48), None, cfg(epochs=1), out_dir=tmp_path, resume=True, progress=False)


def test_corrupt_checkpoint_is_a_clear_artifact_error(tmp_path):
    fit(make_model(), make_data(32), None, cfg(epochs=1), out_dir=tmp_path, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated: a torn copy
    with pytest.raises(ArtifactError, match="corrupt"):
        fit(make_model(), make_data(32), None, cfg(epochs=1), out_dir=tmp_path, resume=True, progress=False)
    ckpt.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ArtifactError, match=r"checkpoint\.pt"):
        load_checkpoint(ckpt)
    torch.save({"foo": torch.zeros(1)}, ckpt)  # a valid torch file, but not ours
    with pytest.raises(ArtifactError, match="not a learngene training checkpoint"):
        load_checkpoint(ckpt)


# ---- learning, data paths, distillation ----------------------------------------------------


def test_learns_the_synthetic_task():
    train, test = make_data(192, seed=0), make_data(96, seed=1)
    model = make_model(0)
    before = evaluate(model, test)
    r = fit(model, train, test, cfg(epochs=8, batch_size=32), progress=False)
    assert isinstance(r, TrainResult)
    h = r.history
    assert h[-1]["train_loss"] < h[0]["train_loss"] - 0.2
    assert h[-1]["train_acc"] > h[0]["train_acc"]
    assert r.eval_acc > 0.9 > before["acc"] + 0.2
    assert r.eval_loss < before["loss"]
    assert r.eval_acc == evaluate(model, test)["acc"]
    # cost accounting: 3 x forward x samples
    assert r.samples_seen == 8 * (192 // 32) * 32
    assert r.forward_flops_per_sample > 0 and r.train_flops == 3 * r.forward_flops_per_sample * r.samples_seen
    assert h[-1]["flops_so_far"] == r.train_flops and h[-1]["lr"] == pytest.approx(1e-5)


def test_progress_off_a_terminal_is_one_plain_line_per_epoch(capsys):
    """stderr captured (not a terminal, as in a log file or CI): no bar, one line per epoch with
    loss, accuracy, images/s and, where evaluated, eval accuracy; the numbers are a silent run's."""
    train, test = make_data(64), make_data(32, seed=1)
    quiet, shown = make_model(), make_model()
    r_quiet = fit(quiet, train, test, cfg(eval_every=2), progress=False)
    assert capsys.readouterr().err == ""
    r_shown = fit(shown, train, test, cfg(eval_every=2), progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 3 and "\r" not in err, err
    for line, r in zip(lines, r_shown.history):
        assert line.startswith(f"epoch {r['epoch']}/3: loss {r['train_loss']:.4f}, acc {r['train_acc']:.3f}, "), line
        assert f"{r['images_per_s']:.0f} images/s" in line
        assert ("eval acc" in line) == (r["eval_acc"] is not None)  # epochs 2 and 3 (the last) are evaluated
    assert lines[1].endswith(f", eval acc {r_shown.history[1]['eval_acc']:.3f}")
    assert strip_timing(r_shown.history) == strip_timing(r_quiet.history)
    assert_same_weights(quiet, shown)


class ListDataset(Dataset):
    """A plain map-style dataset: forces the DataLoader fallback."""

    def __init__(self, td: TensorDataset):
        self.items = [(x, int(y)) for x, y in zip(*td.tensors)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class Registryish:
    """Mimics learngene.data's pre-tensorized datasets: .images, .labels, augment_batch."""

    def __init__(self, td: TensorDataset):
        self.images, self.labels = td.tensors
        self.calls = 0

    def augment_batch(self, images, generator):
        self.calls += 1
        flip = torch.rand(images.shape[0], generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(-1), images)


def test_dataloader_fallback_matches_tensor_fast_path():
    td = make_data(64)
    a, b = make_model(0), make_model(0)
    fit(a, td, None, cfg(epochs=2), progress=False)
    fit(b, ListDataset(td), None, cfg(epochs=2), progress=False)
    assert_same_weights(a, b)  # same index lists -> identical batches -> identical training


def test_augment_batch_is_used_and_seeded():
    runs = []
    for _ in range(2):
        ds, m = Registryish(make_data(64)), make_model(0)
        fit(m, ds, None, cfg(epochs=2), progress=False)
        runs.append((ds.calls, m))
    assert runs[0][0] == 2 * (64 // 16)
    assert_same_weights(runs[0][1], runs[1][1])
    plain = make_model(0)
    fit(plain, make_data(64), None, cfg(epochs=2), progress=False)
    assert not torch.equal(plain.head.weight, runs[0][1].head.weight)


def test_distillation_runs_and_leaves_teacher_alone():
    train = make_data(64)
    teacher = make_model(3, drop_path=0.0)
    fit(teacher, train, None, cfg(epochs=2), progress=False)
    teacher.train()  # fit must put it in eval mode while distilling, then restore this
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    for mode in ("soft", "hard"):
        r = fit(make_model(0), train, train, cfg(epochs=1, distill=mode, distill_tau=2.0), teacher=teacher,
                progress=False)
        assert math.isfinite(r.train_loss) and r.teacher_flops_per_sample > 0
        assert r.train_flops == (3 * r.forward_flops_per_sample + r.teacher_flops_per_sample) * r.samples_seen
    assert teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    with pytest.raises(ConfigError, match="teacher"):
        fit(make_model(), train, None, cfg(distill="soft"), progress=False)
    with pytest.raises(ConfigError, match="distill"):
        fit(make_model(), train, None, cfg(), teacher=teacher, progress=False)


def test_extra_loss_adds_to_loss():
    td = make_data(64)
    seen = {}

    def const(model, images, labels, logits):
        seen["shapes"] = (tuple(images.shape), tuple(labels.shape), tuple(logits.shape))
        return torch.ones(())  # a constant: adds 1 to the loss, nothing to the gradients

    a, b = make_model(0), make_model(0)
    ra = fit(a, td, None, cfg(epochs=1), progress=False)
    rb = fit(b, td, None, cfg(epochs=1), extra_loss=const, progress=False)
    assert seen["shapes"] == ((16, 1, 8, 8), (16,), (16, K))
    assert rb.train_loss == pytest.approx(ra.train_loss + 1.0)
    assert_same_weights(a, b)


# ---- losses --------------------------------------------------------------------------------


def test_soft_kd_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[0.5, 1.5, 1.0], [2.0, 0.0, -1.0]])
    tau = 2.0
    ps = np.exp(s.numpy() / tau)
    ps /= ps.sum(1, keepdims=True)
    pt = np.exp(t.numpy() / tau)
    pt /= pt.sum(1, keepdims=True)
    kl_sum = float((pt * (np.log(pt) - np.log(ps))).sum())
    expected = kl_sum * tau**2 / s.numel()  # DeiT: sum-reduced KL * tau^2 / numel(student logits)
    assert soft_distill_loss(s, t, tau).item() == pytest.approx(expected, rel=1e-6)
    assert soft_distill_loss(s, s, tau).item() == pytest.approx(0.0, abs=1e-7)


def test_hard_kd_is_ce_on_teacher_argmax():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[0.5, 1.5, 1.0], [2.0, 0.0, -1.0]])  # argmax: 1, 0
    logp = F.log_softmax(s, 1)
    expected = -(logp[0, 1] + logp[1, 0]) / 2
    assert hard_distill_loss(s, t).item() == pytest.approx(expected.item(), rel=1e-6)
    y = torch.tensor([2, 2])
    total = train_loss(s, y, label_smoothing=0.0, distill="hard", teacher_logits=t, alpha=0.25)
    assert total.item() == pytest.approx(0.75 * F.cross_entropy(s, y).item() + 0.25 * expected.item(), rel=1e-6)


# ---- optimizer and schedule ----------------------------------------------------------------


def test_weight_decay_groups():
    model = make_model()
    model.blocks[1].mlp.fc2.weight.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    for p in (model.norm.weight, model.norm.bias, model.blocks[0].attn.qkv.bias, model.pos_embed,
              model.cls_token):
        assert id(p) in ids(no_decay)
    for p in (model.blocks[0].attn.qkv.weight, model.head.weight, model.patch_embed.proj.weight):
        assert id(p) in ids(decay)
    assert id(model.blocks[1].mlp.fc2.weight) not in ids(decay) | ids(no_decay)  # frozen: left out
    # a wrapped timm model keeps its no_weight_decay() names (prefixed)
    wrapped = nn.Sequential(make_model())
    _, nd = param_groups(wrapped, 0.05)
    assert id(wrapped[0].pos_embed) in ids(nd)


def test_schedule_warmup_end_and_final_step():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_steps=10, total_steps=100)
    assert lr_at(0, **kw) == pytest.approx(1e-4)
    assert lr_at(9, **kw) == pytest.approx(1e-3)  # end of warmup: the peak
    assert lr_at(10, **kw) == pytest.approx(1e-3)
    assert lr_at(99, **kw) == pytest.approx(1e-5)  # final step: exactly the floor
    mid = lr_at(10 + 89 // 2, **kw)
    assert 1e-5 < mid < 1e-3
    lrs = [lr_at(s, **kw) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(0, lr=1e-3, min_lr=0.0, warmup_steps=0, total_steps=5) == pytest.approx(1e-3)


def test_max_steps_cuts_the_run_short_and_ends_the_schedule_there(tmp_path):
    train, test = make_data(100, seed=0), make_data(40, seed=1)  # 6 steps per epoch of 16
    full = fit(make_model(0), train, test, cfg(epochs=3), progress=False)
    cut = fit(make_model(0), train, test, cfg(epochs=3, max_steps=8, warmup_epochs=0.5), out_dir=tmp_path,
              progress=False)
    assert full.steps == 18 and cut.steps == 8
    assert cut.samples_seen == 8 * 16 and len(cut.history) == 2  # epoch 2 cut after 2 of its 6 steps
    assert [h["samples_seen"] for h in cut.history] == [96, 128]
    assert cut.history[-1]["eval_acc"] is not None  # the cut epoch is still evaluated
    assert cut.history[-1]["lr"] == pytest.approx(1e-5)  # the cosine ends at the last step run
    assert cut.train_flops == 3 * cut.forward_flops_per_sample * cut.samples_seen
    assert "max_steps" not in cfg().key_dict() and cfg(max_steps=8).key_dict()["max_steps"] == 8
    assert fit(make_model(0), train, None, cfg(epochs=3, max_steps=100), progress=False).steps == 18
    with pytest.raises(ConfigError, match="max_steps"):
        fit(make_model(0), train, None, cfg(epochs=3, max_steps=4, warmup_epochs=1), progress=False)


# ---- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(lr=-1), "lr"),
        (dict(lr="1e-3"), "lr"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(min_lr=1.0), "min_lr"),
        (dict(warmup_epochs=20), "warmup_epochs"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(clip_grad=0), "clip_grad"),
        (dict(distill="medium"), "distill"),
        (dict(distill_alpha=1.5), "distill_alpha"),
        (dict(distill_tau=0), "distill_tau"),
        (dict(amp="fp16"), "amp"),
        (dict(eval_every=0), "eval_every"),
        (dict(seed=-1), "seed"),
        (dict(checkpoint="yes"), "checkpoint"),
        (dict(max_steps=0), "max_steps"),
    ],
)
def test_config_validation(kw, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kw)


def test_config_dict_roundtrip_and_fit_errors(tmp_path):
    c = TrainConfig(epochs=2, clip_grad=None, lr=1)
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="fewer than one batch"):
        fit(make_model(), make_data(8), None, cfg(), progress=False)
    with pytest.raises(ConfigError, match="resume"):
        fit(make_model(), make_data(32), None, cfg(), resume=True, progress=False)
    bad = TensorDataset(torch.randn(32, 1, 8, 8), torch.full((32,), 5))
    with pytest.raises(ConfigError, match="label 5"):
        fit(make_model(), bad, None, cfg(), progress=False)


def test_bf16_autocast_on_cpu():
    r = fit(make_model(), make_data(32), make_data(16, seed=1), cfg(epochs=1, amp="bf16"), progress=False)
    assert math.isfinite(r.train_loss) and math.isfinite(r.eval_loss)


def test_plain_module_and_exact_flops():
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, K))  # any nn.Module mapping images to logits
    r = fit(linear, make_data(64), make_data(32, seed=1), cfg(epochs=3), progress=False)
    assert r.forward_flops_per_sample == 2 * 64 * K  # one [1,64] x [64,K] matmul (+ bias: not counted)
    assert r.history[-1]["train_acc"] > r.history[0]["train_acc"]


def test_flop_counts_are_memoised_by_structure(monkeypatch):
    """A second model of the same structure reuses the count (no counting pass); a model that
    differs only in a setting that changes FLOPs (timm's mlp_ratio changes shapes; the input size
    changes tokens) is counted afresh, and the cached count equals a fresh one."""
    from learngene.train import flops

    monkeypatch.setattr(flops, "_COUNTS", type(flops._COUNTS)())
    calls = []
    real = flops._counted
    monkeypatch.setattr(flops, "_counted", lambda m, x: calls.append(x.shape[0]) or real(m, x))
    vit = lambda seed=0, img=8, mlp_ratio=4.0: (torch.manual_seed(seed), VisionTransformer(  # noqa: E731
        img_size=img, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2, num_classes=K,
        mlp_ratio=mlp_ratio))[1]
    sample = torch.randn(1, 1, 8, 8)
    first = flops.count_forward(vit(0), sample)
    assert len(calls) == 2  # batch 1 and batch 2
    again = flops.count_forward(vit(1), sample)  # other weights, same structure
    assert len(calls) == 2 and again[:2] == first[:2] and again[2].shape == (1, K)
    assert flops.count_forward(vit(mlp_ratio=2.0), sample)[0] < first[0] and len(calls) == 4
    assert flops.count_forward(vit(img=16), torch.randn(1, 1, 16, 16))[0] > first[0] and len(calls) == 6
    flops._COUNTS.clear()
    assert flops.count_forward(vit(0), sample)[:2] == first[:2] and len(calls) == 8


@pytest.mark.slow
def test_compiled_training_matches_eager():
    """TrainConfig.compile runs the training step through torch.compile (inductor) and trains the
    same weights as eager mode, up to float reordering (no dropout, so no RNG difference)."""
    pytest.importorskip("torch._inductor")
    data = make_data(64)
    eager, compiled = make_model(0, drop_path=0.0), make_model(0, drop_path=0.0)
    for dropout in [d for m in (eager, compiled) for d in m.modules() if isinstance(d, nn.Dropout)]:
        dropout.p = 0.0
    start = {k: v.clone() for k, v in eager.state_dict().items()}
    cfg = dict(epochs=1, batch_size=32, lr=3e-3, warmup_epochs=0, device="cpu", checkpoint=False)
    fit(eager, data, None, TrainConfig(**cfg), progress=False)
    result = fit(compiled, data, None, TrainConfig(**cfg, compile=True), progress=False)
    assert result.steps == 2
    for k, v in eager.state_dict().items():
        assert not torch.equal(v, start[k]), k  # trained
        assert torch.allclose(compiled.state_dict()[k], v, atol=1e-5), k
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig(compile="yes")
