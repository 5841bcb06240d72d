"""Speed of the work users wait for: training (plain and distillation), extraction, expansion.

One run on one machine reports, part by part (``--only`` picks parts; each writes
``<out-dir>/perf-<part>.json`` with the machine and the command):

- ``matmul``   the machine's measured matmul FLOP/s (fp32 on CPU, bf16 on CUDA): the
               denominator of model FLOPs utilisation (MFU).
- ``trainer``  ``learngene.train.fit`` images/s against a bare PyTorch loop on the same
               model, batch and data (``benchmarks/trainer_vs_bare.py``'s two loops),
               alternating for ``--repeats`` rounds; median ratio (target >= 0.97; the bare loop
               smooths labels and clips gradients as fit does, ``--bare minimal`` drops both); achieved
               training FLOP/s (3 x forward FLOPs x images/s) and MFU; peak memory.
- ``distill``  the same with a teacher (soft distillation, as TLEG/PEG extraction trains
               its auxiliary model): the teacher runs under inference mode in both loops.
- ``expand``   for every registered method: time to extract its learngene from a
               ``--expand-preset`` ancestry (default DeiT-B shape, random weights; methods
               that train get one distillation step on a few random images) and to expand
               it to a descendant of the ancestry's shape; the descendant's size and the
               peak extra memory (RSS) while expanding, relative to the descendant's
               weights (about 1x: nothing held twice). Target: under 1 s for 86M parameters.

On CUDA, training runs with bf16 autocast (``amp=auto``) and the data lives on the GPU
(both loops); ``--compile`` wraps both models in ``torch.compile``. timm's attention uses
PyTorch's fused ``scaled_dot_product_attention`` (reported as ``fused_attn``).

    python benchmarks/perf.py                                  # everything, defaults (minutes)
    python benchmarks/perf.py --only expand --methods heuristic,tleg
    python benchmarks/perf.py --only trainer --model deit-small --batch 64 --device cuda
    python benchmarks/perf.py --tiny --out-dir /tmp/perf       # seconds: proves it runs
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import dataclasses
import gc
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import learngene  # noqa: E402
from learngene._io import atomic_write_json  # noqa: E402
from learngene.arch import create_vit, vit_kwargs  # noqa: E402
from learngene.registry import get_method, list_methods  # noqa: E402
from learngene.train import TrainConfig  # noqa: E402
from learngene.train.flops import forward_flops_per_sample  # noqa: E402
from learngene.train.precision import attention_kernel, choose_path  # noqa: E402
from trainer_vs_bare import bare_loop, fit_run  # noqa: E402

PARTS = ("matmul", "paths", "trainer", "distill", "expand")
# The shapes of the paths part: (preset, batch, overrides): vit-mini (17 tokens) and DeiT-Tiny at 224 px (197).
PATH_SHAPES = (("vit-mini", 128, {}), ("deit-tiny", 32, {"num_classes": 10}))


# ---- measuring ----------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "device": str(device), "loadavg_at_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _commit() -> str | None:
    """The git commit of the code measured (None outside a checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak extra memory of a block: CUDA's allocator peak on CUDA; on CPU the resident set
    size, sampled every millisecond by a thread (torch releases the GIL in its kernels)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_extra = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base, self.peak, self.stop = _rss_bytes(), _rss_bytes(), threading.Event()

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, _rss_bytes())
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_extra = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak_extra = max(self.peak, _rss_bytes()) - self.base
        return False


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS baselines are clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peak numbers may then include reused memory
        pass


