"""Recipes: the steps every workflow is made of, as flat typed functions.

    train, test = load_splits("mnist-5k", arch)                 # datasets at a model's input
    ancestry, result = train_ancestry("vit-mini", "fashion-mnist", TrainConfig(epochs=5), "runs/ancestry")
    child, result = finetune(learngene.load("genes/peg"), "mnist-5k", TrainConfig(epochs=5), shape=Shape(depth=6))
    metrics = evaluate_model(child, "mnist-5k")                  # {"loss", "acc", "n"}

``finetune`` takes a descendant of any kind: a learngene (grown at ``shape``; descendants
that train extra machinery, PEG's and Cluster-Learngene's maps, train it and are folded into
the plain ViT afterwards), a ``Descendant`` already grown, a plain timm ViT, or any other
module, such as a stitched supernet, trained as it is.

The ``*_folder`` recipes are the same steps on folders, as the command line runs them: model
folders (``model.safetensors`` + ``model_config.json``), learngene folders, and the folders of
descendants that are not timm ViTs (mm-lg's whole CLIPs), which each method registers as a
``registry.DescendantKind``. Recipes reach the methods only through the registry and the
``Learngene`` API, never by a method's name; ``learngene.cli``, ``learngene.bench`` and
``learngene.demo`` are built from them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ._io import atomic_write_text
from .api import Learngene, load
from .arch import ViTArch, arch_of, create_vit
from .artifact import CONFIG_NAME
from .data import dataset_info, load_dataset
from .errors import ConfigError
from .models import load_ancestry, save_model
from .registry import DescendantKind, descendant_kind, descendant_kinds, get_method, list_methods
from .train import evaluate, fit
from .train.augment import move_recipe_into_workers

# A dataset name (loaded at the model's input size), or the (train, test) datasets themselves
# (test may be None: no evaluation).
Data = Union[str, tuple[Any, Any]]


def is_main_process() -> bool:
    """Rank 0 under torchrun (RANK is set by torchrun), or a plain single process: the only writer."""
    return int(os.environ.get("RANK", "0")) == 0


def write_run_config(out: str | os.PathLike, record: dict[str, Any]) -> None:
    """Keep ``record`` (a command and its resolved options) as ``out/config.yaml``, atomically."""
    import yaml

    if is_main_process():
        atomic_write_text(Path(out) / "config.yaml", yaml.safe_dump(record, sort_keys=False))


def _run_folder(out: str | os.PathLike | None, record: dict[str, Any] | None) -> Path | None:
    """The run's output folder, created, with its config.yaml when a record is given."""
    if out is None:
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if record is not None:
        write_run_config(out, record)
    return out


def _cost(result: Any) -> dict[str, Any]:
    """A training run's cost, as model folders record it."""
    return {"samples_seen": result.samples_seen, "train_flops": result.train_flops, "wall_time_s": result.wall_time_s}


# -- data ---------------------------------------------------------------------------------------


def load_split(data: str, arch: ViTArch, split: str = "train", *, augment: bool = False):
    """One split of a registered dataset at the input of ``arch`` (``arch.side`` x
    ``arch.side`` images of ``arch.in_chans`` channels)."""
    return load_dataset(data, split, image_size=arch.side, in_chans=arch.in_chans, augment=augment)


def load_splits(data: str, arch: ViTArch, *, augment: bool = False) -> tuple[Any, Any]:
    """(train, test) of a registered dataset at the input of ``arch``; ``augment``: random
    shifts of the training images."""
    return load_split(data, arch, "train", augment=augment), load_split(data, arch, "test")


def _num_classes(data: Data) -> int | None:
    """The class count of a dataset name, or of loaded datasets that say it (``.info``)."""
    if isinstance(data, str):
        return dataset_info(data).num_classes
    info = getattr(data[0], "info", None)
    return getattr(info, "num_classes", None)


def _datasets(data: Data, arch: ViTArch | None, augment: bool) -> tuple[Any, Any]:
    if not isinstance(data, str):
        if augment:
            raise ConfigError("augment applies to a dataset name; augment the datasets you pass yourself")
        train, test = data
        return train, test
    if arch is None:
        raise ConfigError("only a timm ViT (or a learngene's descendant) reads its input size from its architecture: "
                          "pass this model's data as (train, test) datasets")
    return load_splits(data, arch, augment=augment)


# -- ancestry -----------------------------------------------------------------------------------


