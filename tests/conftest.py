"""Shared fixtures: tiny timm ViTs (seconds, not minutes), and an isolated data env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import learngene


def tiny_vit(**overrides):
    """A 28x28 grey ViT small enough for unit tests (the vit-mini stem, fewer/narrower blocks)."""
    kwargs = dict(depth=4, embed_dim=48, num_heads=3)
    kwargs.update(overrides)
    return learngene.create_vit("vit-mini", **kwargs)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every tensor with distinct random values, so copies and mix-ups are detectable."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two threads per
    process oversubscribe badly (torchrun subprocesses set their own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ancestry():
    torch.manual_seed(0)
    return randomize_(learngene.create_vit("vit-mini"))


def torchrun_two_processes(script: str | Path, *args: str, timeout: int = 240) -> None:
    """Run ``script`` as ``torchrun --standalone --nproc_per_node=2 script args...`` (gloo on CPU,
    one thread per rank) with this checkout's ``src`` first on the path; fail with its output."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def check_ddp_run_matches(out_dir: Path, single, samples_seen: int) -> list[tuple[dict, dict]]:
    """A 2-rank run written to ``out_dir`` against the 1-process ``single`` result: world size,
    samples seen and every epoch's train loss; returns the (ddp, single) history rows."""
    import json

    summary = json.loads((out_dir / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["samples_seen"] == single.samples_seen == samples_seen
    hist = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    pairs = list(zip(hist, single.history, strict=True))
    for a, b in pairs:
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
    return pairs


class Killed(Exception):
    pass


def zero_extra_loss(kill_at_call: int | None = None):
    """An extra_loss that adds exactly 0 -- and can 'kill the run' at a given step."""
    calls = [0]

    def extra(model, images, labels, logits):
        calls[0] += 1
        if kill_at_call is not None and calls[0] == kill_at_call:
            raise Killed
        return torch.zeros((), device=logits.device)

    return extra
