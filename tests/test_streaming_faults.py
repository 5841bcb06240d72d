"""Training over a streamed image folder: a killed run (SIGKILL, or an exception) resumes to the
weights of an uninterrupted one -- also with another number of DataLoader workers -- and an image
that goes bad mid-run stops it with a clear error and its last checkpoint intact.

This file is also the worker script of its subprocess (``python tests/test_streaming_faults.py ...``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve()
EPOCHS = 3
BATCH = 8
IMAGES_PER_CLASS = 10  # 3 classes, 8 per class in train: 24 images, 3 steps per epoch
STEPS = 3
SIZE = 16


def make_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        for i in range(IMAGES_PER_CLASS):
            path = root / f"class{c}" / f"{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (int(rng.integers(20, 40)), int(rng.integers(20, 40)), 3), dtype=np.uint8)
            pixels[..., c] = np.clip(pixels[..., c].astype(int) + 80, 0, 255)  # a learnable colour cast
            Image.fromarray(pixels).save(path)
    return root


def _data(folder: Path):
    from learngene.data import load_dataset

    spec = f"imagefolder:{folder}?memory=0"
    return (load_dataset(spec, "train", image_size=SIZE, augment=True),
            load_dataset(spec, "test", image_size=SIZE))


def _model(seed: int = 0):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=SIZE, patch_size=8, in_chans=3, embed_dim=16, depth=2, num_heads=2,
                             num_classes=3, drop_rate=0.1, drop_path_rate=0.1)


def _cfg(num_workers: int):
    from learngene.train import TrainConfig

    return TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=3e-3, warmup_epochs=1, seed=7, device="cpu", amp="off",
                       num_workers=num_workers)


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _no_timing(history):
    return [{k: v for k, v in r.items() if k not in ("wall_time", "images_per_s")} for r in history]


def _env() -> dict[str, str]:
    src = str(HERE.parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_sigkilled_streaming_run_resumes_to_the_uninterrupted_weights(tmp_path):
    """SIGKILL a run with 2 persistent workers at the start of epoch 2, resume it with none:
    the weights and metrics of an uninterrupted run with 1 worker. (One torch thread here, by
    conftest, and in the subprocess: the same float sums.)"""
    from learngene.train import fit
    from learngene.train.checkpoint import load_checkpoint

    folder, run, marker = make_folder(tmp_path / "images"), tmp_path / "run", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, str(HERE), "train", str(folder), str(run), str(marker)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"worker exited ({proc.returncode}) early:\n{out[-2000:]}{err[-3000:]}")
        assert time.monotonic() < deadline, "worker never reached epoch 2"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1

    train, test = _data(folder)
    resumed = _model(99)  # everything must come from the checkpoint
    r_res = fit(resumed, train, test, _cfg(0), out_dir=run, resume=True, progress=False)
    ref = _model(0)
    r_ref = fit(ref, *_data(folder), _cfg(1), progress=False)
    _same_weights(ref, resumed)
    assert _no_timing(r_res.history) == _no_timing(r_ref.history)
    assert r_res.steps == EPOCHS * STEPS


def _worker_train(folder: str, run: str, marker: str) -> None:
    """Train with 2 workers; at the first step of epoch 2, touch ``marker`` and wait to be killed."""
    from learngene.train import fit

    calls = [0]

    def extra(model, images, labels, logits):
        calls[0] += 1
        if calls[0] == STEPS + 1:
            Path(marker).touch()
            time.sleep(600)
        return torch.zeros(())

    fit(_model(0), *_data(Path(folder)), _cfg(2), out_dir=run, extra_loss=extra, resume=True, progress=False)


def test_image_going_bad_mid_run_stops_with_the_file_named_and_the_checkpoint_kept(tmp_path):
    from learngene.data import BadImageError
    from learngene.train import fit
    from learngene.train.checkpoint import load_checkpoint

    folder, run = make_folder(tmp_path / "images"), tmp_path / "run"
    train, test = _data(folder)
    victim = Path(train.files[10])  # a train image: epoch 2 reads it, before the eval pass
    original = victim.read_bytes()
    calls = [0]

    def truncate_at_end_of_epoch_1(model, images, labels, logits):
        calls[0] += 1
        if calls[0] == STEPS:  # the workers have read epoch 1; epoch 2 reads the truncated file
            victim.write_bytes(original[: len(original) // 3])
        return torch.zeros(())

    with pytest.raises(BadImageError) as caught:
        fit(_model(0), train, test, _cfg(2), out_dir=run, extra_loss=truncate_at_end_of_epoch_1, progress=False)
    message = str(caught.value)
    assert str(victim) in message and "on_bad='skip'" in message and "\n" not in message
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1  # nothing lost

    victim.write_bytes(original)  # the fix; then resume
    resumed = _model(99)
    r_res = fit(resumed, *_data(folder), _cfg(2), out_dir=run, resume=True, progress=False)
    ref = _model(0)
    r_ref = fit(ref, *_data(folder), _cfg(0), progress=False)
    _same_weights(ref, resumed)
    assert _no_timing(r_res.history) == _no_timing(r_ref.history)


def test_bad_test_image_keeps_the_epochs_checkpoint_and_the_run_resumes(tmp_path):
    """A test-split image that goes bad stops the run in the epoch's evaluation, after its
    training: the epoch's checkpoint is on disk (evaluation left null) and resuming from it
    ends at the uninterrupted run's weights."""
    from learngene.data import BadImageError
    from learngene.train import fit
    from learngene.train.checkpoint import load_checkpoint

    folder, run = make_folder(tmp_path / "images"), tmp_path / "run"
    train, test = _data(folder)
    victim = Path(test.files[1])
    original = victim.read_bytes()
    calls = [0]

    def corrupt_at_end_of_epoch_2(model, images, labels, logits):
        calls[0] += 1
        if calls[0] == 2 * STEPS:  # epoch 2's last step: its evaluation reads the corrupt file
            victim.write_bytes(b"\xff\xd8\xff not a JPEG after all")
        return torch.zeros(())

    with pytest.raises(BadImageError, match=victim.name):
        fit(_model(0), train, test, _cfg(0), out_dir=run, extra_loss=corrupt_at_end_of_epoch_2, progress=False)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * STEPS
    assert [r["eval_acc"] is None for r in ckpt["history"]] == [False, True]  # epoch 2 trained, not evaluated
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    victim.write_bytes(original)
    resumed = _model(99)
    r_res = fit(resumed, *_data(folder), _cfg(0), out_dir=run, resume=True, progress=False)
    ref = _model(0)
    r_ref = fit(ref, *_data(folder), _cfg(0), progress=False)
    _same_weights(ref, resumed)
    got, want = _no_timing(r_res.history), _no_timing(r_ref.history)
    assert got[1]["eval_acc"] is None and got[1]["train_loss"] == want[1]["train_loss"]
    assert got[0] == want[0] and got[2] == want[2]


def test_skip_mode_trains_through_a_bad_image_and_warns(tmp_path):
    from learngene.data import BadImageWarning, load_dataset
    from learngene.train import fit

    folder = make_folder(tmp_path / "images")
    train = load_dataset(f"imagefolder:{folder}?memory=0&on_bad=skip", "train", image_size=SIZE, augment=True)
    bad = Path(train.files[5])
    bad.write_bytes(b"GIF89a not really")
    with pytest.warns(BadImageWarning, match=bad.name):
        result = fit(_model(0), train, None, _cfg(0), progress=False)
    assert result.steps == EPOCHS * STEPS and all(np.isfinite(r["train_loss"]) for r in result.history)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "train":
        torch.set_num_threads(1)
        _worker_train(*args)
