"""The one training loop: classification, distillation, feature losses, checkpoints, DDP.

Read ``_fit`` top to bottom: setup, resume, then ``for epoch: for step:`` and end-of-epoch
bookkeeping. Everything the loop needs is in this file or a small helper module; there
are no callbacks and no trainer class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn
from tqdm.auto import tqdm

from learngene._io import atomic_save_safetensors, atomic_write_json, atomic_write_text, remove_stale_temps
from learngene.errors import ArtifactError, ConfigError, DistributedError, LearngeneError, TrainingDivergedError
from learngene.train import distributed as D
from learngene.train.augment import BatchAugment, RandomStream, build_mixup
from learngene.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from learngene.train.config import AMP_MODES, RECIPE_DEFAULTS, RESUME_FREE_FIELDS, TrainConfig, TrainResult
from learngene.train.data import as_source, epoch_batches, epoch_copies, eval_batches, order_seed, stream_seed
from learngene.train.distill import train_loss
from learngene.train.flops import count_forward, forward_flops_per_sample
from learngene.train.optim import build_optimizer, lr_at
from learngene.train.precision import (ATTENTION_MODES, ComputePath, attention_kernel, autocast, choose_path,
                                       resolve_compile)

log = logging.getLogger("learngene.train")

ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# loss_fn(model, images, labels) -> (loss, logits [b, K], targets [b]): replaces the classification loss
# (e.g. a contrastive loss); logits/targets only feed the accuracy metric.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
FINAL_MODEL = "model.safetensors"
EMA_MODEL = "ema.safetensors"  # the model EMA's weights (TrainConfig.ema_decay), beside the model's
SUMMARY = "train_summary.json"
_POSTFIX_EVERY_S = 2.0  # progress-bar numbers (and the NaN check) need a device sync; do it this rarely


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One plain progress line per epoch, for logs where no bar is drawn (stderr not a terminal)."""
    line = (f"epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.4f}, acc {record['train_acc']:.3f}, "
            f"{record['images_per_s']:.0f} images/s")
    if record["eval_acc"] is not None:
        line += f", eval acc {record['eval_acc']:.3f}"
    return line


def _check_logits(out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        what = f"a {type(out).__name__}" if not isinstance(out, torch.Tensor) else f"shape {tuple(out.shape)}"
        raise ConfigError(
            f"the model must return logits [batch, classes] as one tensor, but it returned {what}; "
            "wrap it so forward() returns the classification logits"
        )
    return out


def _params_finite(params: list[torch.Tensor]) -> bool:
    """True if every parameter is finite (one host sync; called once per epoch)."""
    if not params:
        return True
    with torch.no_grad():
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def _diverged(*, epoch: int, epochs: int, steps: tuple[int, int], total_steps: int, what: str,
              cfg: TrainConfig, ckpt_path: Path | None) -> TrainingDivergedError:
    if ckpt_path is None or not cfg.checkpoint:
        kept = "nothing of this run was saved (no out_dir, or checkpoint=False)"
    elif epoch == 0:
        kept = "no checkpoint was written (it diverged in the first epoch)"
    else:
        kept = f"the last good checkpoint, {ckpt_path} (epoch {epoch}), is kept"
    clip = "enable clip_grad" if cfg.clip_grad is None else f"lower clip_grad (now {cfg.clip_grad:g})"
    return TrainingDivergedError(
        f"training diverged in epoch {epoch + 1}/{epochs} (steps {steps[0]}-{steps[1]} of {total_steps}): "
        f"{what}; {kept}. Lower lr (now {cfg.lr:g}), {clip}, or check the data and any extra_loss for "
        "NaN/inf, then start over (or resume=True, if the cause was transient)"
    )


_COMM_ERROR_WORDS = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "timed out",
                     "broken pipe", "process group", "processgroup")


