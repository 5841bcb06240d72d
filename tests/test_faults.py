"""Faults: NaN/inf losses, SIGKILL at random moments (also mid-checkpoint-write), a killed
artifact save, and a data-parallel rank that dies. Nothing complete is ever lost, nothing
half-written is ever read, and every run can be resumed to the same weights.

This file is also the worker script of its subprocesses (``python tests/test_faults.py MODE ...``).
The kill tests are seeded from LEARNGENE_FAULT_SEED (random if unset; printed on failure).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from learngene.errors import TrainingDivergedError

STEPS = 4  # optimizer steps per epoch (64 samples, batch 16)
EPOCHS = 6
STEP_SLEEP_S = 0.02  # in the kill workers only: makes "a random moment of epoch 2" a real window
HERE = Path(__file__).resolve()


def _data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(protos[y] + 0.8 * torch.randn(n, 1, 8, 8, generator=g), y)


def _model(seed: int = 0, drop: float = 0.1):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)  # dropout + drop-path on: their RNG streams must resume exactly too
    return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                             num_classes=3, drop_rate=drop, drop_path_rate=drop)


def _cfg(**kw):
    from learngene.train import TrainConfig

    # fp32: the DDP runs are compared with one process, and bf16 rounds differently when the
    # batch is split across ranks (resume under bf16: test_precision.py)
    return TrainConfig(**{**dict(epochs=EPOCHS, batch_size=16, lr=3e-3, warmup_epochs=1, seed=7, device="cpu",
                                 amp="off"), **kw})


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _no_timing(history):
    return [{k: v for k, v in r.items() if k not in ("wall_time", "images_per_s")} for r in history]


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---- NaN / inf ----------------------------------------------------------------------------------


def _poisoned(bad_calls: set[int], value: float = float("nan"), log: list | None = None):
    """An extra_loss adding exactly 0, except a non-finite value at the given (1-based) calls."""
    calls = [0]

    def extra(model, images, labels, logits):
        calls[0] += 1
        if log is not None:
            log.append(calls[0])
        return torch.full((), value) if calls[0] in bad_calls else torch.zeros(())

    return extra


def test_nan_loss_stops_keeps_last_good_checkpoint_and_resumes(tmp_path):
    from learngene.train import fit
    from learngene.train.checkpoint import load_checkpoint

    cfg = _cfg(epochs=3)
    ref = _model(0)
    r_ref = fit(ref, _data(), None, cfg, extra_loss=_poisoned(set()), progress=False)

    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError) as e:  # NaN at the 2nd step of epoch 2
        fit(_model(0), _data(), None, cfg, out_dir=run, extra_loss=_poisoned({STEPS + 2}), progress=False)
    msg = str(e.value)
    assert "epoch 2/3" in msg and "nan" in msg and "(epoch 1), is kept" in msg and "lower lr" in msg.lower()
    assert "\n" not in msg
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1  # the NaN epoch was never written
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (run / "model.safetensors").exists() and _temps(run) == []

    # The cause was transient (here: the poisoned extra_loss): resume from epoch 1, same end.
    resumed = _model(5)
    r_res = fit(resumed, _data(), None, cfg, out_dir=run, extra_loss=_poisoned(set()), resume=True, progress=False)
    _same_weights(ref.state_dict(), resumed.state_dict())
    assert _no_timing(r_res.history) == _no_timing(r_ref.history)


def test_inf_loss_stops_within_the_epoch(tmp_path, monkeypatch):
    """With the periodic check due at every step, an inf loss stops the run right after that step."""
    import learngene.train.loop as loop
    from learngene.train import fit

    monkeypatch.setattr(loop, "_POSTFIX_EVERY_S", 0.0)
    seen: list[int] = []
    with pytest.raises(TrainingDivergedError, match=r"epoch 1/3 \(steps 3-3 of 12\).*inf"):
        fit(_model(0), _data(), None, _cfg(epochs=3), out_dir=tmp_path, extra_loss=_poisoned({3}, float("inf"), seen),
            progress=False)
    assert seen == [1, 2, 3]  # no step after the bad one
    assert not (tmp_path / "checkpoint.pt").exists()  # diverged in epoch 1: no checkpoint at all


def test_nonfinite_weights_with_finite_loss_are_caught(tmp_path):
    """An inf gradient at an epoch's last step leaves a finite loss but NaN weights: not checkpointed."""
    from learngene.train import fit
    from learngene.train.checkpoint import load_checkpoint

    calls = [0]

    def inf_grad(model, images, labels, logits):  # value 0, gradient +inf (d sqrt(x)/dx at 0)
        calls[0] += 1
        if calls[0] == 2 * STEPS:
            b = model.head.bias[0]
            return torch.sqrt(b - b.detach())
        return torch.zeros(())

    with pytest.raises(TrainingDivergedError, match="epoch 2/3.*weights became NaN/inf.*epoch 1"):
        fit(_model(0), _data(), None, _cfg(epochs=3), out_dir=tmp_path, extra_loss=inf_grad, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


# ---- SIGKILL -----------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    src = str(HERE.parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE), *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_at_marker(proc: subprocess.Popen, marker: Path, delay: float = 0.0, timeout: float = 120,
                    also: Path | None = None) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after it creates ``marker`` (and ``also``, if given);
    it must not exit first."""
    deadline = time.monotonic() + timeout
    while not (marker.exists() and (also is None or also.exists())):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"worker exited ({proc.returncode}) before the fault point:\n"
                                 f"{out[-2000:]}{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("worker never reached the fault point")
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    marker.unlink()
    if also is not None:
        also.unlink()


def _ckpt_epoch(run: Path) -> int:
    from learngene.train.checkpoint import load_checkpoint

    return load_checkpoint(run / "checkpoint.pt")["epoch"] if (run / "checkpoint.pt").exists() else 0


def test_sigkill_at_random_moments_resumes_to_the_same_weights(tmp_path):
    """Three kills of a training run (at a random moment; mid-checkpoint-bytes; before the
    rename), then a resume: the weights and metrics of an uninterrupted run. The second kill
    also lands in the middle of a Learngene.save, which must leave the old artifact whole."""
    import learngene
    from learngene.train import fit

    seed = int(os.environ.get("LEARNGENE_FAULT_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    why = f"(LEARNGENE_FAULT_SEED={seed})"

    run, marker = tmp_path / "run", tmp_path / "marker"
    # 1. A random moment from the start of epoch 2 to a bit past its end (so sometimes in the
    #    middle of its checkpoint write, or early in epoch 3).
    delay = rng.uniform(0, 1.3 * STEPS * STEP_SLEEP_S)
    _kill_at_marker(_spawn("train", str(run), "time:2", str(marker)), marker, delay)
    e1 = _ckpt_epoch(run)
    assert 1 <= e1 <= 3, why
    # 2. Half-way through writing the next checkpoint's bytes: the torn temp file stays behind,
    #    checkpoint.pt is the previous complete one. A thread of the same process is saving a
    #    learngene over an older one: killed with the new version complete in its temp folder,
    #    about to be swapped in, the old one stays whole.
    gene = tmp_path / "gene"
    _kill_at_marker(_spawn("train", str(run), "ckpt-partial", str(marker), str(gene)), marker,
                    also=tmp_path / "gene-marker")
    assert _ckpt_epoch(run) == e1 and any(n.startswith(".checkpoint.pt.") for n in _temps(run)), why
    assert learngene.load(gene).config["layers"] == [1]  # the complete first version
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".gene.")]  # the new one's temp folder
    # 3. After the next checkpoint is completely written and fsynced, before the rename.
    _kill_at_marker(_spawn("train", str(run), "ckpt-rename", str(marker)), marker)
    assert _ckpt_epoch(run) == e1 and len(_temps(run)) == 1, (why, _temps(run))  # step 2's temp was swept

    # 4. Resume to the end (here, single-threaded like the workers), and an uninterrupted run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = _model(99)  # everything must come from the checkpoint
        r_res = fit(resumed, _data(), None, _cfg(), out_dir=run, extra_loss=_poisoned(set()), resume=True,
                    progress=False)
        ref = _model(0)
        r_ref = fit(ref, _data(), None, _cfg(), extra_loss=_poisoned(set()), progress=False)
    finally:
        torch.set_num_threads(threads)
    _same_weights(ref.state_dict(), resumed.state_dict())
    assert _no_timing(r_res.history) == _no_timing(r_ref.history), why
    assert r_res.steps == EPOCHS * STEPS and r_res.samples_seen == r_ref.samples_seen
    assert _temps(run) == [], why  # the leftovers of the killed writes are gone


def _worker_train(out_dir: str, fault: str, marker: str, gene: str | None = None) -> None:
    """Train with resume=True; stop (sleep until killed) at the fault point after creating marker.
    With ``gene``: first save a learngene there, then, in a thread, save another one that stops
    just before it is swapped in (after creating ``gene-marker`` beside ``marker``)."""
    import threading

    import learngene._io as io_mod
    from learngene.train import fit

    if gene is not None:
        import learngene

        torch.manual_seed(0)
        ancestry = learngene.create_vit("vit-mini", depth=2, embed_dim=24, num_heads=2)
        learngene.extract("heuristic", ancestry, k=1).save(gene)
        new = learngene.extract("heuristic", ancestry, k=2)

        def stalled_exchange(a, b):
            (Path(marker).parent / "gene-marker").touch()
            time.sleep(600)

        io_mod._exchange = stalled_exchange
        threading.Thread(target=new.save, args=(gene,), daemon=True).start()

    def stop_here():
        Path(marker).touch()
        time.sleep(600)

    calls = [0]

    def extra(model, images, labels, logits):
        calls[0] += 1
        if fault == "time:2" and calls[0] == STEPS + 1:  # first step of epoch 2 (a fresh run)
            Path(marker).touch()
        time.sleep(STEP_SLEEP_S)
        return torch.zeros(())

    if fault == "ckpt-partial":
        real_save = torch.save

        def torn_save(obj, f, *a, **kw):
            if isinstance(obj, dict) and obj.get("format") == "learngene-train-checkpoint":
                buf = io.BytesIO()
                real_save(obj, buf, *a, **kw)
                data = buf.getvalue()
                with open(f, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                stop_here()
            real_save(obj, f, *a, **kw)

        io_mod.torch.save = torn_save  # the torch module _io calls; this process only
    elif fault == "ckpt-rename":
        real_replace = os.replace

        def stalled_replace(src, dst):
            if Path(dst).name == "checkpoint.pt":
                stop_here()
            real_replace(src, dst)

        io_mod.os.replace = stalled_replace
    fit(_model(0), _data(), None, _cfg(), out_dir=out_dir, extra_loss=extra, resume=True, progress=False)


# ---- SIGKILL with DeiT's recipe on ----------------------------------------------------------------


class _PixelData:
    """8-bit pixels normalized with a known mean/std (RandAugment needs .info.mean/.std)."""

    def __init__(self, n: int = 64, seed: int = 0):
        from types import SimpleNamespace

        g = torch.Generator().manual_seed(seed)
        protos = torch.randint(0, 256, (3, 1, 8, 8), generator=torch.Generator().manual_seed(1234))
        self.labels = torch.randint(0, 3, (n,), generator=g)
        pixels = (protos[self.labels] + torch.randint(-40, 41, (n, 1, 8, 8), generator=g)).clamp(0, 255)
        self.images = (pixels.float() / 255 - 0.5) / 0.25  # [n,1,8,8]
        self.info = SimpleNamespace(mean=(0.5,), std=(0.25,))


def _deit_cfg():
    # DeiT's recipe at test scale: every stream it adds (Mixup's numpy, RandAugment's python random,
    # random erasing's torch noise) and every state (the EMA, accumulated micro-batches) must resume.
    return _cfg(mixup=0.8, cutmix=1.0, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25, repeated_aug=3,
                ema_decay=0.9, accum_steps=2)


def test_sigkill_with_the_deit_recipe_resumes_to_the_same_weights_and_ema(tmp_path):
    """Mixup + CutMix + RandAugment + random erasing + repeated augmentation + EMA + gradient
    accumulation: killed at a random moment of epoch 2 or 3, resumed, the model and EMA weights
    and the metrics are bit-identical to an uninterrupted run's."""
    from safetensors.torch import load_file

    from learngene.train import fit

    seed = int(os.environ.get("LEARNGENE_FAULT_SEED", random.randrange(10**6)))
    why = f"(LEARNGENE_FAULT_SEED={seed})"
    run, marker = tmp_path / "run", tmp_path / "marker"
    delay = random.Random(seed).uniform(0, 2 * STEPS * 2 * STEP_SLEEP_S)  # 2 micro-batches per step
    _kill_at_marker(_spawn("train-deit", str(run), str(marker)), marker, delay)
    assert 1 <= _ckpt_epoch(run) <= 3, why
    assert not (run / "ema.safetensors").exists(), why  # killed before the end

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = _model(99)
        r_res = fit(resumed, _PixelData(), None, _deit_cfg(), out_dir=run, resume=True, progress=False)
        ref = _model(0)
        r_ref = fit(ref, _PixelData(), None, _deit_cfg(), out_dir=tmp_path / "ref", progress=False)
    finally:
        torch.set_num_threads(threads)
    _same_weights(ref.state_dict(), resumed.state_dict())
    _same_weights(load_file(str(tmp_path / "ref" / "ema.safetensors")), load_file(str(run / "ema.safetensors")))
    assert _no_timing(r_res.history) == _no_timing(r_ref.history), why
    # The EMA is its own weights: not the model's
    assert not torch.equal(load_file(str(run / "ema.safetensors"))["head.weight"], resumed.state_dict()["head.weight"])


