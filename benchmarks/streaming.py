"""One epoch of streamed JPEGs: learngene's loader next to timm's ``create_loader``, same folder, same workers.

For each N: generate N JPEGs (``--side`` px, smooth random content so they compress like
photos) under ``DIR/train/<class>/`` in a temp folder, then read one epoch of them, with no
model, through

* ``learngene``: ``load_dataset("imagefolder:DIR?memory=0", augment=True)`` with its
  ``transform`` set to timm's DeiT train transform, batched by the trainer's ``LoaderSource``
  (persistent workers, per-sample seeding, bad-image checks) in a fresh epoch order;
* ``timm``: ``timm.data.create_dataset("", root=DIR/train)`` + ``timm.data.create_loader``
  with the same transform arguments (``is_training=True``), batch and workers, no prefetcher (CPU).

The DeiT transform: ``create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5-inc1-mmax9",
re_prob=0.25, interpolation="bicubic")`` (RandomResizedCrop, flip, RandAugment, random erasing;
``mmax9``: see ``DEIT_TRANSFORM``).
Each (loader, N) runs in its own subprocess; this process samples that subprocess and its
DataLoader workers every 50 ms: peak RSS (summed over the processes: counts shared pages
once per process) and peak PSS (proportional set size from /proc/PID/smaps_rollup: shared
pages split between the processes that map them, so the sum is the real footprint).
images/s = N / wall time of the epoch, worker start-up included; CPU ms per image = CPU time of the
subprocess and its workers after set-up (python start-up, imports, folder scan) / N, steadier on
a shared machine.

    nice -n 10 python benchmarks/streaming.py --sizes 2000 5000 --workers 2   # writes results/streaming.json
    python benchmarks/streaming.py --sizes 10000 50000 --workers 2 --repeats 3 --out benchmarks/results/streaming-large.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CLASSES = 10
BATCH = 64
IMAGE_SIZE = 224
# DeiT's "rand-m9-mstd0.5-inc1" capped at magnitude 9 (mmax9): at magnitude 10 (9 + 2 std) timm
# 1.0.31's PosterizeIncreasing asks for 0 bits, which Pillow >= 13 refuses (ValueError) -- about
# 0.15% of images, so an epoch of a few thousand would crash.
DEIT_TRANSFORM = dict(is_training=True, auto_augment="rand-m9-mstd0.5-inc1-mmax9", re_prob=0.25,
                      interpolation="bicubic")


# ---- data ------------------------------------------------------------------------------------
def make_jpegs(folder: Path, n: int, side: int, seed: int = 0) -> None:
    """n JPEGs (quality 90) of side x side: 16x16 random colours upsampled bicubically plus mild
    noise, so files weigh like photos (tens of KB) rather than like pure noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / "train" / f"class{i % CLASSES:02d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        big = np.asarray(small.resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
        big = np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(big).save(path, quality=90)
    for c in range(CLASSES):  # the imagefolder layout wants a test split; one image per class
        (folder / "test" / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side)).save(folder / "test" / f"class{c:02d}" / "0.jpg")


# ---- the measured subprocess ---------------------------------------------------------------------
def run_epoch(loader_kind: str, folder: str, workers: int) -> dict:
    """One epoch through one loader; returns counts and timings (printed as JSON by the subprocess)."""
    import torch
    from timm.data import create_dataset, create_loader, create_transform

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if loader_kind == "learngene":
        from learngene.data import load_dataset
        from learngene.train.data import LoaderSource, epoch_batches

        data = load_dataset(f"imagefolder:{folder}?memory=0", "train", image_size=IMAGE_SIZE, augment=True)
        data.transform = create_transform(IMAGE_SIZE, **DEIT_TRANSFORM)
        source = LoaderSource(data, num_workers=workers, pin_memory=False, augment=None)
        steps = epoch_batches(len(source), global_batch=BATCH, seed=0, epoch=0, rank=0, world_size=1)
        batches = source.batches(steps, None, worker_seed=1)
    else:
        data = create_dataset("", root=str(Path(folder) / "train"), split="train", is_training=True)
        batches = create_loader(data, input_size=(3, IMAGE_SIZE, IMAGE_SIZE), batch_size=BATCH, num_workers=workers,
                                use_prefetcher=False, device=torch.device("cpu"), persistent_workers=True,
                                **{k: v for k, v in DEIT_TRANSFORM.items()})
    t_ready, cpu_ready = time.perf_counter(), time.process_time()  # python start-up, imports, folder scan
    images, first = 0, None
    for x, y in batches:
        if first is None:
            first = time.perf_counter()
        assert x.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32
        images += x.shape[0]
    end = time.perf_counter()
    return {"images": images, "setup_cpu_s": cpu_ready, "setup_s": t_ready - t0, "first_batch_s": first - t_ready, "epoch_s": end - t_ready,
            "images_per_s": images / (end - t_ready)}


# ---- memory sampling --------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    """pid and all its descendants (via /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    except (OSError, IndexError, ValueError):
        return 0