def train_ancestry(preset: str | ViTArch, data: str, config: Any, out: str | os.PathLike | None = None, *,
                   model_overrides: dict[str, Any] | None = None, augment: bool = False, resume: bool = False,
                   progress: bool = True, record: dict[str, Any] | None = None,
                   announce: Callable[[str], None] | None = None) -> tuple[VisionTransformer, Any]:
    """Train an ancestry: a timm ViT of ``preset`` (a preset name or a ``ViTArch``, with
    ``model_overrides``: depth=..., embed_dim=..., any VisionTransformer argument) whose
    classifier fits ``data``, initialised after ``torch.manual_seed(config.seed)``, trained on
    ``data``'s train split (TrainConfig ``config``) and evaluated on its test split.

    ``out``: the run's files (checkpoint.pt, metrics.jsonl, ...; ``resume`` continues from
    the checkpoint) and the model folder ``load_ancestry`` reads, recording the data, the
    preset, the test accuracy and the training cost. ``record`` is kept as out/config.yaml.
    ``announce`` is called with one line describing the run once its data is loaded.
    Returns (model, TrainResult).
    """
    import torch

    num_classes = _num_classes(data)
    torch.manual_seed(config.seed)
    model = create_vit(preset, num_classes=num_classes, **(model_overrides or {}))
    train, test = load_splits(data, arch_of(model), augment=augment)
    move_recipe_into_workers(train, config)
    out_dir = _run_folder(out, record)
    if announce is not None:
        name = preset if isinstance(preset, str) else f"{preset.depth} x {preset.embed_dim}"
        announce(f"training the {name} ancestry on {data} ({len(train):,} images x {config.epochs} epochs) -> {out}")
    result = fit(model, train, test, config, out_dir=out_dir, resume=resume, progress=progress)
    if out_dir is not None and is_main_process():
        save_model(model, out_dir, data=data, preset=preset if isinstance(preset, str) else None,
                   eval_acc=result.eval_acc, cost=_cost(result))
    return model, result


# -- descendants --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A descendant's shape; ``None`` keeps the ancestry's."""

    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None

    def kwargs(self) -> dict[str, int | None]:
        return {"depth": self.depth, "embed_dim": self.embed_dim, "num_heads": self.num_heads}

    @property
    def given(self) -> bool:
        return any(value is not None for value in self.kwargs().values())


@dataclass
class Descendant:
    """A learngene's descendant as it trains. ``module`` is what ``Learngene.expand(trainable=True)``
    grows: for PEG and Cluster-Learngene a module that trains their maps, for every other
    method the plain timm ViT. ``plain()`` folds it into the timm ViT it computes."""

    gene: Learngene
    module: nn.Module
    arch: ViTArch                                  # the plain ViT's architecture

    def plain(self) -> nn.Module:
        return self.gene.fold(self.module)


def grow(gene: Learngene, *, shape: Shape = Shape(), num_classes: int | None = None, seed: int | None = None,
         trainable: bool = True) -> Descendant:
    """Grow ``gene``'s descendant of ``shape`` with ``num_classes`` classes (default: the
    ancestry's), its random initialisation seeded with ``seed``. ``trainable=False``: the
    plain ViT even for methods whose descendants train maps (the maps folded before training).
    A shape the method cannot grow is a ConfigError."""
    arch = gene.descendant_arch(**shape.kwargs(), num_classes=num_classes)
    module = gene.expand(**shape.kwargs(), num_classes=num_classes, seed=seed, trainable=trainable)
    return Descendant(gene, module, arch)


def finetune(descendant: Learngene | Descendant | nn.Module, data: Data, config: Any,
             out: str | os.PathLike | None = None, *, shape: Shape = Shape(), seed: int | None = None,
             augment: bool = False, resume: bool = False, progress: bool = True,
             record: dict[str, Any] | None = None, teacher: nn.Module | None = None) -> tuple[nn.Module, Any]:
    """Fine-tune a descendant on ``data``'s train split (TrainConfig ``config``), evaluating on
    its test split; with ``teacher`` (a model of the data's classes) and ``config.distill``
    soft or hard, distilling from it as well. ``descendant`` is

      - a ``Learngene``: grown by ``grow`` at ``shape`` with the data's classes (the ancestry's
        when datasets without ``.info`` are given), seeded with ``seed`` (default ``config.seed``);
      - a ``Descendant`` from ``grow``;
      - a timm ``VisionTransformer``: trained in place, its classifier replaced (timm's init,
        torch's global RNG) when the data has another class count;
      - any other module (a stitched supernet, a ``StitchedViT``): trained as it is; pass its
        data as datasets.

    ``data``: a dataset name, loaded at the model's input (``augment``: random shifts of the
    training images), or the (train, test) datasets. ``out``: the run's files (checkpoint,
    metrics.jsonl, the trained module's weights; ``resume`` continues from the checkpoint);
    ``record`` is kept as out/config.yaml. Returns (the plain model, TrainResult): a
    learngene's descendant folded into its timm ViT.
    """
    if shape.given and not isinstance(descendant, Learngene):
        raise ConfigError("a descendant shape (depth, embed_dim, num_heads) applies only when growing a learngene")
    num_classes = _num_classes(data)
    if isinstance(descendant, Learngene):
        descendant = grow(descendant, shape=shape, num_classes=num_classes,
                          seed=config.seed if seed is None else seed)
    if isinstance(descendant, Descendant):
        module, arch = descendant.module, descendant.arch
    elif isinstance(descendant, VisionTransformer):
        module = descendant
        if num_classes is not None and module.num_classes != num_classes:
            module.reset_classifier(num_classes)
        arch = arch_of(module)
    else:
        module, arch = descendant, None
    train, test = _datasets(data, arch, augment)
    if isinstance(data, str):  # datasets the caller passed keep the transform they were given
        move_recipe_into_workers(train, config)
    out_dir = _run_folder(out, record)
    result = fit(module, train, test, config, out_dir=out_dir, resume=resume, progress=progress, teacher=teacher)
    return (descendant.plain() if isinstance(descendant, Descendant) else module), result