def matmul_peaks(device: torch.device, size: int, repeats: int = 5) -> dict:
    """Best matmul FLOP/s in fp32 and bf16: the MFU denominators of each precision."""
    peaks = {name: matmul_flops(device, size, repeats, dtype=dtype)
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    return {"size": size, "peaks": peaks, "bf16_over_fp32": peaks["bf16"]["flops_per_s"] / peaks["fp32"]["flops_per_s"]}


def matmul_flops(device: torch.device, size: int, repeats: int = 5, *, dtype: torch.dtype | None = None) -> dict:
    """Best FLOP/s of a square matmul (default: bf16 on CUDA, fp32 on CPU)."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "flops_per_s": 2 * size**3 / best}


def _peak(matmul: dict | None, precision: str) -> float | None:
    """The measured matmul FLOP/s of ``precision`` ("bf16", else fp32)."""
    if not matmul:
        return None
    if "peaks" in matmul:
        return matmul["peaks"]["bf16" if precision == "bf16" else "fp32"]["flops_per_s"]
    return matmul.get("flops_per_s")


# ---- parts --------------------------------------------------------------------------------
def _model_and_data(args, device: torch.device):
    arch = vit_kwargs(args.model)
    images_n = args.batch * args.steps_per_epoch
    g = torch.Generator().manual_seed(0)
    side = arch["img_size"]
    images = torch.randn(images_n, arch["in_chans"], side, side, generator=g)  # [N,C,H,W], in memory
    labels = torch.randint(0, arch["num_classes"], (images_n,), generator=g)
    torch.manual_seed(0)
    return create_vit(arch), arch, images, labels


# The compute paths the training parts compare: "auto" (TrainConfig's default, train/precision.py)
# and "fp32-fused" (the path every run took before the rule: fp32 on CPU, fused attention).
PATHS = {"auto": ("auto", "auto"), "fp32-fused": ("off", "fused")}


def training_part(args, device: torch.device, matmul: dict | None, *, distill: bool, path: str = "auto") -> dict:
    """fit vs a bare loop on the same kernels (with a teacher when ``distill``), alternating; medians."""
    base, arch, images, labels = _model_and_data(args, device)
    teacher = copy.deepcopy(base).to(device).eval() if distill else None
    data = TensorDataset(images, labels)  # fit copies it to the GPU itself when it fits
    images_dev, labels_dev = images.to(device), labels.to(device)
    amp_mode, attention_mode = PATHS[path]
    chosen = choose_path(amp_mode, attention_mode, device)
    amp = chosen.amp == "bf16"
    steps = args.steps_per_epoch * args.epochs
    lr = 1e-3
    # "same-math": the bare loop also smooths labels and clips gradients as fit's defaults do, so
    # the ratio measures fit's own overhead; "minimal": forward, CE, backward, step and nothing else
    defaults = TrainConfig()
    bare_math = ({"label_smoothing": defaults.label_smoothing, "clip_grad": defaults.clip_grad}
                 if args.bare == "same-math" else {})

    def prepared():
        model = copy.deepcopy(base).to(device)
        return torch.compile(model, dynamic=False) if args.compile else model  # as fit compiles

    def run_bare(seed):
        model = prepared()
        with attention_kernel(model, chosen.attention), attention_kernel(teacher or torch.nn.Identity(),
                                                                         chosen.attention):
            return bare_loop(model, images_dev, labels_dev, batch=args.batch, steps=steps, lr=lr, seed=seed,
                             device=str(device), amp=amp, teacher=teacher, **bare_math)

    def run_fit(seed):
        return fit_run(prepared(), data, batch=args.batch, epochs=args.epochs, lr=lr, seed=seed,
                       device=str(device), amp=amp_mode, attention=attention_mode, teacher=teacher)

    def measured(run, seed):
        with PeakMemory(device) as mem:
            out = run(seed)
        return out, mem.peak_extra

    run_bare(0), run_fit(0)  # warm-up (allocator, thread pools, compilation): discarded
    rows = []
    for r in range(args.repeats):  # alternate the order so drift in machine speed hits both alike
        if r % 2 == 0:
            (bare, bare_mem), (fitted, fit_mem) = measured(run_bare, r), measured(run_fit, r)
        else:
            (fitted, fit_mem), (bare, bare_mem) = measured(run_fit, r), measured(run_bare, r)
        fit_w, _, fit_inner = fitted
        imgs = steps * args.batch
        rows.append({"bare_images_per_s": imgs / bare[0], "fit_images_per_s": imgs / fit_w,
                     "ratio": bare[0] / fit_w, "fit_steady_images_per_s": fit_inner,
                     "bare_peak_extra_mib": bare_mem / 2**20, "fit_peak_extra_mib": fit_mem / 2**20})
        print(f"  repeat {r}: bare {rows[-1]['bare_images_per_s']:.1f} img/s, fit {rows[-1]['fit_images_per_s']:.1f} "
              f"img/s, ratio {rows[-1]['ratio']:.3f}", flush=True)
    med = lambda k: statistics.median(row[k] for row in rows)  # noqa: E731
    fwd = forward_flops_per_sample(base, images[:1])
    teacher_fwd = fwd if distill else 0
    achieved = (3 * fwd + teacher_fwd) * med("fit_images_per_s")
    peak = _peak(matmul, chosen.amp)
    return {
        "model": args.model, "arch": arch, "params": sum(p.numel() for p in base.parameters()),
        "path": path, "compute_path": chosen.to_dict(), "fused_attn": chosen.attention == "fused",
        "batch_size": args.batch, "steps_per_repeat": steps, "repeats": args.repeats, "amp": chosen.amp,
        "compile": args.compile, "teacher": "a copy of the model, inference mode" if distill else None,
        "forward_flops_per_sample": fwd,
        "rows": rows,
        "median_bare_images_per_s": med("bare_images_per_s"), "median_fit_images_per_s": med("fit_images_per_s"),
        "median_ratio": med("ratio"), "target_ratio": 0.97, "bare": args.bare, "bare_extra_math": bare_math,
        "achieved_train_flops_per_s": achieved,
        "mfu": achieved / peak if peak else None,
        "mfu_peak": {"precision": chosen.amp if chosen.amp == "bf16" else "fp32", "flops_per_s": peak},
        "peak_extra_memory_mib": {"fit": max(r["fit_peak_extra_mib"] for r in rows),
                                  "bare": max(r["bare_peak_extra_mib"] for r in rows)},
        "notes": "ratio = fit images/s / bare images/s (wall clock, whole fit() call incl. setup); training FLOPs "
                 "= 3 x forward (+ the teacher's forward); mfu = achieved / the measured matmul FLOP/s of the "
                 "precision the path computes in",
    }


def paths_part(args, device: torch.device, matmul: dict | None) -> dict:
    """A bare timm training step (AdamW) per shape, in fp32 and bf16 autocast, with fused and explicit
    attention, side by side: alternating rounds, median images/s; MFU against each precision's peak."""
    shapes = PATH_SHAPES if not args.tiny else (("vit-mini", 8, {"depth": 2}),)
    rows = []
    for preset, batch, overrides in shapes:
        torch.manual_seed(0)
        base = create_vit(preset, **overrides).to(device)
        arch = vit_kwargs(preset, **overrides)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, arch["in_chans"], arch["img_size"], arch["img_size"], generator=g).to(device)
        y = torch.randint(0, arch["num_classes"], (batch,), generator=g).to(device)
        fwd = forward_flops_per_sample(base, x[:1])
        combos = [(p, k) for p in ("fp32", "bf16") for k in ("fused", "explicit")]
        rates: dict[tuple[str, str], list[float]] = {c: [] for c in combos}
        steps = 2 if args.tiny else max(3, args.path_steps if preset == "vit-mini" else args.path_steps // 3)
        for r in range(args.path_rounds):
            for precision, kernel in combos if r % 2 == 0 else combos[::-1]:
                model = copy.deepcopy(base)
                with attention_kernel(model, kernel):
                    rates[(precision, kernel)].append(_bare_steps(model, x, y, steps, precision == "bf16", device))
        for (precision, kernel), values in rates.items():
            rate = statistics.median(values)
            peak = _peak(matmul, precision)
            rows.append({"model": preset, "overrides": overrides, "batch": batch, "tokens": base.patch_embed.num_patches + 1,
                         "precision": precision, "attention": kernel, "images_per_s": rate, "rounds": values,
                         "mfu": 3 * fwd * rate / peak if peak else None})
            print(f"  {preset} b{batch} {precision} {kernel}: {rate:.1f} img/s", flush=True)
    chosen = choose_path("auto", "auto", device)
    return {"rows": rows, "auto_path": chosen.to_dict(),
            "notes": "bare AdamW steps on random data; each round builds a fresh copy; median over rounds; "
                     "mfu = 3 x forward FLOPs x images/s / the measured matmul peak of the row's precision"}


def _bare_steps(model, x, y, steps: int, bf16: bool, device: torch.device) -> float:
    """Images/s of ``steps`` training steps after two warm-up steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # the kernel fit uses
    model.train()

    def one():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one(), one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return x.shape[0] * steps / (time.perf_counter() - t0)


def _tiny_extraction(spec, ancestry_arch: dict, n: int) -> tuple[dict, TensorDataset | None]:
    """Options and data that make extraction quick: methods that train get one step of batch n."""
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    options = {}
    if spec.needs_data or "epochs" in fields:
        options.update({k: v for k, v in dict(epochs=1, batch_size=n, warmup_epochs=0.0).items() if k in fields})
    g = torch.Generator().manual_seed(0)
    side = ancestry_arch["img_size"]
    data = TensorDataset(torch.randn(n, ancestry_arch["in_chans"], side, side, generator=g),
                         torch.randint(0, ancestry_arch["num_classes"], (n,), generator=g))
    return options, (data if spec.needs_data or "epochs" in fields else None)


# Methods whose descendants are not one timm ViT of the ancestry's shape, and what "expand"
# times for them instead: the stitched supernet over the stored anchors (every configuration;
# stitching layers at PyTorch's init, no data) for the stitching methods; for mm-lg, a CLIP
# ancestry whose two towers have the preset's width (mm-lg shares blocks between them).
STITCHED = {"learngene-pool": "learngene.methods.learngene_pool", "sn-net": "learngene.methods.sn_net"}
CLIP_METHODS = ("mm-lg",)


def _nbytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


GROW = ("expand", "stitch", "clip-classifier")  # what the probe grows from the learngene


def _grow(gene, how: str) -> torch.nn.Module:
    if how == "stitch":  # every stitched configuration, stitching layers at PyTorch's init (no data)
        import importlib

        return importlib.import_module(STITCHED[gene.method]).stitch_supernet(gene, init="random")
    if how == "clip-classifier":  # mm-lg's registry descendant: the image tower as a timm classifier
        return gene.expand(seed=0, num_classes=1000)
    return gene.expand(seed=0)


def probe_expand(gene_dir: str, how: str, repeats: int) -> dict:
    """Run in a fresh process (``--probe-expand``), as a user's ``learngene expand`` or script
    runs: load the learngene, then grow it ``repeats`` times; per run the wall and CPU time and
    the peak RSS growth (after a run in the same process, glibc keeps freed blocks in its heap,
    and after a training run its mmap threshold is high, so an in-process RSS peak after
    extraction measures the allocator's state more than the expansion)."""
    gene = learngene.load(gene_dir)
    times, cpu, peaks, child_bytes, params = [], [], [], 0, 0
    for _ in range(repeats):
        _release_freed_memory()
        with PeakMemory(torch.device("cpu")) as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            child = _grow(gene, how)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        peaks.append(mem.peak_extra)
        child_bytes, params = _nbytes(child), sum(p.numel() for p in child.parameters())
        del child
    return {"times": times, "cpu": cpu, "peaks": peaks, "child_bytes": child_bytes, "params": params}


def _measured_expand(row: dict, gene, how: str, args) -> None:
    """Save ``gene``, grow it in a fresh process (``probe_expand``) and fill the row: best and
    median time of the repeats (noise on a shared machine only adds, so the best is what the
    code takes: timeit's convention), the first run, and the median peak over the descendant."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        gene.save(Path(tmp) / "gene")
        cmd = [sys.executable, __file__, "--probe-expand", str(Path(tmp) / "gene"), "--probe-grow", how,
               "--expand-repeats", str(args.expand_repeats), "--threads", str(args.threads or torch.get_num_threads())]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the expansion probe failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    times, peaks, size = probe["times"], probe["peaks"], probe["child_bytes"]
    row.update(expand_s=min(times), expand_median_s=statistics.median(times), expand_first_s=times[0],
               expand_runs_s=times, expand_cpu_s=min(probe["cpu"]), descendant_params=probe["params"],
               expand_peak_extra_mib=statistics.median(peaks) / 2**20, descendant_mib=size / 2**20,
               expand_peak_over_descendant=statistics.median(peaks) / size,
               expand_peaks_over_descendant=[peak / size for peak in peaks])


def clip_ancestry_like(preset: str, *, text_layers: int = 12, context_length: int = 77, vocab_size: int = 49408):
    """A randomly initialised open_clip CLIP whose image tower has ``preset``'s shape and whose text
    tower has the same width and heads (CLIP's text tower: 77 tokens, a 49,408-token vocabulary)."""
    from learngene.clip.open_clip_adapter import build_open_clip
    from learngene.clip.stack import clip_arch

    a = vit_kwargs(preset)
    width, heads = int(a["embed_dim"]), int(a["num_heads"])
    arch = clip_arch({
        "embed_dim": 512, "act": "gelu",
        "image": {"image_size": a["img_size"], "patch_size": a["patch_size"], "in_chans": 3, "width": width,
                  "layers": int(a["depth"]), "heads": heads, "mlp_ratio": float(a.get("mlp_ratio", 4.0))},
        "text": {"context_length": context_length, "vocab_size": vocab_size, "width": width, "layers": text_layers,
                 "heads": heads, "mlp_ratio": float(a.get("mlp_ratio", 4.0))},
    })
    return build_open_clip(arch), arch


def random_caption_pairs(arch: dict, n: int):
    """``n`` random images with captions of random tokens, two classes: enough for one training step."""
    from learngene.clip.data import CaptionPairs

    g = torch.Generator().manual_seed(0)
    img, txt = arch["image"], arch["text"]
    labels = torch.arange(n) % 2
    return CaptionPairs(images=torch.randn(n, img["in_chans"], img["image_size"], img["image_size"], generator=g),
                        labels=labels, caption_ids=labels.clone(), captions=["caption a", "caption b"],
                        caption_class=torch.tensor([0, 1]), caption_meaning=torch.tensor([0, 4]),
                        tokens=torch.randint(1, txt["vocab_size"], (2, txt["context_length"]), generator=g),
                        class_names=("a", "b"))


def _clip_row(name: str, args) -> dict:
    """mm-lg: condense a CLIP ancestry (one step on random caption pairs), then grow the registry's
    descendant (the image tower as a timm classifier of the preset's shape, 1000 classes) and,
    separately timed, the whole CLIP descendant (open_clip model of the ancestry's depths)."""
    from learngene.methods.mm_lg import expand_clip

    torch.manual_seed(0)
    clip, arch = clip_ancestry_like(args.expand_preset)
    row = {"method": name, "extract_options": dict(epochs=1, batch_size=args.extract_batch, warmup_epochs=0.0),
           "ancestry": "open_clip CLIP: image tower of the preset, text tower of its width (12 layers, 77 tokens)",
           "ancestry_params": sum(p.numel() for p in clip.parameters())}
    t0 = time.perf_counter()
    gene = learngene.extract(name, clip, data=random_caption_pairs(arch, args.extract_batch), **row["extract_options"])
    row["extract_s"] = time.perf_counter() - t0
    row["stored_params"] = gene.num_parameters
    del clip
    _measured_expand(row, gene, "clip-classifier", args)
    _release_freed_memory()
    t0 = time.perf_counter()
    whole = expand_clip(gene)
    row["expand_clip_s"], row["clip_descendant_params"] = time.perf_counter() - t0, sum(p.numel() for p in whole.parameters())
    return row


def expand_part(args) -> dict:
    """Extract each method's learngene from a random ancestry and expand it to the ancestry's shape (CPU)."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    ancestry = create_vit(args.expand_preset)
    build_s = time.perf_counter() - t0
    arch = vit_kwargs(args.expand_preset)
    params = sum(p.numel() for p in ancestry.parameters())
    print(f"  ancestry {args.expand_preset}: {params:,} parameters, built in {build_s:.2f} s", flush=True)
    methods = args.methods.split(",") if args.methods else list_methods()
    rows = []
    for name in methods:
        spec = get_method(name)
        options, data = _tiny_extraction(spec, arch, args.extract_batch)
        row = {"method": name, "extract_options": options}
        try:
            if name in CLIP_METHODS:
                row = _clip_row(name, args)
            else:
                t0 = time.perf_counter()
                gene = learngene.extract(name, ancestry, data=data, **options)
                row["extract_s"] = time.perf_counter() - t0
                row["stored_params"] = gene.num_parameters
                _measured_expand(row, gene, "stitch" if name in STITCHED else "expand", args)
                if name in STITCHED:
                    row["descendant"] = "stitched supernet over the anchors, every configuration (init='random')"
                del gene
        except Exception as e:  # one method failing must not hide the others' numbers
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        rows.append(row)
        shown = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in row.items()
                 if k not in ("extract_options", "ancestry")}
        print(f"  {shown}", flush=True)
    return {"ancestry_preset": args.expand_preset, "ancestry_params": params, "ancestry_build_s": build_s,
            "descendant": "the ancestry's shape (gene.expand(seed=0)); stitching methods: the supernet over their "
                          "anchors; mm-lg: the image classifier of a CLIP ancestry (see its row)",
            "rows": rows, "target_expand_s": 1.0,
            "notes": "extraction of training methods = one distillation step on random images of batch "
                     f"{args.extract_batch} (timing of the non-training work + one step); expand_peak_extra = "
                     "peak RSS growth while expanding (sampled each ms; median of the repeats); ~1x the "
                     "descendant = no second copy; expansion runs in a fresh process that loads the saved "
                     "learngene (as `learngene expand` does), --expand-repeats times: expand_s = the best, "
                     "expand_median_s, expand_first_s = the first (one-off costs included); "
                     "expand_cpu_s = process CPU time (all threads; steadier than wall time on a shared machine)"}


# ---- main ---------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    ap.add_argument("--model", default="vit-mini", help="preset of the training parts (vit-mini, deit-small, ...)")
    ap.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps-per-epoch", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bare", default="same-math", choices=("same-math", "minimal"),
                    help="the bare loop of the training parts: with fit's label smoothing and gradient clipping "
                         "(same-math), or without (minimal)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models of the training parts")
    ap.add_argument("--matmul-size", type=int, default=0, help="0: 2048 on CPU, 8192 on CUDA")
    ap.add_argument("--paths", default="fp32-fused,auto", help=f"compute paths of the training parts, of {list(PATHS)}")
    ap.add_argument("--path-rounds", type=int, default=3, help="alternating rounds of the paths part")
    ap.add_argument("--path-steps", type=int, default=9, help="timed steps per round (a third for DeiT-Tiny)")
    ap.add_argument("--expand-preset", default="deit-base", help="ancestry (= descendant) shape of the expand part")
    ap.add_argument("--methods", default="", help="comma-separated methods of the expand part (default: all)")
    ap.add_argument("--extract-batch", type=int, default=2, help="images of the one extraction step of training methods")
    ap.add_argument("--expand-repeats", type=int, default=5, help="expansions per method (best, median, first reported)")
    ap.add_argument("--probe-expand", default="", help=argparse.SUPPRESS)  # internal: grow this saved learngene
    ap.add_argument("--probe-grow", default="expand", choices=GROW, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tiny", action="store_true", help="smallest settings (prove that it runs; numbers mean nothing)")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.tiny:
        args.batch, args.steps_per_epoch, args.epochs, args.repeats, args.expand_repeats = 8, 2, 2, 1, 1
        args.path_rounds = 1
        args.matmul_size = args.matmul_size or 256
        if args.expand_preset == "deit-base":
            args.expand_preset = "vit-mini"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe_expand:  # the fresh process of _measured_expand: one JSON line on stdout
        import json

        print(json.dumps(probe_expand(args.probe_expand, args.probe_grow, args.expand_repeats)))
        return
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    command = "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    out_dir = Path(args.out_dir)

    matmul = None
    if "matmul" in parts or {"paths", "trainer", "distill"} & set(parts):
        matmul = matmul_peaks(device, args.matmul_size or (8192 if device.type == "cuda" else 2048))
        print("matmul: " + ", ".join(f"{name} {p['flops_per_s'] / 1e9:.1f} GFLOP/s" for name, p in matmul["peaks"].items())
              + f" (n={matmul['size']})", flush=True)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if sorted(set(paths) - set(PATHS)):
        ap.error(f"unknown path(s) in --paths {args.paths!r}; choose among {', '.join(PATHS)}")
    for part in parts:
        print(f"{part}:", flush=True)
        machine = machine_info(device if part != "expand" else torch.device("cpu"))  # load average before the part
        if part == "matmul":
            result = matmul
        elif part == "paths":
            result = paths_part(args, device, matmul)
        elif part in ("trainer", "distill"):
            by_path = {}
            for path in paths:
                print(f"  path {path}:", flush=True)
                by_path[path] = training_part(args, device, matmul, distill=part == "distill", path=path)
                print(f"  median ratio {by_path[path]['median_ratio']:.3f}, fit "
                      f"{by_path[path]['median_fit_images_per_s']:.1f} img/s, MFU {by_path[path]['mfu']:.3f}", flush=True)
            result = {"paths": by_path}
            if {"auto", "fp32-fused"} <= set(by_path):
                result["fit_speedup_auto_over_fp32_fused"] = (by_path["auto"]["median_fit_images_per_s"]
                                                              / by_path["fp32-fused"]["median_fit_images_per_s"])
                print(f"  fit, auto over fp32-fused: {result['fit_speedup_auto_over_fp32_fused']:.2f}x", flush=True)
        else:
            result = expand_part(args)
        record = {"benchmark": f"perf-{part}", "command": command, "commit": _commit(),
                  "machine": machine, "tiny": args.tiny, "result": result}
        record["machine"]["loadavg_at_end"] = list(os.getloadavg())
        path = out_dir / f"perf-{part}.json"
        atomic_write_json(path, record)
        print(f"  -> {path}", flush=True)


if __name__ == "__main__":
    main()
