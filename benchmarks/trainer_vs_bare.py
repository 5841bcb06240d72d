"""Throughput of learngene.train.fit vs a bare PyTorch loop on the vit-mini ancestry shape.

Both train the same model (fresh copies of one init) with AdamW at the same batch on the
same in-memory images; the bare loop is the minimum: index a batch, forward, CE,
backward, step. ``fit`` runs with its defaults (label smoothing, grad clipping, warmup +
cosine lr, running metrics) minus evaluation, checkpoints and progress bars, and is
timed as a whole call (setup such as FLOP counting included). One warmup run of each is
discarded; then the two alternate for --repeats rounds and the median ratio is reported.

    python benchmarks/trainer_vs_bare.py            # writes benchmarks/results/trainer_vs_bare.json
    python benchmarks/trainer_vs_bare.py --threads 1  # steadier on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from learngene._io import atomic_write_json  # noqa: E402
from learngene.train import TrainConfig, fit  # noqa: E402


def make_model():
    try:
        from learngene.arch import create_vit

        return create_vit("vit-mini", num_classes=10), "learngene.models.create_vit('vit-mini', num_classes=10)"
    except Exception:  # models.py not there (or broken): the explicit shape
        from timm.models.vision_transformer import VisionTransformer

        shape = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=96, depth=12, num_heads=3, num_classes=10)
        return VisionTransformer(**shape), f"timm VisionTransformer({shape})"


def bare_loop(model, images, labels, *, batch: int, steps: int, lr: float, seed: int, device: str = "cpu",
              amp: bool = False, teacher=None, label_smoothing: float = 0.0,
              clip_grad: float | None = None) -> tuple[float, float]:
    """The reference: nothing but the work. Returns (wall seconds, process CPU seconds).

    ``images``/``labels`` should already be on ``device``; ``amp``: bf16 autocast; ``teacher``:
    soft distillation (0.5 CE + 0.5 KL at tau 1), its forward under inference mode;
    ``label_smoothing`` and ``clip_grad`` (a max gradient norm) add the math of fit's recipe, so
    that the two compare framework overhead only.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, fused=True)  # fit's kernel
    model.train()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp)
    per_epoch = images.shape[0] // batch
    done, epoch = 0, 0
    while done < steps:
        perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(per_epoch):
            if done == steps:
                break
            idx = perm[i * batch : (i + 1) * batch].to(images.device)
            x, y = images[idx], labels[idx]
            with autocast:
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                if teacher is not None:
                    with torch.inference_mode():
                        t = teacher(x)
                    kd = F.kl_div(F.log_softmax(logits.float(), 1), F.log_softmax(t.float().clone(), 1),
                                  reduction="sum", log_target=True) / logits.numel()
                    loss = 0.5 * loss + 0.5 * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            opt.step()
            done += 1
        epoch += 1
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def fit_run(model, data, *, batch: int, epochs: int, lr: float, seed: int, device: str = "cpu",
            amp: str = "off", attention: str = "auto", teacher=None) -> tuple[float, float, float]:
    """fit() as a whole call. Returns (wall seconds, process CPU seconds, fit's own mean images/s)."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, seed=seed, checkpoint=False, warmup_epochs=1,
                      device=device, amp=amp, attention=attention, distill="none" if teacher is None else "soft")
    t0, c0 = time.perf_counter(), time.process_time()
    r = fit(model, data, None, cfg, progress=False, teacher=teacher)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return dt, dc, statistics.mean(h["images_per_s"] for h in r.history)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps-per-epoch", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trainer_vs_bare.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n = args.batch * args.steps_per_epoch  # a few hundred images, no partial batch
    steps = args.steps_per_epoch * args.epochs
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 1, 28, 28, generator=g)  # [N,1,28,28] float32, in memory
    labels = torch.randint(0, 10, (n,), generator=g)
    data = TensorDataset(images, labels)
    torch.manual_seed(0)
    base, model_desc = make_model()
    lr = 1e-3
    load_before = os.getloadavg()

    # warmup (allocator, thread pools, first-call overheads): discarded
    bare_loop(copy.deepcopy(base), images, labels, batch=args.batch, steps=args.steps_per_epoch, lr=lr, seed=0)
    fit_run(copy.deepcopy(base), data, batch=args.batch, epochs=1, lr=lr, seed=0)

    rows = []
    for r in range(args.repeats):  # alternate the order so drift in machine speed hits both alike
        m1, m2 = copy.deepcopy(base), copy.deepcopy(base)
        run_bare = lambda: bare_loop(m1, images, labels, batch=args.batch, steps=steps, lr=lr, seed=r)  # noqa: E731
        run_fit = lambda: fit_run(m2, data, batch=args.batch, epochs=args.epochs, lr=lr, seed=r)  # noqa: E731
        if r % 2 == 0:
            (bw, bc), (fw, fc, inner) = run_bare(), run_fit()
        else:
            (fw, fc, inner), (bw, bc) = run_fit(), run_bare()
        imgs = steps * args.batch
        row = {"bare_images_per_s": imgs / bw, "fit_images_per_s": imgs / fw, "ratio": bw / fw,
               "fit_reported_images_per_s": inner, "steady_state_ratio": inner * bw / imgs,
               "cpu_time_ratio": bc / fc}
        rows.append(row)
        print(f"repeat {r}: bare {row['bare_images_per_s']:.1f} img/s, fit {row['fit_images_per_s']:.1f} img/s, "
              f"ratio {row['ratio']:.3f} (cpu-time ratio {row['cpu_time_ratio']:.3f})", flush=True)

    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    result = {
        "benchmark": "trainer_vs_bare",
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": "cpu",
            "loadavg_before_after": [list(load_before), list(os.getloadavg())],
        },
        "model": model_desc,
        "params": sum(p.numel() for p in base.parameters()),
        "batch_size": args.batch,
        "images": n,
        "steps_per_repeat": steps,
        "repeats": args.repeats,
        "fit_settings": "TrainConfig defaults (AdamW wd 0.05, label smoothing 0.1, clip_grad 1.0, "
                        "warmup+cosine lr), no eval, no checkpoint, progress off; whole fit() call timed",
        "bare_settings": "AdamW(lr 1e-3, wd 0.05, fused), F.cross_entropy, randperm batches, nothing else",
        "rows": rows,
        "median_bare_images_per_s": med("bare_images_per_s"),
        "median_fit_images_per_s": med("fit_images_per_s"),
        "median_ratio": med("ratio"),
        "median_cpu_time_ratio": med("cpu_time_ratio"),
        "median_steady_state_ratio": med("steady_state_ratio"),
        "best_of_ratio": max(r["fit_images_per_s"] for r in rows) / max(r["bare_images_per_s"] for r in rows),
        "notes": "ratio = fit images/s / bare images/s within one repeat (wall clock); cpu_time_ratio = the "
                 "same with process CPU time; steady_state_ratio uses fit's own per-epoch images/s "
                 "(its training loop only, without the once-per-call setup: FLOP count, optimizer); "
                 "best_of_ratio = best fit images/s / best bare images/s "
                 "(timeit-style, least sensitive to other load on a shared machine)",
        "target": ">= 0.9 (fit within 10% of the bare loop)",
    }
    atomic_write_json(args.out, result)
    print(f"median: bare {result['median_bare_images_per_s']:.1f} img/s, fit {result['median_fit_images_per_s']:.1f} "
          f"img/s, ratio {result['median_ratio']:.3f} (cpu-time {result['median_cpu_time_ratio']:.3f}, "
          f"best-of {result['best_of_ratio']:.3f}) -> {args.out}")


if __name__ == "__main__":
    main()