def evaluate_model(model: str | os.PathLike | nn.Module, data: str, split: str = "test", *,
                   batch_size: int = 256) -> dict[str, Any]:
    """Top-1 accuracy and loss (``{"loss", "acc", "n"}``) of a model, or a model folder, on one
    split of ``data``. A folder of another descendant kind (a CLIP folder) is scored by its
    kind: CLIPs by zero-shot accuracy and retrieval recall@1/5 on caption pairs."""
    kind = folder_kind(model) if isinstance(model, (str, os.PathLike)) else None
    if kind is not None:
        return kind.evaluate(model, data, split)
    net = load_ancestry(model)
    dataset = load_split(data, arch_of(net), split)
    if dataset.info.num_classes != net.num_classes:
        raise ConfigError(f"the model has {net.num_classes} classes but {data} has {dataset.info.num_classes}; "
                          "fine-tune it on this dataset first")
    return evaluate(net, dataset, batch_size=batch_size)


# -- on folders, as the command line runs them ----------------------------------------------------


def folder_kind(path: str | os.PathLike) -> DescendantKind | None:
    """The registered descendant kind whose folder ``path`` is (a CLIP folder), or None."""
    return next((kind for kind in descendant_kinds() if kind.is_folder(Path(path))), None)


def expand_to_folder(source: str | os.PathLike, out: str | os.PathLike, *, shape: Shape = Shape(),
                     num_classes: int | None = None, seed: int = 0, kind: str | None = None,
                     **kind_options: Any) -> dict[str, Any]:
    """Grow a descendant of the learngene folder ``source`` and write it to ``out``: a model
    folder of the plain timm ViT, or with ``kind`` (e.g. "clip") the method's own kind of
    descendant (``kind_options``: that kind's options, e.g. text_depth). Returns its summary."""
    gene = load(source)
    if kind is not None:
        grower = next((k for k in get_method(gene.method).descendant_kinds if k.name == kind), None)
        if grower is None:
            known = descendant_kind(kind)
            makers = [m for m in list_methods() if any(k.name == kind for k in get_method(m).descendant_kinds)]
            raise ConfigError(f"{source} is a {gene.method!r} learngene, which grows no "
                              f"{known.title if known else kind} descendants (learngenes of "
                              f"{', '.join(makers) or 'no method'} do): drop --{kind} to grow a timm ViT")
        return grower.expand(gene, out, depth=shape.depth, **kind_options)
    model = gene.expand(**shape.kwargs(), num_classes=num_classes, seed=seed)
    save_model(model, out, learngene=str(source), method=gene.method, seed=seed)
    return {"out": str(out), "method": gene.method, "depth": len(model.blocks), "embed_dim": model.embed_dim,
            "parameters": sum(p.numel() for p in model.parameters())}


def finetune_folder(source: str | os.PathLike, data: str, config: Any, out: str | os.PathLike, *,
                    shape: Shape = Shape(), augment: bool = False, resume: bool = False,
                    record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune a model folder, a learngene folder's descendant (grown at ``shape``) or a
    folder of another descendant kind (a CLIP: contrastively, on the data's caption pairs) on
    ``data``, and write the result to ``out`` as the same kind of model folder (a learngene's
    descendant as the plain timm ViT, recording where it came from and its cost).
    Returns the run's summary."""
    kind = folder_kind(source)
    if kind is not None:
        if shape.given or augment or resume:
            raise ConfigError(f"--depth/--embed-dim/--num-heads/--augment/--resume do not apply to a {kind.title} "
                              "folder")
        _run_folder(out, record)
        return kind.finetune(source, data, out, config)
    path = Path(source)
    if (path / CONFIG_NAME).is_file():
        descendant: Learngene | nn.Module = load(path)
        origin = {"learngene": str(path), "method": descendant.method}
    else:
        if shape.given:
            raise ConfigError("--depth/--embed-dim/--num-heads apply only when MODEL is a learngene folder")
        descendant = load_ancestry(path)
        origin = {"parent_model": str(path)}
    model, result = finetune(descendant, data, config, out, shape=shape, augment=augment, resume=resume,
                             record=record)
    out_dir = Path(out)
    if is_main_process():
        save_model(model, out_dir, data=data, eval_acc=result.eval_acc, **origin, cost=_cost(result))
    return {"out": str(out_dir), "eval_acc": result.eval_acc, "samples_seen": result.samples_seen,
            "train_flops": result.train_flops}
