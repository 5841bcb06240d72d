"""Running a suite: the ancestry (trained or reused), learngenes (extracted once), cells.

Each cell is expanded and fine-tuned once; its outcome (trained, or skipped with the
reason when the method cannot make the shape) is written atomically to
``<out>/<suite>/cells/<key>.json``, so a run can stop at any point and resume, and a suite
can be run in parts (``methods=``, ``datasets=``, ``seeds=``).

A distilling entry (``teacher: <label>``) needs its teacher cell's trained model: the teacher
cells (the ancestry's shape, the same dataset and seed) are trained first, whether selected or
not, and keep their models in ``<out>/<suite>/models/<key>/``; a teacher cell cached without its
model is trained again. With ``match_flops`` the distilling cell stops at ``kd_max_steps``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from ..api import extract, load
from ..arch import VIT_PRESETS, ViTArch, arch_of
from ..artifact import CONFIG_NAME
from ..errors import ConfigError
from ..models import load_ancestry, save_model
from ..recipes import Shape, finetune, grow, load_split, train_ancestry
from ..train import TrainConfig
from ..train.flops import count_forward, forward_flops_per_sample
from .report import collect_results, git_commit, machine_info, markdown_table, write_results
from .suite import MODEL_OVERRIDE_KEYS, Cell, MethodEntry, Suite, ancestry_key, config_hash, load_suite, plan_cells, suite_shapes

# -- ancestry ---------------------------------------------------------------------------------


def train_or_reuse_ancestry(preset: str, data: str, train_config: Any, out: Path, *,
                            model_overrides: dict[str, int] | None = None, tag: str = "") -> tuple[Path, dict[str, Any]]:
    """Return (ancestry folder, its model_config.json). Reuses a finished run with the same recipe.

    The folder is ``out/ancestry-<preset>-<data>-<key>``; ``tag`` prefixes the progress lines.
    """
    key = ancestry_key(preset, data, train_config, model_overrides)
    path = Path(out) / f"ancestry-{preset}-{data}-{key}"
    if (path / "model_config.json").is_file():
        meta = json.loads((path / "model_config.json").read_text())
        print(f"{tag}reusing ancestry {path} (test accuracy {meta.get('eval_acc', float('nan')):.3f})")
        return path, meta
    _, result = train_ancestry(preset, data, train_config, path, model_overrides=model_overrides, resume=True,
                               announce=lambda line: print(f"{tag}{line}"))
    print(f"      ancestry test accuracy {result.eval_acc:.3f}")
    return path, json.loads((path / "model_config.json").read_text())


def _scalar(value: Any) -> Any:
    """A square pair (JSON's [4, 4] patch) as the one number a suite gives; other values unchanged."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return value


def recorded_ancestry_key(path: Path) -> str:
    """The recipe key of an ancestry folder written by our trainer, or a hash of its weights."""
    model_config, summary = path / "model_config.json", path / "train_summary.json"
    if model_config.is_file() and summary.is_file():
        meta = json.loads(model_config.read_text())
        train = json.loads(summary.read_text()).get("config")
        preset, data, arch = meta.get("preset"), meta.get("data"), meta.get("arch", {})
        if preset in VIT_PRESETS and data and isinstance(train, dict):
            overrides = {k: _scalar(arch[k]) for k in MODEL_OVERRIDE_KEYS
                         if k in arch and _scalar(arch[k]) != _scalar(VIT_PRESETS[preset][k])}
            return ancestry_key(preset, data, TrainConfig.from_dict(train), overrides)
    weights = path / "model.safetensors" if path.is_dir() else path
    if weights.is_file():
        return "w" + hashlib.sha256(weights.read_bytes()).hexdigest()[:9]
    return config_hash({"source": str(path)})


def _suite_ancestry(suite: Suite, out: Path, given: str | None) -> tuple[Path, str, dict[str, Any]]:
    """(folder, key, model_config.json) of the suite's ancestry: the given one, or trained/reused."""
    spec = suite.ancestry
    train_config = TrainConfig.from_dict(spec.train)
    wanted = ancestry_key(spec.preset, spec.data, train_config, spec.model_overrides())
    if given is None:
        path, meta = train_or_reuse_ancestry(spec.preset, spec.data, train_config, out,
                                             model_overrides=spec.model_overrides(), tag="ancestry: ")
        return path, wanted, meta
    path = Path(given)
    if not (path / "model_config.json").is_file():
        what = "model_config.json is missing" if path.exists() else "it does not exist"
        raise ConfigError(f"--ancestry {given} is not an ancestry folder: {what}; "
                          "train one with `learngene ancestry` or leave --ancestry out")
    meta = json.loads((path / "model_config.json").read_text())
    key = recorded_ancestry_key(path)
    if key == wanted:
        print(f"ancestry: using {path} (its recipe matches the suite's, key {key})")
    else:
        print(f"ancestry: WARNING {path} was not trained with the suite's recipe (key {key}, suite {wanted}); "
              "its cells are cached under its own key")
    return path, key, meta


# -- cells ------------------------------------------------------------------------------------


@dataclass
class BenchReport:
    results: dict[str, Any]                   # what <suite>.json holds
    trained: int                              # cells trained by this run
    cached: int                               # cells of this run found in the cache
    skipped: int                              # cells of this run that could not be made
    files: list[Path]                         # results files written


def _split(text: str | list | None) -> list[str] | None:
    if text is None:
        return None
    items = text if isinstance(text, list) else str(text).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _select(names: list[str] | None, valid: list[str], what: str) -> list[str]:
    if names is None:
        return list(valid)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"--{what} {unknown[0]!r} is not in the suite; choose among {', '.join(valid)}")
    return names


