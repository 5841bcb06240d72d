"""Data-parallel plumbing: one code path for 1 process or N processes under torchrun.

Launch ``torchrun --nproc_per_node=N your_script.py`` where the script calls ``fit``; fit
sees WORLD_SIZE > 1 in the environment, joins the process group (gloo on CPU, nccl on
CUDA), wraps the model in DistributedDataParallel, and gives each rank its slice of every
global batch. Rank 0 alone writes files and draws progress bars.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from dataclasses import dataclass

import torch
import torch.distributed as dist

from learngene.errors import ConfigError


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    created_group: bool  # True if fit() initialised the process group (and so tears it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0, *, field: str = "TrainConfig.device") -> torch.device:
    """The torch device a ``device`` option names: "auto" is CUDA (this rank's) when available,
    else the CPU; "cuda" without an index is this rank's GPU. ``field`` names the option in errors."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"{field} {name!r} is not a torch device ({e}); use 'auto', 'cpu' or 'cuda:0'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field} is {name!r} but CUDA is not available here; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


TIMEOUT_ENV = "LEARNGENE_DIST_TIMEOUT"


def collective_timeout() -> datetime.timedelta | None:
    """How long a collective may wait for the other ranks before failing (env
    ``LEARNGENE_DIST_TIMEOUT``, seconds). Unset: torch's default (30 minutes for gloo,
    10 for nccl), generous enough for slow evaluations and checkpoint writes on rank 0.
    A rank that *dies* is noticed at once (its sockets close); the timeout bounds the
    wait for one that hangs."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not (seconds > 0 and seconds < 1e7):
        raise ConfigError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds > 0 (e.g. 600), or unset")
    return datetime.timedelta(seconds=seconds)


def setup(device: str) -> DistInfo:
    """Join the process group if launched by torchrun with WORLD_SIZE > 1; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        created = False
    elif world > 1:
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # env:// reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (torchrun sets them all).
        timeout = collective_timeout()
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                **({"timeout": timeout} if timeout is not None else {}))
        rank = dist.get_rank()
        created = True
    else:
        return DistInfo(0, 1, 0, resolve_device(device, 0), False)
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistInfo(rank, world, local_rank, dev, created)


def teardown(info: DistInfo, *, ok: bool = True) -> None:
    """Leave the process group fit() created. After an error, skip the barrier: the other
    ranks may never reach it (torchrun then tears the whole job down)."""
    if info.created_group and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


class Terminated(Exception):
    """SIGTERM arrived during a data-parallel fit (torchrun stops every rank when one fails)."""


class _SigtermState:
    ignore = False  # set once fit is already failing: let it finish unwinding and report


@contextlib.contextmanager
def sigterm_raises(info: DistInfo):
    """Under DDP, turn SIGTERM into a ``Terminated`` exception for the duration of the block,
    so a rank that torchrun stops (because another rank died) unwinds: temp files are
    removed and fit reports what happened instead of vanishing silently. Once the caller
    sets ``state.ignore`` (it is already failing), further SIGTERMs are ignored until the
    block ends."""
    state = _SigtermState()
    if not info.distributed or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if not state.ignore:
            raise Terminated("received SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a (float64 counters) tensor over ranks, in place; a no-op on one process."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel around ``model``: broadcasts rank 0's weights, averages grads.

    Every trainable parameter must take part in each forward (find_unused_parameters is
    off for speed); freeze parameters a model does not use.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)
