"""Suite files (benchmarks/suites/*.yaml) as validated dataclasses, and the cache keys.

A suite names an ancestry recipe, a list of methods (label + method + options), descendant
shapes (depths, optional (embed_dim, num_heads) widths), downstream datasets, one fine-tuning
recipe for every method, and seeds. ``plan_cells`` turns it into cells: one per (method,
dataset, shape, seed), each with the hash of everything that determines its outcome.
Any problem in a suite file is a one-line ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..arch import ViTArch, validate_arch, validate_shape, vit_kwargs
from ..data import dataset_info
from ..errors import ConfigError, LearngeneError
from ..registry import config_to_dict, get_method, list_methods, make_config
from ..train import TrainConfig

CELL_FORMAT = 1                                   # bump to invalidate every cached cell
SUITES_DIR = Path("benchmarks") / "suites"        # suite names are looked up here (cwd, then the repo)
REPO_ROOT = Path(__file__).resolve().parents[3]  # src layout: <repo>/src/learngene/bench/suite.py


@dataclass
class AncestrySpec:
    preset: str = "vit-mini"                  # model preset (learngene list)
    data: str = "fashion-mnist"               # dataset the ancestry is trained on (and learngenes extracted with)
    depth: int | None = None                  # preset overrides; None keeps the preset's
    embed_dim: int | None = None
    num_heads: int | None = None
    # patch side in pixels (a square patch): more tokens from the same images, e.g. vit-mini's
    # 28 px at patch 4 is a 7x7 grid (49 tokens + the class token) instead of patch 7's 4x4
    patch_size: int | None = None
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (seed included)

    def model_overrides(self) -> dict[str, int]:
        return {k: v for k, v in (("depth", self.depth), ("embed_dim", self.embed_dim),
                                  ("num_heads", self.num_heads), ("patch_size", self.patch_size)) if v is not None}


@dataclass
class MethodEntry:
    label: str                                # the name shown in tables, plots and records
    method: str                               # a registered method name
    options: dict[str, Any] = field(default_factory=dict)  # the method's config fields
    # data the learngene is extracted with: "ancestry" (the ancestry's dataset: one learngene for
    # every downstream dataset) or "target" (each downstream dataset: one learngene per dataset,
    # e.g. auto-learngene's similarity criterion, which scores layers on a probe of the target task)
    extract_on: str = "ancestry"
    # fine-tuning overrides for this method only (e.g. {epochs: 6} for scratch at twice the budget,
    # TLEG's claim); the suite's recipe otherwise
    finetune: dict[str, Any] = field(default_factory=dict)
    # knowledge distillation: the label of another entry whose cell at the ancestry's shape (same
    # dataset, same seed) is the teacher, e.g. pretrain-finetune (the whole ancestry fine-tuned on
    # the target); this entry's finetune sets distill: soft or hard. None: no teacher
    teacher: str | None = None
    # with a teacher: stop at the step where the cell's train FLOPs (student forward + backward +
    # the teacher's forward) equal a plain cell's of the same shape and recipe (run.kd_max_steps);
    # False: the recipe's epochs, the teacher's forwards on top
    match_flops: bool = True

    def extraction_data(self, suite_data: str, dataset: str) -> str:
        return dataset if self.extract_on == "target" else suite_data


@dataclass
class Suite:
    name: str                                 # the file's stem
    ancestry: AncestrySpec
    methods: list[MethodEntry]
    depths: list[int]                         # descendant depths
    datasets: list[str]                       # downstream datasets
    seeds: list[int]                          # one cell per seed; mean and std over them
    finetune: dict[str, Any] = field(default_factory=dict)   # TrainConfig fields except seed
    widths: list[tuple[int, int]] | None = None  # (embed_dim, num_heads) pairs; None: the ancestry's
    curve_depth: int | None = None            # accuracy-vs-epochs plot at this depth; None: every depth
    description: str = ""

    def finetune_config(self, seed: int, entry: MethodEntry | None = None):
        """The TrainConfig of a cell: the suite's recipe, the entry's overrides, the seed."""
        overrides = entry.finetune if entry is not None else {}
        return TrainConfig.from_dict({**self.finetune, **overrides, "seed": seed, "checkpoint": False})


SUITE_KEYS = {"description": False, "ancestry": True, "methods": True, "depths": True, "widths": False,
              "datasets": True, "finetune": True, "seeds": True, "curve_depth": False}  # key -> required
ANCESTRY_KEYS = {"preset": False, "data": False, "depth": False, "embed_dim": False, "num_heads": False,
                 "patch_size": False, "train": False}
# the preset overrides a suite's ancestry may set; recorded_ancestry_key reads the same from a folder
MODEL_OVERRIDE_KEYS = ("depth", "embed_dim", "num_heads", "patch_size")
METHOD_KEYS = {"label": False, "method": True, "options": False, "extract_on": False, "finetune": False,
               "teacher": False, "match_flops": False}
EXTRACT_ON = ("ancestry", "target")


def _check_keys(values: Any, keys: dict[str, bool], where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of key: value, got {type(values).__name__}")
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(keys)}")
    missing = [k for k, required in keys.items() if required and k not in values]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    return values


def _int_list(values: Any, name: str, where: str, minimum: int) -> list[int]:
    if not isinstance(values, list) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
        raise ConfigError(f"{where}: {name} must be a non-empty list of integers >= {minimum}, got {values!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: {name} has duplicates: {values}")
    return list(values)


def find_suite(name_or_path: str) -> Path:
    """A suite file path, or a name under benchmarks/suites/ (of the working folder, then the repo)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in (Path.cwd() / SUITES_DIR, REPO_ROOT / SUITES_DIR):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for folder in (Path.cwd() / SUITES_DIR, REPO_ROOT / SUITES_DIR)
                   if folder.is_dir() for p in folder.glob("*.yaml"))
    raise ConfigError(f"no suite {name_or_path!r}: give a YAML file or one of {sorted(set(known))}")