def _is_comm_error(e: BaseException) -> bool:
    """A collective failed because another rank died or hung (not a bug in the user's model)."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(e, dist_error):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in text for w in _COMM_ERROR_WORDS)


@torch.no_grad()
def _evaluate_source(model, source, *, batch_size: int, device, precision: str, info: D.DistInfo,
                     loss_fn: LossFn | None = None) -> dict[str, float]:
    """Top-1 accuracy and mean plain cross-entropy (no label smoothing) over every sample
    (with ``loss_fn``: its mean loss and the accuracy of its logits against its targets).
    ``precision``: a resolved amp ("bf16" or "off", ``ComputePath.amp``)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # [loss sum, correct, count]
    with torch.inference_mode(), autocast(precision, device):
        for x, y in eval_batches(source, batch_size=batch_size, rank=info.rank, world_size=info.world_size):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if loss_fn is not None:
                loss, logits, y = loss_fn(model, x, y)
                sums[0] += loss.float() * y.numel()
            else:
                logits = _check_logits(model(x)).float()  # [b, K]
                sums[0] += F.cross_entropy(logits, y, reduction="sum")
            sums[1] += (logits.argmax(1) == y).sum()
            sums[2] += y.numel()
    model.train(was_training)
    loss_sum, correct, n = D.all_reduce_sum(sums, info).tolist()
    return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "n": int(n)}


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 256,
    amp: str = "auto",
    attention: str = "auto",
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``data`` -> {"loss", "acc", "n"}.

    ``data`` is anything ``fit`` accepts. Runs on the model's device unless ``device`` is
    given. Inside an initialised process group each rank evaluates its shard and the
    totals are all-reduced, so every rank gets the same numbers.
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if attention not in ATTENTION_MODES:
        raise ConfigError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if device is None:
        dev = next(model.parameters()).device
    else:
        dev = D.resolve_device(str(device))
        model.to(dev)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = D.DistInfo(r, w, r, dev, False)
    else:
        info = D.DistInfo(0, 1, 0, dev, False)
    source = as_source(data, num_workers=num_workers, pin_memory=dev.type == "cuda", device=dev)
    path = choose_path(amp, attention, dev, model)
    with attention_kernel(model, path.attention):
        return _evaluate_source(model, source, batch_size=batch_size, device=dev, precision=path.amp, info=info)


def _eager_fallback(compile: bool | str):
    """compile="auto" never fails a run that eager would train: on a graph dynamo or inductor
    cannot compile (say, no working C++ toolchain), that graph runs eagerly, with a warning."""
    if compile == "auto":
        return torch._dynamo.config.patch(suppress_errors=True)
    return contextlib.nullcontext()


