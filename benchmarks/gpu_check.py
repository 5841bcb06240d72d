"""GPU verification in one run: fit's CUDA paths, data-parallel fit over NCCL, training speed.

Parts (``--parts`` picks some; each writes its JSON into ``--out-dir`` as soon as it ends,
and a failing part records its error and the run goes on):

- ``matmul``   machine facts (GPU, torch / CUDA / cuDNN / NCCL versions) and the measured
               8192^3 matmul peaks in bf16, tf32 and fp32: the denominators of MFU.
               -> gpu-matmul.json
- ``fit``      ``learngene.train.fit`` on CUDA: the vit-mini ancestry, 1 epoch of Fashion-MNIST
               with amp="auto" (bf16 autocast on CUDA) and amp="off": test accuracy, images/s,
               and the dtype of the saved weights (fp32 expected). Then resume: 2 epochs in one
               go, the same again (run-to-run noise of the CUDA kernels), and 1 epoch + a
               resumed second; max abs weight differences (reported, not asserted: CUDA
               kernels such as attention backward may be nondeterministic). -> gpu-fit.json
- ``ddp``      ``torchrun --standalone --nproc_per_node=1`` of a small fit. With WORLD_SIZE=1
               fit stays single-process, so the worker runs it twice: as launched, and with
               the data-parallel path forced on for one rank (process group over NCCL on
               CUDA / gloo on CPU, the model in DistributedDataParallel, all-reduced metrics).
               Both are compared to a plain in-process fit. -> gpu-ddp.json
- ``speed``    images/s of a bare timm training step (AdamW, random data on the device) for
               vit-mini (batch 256) and deit-tiny / deit-small at 224 px (batch 128), each in
               {fp32, tf32, bf16 autocast} x {fused attention (scaled_dot_product_attention),
               explicit attention}, plus bf16 + fused attention with AdamW(fused=True);
               training FLOPs = 3 x forward FLOPs per sample x images/s; MFU against the
               measured peak of the row's precision. -> gpu-speed.json
- ``trainer``  fit vs the bare loop on deit-tiny (benchmarks/perf.py's training part: same
               model, batch and data, bf16 on CUDA). -> gpu-trainer.json
- ``compile``  deit-small, bf16, fused attention under torch.compile (compile time, then
               images/s vs eager); skipped when the time budget is nearly spent. Added to
               gpu-speed.json.

gpu-summary.json is rewritten after every part: status, seconds and the headline numbers.

Fashion-MNIST is looked up as everywhere in learngene (``learngene.data.sources``): with
``LEARNGENE_DATA=.data`` the 4 IDX files (``*-ubyte.gz``) sit in ``.data/fashion-mnist/``.
Without it the fit and ddp parts train on a synthetic stand-in and say so in their JSON.

    LEARNGENE_DATA=.data PYTHONPATH=src python3 benchmarks/gpu_check.py --out-dir OUT   # ~3-4 min on an H200
    python benchmarks/gpu_check.py --tiny --device cpu --out-dir /tmp/gpu-check   # seconds: proves it runs
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learngene._io import atomic_write_json  # noqa: E402
from learngene.arch import create_vit, vit_kwargs  # noqa: E402
from learngene.train import TrainConfig, fit  # noqa: E402
from learngene.train import distributed as D  # noqa: E402
from learngene.train.flops import forward_flops_per_sample  # noqa: E402

PARTS = ("matmul", "fit", "ddp", "speed", "trainer", "compile")
FILES = {"matmul": "gpu-matmul.json", "fit": "gpu-fit.json", "ddp": "gpu-ddp.json", "speed": "gpu-speed.json",
         "trainer": "gpu-trainer.json", "compile": "gpu-speed.json"}
SUMMARY = "gpu-summary.json"
# Shapes of the speed part: preset -> batch.
SPEED_SHAPES = {"vit-mini": 256, "deit-tiny": 128, "deit-small": 128}
PRECISIONS = ("fp32", "tf32", "bf16")
DDP_TOLERANCE = 1e-3  # max abs weight difference DDP (one rank) vs one process still called a match
START = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {msg}", flush=True)


# ---- machine ------------------------------------------------------------------------------
def machine(device: torch.device) -> dict:
    import timm
    import timm.layers
    from perf import machine_info  # imported here: the torchrun worker does without it

    info = machine_info(device)
    info.update(timm=timm.__version__, timm_use_fused_attn=bool(timm.layers.use_fused_attn()),
                cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), gpu_capability=f"{props.major}.{props.minor}",
                    gpu_sms=props.multi_processor_count, gpu_count=torch.cuda.device_count())
        with contextlib.suppress(Exception):
            version = torch.cuda.nccl.version()  # (major, minor, patch) in recent torch
            info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        with contextlib.suppress(Exception):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = out.stdout.strip()
    return info


def _commit() -> str | None:
    try:
        from perf import _commit as git_commit
    except Exception:
        return None
    return git_commit()


def source_digest() -> str:
    """sha256 of the package sources and this script: names the code that ran when there is no git."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "src" / "learngene").rglob("*.py")) + [Path(__file__).resolve()]:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def matmul_precision(name: str):
    """fp32 matmuls as tf32 (tensor cores) for "tf32", IEEE fp32 otherwise (torch's default).
    bf16 rows keep IEEE fp32 for what autocast leaves in fp32, as fit does."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, int]:
    """(max |a - b| over every tensor, number of tensors not bitwise equal)."""
    worst, unequal = 0.0, 0
    for k in a:
        x, y = a[k].detach().float().cpu(), b[k].detach().float().cpu()
        if not torch.equal(x, y):
            unequal += 1
            worst = max(worst, (x - y).abs().max().item())
    return worst, unequal


# ---- matmul -------------------------------------------------------------------------------
def matmul_peak(device: torch.device, name: str, size: int, repeats: int) -> dict:
    """Best FLOP/s of one square matmul in precision ``name`` (bf16 inputs, or fp32 inputs
    with IEEE or tf32 matmuls), each call timed on its own."""
    dtype = torch.bfloat16 if name == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    with matmul_precision(name):
        for _ in range(2):
            a @ b  # warm-up: cuBLAS handle, kernel choice
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - t0)
    flops = 2 * size**3
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "best_flops_per_s": flops / min(times),
            "median_flops_per_s": flops / sorted(times)[len(times) // 2]}


def part_matmul(ctx) -> dict:
    peaks = {}
    for name in PRECISIONS:
        peaks[name] = matmul_peak(ctx.device, name, ctx.args.matmul_size, ctx.args.matmul_repeats)
        say(f"  matmul {name}: {peaks[name]['best_flops_per_s'] / 1e12:.1f} TFLOP/s (n={ctx.args.matmul_size})")
    ctx.peaks = {k: v["best_flops_per_s"] for k, v in peaks.items()}
    return {"peaks": peaks, "notes": "MFU denominators: best of the timed calls of each precision"}


# ---- data ---------------------------------------------------------------------------------
def _synthetic(n: int, seed: int) -> TensorDataset:
    """A learnable stand-in for Fashion-MNIST: 10 fixed random 28x28 patterns plus noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(0, 10, (n,), generator=g)
    return TensorDataset(protos[labels] + 0.8 * torch.randn(n, 1, 28, 28, generator=g), labels)