def load_suite(name_or_path: str) -> Suite:
    """Read and validate a suite file; any problem is a one-line ConfigError naming the file."""
    path = find_suite(name_or_path)
    where = f"suite {path}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None
    raw = _check_keys(raw, SUITE_KEYS, where)

    anc = _check_keys(raw["ancestry"], ANCESTRY_KEYS, f"{where}: ancestry")
    ancestry = AncestrySpec(**anc)
    patch = ancestry.patch_size
    if patch is not None and (not isinstance(patch, int) or isinstance(patch, bool) or patch < 1):
        raise ConfigError(f"{where}: ancestry: patch_size must be a positive integer (a square patch), got {patch!r}")
    try:
        kwargs = vit_kwargs(ancestry.preset, **ancestry.model_overrides())
        validate_arch(kwargs)
        arch = ViTArch.from_dict(kwargs)
        (h, w), (ph, pw) = arch.img_hw, arch.patch_hw
        if h % ph or w % pw:  # timm floors the grid: the border pixels past the last patch would be dropped
            raise ConfigError(f"patch_size {kwargs['patch_size']} does not divide the {h}x{w} input of "
                              f"preset {ancestry.preset!r}; choose one of "
                              f"{[p for p in range(1, h + 1) if h % p == 0 and w % p == 0]}")
        TrainConfig.from_dict(ancestry.train)
        dataset_info(ancestry.data)
    except LearngeneError as e:
        raise ConfigError(f"{where}: ancestry: {e}") from None

    if not isinstance(raw["methods"], list) or not raw["methods"]:
        raise ConfigError(f"{where}: methods must be a non-empty list of {{label, method, options}}")
    methods = []
    for i, item in enumerate(raw["methods"]):
        item = _check_keys(item, METHOD_KEYS, f"{where}: methods[{i}]")
        if not isinstance(item["method"], str) or not isinstance(item.get("options", {}), dict):
            raise ConfigError(f"{where}: methods[{i}]: method must be a name and options a mapping")
        extract_on = item.get("extract_on", "ancestry")
        if extract_on not in EXTRACT_ON:
            raise ConfigError(f"{where}: methods[{i}]: extract_on must be one of {', '.join(EXTRACT_ON)}, "
                              f"got {extract_on!r}")
        if not isinstance(item.get("finetune", {}), dict):
            raise ConfigError(f"{where}: methods[{i}]: finetune must be a mapping of TrainConfig fields")
        teacher = item.get("teacher")
        if teacher is not None and not isinstance(teacher, str):
            raise ConfigError(f"{where}: methods[{i}]: teacher must be the label of another method, got {teacher!r}")
        if not isinstance(item.get("match_flops", True), bool):
            raise ConfigError(f"{where}: methods[{i}]: match_flops must be true or false")
        methods.append(MethodEntry(label=str(item.get("label", item["method"])), method=item["method"],
                                   options=dict(item.get("options") or {}), extract_on=extract_on,
                                   finetune=dict(item.get("finetune") or {}), teacher=teacher,
                                   match_flops=item.get("match_flops", True)))
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: method labels must be unique, got {labels}")
    for entry in methods:
        _check_teacher(entry, methods, where)
    for entry in methods:
        method_config(entry, where)  # options of registered methods are checked now

    depths = _int_list(raw["depths"], "depths", where, 1)
    widths = None
    if raw.get("widths") is not None:
        pairs = raw["widths"]
        if not isinstance(pairs, list) or not pairs or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) and v > 0 for v in p) for p in pairs):
            raise ConfigError(f"{where}: widths must be a list of [embed_dim, num_heads] pairs, got {pairs!r}")
        widths = [(int(d), int(h)) for d, h in pairs]
        for embed_dim, num_heads in widths:
            try:
                validate_shape(depth=1, embed_dim=embed_dim, num_heads=num_heads)
            except LearngeneError as e:
                raise ConfigError(f"{where}: widths: {e}") from None
    datasets = raw["datasets"]
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) for d in datasets):
        raise ConfigError(f"{where}: datasets must be a non-empty list of dataset names, got {datasets!r}")
    for name in datasets:
        try:
            dataset_info(name)
        except LearngeneError as e:
            raise ConfigError(f"{where}: datasets: {e}") from None
    seeds = _int_list(raw["seeds"], "seeds", where, 0)
    finetune = raw["finetune"]
    if not isinstance(finetune, dict):
        raise ConfigError(f"{where}: finetune must be a mapping of TrainConfig fields")
    if "seed" in finetune:
        raise ConfigError(f"{where}: finetune.seed is set by the suite's seeds list; remove it")
    curve_depth = raw.get("curve_depth")
    if curve_depth is not None and curve_depth not in depths:
        raise ConfigError(f"{where}: curve_depth {curve_depth!r} is not one of the depths {depths}")
    suite = Suite(name=path.stem, ancestry=ancestry, methods=methods, depths=depths, datasets=list(datasets),
                  seeds=seeds, finetune=dict(finetune), widths=widths, curve_depth=curve_depth,
                  description=str(raw.get("description") or ""))
    for entry in [None, *methods]:
        try:
            suite.finetune_config(seeds[0], entry)
        except LearngeneError as e:
            name = "finetune" if entry is None else f"method {entry.label!r}: finetune"
            raise ConfigError(f"{where}: {name}: {e}") from None
    return suite