def extract_or_reuse_gene(entry: MethodEntry, key: str, ancestry_path: Path, data: str, genes_dir: Path):
    """The entry's learngene, extracted once into genes_dir/<method>-<key>."""
    path = genes_dir / f"{entry.method}-{key}"
    if (path / CONFIG_NAME).is_file():
        return load(path), path
    start = time.perf_counter()
    print(f"learngene: extracting {entry.label} ({entry.method} {entry.options}) -> {path}")
    gene = extract(entry.method, ancestry_path, data=data, **entry.options)
    gene.save(path)
    cost = gene.provenance.get("cost", {})
    print(f"learngene: {entry.label} stores {gene.num_parameters:,} parameters; extraction "
          f"{cost.get('samples_seen', 0):,} samples, {float(cost.get('flops', 0)):.3g} FLOPs, "
          f"{time.perf_counter() - start:.0f} s")
    return gene, path


# -- cells: in this process, or in worker processes ---------------------------------------------

_WORKER_CACHE: dict[tuple, Any] = {}  # per process: loaded learngenes and datasets


def _cached(key: tuple, make):
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = make()
    return _WORKER_CACHE[key]


@dataclass(frozen=True)
class Job:
    index: int | str                          # the cell's place in the run ("teacher" for one outside it)
    cell: Cell
    gene_path: Path
    record_path: Path
    model_dir: Path | None = None             # keep the trained model here (a teacher cell)
    teacher_dir: Path | None = None           # the teacher cell's model (a distilling cell)
    teacher_record: Path | None = None        # the teacher cell's record