class TreeMemory:
    """Peak RSS and PSS (KiB) of a process tree, and the CPU time its processes used, sampled by a thread."""

    def __init__(self, pid: int, every_s: float = 0.05):
        self.pid, self.every_s = pid, every_s
        self.peak_rss = self.peak_pss = self.peak_processes = 0
        self.cpu_ticks: dict[int, int] = {}  # pid -> last seen utime + stime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            self.peak_rss = max(self.peak_rss, sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids))
            self.peak_pss = max(self.peak_pss, sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
            self.peak_processes = max(self.peak_processes, len(pids))
            for p in pids:
                self.cpu_ticks[p] = max(self.cpu_ticks.get(p, 0), _cpu_ticks(p))
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(loader_kind: str, folder: Path, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--epoch", loader_kind, str(folder), "--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with TreeMemory(proc.pid) as memory:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{loader_kind} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    cpu_s = sum(memory.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")
    result.update(peak_rss_mib=round(memory.peak_rss / 1024, 1), peak_pss_mib=round(memory.peak_pss / 1024, 1),
                  processes=memory.peak_processes, cpu_s_all_processes=round(cpu_s, 1),
                  cpu_ms_per_image=round(1000 * (cpu_s - result["setup_cpu_s"]) / max(result["images"], 1), 2))
    return result


def summarize_rounds(rounds: list[dict]) -> dict:
    """One loader's epochs on one folder: median images/s and CPU ms/image (robust to a busy
    moment), the largest peak memory (the bound that matters), and every round kept."""
    import statistics

    summary = dict(rounds[0])
    for key in ("images_per_s", "cpu_ms_per_image", "epoch_s"):
        summary[key] = statistics.median(r[key] for r in rounds)
    for key in ("peak_rss_mib", "peak_pss_mib"):
        summary[key] = max(r[key] for r in rounds)
    summary["rounds"] = rounds
    return summary


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000], help="images per folder")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of both loaders")
    parser.add_argument("--side", type=int, default=256, help="JPEG side, pixels (>= 224)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "streaming.json"))
    parser.add_argument("--repeats", type=int, default=1,
                        help="epochs per loader on each folder, alternating which loader goes first; the row "
                             "reports the median images/s and CPU ms/image and the largest peak memory")
    parser.add_argument("--tmp", default=None, help="where to write the JPEGs (default: the system temp dir)")
    parser.add_argument("--epoch", nargs=2, metavar=("LOADER", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.epoch and min(args.sizes) < BATCH:
        parser.error(f"--sizes must each be at least one batch ({BATCH} images: both loaders drop the last "
                     f"partial batch), got {min(args.sizes)}")
    if args.epoch:  # the measured subprocess
        print(json.dumps(run_epoch(args.epoch[0], args.epoch[1], args.workers)))
        return

    import torch
    import timm

    from learngene._io import atomic_write_json

    if args.tmp:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)
    runs = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="lg-stream-") as tmp:
            folder = Path(tmp)
            t0 = time.perf_counter()
            print(f"N={n}: writing {n:,} JPEGs of {args.side} px under {folder}", flush=True)
            make_jpegs(folder, n, args.side)
            made = time.perf_counter() - t0
            row = {"images": n, "side": args.side, "jpeg_mib": round(_folder_bytes(folder) / 2**20, 1),
                   "generate_s": round(made, 1),
                   # what the in-memory path would hold: float32 [N, 3, 224, 224]
                   "in_memory_tensor_mib": round(n * 3 * IMAGE_SIZE * IMAGE_SIZE * 4 / 2**20, 1)}
            rounds = {"learngene": [], "timm": []}
            for r in range(args.repeats):
                first_learngene = (len(runs) + r) % 2 == 0  # alternate who goes first
                for kind in ("learngene", "timm") if first_learngene else ("timm", "learngene"):
                    rounds[kind].append(measure(kind, folder, args.workers))
                    got = rounds[kind][-1]
                    print(f"N={n} round {r + 1}/{args.repeats} {kind}: {got['images_per_s']:.0f} img/s, "
                          f"{got['cpu_ms_per_image']} CPU ms/image, peak PSS {got['peak_pss_mib']} MiB, "
                          f"peak RSS {got['peak_rss_mib']} MiB ({got['processes']} processes)", flush=True)
            for kind, got in rounds.items():
                row[kind] = summarize_rounds(got)
            row["learngene_over_timm_images_per_s"] = round(
                row["learngene"]["images_per_s"] / row["timm"]["images_per_s"], 3)
            runs.append(row)

    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "timm": timm.__version__, "loadavg_at_start": list(os.getloadavg())},
        "setup": {"batch": BATCH, "image_size": IMAGE_SIZE, "workers": args.workers, "transform": DEIT_TRANSFORM,
                  "torch_threads_per_process": 1},
        "notes": "one epoch, no model; images_per_s includes worker start-up (wall time: on a shared machine it "
                 "moves with the other load; cpu_ms_per_image, the CPU time of the subprocess and its workers "
                 "after set-up (start-up, imports, folder scan) per image, moves less); peak_pss_mib sums the proportional "
                 "set sizes of the loader process and its workers (shared pages split), peak_rss_mib their RSS "
                 "(shared pages counted in every process)",
        "runs": runs,
        # peak PSS at the largest folder over the smallest, per loader: flat memory reads ~1.0
        "peak_pss_largest_over_smallest": {
            kind: round(max(runs, key=lambda r: r["images"])[kind]["peak_pss_mib"]
                        / min(runs, key=lambda r: r["images"])[kind]["peak_pss_mib"], 3)
            for kind in ("learngene", "timm")},
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