def _check_teacher(entry: MethodEntry, methods: list[MethodEntry], where: str) -> None:
    """A distilling entry names another entry (itself without a teacher) and sets distill."""
    name = f"{where}: method {entry.label!r}"
    distill = entry.finetune.get("distill", "none")
    if entry.teacher is None:
        if distill != "none":
            raise ConfigError(f"{name}: finetune.distill is {distill!r} but no teacher is named; add "
                              "teacher: <label of another method>, e.g. pretrain-finetune")
        return
    by_label = {m.label: m for m in methods}
    if entry.teacher not in by_label or entry.teacher == entry.label:
        others = [m.label for m in methods if m.label != entry.label]
        raise ConfigError(f"{name}: teacher {entry.teacher!r} is not another method of the suite; "
                          f"choose among {', '.join(others)}")
    if by_label[entry.teacher].teacher is not None:
        raise ConfigError(f"{name}: teacher {entry.teacher!r} itself distils from {by_label[entry.teacher].teacher!r}; "
                          "name a method trained without a teacher")
    if distill == "none":
        raise ConfigError(f"{name}: a teacher is named but finetune.distill is not set; add "
                          "finetune: {distill: soft} (or hard)")


def method_config(entry: MethodEntry, where: str = "suite") -> dict[str, Any] | None:
    """The entry's full method config as a dict, or None if the method is not registered."""
    if entry.method not in list_methods():
        return None
    try:
        return config_to_dict(make_config(get_method(entry.method), entry.options))
    except LearngeneError as e:
        raise ConfigError(f"{where}: method {entry.label!r}: {e}") from None