def fashion_mnist(n_train: int | None, n_test: int | None):
    """(train, test, where from): Fashion-MNIST at vit-mini's shape (the first n of each split when
    given), or the synthetic stand-in, named so, when the data is not installed."""
    from learngene.errors import DatasetNotFoundError

    try:
        train, test, folder = _fashion_mnist_splits()
    except DatasetNotFoundError as e:
        return _synthetic(n_train or 60000, 0), _synthetic(n_test or 10000, 1), f"synthetic ({e})"

    def first(ds, n):
        return ds if n is None else TensorDataset(ds.images[:n], ds.labels[:n])

    return first(train, n_train), first(test, n_test), f"fashion-mnist from {folder}"


@functools.lru_cache(maxsize=1)
def _fashion_mnist_splits():
    """Both splits, read once per process (the fit and ddp parts share them; fit never modifies them)."""
    from learngene.data import load_dataset
    from learngene.data.sources import find_fashion_mnist

    folder = find_fashion_mnist()
    train = load_dataset("fashion-mnist", "train", image_size=28, in_chans=1)
    test = load_dataset("fashion-mnist", "test", image_size=28, in_chans=1)
    return train, test, folder


# ---- fit on CUDA --------------------------------------------------------------------------
class Killed(Exception):
    pass


def zero_extra_loss(kill_at_call: int | None = None):
    """Adds exactly 0 to the loss; raises ``Killed`` at one call (a run cut short mid-epoch)."""
    calls = [0]

    def extra(model, images, labels, logits):
        calls[0] += 1
        if calls[0] == kill_at_call:
            raise Killed
        return torch.zeros((), device=logits.device)

    return extra


