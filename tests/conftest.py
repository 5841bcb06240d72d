"""Shared fixtures: tiny timm ViTs (seconds, not minutes), and an isolated data env."""

from __future__ import annotations

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