# -- keys and cells ------------------------------------------------------------------------


def config_hash(obj: Any) -> str:
    """10 hex digits of the sha256 of ``obj`` as sorted JSON (the demo's ancestry key)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def ancestry_key(preset: str, data: str, train_config: Any, model_overrides: dict[str, int] | None = None) -> str:
    """The ancestry recipe's key; equal to `learngene demo`'s for the same preset/data/TrainConfig."""
    recipe: dict[str, Any] = {"preset": preset, "data": data, "train": train_config.key_dict()}
    if model_overrides:
        recipe["model"] = dict(sorted(model_overrides.items()))
    return config_hash(recipe)


def gene_key(ancestry: str, method: str, config: dict[str, Any], data: str) -> str:
    return config_hash({"ancestry": ancestry, "method": method, "config": config, "data": data})


def cell_key(gene: str, dataset: str, shape: tuple[int, int, int], finetune: dict[str, Any],
             teacher: dict[str, Any] | None = None) -> str:
    """``teacher``: a distilling cell's {"cell": the teacher cell's key, "match_flops": ...}."""
    depth, embed_dim, num_heads = shape
    recipe = {"format": CELL_FORMAT, "gene": gene, "dataset": dataset, "depth": depth,
              "embed_dim": embed_dim, "num_heads": num_heads, "finetune": finetune}
    if teacher is not None:
        recipe["teacher"] = teacher
    return config_hash(recipe)


def suite_shapes(suite: Suite, arch: ViTArch) -> list[tuple[int, int, int]]:
    widths = suite.widths or [(arch.embed_dim, arch.num_heads)]
    return [(depth, d, h) for d, h in widths for depth in suite.depths]


@dataclass(frozen=True)
class Cell:
    entry: MethodEntry
    dataset: str
    shape: tuple[int, int, int]               # (depth, embed_dim, num_heads)
    seed: int
    gene_key: str
    key: str
    teacher: "Cell | None" = None             # the cell whose trained model is this cell's teacher


def teacher_shape(arch: ViTArch) -> tuple[int, int, int]:
    """The shape of every teacher cell: the ancestry's."""
    return (arch.depth, arch.embed_dim, arch.num_heads)


def plan_cells(suite: Suite, ancestry: str, arch: ViTArch, *, methods: list[str], datasets: list[str],
               seeds: list[int]) -> tuple[list[Cell], dict[str, str]]:
    """The selected cells, and {label: reason} for the selected methods that cannot run at all."""
    cells, unavailable = [], {}
    by_label = {m.label: m for m in suite.methods}

    def plan(entry: MethodEntry, config: dict[str, Any], dataset: str, shape: tuple[int, int, int],
             seed: int) -> Cell:
        gkey = gene_key(ancestry, entry.method, config, entry.extraction_data(suite.ancestry.data, dataset))
        teacher = None
        if entry.teacher is not None:
            teacher_entry = by_label[entry.teacher]
            teacher = plan(teacher_entry, method_config(teacher_entry), dataset, teacher_shape(arch), seed)
        key = cell_key(gkey, dataset, shape, suite.finetune_config(seed, entry).key_dict(),
                       None if teacher is None else {"cell": teacher.key, "match_flops": entry.match_flops})
        return Cell(entry, dataset, shape, seed, gkey, key, teacher)

    for label in methods:
        entry = by_label[label]
        config = method_config(entry)
        missing = [e for e in (entry, by_label.get(entry.teacher)) if e is not None and method_config(e) is None]
        if missing:
            unavailable[label] = (f"method {missing[0].method!r}{' (its teacher)' if missing[0] is not entry else ''} "
                                  f"is not registered in this version (registered: {', '.join(list_methods())})")
            continue
        for dataset in datasets:
            for shape in suite_shapes(suite, arch):
                for seed in seeds:
                    cells.append(plan(entry, config, dataset, shape, seed))
    return cells, unavailable