def _worker_train_deit(out_dir: str, marker: str) -> None:
    """Train with DeiT's recipe and resume=True; marks the first micro-batch of epoch 2."""
    from learngene.train import fit

    calls = [0]

    def extra(model, images, labels, logits):
        calls[0] += 1
        if calls[0] == 2 * STEPS + 1:  # first micro-batch of epoch 2 (accum_steps 2)
            Path(marker).touch()
        time.sleep(STEP_SLEEP_S)
        return torch.zeros(())

    fit(_model(0), _PixelData(), None, _deit_cfg(), out_dir=out_dir, extra_loss=extra, resume=True, progress=False)


# ---- a killed artifact save: see the second kill above -------------------------------------------


def test_interrupted_two_rename_save_is_pointed_at(tmp_path):
    """Where folders cannot be exchanged atomically (not Linux), a kill between the two renames
    leaves the old folder at .NAME.old-PID: load says so instead of just 'does not exist'."""
    import learngene

    learngene.extract("heuristic", learngene.create_vit("vit-mini", depth=2, embed_dim=24, num_heads=2),
                      k=1).save(tmp_path / "gene")
    os.replace(tmp_path / "gene", tmp_path / ".gene.old-123")
    with pytest.raises(learngene.ArtifactError, match=r"interrupted save.*\.gene\.old-123"):
        learngene.load(tmp_path / "gene")