def _vit_mini(seed: int, tiny: bool):
    """The vit-mini ancestry (--tiny: its first 2 blocks only)."""
    torch.manual_seed(seed)
    return create_vit("vit-mini", **({"depth": 2} if tiny else {}))


def part_fit(ctx) -> dict:
    from safetensors.torch import load_file

    from learngene.train.checkpoint import load_checkpoint

    a, dev = ctx.args, ctx.device
    train, test, where = fashion_mnist(a.fit_train, a.fit_test)
    say(f"  data: {where}: {len(train)} train / {len(test)} test")
    base = dict(epochs=1, batch_size=a.fit_batch, lr=1e-3, weight_decay=0.05, warmup_epochs=1, label_smoothing=0.1,
                seed=0, device=str(dev))
    out: dict = {"data": where, "model": "vit-mini", "config": base, "amp": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in ("auto", "off"):
            model = _vit_mini(0, a.tiny)
            r = fit(model, train, test, TrainConfig(**base, amp=amp), out_dir=Path(tmp) / amp, progress=False)
            saved = load_file(str(Path(tmp) / amp / "model.safetensors"))
            ips = r.history[0]["images_per_s"]
            effective = "bf16" if amp == "auto" and dev.type == "cuda" else amp
            peak = ctx.peaks.get("bf16" if effective == "bf16" else "fp32")
            out["amp"][amp] = {
                "autocast": effective, "test_acc": r.eval_acc, "test_loss": r.eval_loss, "train_loss": r.train_loss,
                "images_per_s": ips, "wall_time_s": r.wall_time_s, "steps": r.steps,
                "fused_attn": bool(model.blocks[0].attn.fused_attn),
                "mfu": 3 * r.forward_flops_per_sample * ips / peak if peak else None,
                "saved_dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in saved.values()}),
                "model_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in model.state_dict().values()}),
                "weights_fp32": all(t.dtype == torch.float32 for t in saved.values()),
            }
            say(f"  amp={amp} ({effective}): test acc {r.eval_acc:.4f}, {ips:.0f} img/s, saved "
                f"{out['amp'][amp]['saved_dtypes']}")
            del model

        # Resume: 2 epochs in one go (twice: the kernels' run-to-run noise) vs 1 epoch + resume.
        small = TensorDataset(*(t[: a.resume_train] for t in _tensors(train)))
        cfg2 = TrainConfig(**{**base, "epochs": 2}, amp="auto")
        steps = len(small) // cfg2.batch_size
        refs = []
        for i in range(2):
            model = _vit_mini(0, a.tiny)
            refs.append((fit(model, small, test, cfg2, out_dir=Path(tmp) / f"ref{i}", extra_loss=zero_extra_loss(),
                             progress=False), model.state_dict()))
        run = Path(tmp) / "run"
        try:
            fit(_vit_mini(0, a.tiny), small, test, cfg2, out_dir=run, extra_loss=zero_extra_loss(steps + 1),
                progress=False)
            raise RuntimeError("the run meant to be cut short in epoch 2 finished")
        except Killed:
            pass
        ckpt_epoch = int(load_checkpoint(run / "checkpoint.pt")["epoch"])
        resumed = _vit_mini(99, a.tiny)  # a different init: everything must come from the checkpoint
        r_res = fit(resumed, small, test, cfg2, out_dir=run, extra_loss=zero_extra_loss(), resume=True,
                    progress=False)
        (r_ref, w_ref), (r_ref2, w_ref2) = refs
        noise, noise_n = max_abs_diff(w_ref, w_ref2)
        diff, diff_n = max_abs_diff(w_ref, resumed.state_dict())
        out["resume"] = {
            "train_samples": len(small), "steps_per_epoch": steps, "epochs": 2, "amp": cfg2.amp,
            "checkpoint_epoch_when_cut": ckpt_epoch, "resumed_steps": r_res.steps,
            "rerun_max_abs_diff": noise, "rerun_tensors_unequal": noise_n,
            "resume_max_abs_diff": diff, "resume_tensors_unequal": diff_n, "tensors": len(w_ref),
            "bitwise_exact": diff_n == 0,
            "train_loss": {"one_go": [h["train_loss"] for h in r_ref.history],
                           "rerun": [h["train_loss"] for h in r_ref2.history],
                           "resumed": [h["train_loss"] for h in r_res.history]},
            "test_acc": {"one_go": r_ref.eval_acc, "rerun": r_ref2.eval_acc, "resumed": r_res.eval_acc},
        }
        say(f"  resume: max |diff| {diff:.3g} ({diff_n}/{len(w_ref)} tensors differ); same run twice: {noise:.3g} "
            f"({noise_n} differ)")
    return out


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    return (ds.images, ds.labels) if hasattr(ds, "images") else ds.tensors


# ---- DDP ----------------------------------------------------------------------------------
class _OneRankDDP(D.DistInfo):
    """A one-process group that takes fit's data-parallel path (DDP wrapper, all-reduces)."""

    @property
    def distributed(self) -> bool:
        return True


def _ddp_setup(args, device: torch.device):
    """Data, model and config of the DDP part: identical in the worker and the parent."""
    train, test, where = fashion_mnist(args.ddp_train, args.ddp_test)
    # No dropout / drop-path in vit-mini, so the single run and the rank see the same network.
    model = _vit_mini(0, args.tiny)
    cfg = TrainConfig(epochs=2, batch_size=args.ddp_batch, lr=1e-3, warmup_epochs=1, seed=3, device=str(device))
    return train, test, model, cfg, where


def ddp_worker(args, device: torch.device) -> None:
    """Run under torchrun (WORLD_SIZE=1): fit as launched, then with the data-parallel path forced."""
    import torch.distributed as dist

    out = Path(args.ddp_worker)
    train, test, model, cfg, _ = _ddp_setup(args, device)
    plain = copy.deepcopy(model)
    fit(plain, train, test, cfg, out_dir=out / "plain", progress=False)

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://")
    wrapped = []
    setup, wrap = D.setup, D.wrap_ddp

    def forced_setup(name):
        info = setup(name)
        return _OneRankDDP(**{f.name: getattr(info, f.name) for f in dataclasses.fields(D.DistInfo)})

    def recorded_wrap(m, info):
        ddp = wrap(m, info)
        wrapped.append(type(ddp).__name__)
        return ddp

    D.setup, D.wrap_ddp = forced_setup, recorded_wrap
    try:
        fit(model, train, test, cfg, out_dir=out / "ddp", progress=False)
    finally:
        D.setup, D.wrap_ddp = setup, wrap
    atomic_write_json(out / "worker.json", {
        "backend": dist.get_backend(), "world_size": dist.get_world_size(), "wrapped_in": wrapped,
        "env_world_size": os.environ.get("WORLD_SIZE"), "device": str(device)})
    dist.destroy_process_group()


def part_ddp(ctx) -> dict:
    from safetensors.torch import load_file

    a, dev = ctx.args, ctx.device
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               str(Path(__file__).resolve()), "--ddp-worker", tmp, "--out-dir", tmp, "--device", str(dev)]
        cmd += ["--tiny"] if a.tiny else []
        cmd += ["--threads", str(a.threads)] if a.threads else []
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        # Its own process group, so that a timeout stops torchrun *and* its worker (no orphan on the GPU).
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=a.ddp_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            raise RuntimeError(f"torchrun took over --ddp-timeout {a.ddp_timeout} s and was stopped: "
                               + " | ".join(output.strip().splitlines()[-12:])) from None
        launch_s = time.perf_counter() - t0
        lines = output.strip().splitlines()
        tail = lines[-40:]
        for line in tail[-8:]:
            say(f"  torchrun| {line}")
        if proc.returncode != 0:
            errors = [line.strip() for line in lines if "Error" in line or "error:" in line][-6:]
            raise RuntimeError(f"torchrun exited {proc.returncode}: " + " | ".join(errors or tail[-12:]))
        worker = json.loads((Path(tmp) / "worker.json").read_text())
        runs = {k: load_file(str(Path(tmp) / k / "model.safetensors")) for k in ("plain", "ddp")}
        hist = {k: [json.loads(x) for x in (Path(tmp) / k / "metrics.jsonl").read_text().splitlines()]
                for k in runs}
        summaries = {k: json.loads((Path(tmp) / k / "train_summary.json").read_text()) for k in runs}

    train, test, model, cfg, where = _ddp_setup(a, dev)
    single = fit(model, train, test, cfg, progress=False)
    ref = model.state_dict()
    diffs = {k: max_abs_diff(ref, w) for k, w in runs.items()}
    out = {
        "data": where, "train_samples": len(train), "config": cfg.to_dict(), "torchrun_seconds": launch_s,
        "worker": worker, "world_size_in_summary": {k: s["world_size"] for k, s in summaries.items()},
        "ddp_max_abs_diff": diffs["ddp"][0], "ddp_tensors_unequal": diffs["ddp"][1],
        "plain_torchrun_max_abs_diff": diffs["plain"][0], "plain_torchrun_tensors_unequal": diffs["plain"][1],
        "tolerance": DDP_TOLERANCE, "within_tolerance": diffs["ddp"][0] <= DDP_TOLERANCE,
        "train_loss": {"single": [h["train_loss"] for h in single.history],
                       **{k: [h["train_loss"] for h in rows] for k, rows in hist.items()}},
        "test_acc": {"single": single.eval_acc, "ddp": hist["ddp"][-1]["eval_acc"],
                     "plain": hist["plain"][-1]["eval_acc"]},
        "torchrun_output_tail": tail,
        "notes": "plain = fit under torchrun as launched (WORLD_SIZE=1: the single-process path); ddp = the same "
                 "fit with the data-parallel path forced on for one rank (DistributedDataParallel, collectives "
                 f"over {worker['backend']}); both vs an in-process fit. plain's difference is the kernels' "
                 "run-to-run noise.",
    }
    say(f"  ddp ({worker['backend']}, wrapped in {worker['wrapped_in']}): max |diff| vs one process "
        f"{diffs['ddp'][0]:.3g}; plain torchrun {diffs['plain'][0]:.3g}")
    return out


