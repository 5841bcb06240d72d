"""The compute path: the rule behind amp="auto" / attention="auto", forcing either, and what fit records."""

from __future__ import annotations

import json

import pytest
import torch

from learngene.train import TrainConfig, fit
from learngene.train import precision
from learngene.train.precision import attention_kernel, choose_path

from conftest import Killed, tiny_vit, zero_extra_loss

CPU, CUDA = torch.device("cpu"), torch.device("cuda")

# (device, CPU has native bf16, amp, attention) -> (precision, kernel)
RULE = [
    (CUDA, False, "auto", "auto", "bf16", "fused"),
    (CPU, True, "auto", "auto", "bf16", "explicit"),
    (CPU, False, "auto", "auto", "off", "explicit"),   # emulated bf16 is slower than fp32: never chosen
    (CPU, True, "off", "auto", "off", "explicit"),
    (CPU, False, "bf16", "fused", "bf16", "fused"),     # forced, even where slow
    (CUDA, False, "off", "explicit", "off", "explicit"),
]


@pytest.mark.parametrize("device,native,amp,attention,want_amp,want_kernel", RULE)
def test_the_rule(device, native, amp, attention, want_amp, want_kernel, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    path = choose_path(amp, attention, device)
    assert (path.amp, path.attention) == (want_amp, want_kernel)
    assert ("forced" in path.reason) == (amp != "auto" or attention != "auto")


def test_attention_kernel_switches_every_attention_module_and_restores_it():
    model = tiny_vit()
    before = [b.attn.fused_attn for b in model.blocks]
    with attention_kernel(model, "explicit"):
        assert not any(b.attn.fused_attn for b in model.blocks)
    with attention_kernel(model, "fused"):
        assert all(b.attn.fused_attn for b in model.blocks)
    assert [b.attn.fused_attn for b in model.blocks] == before


def test_both_kernels_compute_the_same_function():
    model = tiny_vit().eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad(), attention_kernel(model, "fused"):
        fused = model(x)
    with torch.no_grad(), attention_kernel(model, "explicit"):
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("amp,attention", [("off", "fused"), ("bf16", "explicit")])
def test_fit_runs_the_forced_path_and_records_it(amp, attention, tmp_path):
    model = tiny_vit(depth=1)
    seen = []
    # training forwards only (the FLOP count runs one eval-mode forward with its own settings)
    model.blocks[0].attn.register_forward_pre_hook(lambda m, args: seen.append(m.fused_attn) if m.training else None)
    matmul_dtypes = set()
    model.head.register_forward_hook(lambda m, args, out: matmul_dtypes.add(out.dtype) if m.training else None)
    cfg = TrainConfig(epochs=1, batch_size=32, amp=amp, attention=attention, checkpoint=False)
    result = fit(model, _data(), config=cfg, out_dir=tmp_path, progress=False)
    assert set(seen) == {attention == "fused"}
    assert matmul_dtypes == {torch.bfloat16 if amp == "bf16" else torch.float32}
    assert result.compute_path["amp"] == amp and result.compute_path["attention"] == attention
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["compute_path"] == result.compute_path
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert model.blocks[0].attn.fused_attn is not None and seen  # the kernel flag is restored after fit


def test_cache_keys_name_the_resolved_cpu_precision(monkeypatch):
    """Runs keyed before the rule existed were fp32 on CPU under amp="auto": a bf16 run must not reuse them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert TrainConfig().key_dict()["amp"] == "auto"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert TrainConfig().key_dict()["amp"] == "bf16"
    assert TrainConfig(amp="off").key_dict()["amp"] == "off"
    assert "attention" not in TrainConfig(attention="fused").key_dict()  # speed only


def test_bf16_training_resumes_bit_exactly(tmp_path):
    """Checkpoints hold the fp32 master weights: stopping after epoch 1 and resuming gives the
    uninterrupted bf16 run's weights exactly."""
    cfg = TrainConfig(epochs=2, batch_size=16, amp="bf16", attention="explicit", warmup_epochs=1)
    torch.manual_seed(0)
    whole = tiny_vit(depth=1)
    fit(whole, _data(), config=cfg, out_dir=tmp_path / "whole", progress=False)
    torch.manual_seed(0)
    cut = tiny_vit(depth=1)
    with pytest.raises(Killed):  # cut at the first step of epoch 2 (64 images / 16 = 4 steps an epoch)
        fit(cut, _data(), config=cfg, out_dir=tmp_path / "cut", progress=False, extra_loss=zero_extra_loss(64 // 16 + 1))
    torch.manual_seed(1)
    resumed = tiny_vit(depth=1)  # other initial weights: everything must come from the checkpoint
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in ckpt["model"].values())
    fit(resumed, _data(), config=cfg, out_dir=tmp_path / "cut", progress=False, resume=True)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_on_cuda_small_vits_stay_fp32():
    """Launch-bound models lose with bf16 on a GPU (vit-mini: fp32 2x the images/s on an H200)."""
    import learngene

    small = learngene.create_vit("vit-mini")                                        # 96 x 17
    large = learngene.create_vit("deit-tiny", depth=1)                              # 192 x 197
    assert choose_path("auto", "auto", CUDA, small).amp == "off"
    assert choose_path("auto", "auto", CUDA, large).amp == "bf16"
    assert choose_path("auto", "auto", CUDA, None).amp == "bf16"                    # not a timm ViT: bf16
    assert choose_path("bf16", "auto", CUDA, small).amp == "bf16"                   # forcing wins
    assert precision.width_x_tokens(small) == 96 * 17 and precision.width_x_tokens(torch.nn.Linear(2, 2)) is None


# (compile, steps left, a C++ compiler for inductor here) -> compiles?
COMPILE_RULE = [
    ("auto", precision.COMPILE_AUTO_MIN_STEPS, True, True),
    ("auto", precision.COMPILE_AUTO_MIN_STEPS - 1, True, False),  # too short to pay back the compilation
    ("auto", 10 * precision.COMPILE_AUTO_MIN_STEPS, False, False),  # no C++ compiler: stays eager
    (True, 1, False, True),                                        # forced
    (False, 10 * precision.COMPILE_AUTO_MIN_STEPS, True, False),   # forced
]


@pytest.mark.parametrize("compile,steps_left,inductor,want", COMPILE_RULE)
def test_the_compile_rule(compile, steps_left, inductor, want, monkeypatch):
    monkeypatch.setattr(precision, "cpp_compiler_available", lambda: inductor)
    compiles, reason = precision.resolve_compile(compile, CPU, steps_left)
    assert compiles is want
    assert ("forced" in reason) == (compile != "auto")
    if compile == "auto" and not inductor:
        assert "C++ compiler" in reason


def test_compile_auto_stays_eager_on_cuda(monkeypatch):
    monkeypatch.setattr(precision, "cpp_compiler_available", lambda: True)
    compiles, reason = precision.resolve_compile("auto", CUDA, 100 * precision.COMPILE_AUTO_MIN_STEPS)
    assert not compiles and "CUDA" in reason


def test_compile_auto_keeps_a_short_run_eager_and_records_why(tmp_path, monkeypatch):
    model = tiny_vit(depth=1)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    cfg = TrainConfig(epochs=1, batch_size=32, compile="auto", checkpoint=False)
    result = fit(model, _data(), config=cfg, out_dir=tmp_path, progress=False)
    assert compiled == [] and result.compute_path["compile"] is False
    assert "2 steps left" in result.compute_path["compile_reason"]
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["compute_path"]["compile_reason"] == result.compute_path["compile_reason"]
    # a run long enough to pay back compiles (torch.compile stubbed: the decision, not inductor, is tested)
    monkeypatch.setattr(precision, "COMPILE_AUTO_MIN_STEPS", 2)
    monkeypatch.setattr(precision, "cpp_compiler_available", lambda: True)
    model = tiny_vit(depth=1)
    suppressed = []  # auto never fails a run eager would train: dynamo falls back to eager per graph
    model.register_forward_pre_hook(lambda m, args: suppressed.append(torch._dynamo.config.suppress_errors))
    result = fit(model, _data(), config=cfg, progress=False)
    assert len(compiled) == 1 and result.compute_path["compile"] is True
    assert suppressed and all(suppressed) and not torch._dynamo.config.suppress_errors  # restored after fit