# ---- a data-parallel rank dies -------------------------------------------------------------------


def _torchrun(run: Path, fault: str, timeout_s: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**_env(), "LEARNGENE_DIST_TIMEOUT": timeout_s}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE),
           "ddp", str(run), fault]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    return proc, time.monotonic() - t0


def test_ddp_rank_death_stops_the_others_with_a_message_then_resumes(tmp_path):
    from safetensors.torch import load_file

    from learngene.train import fit
    from learngene.train.checkpoint import load_checkpoint

    run = tmp_path / "run"
    # Rank 1 SIGKILLs itself in the middle of epoch 2. Rank 0 is waiting in the gradient
    # all-reduce: its socket to rank 1 closes, it raises DistributedError (or, if torchrun's
    # SIGTERM comes first, stops with the same kind of message) and exits 2.
    proc, took = _torchrun(run, "die", "20")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert took < 120, took
    assert "worker: error: rank 0 of 2: " in log and "resume=True" in log, log[-3000:]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert not (run / "model.safetensors").exists() and _temps(run) == []

    # A normal relaunch with resume=True continues from epoch 1 and finishes.
    proc, _ = _torchrun(run, "none", "20")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    ddp_weights = load_file(str(run / "model.safetensors"))
    single = _model(0, drop=0.0)  # no dropout: its masks come from per-rank streams
    fit(single, _data(), None, _cfg(epochs=3), progress=False)
    for k, v in single.state_dict().items():  # the same training, up to all-reduce rounding (test_train_ddp)
        assert (ddp_weights[k] - v).abs().max().item() < 1e-4, k


def test_collective_timeout_env(monkeypatch):
    import datetime

    from learngene.errors import ConfigError
    from learngene.train.distributed import TIMEOUT_ENV, collective_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert collective_timeout() is None  # torch's default
    monkeypatch.setenv(TIMEOUT_ENV, "90")
    assert collective_timeout() == datetime.timedelta(seconds=90)
    for bad in ("0", "-5", "soon", "nan", "inf"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=TIMEOUT_ENV):
            collective_timeout()


def _worker_ddp(out_dir: str, fault: str) -> None:
    """One rank of a 2-process run; prints a LearngeneError the way the CLI does."""
    from learngene.errors import LearngeneError
    from learngene.train import fit

    rank, calls = int(os.environ["RANK"]), [0]

    def extra(model, images, labels, logits):
        calls[0] += 1
        if fault == "die" and rank == 1 and calls[0] == STEPS + 2:  # 2nd step of epoch 2
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(())

    try:
        fit(_model(0, drop=0.0), _data(), None, _cfg(epochs=3), out_dir=out_dir, extra_loss=extra, resume=True,
            progress=False)
    except LearngeneError as e:
        print(f"worker: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"train": _worker_train, "train-deit": _worker_train_deit, "ddp": _worker_ddp}[mode](*rest)