# ---- speed --------------------------------------------------------------------------------
def _shape(ctx, preset: str) -> dict:
    """The preset's architecture; --tiny: one block at 32 px (proves the code path only)."""
    if not ctx.args.tiny:
        return vit_kwargs(preset)
    return vit_kwargs(preset, depth=1, **({"img_size": 32} if vit_kwargs(preset)["img_size"] > 32 else {}))


def bare_step_speed(ctx, preset: str, batch: int, prec: str, fused_attn: bool, *, adamw_fused: bool = False,
                    compile_backend: str | None = None) -> dict:
    """images/s of forward + CE + backward + AdamW step on fixed random data on the device."""
    dev, a = ctx.device, ctx.args
    arch = _shape(ctx, preset)
    torch.manual_seed(0)
    model = create_vit(arch).to(dev)
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    x = torch.randn(batch, arch["in_chans"], arch["img_size"], arch["img_size"], device=dev)  # [B,C,H,W]
    y = torch.randint(0, arch["num_classes"], (batch,), device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, **({"fused": True} if adamw_fused else {}))
    step_model = torch.compile(model, backend=compile_backend) if compile_backend else model

    def step() -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = F.cross_entropy(step_model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with matmul_precision(prec):  # forward and backward
        t0 = time.perf_counter()
        step()
        sync(dev)
        first_s = time.perf_counter() - t0  # includes compilation under torch.compile
        for _ in range(a.warmup - 1):
            step()
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step()
        sync(dev)
        dt = time.perf_counter() - t0
    ips = a.steps * batch / dt
    fwd = ctx.fwd_flops.get(preset)
    if fwd is None:
        fwd = ctx.fwd_flops[preset] = forward_flops_per_sample(model, x[:1])
    peak = ctx.peaks.get(prec)
    row = {"model": preset, "batch": batch, "precision": prec, "fused_attn": fused_attn, "adamw_fused": adamw_fused,
           "compile": compile_backend, "steps": a.steps, "warmup": a.warmup, "first_step_s": first_s,
           "step_ms": 1e3 * dt / a.steps, "images_per_s": ips, "final_loss": loss.item(),
           "train_flops_per_s": 3 * fwd * ips, "mfu": 3 * fwd * ips / peak if peak else None,
           "mfu_vs_bf16_peak": 3 * fwd * ips / ctx.peaks["bf16"] if ctx.peaks.get("bf16") else None,
           "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}
    return row


def part_speed(ctx) -> dict:
    a = ctx.args
    rows = []
    grid = [(m, b, p, f, False) for m, b in ctx.speed_shapes.items() for p in PRECISIONS for f in (True, False)]
    grid += [(m, b, "bf16", True, True) for m, b in ctx.speed_shapes.items()]
    for preset, batch, prec, fused, adamw_fused in grid:
        what = f"{preset} b{batch} {prec} {'fused' if fused else 'explicit'} attn" + (" adamw-fused" * adamw_fused)
        if ctx.elapsed() > a.budget_s:
            rows.append({"model": preset, "batch": batch, "precision": prec, "fused_attn": fused,
                         "adamw_fused": adamw_fused, "skipped": f"time budget of {a.budget_s} s spent"})
            say(f"  {what}: skipped (budget)")
            continue
        try:
            row = bare_step_speed(ctx, preset, batch, prec, fused, adamw_fused=adamw_fused)
            say(f"  {what}: {row['images_per_s']:.0f} img/s ({row['step_ms']:.1f} ms/step), MFU "
                + (f"{row['mfu']:.3f}" if row["mfu"] is not None else "n/a"))
        except Exception as e:  # one shape failing (e.g. out of memory) must not lose the others
            row = {"model": preset, "batch": batch, "precision": prec, "fused_attn": fused,
                   "adamw_fused": adamw_fused, "error": f"{type(e).__name__}: {e}"[:500]}
            say(f"  {what}: ERROR {row['error'][:200]}")
        if ctx.device.type == "cuda":  # the row's model, optimizer and batch are gone: hand their memory back
            torch.cuda.empty_cache()
        rows.append(row)
    best = {}
    for row in rows:
        if "images_per_s" in row and row["images_per_s"] > best.get(row["model"], {}).get("images_per_s", 0):
            best[row["model"]] = row
    return {"rows": rows, "forward_flops_per_sample": dict(ctx.fwd_flops),
            "fastest": {m: {k: r[k] for k in ("precision", "fused_attn", "adamw_fused", "images_per_s", "mfu")}
                        for m, r in best.items()},
            "notes": "bare timm step: forward, F.cross_entropy, backward, AdamW (foreach unless adamw_fused) on one "
                     "fixed random batch on the device; fp32 = IEEE matmuls, tf32 = "
                     "set_float32_matmul_precision('high'), bf16 = autocast; mfu against the measured peak of the "
                     "row's precision; training FLOPs = 3 x forward"}


def part_compile(ctx) -> dict:
    a = ctx.args
    left = a.budget_s - ctx.elapsed()
    if left < a.compile_min_s:
        return {"skipped": f"{left:.0f} s of the {a.budget_s} s budget left, under --compile-min-s {a.compile_min_s}"}
    backend = "eager" if a.tiny else "inductor"
    preset, batch = "deit-small", ctx.speed_shapes["deit-small"]
    eager = bare_step_speed(ctx, preset, batch, "bf16", True)
    compiled = bare_step_speed(ctx, preset, batch, "bf16", True, compile_backend=backend)
    say(f"  compile ({backend}): first step {compiled['first_step_s']:.1f} s, {compiled['images_per_s']:.0f} img/s "
        f"vs eager {eager['images_per_s']:.0f} img/s")
    return {"backend": backend, "eager": eager, "compiled": compiled,
            "speedup": compiled["images_per_s"] / eager["images_per_s"]}


# ---- fit vs the bare loop -----------------------------------------------------------------
def part_trainer(ctx) -> dict:
    from perf import training_part

    a = ctx.args
    args = SimpleNamespace(model=a.trainer_model, batch=a.trainer_batch, steps_per_epoch=a.trainer_steps,
                           epochs=a.trainer_epochs, repeats=a.trainer_repeats, compile=False,
                           bare="same-math")
    peak = ctx.peaks.get("bf16" if ctx.device.type == "cuda" else "fp32")
    return training_part(args, ctx.device, {"flops_per_s": peak} if peak else None, distill=False)


# ---- driver -------------------------------------------------------------------------------
def headline(part: str, result: dict) -> dict:
    """The few numbers of a part that the summary shows."""
    if part == "matmul":
        return {k: round(v["best_flops_per_s"] / 1e12, 2) for k, v in result["peaks"].items()} | {"unit": "TFLOP/s"}
    if part == "fit":
        h = {f"test_acc_{k}": v["test_acc"] for k, v in result["amp"].items()}
        h |= {f"images_per_s_{k}": round(v["images_per_s"]) for k, v in result["amp"].items()}
        h["weights_fp32"] = all(v["weights_fp32"] for v in result["amp"].values())
        if "resume" in result:
            h |= {k: result["resume"][k] for k in ("resume_max_abs_diff", "rerun_max_abs_diff", "bitwise_exact")}
        return h
    if part == "ddp":
        return {k: result[k] for k in ("ddp_max_abs_diff", "plain_torchrun_max_abs_diff", "within_tolerance")} | {
            "backend": result["worker"]["backend"]}
    if part == "speed":
        return result["fastest"]
    if part == "trainer":
        return {k: result[k] for k in ("median_ratio", "median_fit_images_per_s", "median_bare_images_per_s", "mfu")}
    if part == "compile":
        return {"speedup": result.get("speedup"), "skipped": result.get("skipped"),
                "first_step_s": result.get("compiled", {}).get("first_step_s")}
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cpu")
    ap.add_argument("--tiny", action="store_true", help="smallest settings (prove that it runs; numbers mean nothing)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--budget-s", type=float, default=330.0,
                    help="speed rows and compile are skipped once this many seconds have passed")
    ap.add_argument("--compile-min-s", type=float, default=100.0, help="compile runs only with this much budget left")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compile part")
    ap.add_argument("--commit", default="", help="the git commit measured (default: git rev-parse HEAD, if a checkout)")
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--matmul-repeats", type=int, default=20)
    ap.add_argument("--fit-batch", type=int, default=128)
    ap.add_argument("--fit-train", type=int, default=None, help="first N training images of the fit part (all)")
    ap.add_argument("--fit-test", type=int, default=None, help="first N test images of the fit part (all)")
    ap.add_argument("--resume-train", type=int, default=12800, help="training images of the resume check")
    ap.add_argument("--ddp-train", type=int, default=4096)
    ap.add_argument("--ddp-test", type=int, default=1024)
    ap.add_argument("--ddp-batch", type=int, default=128)
    ap.add_argument("--ddp-timeout", type=int, default=240, help="seconds torchrun may take")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per speed row (the first one timed apart)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per speed row")
    ap.add_argument("--trainer-model", default="deit-tiny")
    ap.add_argument("--trainer-batch", type=int, default=128)
    ap.add_argument("--trainer-steps", type=int, default=10, help="steps per epoch of the trainer part")
    ap.add_argument("--trainer-epochs", type=int, default=3)
    ap.add_argument("--trainer-repeats", type=int, default=3)
    ap.add_argument("--ddp-worker", default="", help=argparse.SUPPRESS)  # internal: the torchrun worker
    args = ap.parse_args()
    if args.tiny:
        args.matmul_size, args.matmul_repeats, args.fit_batch, args.fit_train, args.fit_test = 128, 2, 32, 256, 128
        args.resume_train, args.ddp_train, args.ddp_test, args.ddp_batch = 128, 64, 32, 16
        args.warmup, args.steps, args.compile_min_s = 1, 2, 0.0
        args.trainer_model, args.trainer_batch, args.trainer_steps, args.trainer_epochs, args.trainer_repeats = (
            vit_kwargs("vit-mini", depth=2), 8, 2, 1, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    if os.environ.get("LEARNGENE_DATA"):  # relative to where we started, also for the torchrun worker
        os.environ["LEARNGENE_DATA"] = str(Path(os.environ["LEARNGENE_DATA"]).expanduser().resolve())
    device = D.resolve_device(args.device)
    if args.ddp_worker:
        ddp_worker(args, device)
        return

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    if args.no_compile and "compile" in parts:
        parts.remove("compile")
    out_dir = Path(args.out_dir)
    ctx = SimpleNamespace(args=args, device=device, peaks={}, fwd_flops={},
                          elapsed=lambda: time.perf_counter() - START,
                          speed_shapes={m: (4 if args.tiny else b) for m, b in SPEED_SHAPES.items()})
    try:
        info = machine(device)
    except Exception as e:  # the facts are nice to have; the checks matter more
        info = {"device": str(device), "torch": torch.__version__, "error": f"{type(e).__name__}: {e}"}
    say(f"device {device}: {info.get('gpu', info.get('processor'))}; torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), timm {info.get('timm')}; parts {parts}")
    head = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
            "commit": args.commit or _commit(), "source_digest": source_digest(), "tiny": args.tiny,
            "data_env": os.environ.get("LEARNGENE_DATA")}
    summary = {"check": "gpu-summary", **head, "machine": info, "parts": {}}
    if "matmul" not in parts and {"speed", "compile", "trainer", "fit"} & set(parts):
        with contextlib.suppress(Exception):  # MFU still needs peaks: a short measurement
            for name in PRECISIONS:
                ctx.peaks[name] = matmul_peak(device, name, args.matmul_size, 5)["best_flops_per_s"]
    runners = {"matmul": part_matmul, "fit": part_fit, "ddp": part_ddp, "speed": part_speed,
               "trainer": part_trainer, "compile": part_compile}
    for part in parts:
        say(f"== {part}")
        t0 = time.perf_counter()
        record = {"check": f"gpu-{part}", **head, "machine": info}
        try:
            record["result"], record["status"] = runners[part](ctx), "ok"
        except Exception as e:  # record it and go on: one failing part must not lose the others
            record["status"], record["error"] = "error", f"{type(e).__name__}: {e}"[:2000]
            record["traceback"] = traceback.format_exc()[-4000:]
            say(f"  ERROR in {part}: {record['error'][:500]}")
        record["seconds"] = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.empty_cache()
        path = out_dir / FILES[part]
        if part == "compile":  # joins the speed record
            speed = json.loads(path.read_text()) if path.is_file() else {"check": "gpu-speed", **head, "machine": info}
            speed["compile"] = {k: v for k, v in record.items() if k not in head and k not in ("check", "machine")}
            atomic_write_json(path, speed)
        else:
            atomic_write_json(path, record)
        entry = {"status": record["status"], "seconds": round(record["seconds"], 1), "file": FILES[part]}
        if record["status"] == "ok":
            with contextlib.suppress(Exception):
                entry["headline"] = headline(part, record["result"])
        else:
            entry["error"] = record["error"][:500]
        summary["parts"][part] = entry
        summary["total_seconds"] = round(time.perf_counter() - START, 1)
        atomic_write_json(out_dir / SUMMARY, summary)
        say(f"  -> {path} ({record['status']}, {record['seconds']:.1f} s)")
    statuses = ", ".join(f"{p} {e['status']}" for p, e in summary["parts"].items())
    say(f"done: {statuses} -> {out_dir}")


if __name__ == "__main__":
    main()