def _run_cell(job: Job, suite: Suite, arch: ViTArch, provenance: dict[str, Any]) -> tuple:
    """Train one cell and write its record atomically; returns (index, cell, record)."""
    cell = job.cell
    gene = _cached(("gene", str(job.gene_path)), lambda: load(job.gene_path))
    train = _cached(("data", cell.dataset, "train", arch.side, arch.in_chans),
                    lambda: load_split(cell.dataset, arch, "train"))
    test = _cached(("data", cell.dataset, "test", arch.side, arch.in_chans),
                   lambda: load_split(cell.dataset, arch, "test"))
    teacher = None
    if job.teacher_record is not None:
        teacher = json.loads(job.teacher_record.read_text())
        if teacher["status"] == "trained":
            teacher["model"] = _cached(("teacher", str(job.teacher_dir)), lambda: load_ancestry(job.teacher_dir))
    record = train_cell(cell, gene, train, test, suite.finetune_config(cell.seed, cell.entry), provenance,
                        teacher=teacher, model_dir=job.model_dir)
    atomic_write_json(job.record_path, record)
    return job.index, cell, record


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_cells(jobs: list[Job], suite: Suite, arch: ViTArch, provenance: dict[str, Any], workers: int):
    """Yield (index, cell, record) as cells finish. ``workers`` > 1: that many processes, the
    torch threads split between them (on a few cores, one small model per core beats two
    threads on one model)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _run_cell(job, suite, arch, provenance)
        return
    import concurrent.futures
    import multiprocessing

    import torch

    threads = max(1, torch.get_num_threads() // workers)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(_run_cell, job, suite, arch, provenance) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _print_cell(i: int | str, total: int, cell: Cell, record: dict[str, Any], *, cached: bool) -> None:
    where = f"[{i}/{total}] {cell.entry.label:>22s} {cell.dataset:>10s} {_shape_text(cell.shape)} seed {cell.seed}"
    note = " (cached)" if cached else ""
    if record["status"] == "skipped":
        print(f"{where}: skipped{note}: {record['reason']}")
    else:
        print(f"{where}: top-1 {record['top1']:.3f} {record['wall_time_s']:6.1f} s{note}", flush=True)


def kd_max_steps(student: Any, teacher: Any, sample: Any, num_train: int, config: TrainConfig) -> int:
    """The optimizer steps at which a distilling cell's train FLOPs equal a plain cell's.

    A plain cell of the same shape and recipe takes S = (num_train // batch) x epochs steps at
    3 f B + 3 c FLOPs each (f: the student's forward FLOPs per sample, c: its per-call part,
    B: the batch); distilling adds the teacher's forward, t per sample. The distilling cell
    stops after round(S (3 f B + 3 c) / ((3 f + t) B + 3 c)) steps, so both spend the same
    training FLOPs (to within one step's).
    """
    f, c, _ = count_forward(student, sample)
    t = forward_flops_per_sample(teacher, sample)
    b = config.batch_size
    return max(1, round(_plain_steps(num_train, config) * (3 * f * b + 3 * c) / ((3 * f + t) * b + 3 * c)))


def _plain_steps(num_train: int, config: TrainConfig) -> int:
    steps = (num_train // config.batch_size) * config.epochs
    return steps if config.max_steps is None else min(steps, config.max_steps)


def _matched_config(config: TrainConfig, max_steps: int, num_train: int) -> TrainConfig:
    """``config`` cut at ``max_steps``, its warmup shortened in proportion (the schedule keeps its shape)."""
    plain_steps = _plain_steps(num_train, config)
    return TrainConfig.from_dict({**config.to_dict(), "max_steps": max_steps,
                                  "warmup_epochs": config.warmup_epochs * max_steps / plain_steps})


def train_cell(cell: Cell, gene: Any, train: Any, test: Any, config: Any, provenance: dict[str, Any], *,
               teacher: dict[str, Any] | None = None, model_dir: Path | None = None) -> dict[str, Any]:
    """Expand and fine-tune one cell with TrainConfig ``config``; a shape the method cannot make
    is a 'skipped' record with the reason. ``teacher``: a distilling cell's teacher record, with
    its trained model under "model" (absent when the teacher cell was skipped); ``model_dir``:
    keep the trained model there (a teacher cell's)."""
    depth, embed_dim, num_heads = cell.shape
    record: dict[str, Any] = {
        "cell": cell.key, "method_name": cell.entry.method, "label": cell.entry.label,
        "options": cell.entry.options, "gene": cell.gene_key, "dataset": cell.dataset, "depth": depth,
        "embed_dim": embed_dim, "num_heads": num_heads, "seed": cell.seed, "finetune": config.to_dict(),
        **provenance,
    }
    if teacher is not None:
        record["teacher"] = {"cell": teacher["cell"], "label": teacher["label"], "match_flops": cell.entry.match_flops}
        if "model" not in teacher:
            return {**record, "status": "skipped",
                    "reason": f"its teacher cell ({teacher['label']}) was skipped: {teacher['reason']}"}
    start = time.perf_counter()
    try:
        child = grow(gene, shape=Shape(depth, embed_dim, num_heads), num_classes=train.info.num_classes,
                     seed=cell.seed)
    except ConfigError as e:
        return {**record, "status": "skipped", "reason": str(e)}
    if teacher is not None and cell.entry.match_flops:
        steps = kd_max_steps(child.module, teacher["model"], train[0][0], len(train), config)
        config = _matched_config(config, steps, len(train))
        record["finetune"] = config.to_dict()
    model, result = finetune(child, (train, test), config, progress=False,  # model: the plain ViT (maps folded)
                             teacher=None if teacher is None else teacher["model"])
    if model_dir is not None:
        save_model(model, model_dir, data=cell.dataset, eval_acc=float(result.eval_acc), cell=cell.key)
    cost = gene.provenance.get("cost", {})
    if teacher is not None:
        record["teacher"].update(top1=teacher["top1"], finetune_flops=teacher["finetune_flops"],
                                 finetune_samples=teacher["finetune_samples"],
                                 flops_per_sample=int(result.teacher_flops_per_sample), steps=int(result.steps))
    return {
        **record, "status": "trained",
        "epochs": len(result.history),
        "top1": float(result.eval_acc),
        "curve": [float(h["eval_acc"]) for h in result.history if h.get("eval_acc") is not None],
        "params": sum(p.numel() for p in model.parameters()),
        "learngene_params": gene.num_parameters,
        "extract_samples": int(cost.get("samples_seen", 0)),
        "extract_flops": float(cost.get("flops", 0.0)),
        "finetune_samples": int(result.samples_seen),
        "finetune_flops": int(result.train_flops),
        "train_wall_time_s": round(float(result.wall_time_s), 2),
        "wall_time_s": round(time.perf_counter() - start, 2),  # expand + fine-tune + evaluations
    }


def _shape_text(shape: tuple[int, int, int]) -> str:
    return f"depth {shape[0]:2d} ({shape[1]}/{shape[2]})"


def run_suite(suite: Suite, *, methods: list[str] | None = None, datasets: list[str] | None = None,
              seeds: list[int] | None = None, out: str | os.PathLike = "runs/bench",
              results_dir: str | os.PathLike | None = None, ancestry: str | None = None,
              command: str = "learngene bench", workers: int = 1) -> BenchReport:
    """Run the selected cells of ``suite`` (all by default), then write the results of every cached cell
    into ``results_dir`` (default ``out/results``: a run never overwrites the committed
    benchmarks/results unless asked to).

    ``workers``: train that many cells at once in separate processes (results are the same
    cells; a cell's numbers can differ in the last digits with the thread count)."""
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    start = time.perf_counter()
    methods = _select(methods, [m.label for m in suite.methods], "methods")
    datasets = _select(datasets, suite.datasets, "datasets")
    if seeds is not None and (not seeds or any(not isinstance(s, int) or s < 0 for s in seeds)):
        raise ConfigError(f"--seeds must be integers >= 0, got {seeds!r}")
    seeds = list(seeds) if seeds is not None else list(suite.seeds)
    out = Path(out)
    cells_dir = out / suite.name / "cells"
    commit = git_commit()

    ancestry_path, akey, ancestry_meta = _suite_ancestry(suite, out, ancestry)
    arch = arch_of(load_ancestry(ancestry_path))
    cells, unavailable = plan_cells(suite, akey, arch, methods=methods, datasets=datasets, seeds=seeds)
    for label, reason in unavailable.items():
        print(f"skipping {label}: {reason}")

    provenance = {"ancestry_key": akey, "command": command, "commit": commit, "machine": machine_info()}
    print(f"{suite.name}: {len(cells)} cells ({len(methods)} methods x {len(datasets)} datasets x "
          f"{len(suite_shapes(suite, arch))} shapes x {len(seeds)} seeds)")
    trained = cached = skipped = 0
    pending: list[tuple[int, Cell]] = []
    for i, cell in enumerate(cells, 1):
        path = cells_dir / f"{cell.key}.json"
        if not path.is_file():
            pending.append((i, cell))
            continue
        record = json.loads(path.read_text())
        cached += 1
        skipped += record["status"] == "skipped"
        _print_cell(i, len(cells), cell, record, cached=True)

    # teacher cells of the pending distilling cells: trained first (kept models), unless cached
    models_dir = out / suite.name / "models"
    teachers: dict[str, Cell] = {}
    for _, cell in pending:
        if cell.teacher is not None:
            teachers[cell.teacher.key] = cell.teacher
    pending_keys = {cell.key for _, cell in pending}
    extra: list[tuple[int | str, Cell]] = []
    for key, teacher in teachers.items():
        record_path = cells_dir / f"{key}.json"
        if key in pending_keys:
            continue
        if record_path.is_file() and (json.loads(record_path.read_text())["status"] == "skipped"
                                      or (models_dir / key / "model_config.json").is_file()):
            continue
        note = "cached without its model: training it again" if record_path.is_file() else "training it first"
        print(f"teacher: {teacher.entry.label} {teacher.dataset} {_shape_text(teacher.shape)} seed {teacher.seed} "
              f"({note})")
        extra.append(("teacher", teacher))

    # learngenes first, in this process (extraction may itself train, e.g. TLEG's distillation)
    gene_paths: dict[str, Path] = {}
    for _, cell in pending + extra:
        if cell.gene_key not in gene_paths:
            data_name = cell.entry.extraction_data(suite.ancestry.data, cell.dataset)
            gene_paths[cell.gene_key] = extract_or_reuse_gene(cell.entry, cell.gene_key, ancestry_path,
                                                              data_name, out / "genes")[1]

    def job(i: int | str, cell: Cell) -> Job:
        teacher = cell.teacher
        return Job(i, cell, gene_paths[cell.gene_key], cells_dir / f"{cell.key}.json",
                   model_dir=models_dir / cell.key if cell.key in teachers else None,
                   teacher_dir=None if teacher is None else models_dir / teacher.key,
                   teacher_record=None if teacher is None else cells_dir / f"{teacher.key}.json")

    first = [job(i, cell) for i, cell in extra + [(i, c) for i, c in pending if c.teacher is None]]
    then = [job(i, cell) for i, cell in pending if cell.teacher is not None]
    for phase in (first, then):
        for i, cell, record in _train_cells(phase, suite, arch, provenance, workers):
            trained += record["status"] == "trained"
            skipped += record["status"] == "skipped"
            _print_cell(i, len(cells), cell, record, cached=False)

    results = collect_results(suite, cells_dir, akey, arch, ancestry_path, ancestry_meta,
                              seeds=sorted(set(suite.seeds) | set(seeds)), command=command, commit=commit)
    files = write_results(results, out / "results" if results_dir is None else Path(results_dir))
    print()
    print(markdown_table(results["summary"]))
    print(f"\n{trained} cells trained, {cached} cached, {skipped} skipped; "
          f"{len(results['records'])} records of {results['cells']} suite cells in {files[0]} "
          f"({time.perf_counter() - start:.0f} s)")
    return BenchReport(results=results, trained=trained, cached=cached, skipped=skipped, files=files)


def bench(suite: str, *, methods: str | list[str] | None = None, datasets: str | list[str] | None = None,
          seeds: str | list[int] | None = None, out: str = "runs/bench", results_dir: str | None = None,
          ancestry: str | None = None, command: str | None = None, workers: int = 1) -> BenchReport:
    """Load a suite by name or path and run it (comma-separated selections, as on the CLI)."""
    loaded = load_suite(suite)
    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(s) for s in _split(seeds)]  # type: ignore[union-attr]
        except ValueError:
            raise ConfigError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if command is None:
        command = " ".join(["learngene bench", suite] + [f"--{flag} {value}" for flag, value in (
            ("methods", methods), ("datasets", datasets), ("seeds", seeds), ("out", out),
            ("results-dir", results_dir), ("ancestry", ancestry)) if value is not None]
            + ([f"--workers {workers}"] if workers != 1 else []))
    return run_suite(loaded, methods=_split(methods), datasets=_split(datasets), seeds=seed_list, out=out,
                     results_dir=results_dir, ancestry=ancestry, command=command, workers=workers)