def fit(
    model: nn.Module,
    train_data: Any,
    eval_data: Any = None,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    teacher: nn.Module | None = None,
    extra_loss: ExtraLoss | None = None,
    loss_fn: LossFn | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` (in place) on ``train_data``; return metrics, history and cost.

    model       any nn.Module mapping images [B,C,H,W] to logits [B,K].
    train_data  a tensor dataset (``.images``/``.labels`` tensors, or TensorDataset) --
                indexed directly -- or any map-style Dataset of (image, label).
    eval_data   same kinds; evaluated every ``config.eval_every`` epochs and at the end.
    teacher     for config.distill "soft"/"hard": run in eval mode without autograd.
    extra_loss  ``extra_loss(model, images, labels, logits) -> scalar tensor``, added to the
                loss each step (feature-level losses). ``model`` is the unwrapped module;
                make the term a mean over the local batch so DDP stays exact.
    loss_fn     ``loss_fn(model, images, labels) -> (loss, logits [b,K], targets [b])`` replaces
                the classification loss (and the eval loss) for other objectives, e.g. CLIP's
                contrastive loss (learngene.clip). ``model`` is the module to call (the DDP
                wrapper under torchrun), its output may be anything; the model/label checks
                are skipped and logits/targets only feed the accuracy metric.
    out_dir     if given (rank 0 writes): checkpoint.pt (each epoch), metrics.jsonl,
                model.safetensors (and ema.safetensors with config.ema_decay) and
                train_summary.json. A fresh run overwrites them.
    resume      continue from out_dir/checkpoint.pt (bitwise-exact at the epoch
                boundary); with no checkpoint there yet, start fresh.
    progress    a tqdm bar per epoch on rank 0; where stderr is not a terminal (a log file, CI),
                one plain line per epoch instead (loss, accuracy, images/s, eval accuracy).

    Under ``torchrun --nproc_per_node=N`` the same call trains data-parallel.
    """
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.distill != "none" and teacher is None:
        raise ConfigError(f"config.distill is {cfg.distill!r} but no teacher was given; pass teacher=<model>")
    if cfg.distill == "none" and teacher is not None:
        raise ConfigError("a teacher was given but config.distill is 'none'; set distill='soft' or 'hard'")
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out_dir (where checkpoint.pt lives)")
    if loss_fn is not None and teacher is not None:
        raise ConfigError("loss_fn replaces the classification/distillation loss: run any teacher inside loss_fn "
                          "instead of passing teacher=")
    info = D.setup(cfg.device)
    teacher_was_training = teacher.training if teacher is not None else False
    model_was_training = model.training
    ok = False
    with D.sigterm_raises(info) as sigterm:
        try:
            path = choose_path(cfg.amp, cfg.attention, info.device, model)
            with attention_kernel(model, path.attention), attention_kernel(teacher or nn.Identity(), path.attention), \
                    _eager_fallback(cfg.compile):
                result = _fit(model, train_data, eval_data, cfg, info=info, path=path,
                              out_dir=None if out_dir is None else Path(out_dir), teacher=teacher,
                              extra_loss=extra_loss, loss_fn=loss_fn, resume=resume, progress=progress)
            ok = True
            return result
        except Exception as e:
            sigterm.ignore = True  # failing already: a SIGTERM now must not cut the report short
            if not info.distributed or isinstance(e, LearngeneError) or not (
                    isinstance(e, D.Terminated) or _is_comm_error(e)):
                raise
            if isinstance(e, D.Terminated):
                what = "stopped by SIGTERM (torchrun stops every rank when one fails, or when it is stopped)"
            else:
                first = re.sub(r"^\[[^\]]*\]\s*", "", (str(e).strip().splitlines() or [type(e).__name__])[0])
                what = f"lost contact with another process ({type(e).__name__}: {first[:160]}): it died or hung"
            where = f" in {out_dir}" if out_dir is not None else " (none: no out_dir was given)"
            raise DistributedError(
                f"rank {info.rank} of {info.world_size}: {what}. Relaunch the same command with resume=True to "
                f"continue from the last complete checkpoint{where}"
            ) from None
        finally:
            model.train(model_was_training)
            if teacher is not None:
                teacher.train(teacher_was_training)
            D.teardown(info, ok=ok)


def _fit(model, train_data, eval_data, cfg: TrainConfig, *, info: D.DistInfo, path: ComputePath,
         out_dir: Path | None, teacher, extra_loss, resume: bool, progress: bool,
         loss_fn: LossFn | None = None) -> TrainResult:
    device, world = info.device, info.world_size
    write = info.is_main and out_dir is not None  # only rank 0 touches files

    # ---- data ------------------------------------------------------------------------
    # batch_size is the global effective batch: each optimizer step, every rank takes per_rank
    # samples as accum_steps micro-batches of local_bs (gradients summed, the loss / accum_steps).
    per_rank, local_bs = cfg.batch_split(world)
    if cfg.mixes and local_bs % 2:
        raise ConfigError(
            f"Mixup/CutMix pair each image with its mirror in the micro-batch, which must be even; it is {local_bs} "
            f"(batch_size {cfg.batch_size} / {world} process(es) / accum_steps {cfg.accum_steps}); change batch_size"
        )
    if cfg.mixes and loss_fn is not None:
        raise ConfigError("mixup/cutmix mix classification targets; with a loss_fn (another objective) set "
                          "mixup=0 and cutmix=0")
    pin = device.type == "cuda"
    train_src = as_source(train_data, num_workers=cfg.num_workers, pin_memory=pin, device=device)
    eval_src = None if eval_data is None else as_source(eval_data, num_workers=cfg.num_workers, pin_memory=pin,
                                                        device=device)
    steps_per_epoch = len(train_src) // cfg.batch_size  # the last incomplete global batch is dropped
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train_data has {len(train_src)} samples, fewer than one batch of {cfg.batch_size}; lower batch_size"
        )
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    run_epochs = -(-total_steps // steps_per_epoch)  # the last one cut short at max_steps
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if warmup_steps > total_steps:
        raise ConfigError(f"the warmup ({warmup_steps} steps) is longer than max_steps ({cfg.max_steps}); "
                          "lower warmup_epochs or raise max_steps")

    # ---- model, teacher, costs ---------------------------------------------------------
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    sample = train_src.sample()  # [1,C,H,W]
    # Eval-mode forwards on the sample: FLOPs per sample and per step (weights some models compute
    # from their parameters every forward), the output's kind and class count.
    fwd_flops, fwd_step_flops, out = count_forward(model, sample)
    num_classes = _check_logits(out).shape[1] if loss_fn is None else None  # loss_fn: any output
    max_label = train_src.max_label()
    if num_classes is not None and max_label is not None and max_label >= num_classes:
        raise ConfigError(f"train_data has label {max_label} but the model outputs {num_classes} classes")
    teacher_flops = forward_flops_per_sample(teacher, sample) if teacher is not None else 0
    flops_per_train_sample = 3 * fwd_flops + teacher_flops  # forward + backward (~2x forward) + teacher forward
    flops_per_rank_step = 3 * fwd_step_flops  # every rank computes the weights (forward + backward) each step

    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    # ---- DeiT's recipe (each part off by default) ----------------------------------------
    mixup = build_mixup(cfg, num_classes) if cfg.mixes else None
    batch_aug = None
    in_dataset = bool(getattr(train_data, "applies_train_transform", False))
    # where RandAugment / erasing draw (None: neither is on), checked on resume
    augment_in_dataset = in_dataset if (cfg.rand_augment is not None or cfg.random_erasing) else None
    if not in_dataset:  # else the dataset's own transform does it
        batch_aug = BatchAugment(cfg, train_data, image_size=min(sample.shape[-2:]), in_chans=sample.shape[1])
        batch_aug = batch_aug if batch_aug.enabled else None

    # ---- resume ------------------------------------------------------------------------
    start_epoch, step, samples_seen, wall_before, history = 0, 0, 0, 0.0, []
    ema_state = None  # the EMA's weights from the checkpoint
    ckpt_path = out_dir / CHECKPOINT if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        saved = {**RECIPE_DEFAULTS, **ckpt["config"]}  # checkpoints from before the recipe fields: all off
        changed = [k for k, v in cfg.to_dict().items() if k not in RESUME_FREE_FIELDS and saved.get(k) != v]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
            raise ConfigError(
                f"cannot resume {ckpt_path}: the config changed ({diff}); resume with the same config "
                "or start over in a fresh out_dir"
            )
        if None not in (ckpt.get("augment_in_dataset"), augment_in_dataset) \
                and ckpt["augment_in_dataset"] != augment_in_dataset:
            where = {True: "the dataset's per-image transform", False: "the loop's batch hook"}
            raise ConfigError(
                f"cannot resume {ckpt_path}: its RandAugment / erasing ran in {where[ckpt['augment_in_dataset']]}, "
                f"this run's in {where[augment_in_dataset]} (applies_train_transform changed), so the draws would "
                "differ; load the data the same way or start over in a fresh out_dir"
            )
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if cfg.ema_decay is not None:
                ema_state = ckpt["ema"]
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise ArtifactError(
                f"checkpoint {ckpt_path} does not fit this model/optimizer ({first}); "
                "resume with the same model architecture, or delete the checkpoint"
            ) from None
        if ckpt.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
            raise ConfigError(
                f"cannot resume {ckpt_path}: it has {ckpt['steps_per_epoch']} steps per epoch, this train_data "
                f"gives {steps_per_epoch}; resume with the same dataset, or start over in a fresh out_dir"
            )
        restore_rng(ckpt["rng"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        samples_seen, wall_before = int(ckpt["samples_seen"]), float(ckpt["wall_time_s"])
        history = list(ckpt["history"])
        log.info("resumed from %s at epoch %d (step %d)", ckpt_path, start_epoch, step)
    elif resume:
        log.info("resume=True but %s does not exist yet; starting fresh", ckpt_path)
    elif write and ckpt_path.exists():
        ckpt_path.unlink()  # a fresh run: a stale checkpoint must not be resumed later
    if write:  # temp files of writes cut short by a kill: never read, but don't let them pile up
        remove_stale_temps(out_dir, (CHECKPOINT, METRICS, FINAL_MODEL, EMA_MODEL, SUMMARY))
    if write:  # metrics.jsonl always mirrors the history we continue from (empty when fresh)
        atomic_write_text(out_dir / METRICS, "".join(json.dumps(r) + "\n" for r in history))

    # The EMA follows the unwrapped model's weights after every optimizer step (timm ModelEmaV3,
    # constant decay as DeiT's ModelEma; no warmup), on the model's device. Copied before the DDP
    # wrap (timm's advice: no DDP hooks in the copy), filled after it (the wrap broadcasts rank 0's
    # weights), so every rank starts from the same weights.
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay is not None else None
    ddp = D.wrap_ddp(model, info) if info.distributed else model  # DDP averages grads over ranks
    ddp_module = ddp  # its no_sync() skips the all-reduce of micro-batches before the last
    if ema is not None:
        ema.module.load_state_dict(ema_state if ema_state is not None else model.state_dict())
    use_compile, why = resolve_compile(cfg.compile, device, total_steps - step)
    path = dataclasses.replace(path, compile=use_compile, compile_reason=why)
    if use_compile:  # the training step's module only; the parameters are shared with `model`
        # Static shapes: every training batch has the same shape (the last incomplete one is
        # dropped), and with dynamo's automatic dynamic shapes the CPU step ran 3x slower than eager.
        ddp = torch.compile(ddp, dynamic=False)

    # ---- the loop ----------------------------------------------------------------------
    seg_start = time.perf_counter()
    for epoch in range(start_epoch, run_epochs):
        # Every random stream of the epoch is a function of (seed, epoch[, rank]) alone, so a
        # run resumed at this boundary replays exactly what an uninterrupted run would do.
        torch.manual_seed(stream_seed(cfg.seed, epoch, 2, info.rank))  # dropout / drop-path (CPU + CUDA)
        np.random.seed(stream_seed(cfg.seed, epoch, 3, info.rank) % 2**32)
        random.seed(stream_seed(cfg.seed, epoch, 4, info.rank))
        aug_gen = torch.Generator().manual_seed(stream_seed(cfg.seed, epoch, 1, info.rank))
        mix_stream = RandomStream(stream_seed(cfg.seed, epoch, 6, info.rank)) if mixup is not None else None
        aug_stream = RandomStream(stream_seed(cfg.seed, epoch, 7, info.rank)) if batch_aug is not None else None
        batches = epoch_batches(len(train_src), global_batch=cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                rank=info.rank, world_size=world, repeats=cfg.repeated_aug)  # steps x [per_rank]
        copies = epoch_copies(len(train_src), global_batch=cfg.batch_size, rank=info.rank, world_size=world,
                              repeats=cfg.repeated_aug)  # None, or which copy each element is
        if cfg.accum_steps > 1:  # steps_per_epoch * accum_steps micro-batches, in order
            batches = [micro for idx in batches for micro in idx.split(local_bs)]
            copies = copies and [micro for c in copies for micro in c.split(local_bs)]

        model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # [loss * b, correct, count], no syncs
        epoch_steps = min(steps_per_epoch, total_steps - step)
        bar = tqdm(total=epoch_steps, desc=f"epoch {epoch + 1}/{run_epochs}", unit="step",
                   disable=None if (progress and info.is_main) else True, mininterval=1.0, leave=True,
                   dynamic_ncols=True)
        plain_lines = bool(progress and info.is_main and bar.disable)  # tqdm hides itself off a terminal
        t0 = last_check = time.perf_counter()
        checked_step = step  # steps up to here are known to have finite losses
        for micro, (images, labels) in enumerate(train_src.batches(batches, aug_gen,
                                                                   stream_seed(cfg.seed, epoch, 5, info.rank),
                                                                   copies=copies)):
            if batch_aug is not None:  # RandAugment / random erasing, per image on the CPU
                images = batch_aug(images, aug_stream)
                images = images.pin_memory() if pin else images  # keeps the copy below asynchronous
            images = images.to(device, non_blocking=True)  # [b,C,H,W]
            labels = labels.to(device, non_blocking=True)  # [b]
            first, last = micro % cfg.accum_steps == 0, (micro + 1) % cfg.accum_steps == 0
            if first:
                lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=warmup_steps, total_steps=total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # lr_scale: layer-wise lr decay
            targets = labels  # [b] int64, or [b, K] soft targets after Mixup/CutMix
            if mixup is not None:
                with mix_stream.active():
                    images, targets = mixup(images, labels)  # mixes images in place

            # Under DDP, micro-batches before the last only accumulate locally; the last all-reduces.
            sync = contextlib.nullcontext() if last or not info.distributed else ddp_module.no_sync()
            with sync:
                with autocast(path.amp, device):
                    if loss_fn is not None:  # another objective: its loss, and logits/targets for the metric
                        loss, logits, labels = loss_fn(ddp, images, labels)
                    else:
                        logits = _check_logits(ddp(images))  # [b, K]
                        teacher_logits = None
                        if teacher is not None:
                            with torch.inference_mode():
                                t = teacher(images)
                            # clone outside inference mode: inference tensors cannot be saved for backward
                            teacher_logits = _check_logits(t).clone()
                        loss = train_loss(logits, targets, label_smoothing=cfg.label_smoothing, distill=cfg.distill,
                                          teacher_logits=teacher_logits, alpha=cfg.distill_alpha,
                                          tau=cfg.distill_tau)
                    if extra_loss is not None:
                        loss = loss + extra_loss(model, images, labels, logits)

                if first:
                    optimizer.zero_grad(set_to_none=True)
                if cfg.accum_steps == 1:
                    loss.backward()  # under DDP: gradients all-reduced (averaged) here
                else:  # the step's gradient is the mean over its accum_steps micro-batches
                    (loss / cfg.accum_steps).backward()
            if last:
                if cfg.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                optimizer.step()
                step += 1
                if ema is not None:
                    ema.update(model)

            with torch.no_grad():  # running sums stay on the device: no host sync per step
                hit = labels if mixup is None else targets.argmax(1)  # mixed: the dominant class
                sums[0] += loss.detach() * labels.numel()
                sums[1] += (logits.detach().argmax(1) == hit).sum()
                sums[2] += labels.numel()
            if not last:
                continue
            bar.update(1)
            if step == total_steps:  # max_steps reached mid-epoch
                break
            if (not bar.disable or not info.distributed) and time.perf_counter() - last_check >= _POSTFIX_EVERY_S:
                last_check = time.perf_counter()
                s = sums.tolist()  # local-rank numbers; a sync every couple of seconds only
                # Stop early on a non-finite loss. Not under DDP: the ranks check at different
                # steps, so they all stop together at the epoch end (all-reduced sums) instead.
                if not info.distributed:
                    if not math.isfinite(s[0]):
                        bar.close()
                        raise _diverged(epoch=epoch, epochs=cfg.epochs, steps=(checked_step + 1, step),
                                        total_steps=total_steps, what=f"the train loss became {s[0] / s[2]}",
                                        cfg=cfg, ckpt_path=ckpt_path)
                    checked_step = step
                if not bar.disable:
                    bar.set_postfix(loss=f"{s[0] / s[2]:.4f}", acc=f"{s[1] / s[2]:.3f}",
                                    img_s=f"{s[2] * world / (last_check - t0):.0f}", refresh=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        bar.close()

        loss_sum, correct, count = D.all_reduce_sum(sums, info).tolist()
        # Before anything of this epoch is evaluated or written: a NaN/inf loss, or weights that
        # went non-finite (an inf gradient at the last step), keeps the last good checkpoint.
        bad = None if math.isfinite(loss_sum) else f"the train loss became {loss_sum / count}"
        if bad is None and not _params_finite(params):
            bad = "the weights became NaN/inf (a non-finite gradient)"
        if bad is not None:
            raise _diverged(epoch=epoch, epochs=cfg.epochs, steps=(checked_step + 1, step), total_steps=total_steps,
                            what=bad, cfg=cfg, ckpt_path=ckpt_path)
        samples_seen += epoch_steps * cfg.batch_size
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / count,
            "train_acc": correct / count,
            "eval_loss": None,
            "eval_acc": None,
            "lr": lr,  # of the epoch's last step
            "images_per_s": count / train_time,  # training only, all ranks together
            "samples_seen": samples_seen,
            "flops_so_far": flops_per_train_sample * samples_seen + flops_per_rank_step * step * world,
            "wall_time": None,
        }

        def save_epoch() -> None:
            if cfg.checkpoint:
                save_checkpoint(ckpt_path, {
                    "epoch": epoch + 1, "step": step, "samples_seen": samples_seen,
                    "wall_time_s": record["wall_time"], "world_size": world, "steps_per_epoch": steps_per_epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    **({"ema": ema.module.state_dict()} if ema is not None else {}),
                    "config": cfg.to_dict(), "history": history, "augment_in_dataset": augment_in_dataset,
                    "rng": capture_rng({"augment": aug_gen}, data_order_seed=order_seed(cfg.seed, epoch + 1)),
                })
            atomic_write_text(out_dir / METRICS, "".join(json.dumps(r) + "\n" for r in history))

        if eval_src is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == run_epochs):
            try:
                ev = _evaluate_source(model, eval_src, batch_size=local_bs, device=device, precision=path.amp,
                                      info=info, loss_fn=loss_fn)
                record["eval_loss"], record["eval_acc"] = ev["loss"], ev["acc"]
                if ema is not None:
                    ev = _evaluate_source(ema.module, eval_src, batch_size=local_bs, device=device,
                                          precision=path.amp, info=info, loss_fn=loss_fn)
                    record["eval_loss_ema"], record["eval_acc_ema"] = ev["loss"], ev["acc"]
            except BaseException:
                # An evaluation that fails (a bad test image, an interrupt) keeps the epoch's
                # training: its checkpoint is written with the epoch's evaluation left null,
                # and a resumed run goes on from the next epoch.
                if write:
                    record["eval_loss"] = record["eval_acc"] = None
                    record.pop("eval_loss_ema", None)
                    record.pop("eval_acc_ema", None)
                    record["wall_time"] = wall_before + (time.perf_counter() - seg_start)
                    history.append(record)
                    save_epoch()
                raise
        record["wall_time"] = wall_before + (time.perf_counter() - seg_start)
        history.append(record)
        if plain_lines:
            print(_epoch_line(record, run_epochs), file=sys.stderr, flush=True)
        log.info("epoch %d/%d %s", epoch + 1, run_epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)))

        if write:  # the checkpoint first: metrics.jsonl never runs ahead of it for long
            save_epoch()

    # ---- result ------------------------------------------------------------------------
    last = history[-1] if history else {}
    result = TrainResult(
        train_loss=last.get("train_loss", float("nan")),
        train_acc=last.get("train_acc", float("nan")),
        eval_loss=next((r["eval_loss"] for r in reversed(history) if r.get("eval_loss") is not None), None),
        eval_acc=next((r["eval_acc"] for r in reversed(history) if r.get("eval_acc") is not None), None),
        history=history,
        steps=step,
        samples_seen=samples_seen,
        wall_time_s=last.get("wall_time", wall_before),
        forward_flops_per_sample=fwd_flops,
        forward_flops_per_step=fwd_step_flops,
        teacher_flops_per_sample=teacher_flops,
        train_flops=flops_per_train_sample * samples_seen + flops_per_rank_step * step * world,
        out_dir=None if out_dir is None else str(out_dir),
        compute_path=path.to_dict(),
    )
    if write:
        atomic_save_safetensors(out_dir / FINAL_MODEL, model.state_dict(),
                                metadata={"producer": "learngene.train", "epochs": str(len(history))})
        summary = {k: v for k, v in result.to_dict().items() if k != "history"}
        if ema is not None:
            atomic_save_safetensors(out_dir / EMA_MODEL, ema.module.state_dict(),
                                    metadata={"producer": "learngene.train", "epochs": str(len(history)),
                                              "ema_decay": repr(cfg.ema_decay)})
            summary["ema"] = {"weights": EMA_MODEL, "decay": cfg.ema_decay,
                              "eval_loss": next((r["eval_loss_ema"] for r in reversed(history)
                                                 if r.get("eval_loss_ema") is not None), None),
                              "eval_acc": next((r["eval_acc_ema"] for r in reversed(history)
                                                if r.get("eval_acc_ema") is not None), None)}
        elif (out_dir / EMA_MODEL).exists():
            (out_dir / EMA_MODEL).unlink()  # an earlier run's EMA in this folder: not this model's
        summary.update(config=cfg.to_dict(), world_size=world, device=str(device), torch=torch.__version__,
                       batch={"effective": cfg.batch_size, "world_size": world, "per_rank": per_rank,
                              "micro_batch": local_bs, "accum_steps": cfg.accum_steps})
        atomic_write_json(out_dir / SUMMARY, summary)
    return result
