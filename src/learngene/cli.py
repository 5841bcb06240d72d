"""The `learngene` command line. Each subcommand is a plain typed function below;
``_cli_args`` turns signatures and docstrings into argparse parsers.

    learngene list                                    # methods, datasets, presets
    learngene ancestry --preset vit-mini --data fashion-mnist --epochs 5 --out runs/ancestry
    learngene extract METHOD --help                   # the method's options (key=value)
    learngene extract METHOD --ancestry runs/ancestry --out genes/gene key=value ...
    learngene info genes/gene
    learngene expand genes/gene --depth 6 --num-classes 10 --out runs/child
    learngene finetune runs/child --data mnist-5k --epochs 5 --out runs/child-mnist
    learngene eval runs/child-mnist --data mnist-5k
    learngene clip-ancestry --data fashion-mnist --out runs/clip-ancestry   # for methods that condense CLIPs

The steps themselves are ``learngene.recipes``; no method is named here: what a method adds
(another kind of descendant, a plot) comes from its registration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import recipes
from ._cli_args import Parser, add_subcommand, dataclass_help, one_line, resolve_call
from .api import extract, load
from .arch import VIT_PRESETS
from .bench import bench
from .clip.workflow import train_clip_ancestry
from .data import list_datasets
from .demo import DemoConfig, run_demo
from .errors import ConfigError, LearngeneError, UnknownMethodError
from .recipes import Shape, is_main_process, write_run_config
from .registry import config_to_dict, get_method, list_methods, make_config
from .train import TrainConfig
from .version import __version__


FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".json", ".yaml")  # values that name a file


def _require_path(value: str, kind: str, fix: str, *, option: str = "", bare_names_too: bool = True) -> None:
    """Stop with one line naming the argument as given when nothing is at that path.

    ``bare_names_too=False``: only where the value looks like a path (a folder separator or a
    weights-file suffix); a bare name may be a preset or a timm model name (with a weights tag
    such as ``vit_small_patch16_224.augreg_in21k``).
    """
    looks_like_path = bare_names_too or os.sep in value or Path(value).suffix.lower() in FILE_SUFFIXES
    if looks_like_path and not Path(value).exists():
        raise ConfigError(f"{option + ' ' if option else ''}{value} is not {kind}: it does not exist; {fix}")


def _train_config(train: dict[str, Any], **shortcuts: Any):
    values = dict(train)
    values.update({k: v for k, v in shortcuts.items() if v is not None})
    return TrainConfig.from_dict(values)


def cmd_list() -> None:
    """List methods, datasets and model presets."""
    print("methods:")
    for name in list_methods():
        print(f"  {name:20s} {get_method(name).summary}")
    print("datasets:")
    for name in list_datasets():
        print(f"  {name}")
    print("model presets:")
    for name, kw in VIT_PRESETS.items():
        print(f"  {name:12s} depth {kw['depth']}, width {kw['embed_dim']}, {kw['num_heads']} heads, "
              f"patch {kw['patch_size']}, {kw['img_size']}x{kw['img_size']}x{kw['in_chans']}")


def cmd_ancestry(*, preset: str = "vit-mini", data: str = "fashion-mnist", out: str = "runs/ancestry",
                 epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                 seed: int | None = None, depth: int | None = None, embed_dim: int | None = None,
                 num_heads: int | None = None, resume: bool = False, augment: bool = False,
                 overrides: dict[str, Any] | None = None) -> None:
    """Train an ancestry model on a dataset (the model learngenes are condensed from).

    Args:
        preset: model preset (see `learngene list`).
        data: dataset name (see `learngene list`).
        out: output folder: model.safetensors, model_config.json, metrics.jsonl, checkpoint.pt.
        epochs: training epochs (train.epochs; default 10).
        batch_size: images per optimizer step, summed over all processes and accumulation
            steps (train.batch_size; default 128, or the --config file's train.batch_size).
        lr: peak learning rate (train.lr; default 1e-3).
        seed: seed of init, data order and augmentation (train.seed).
        depth: override the preset's depth.
        embed_dim: override the preset's width.
        num_heads: override the preset's head count.
        resume: continue from out/checkpoint.pt.
        augment: augment the training images: a random shift of up to 2 pixels for in-memory
            datasets, RandomResizedCrop + horizontal flip for streamed image folders; DeiT's
            RandAugment, random erasing and Mixup/CutMix are the train.* options.
    """
    overrides = dict(overrides or {})
    train = overrides.pop("train", {})
    model_kw = overrides.pop("model", {})
    if overrides:
        raise ConfigError(f"unknown option(s) {sorted(overrides)}; use train.<field>=... or model.<arg>=...")
    cfg = _train_config(train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    record = dict(command="ancestry", preset=preset, data=data, model=model_kw, train=cfg.to_dict(), depth=depth,
                  embed_dim=embed_dim, num_heads=num_heads, augment=augment)
    _, result = recipes.train_ancestry(preset, data, cfg, out, augment=augment, resume=resume, record=record,
                                       model_overrides=dict(depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                                                            **model_kw))
    if is_main_process():
        print(json.dumps({"out": str(Path(out)), "eval_acc": result.eval_acc, "samples_seen": result.samples_seen,
                          "train_flops": result.train_flops, "wall_time_s": round(result.wall_time_s, 1)}))


def cmd_clip_ancestry(*, data: str = "fashion-mnist", out: str = "runs/clip-ancestry", epochs: int = 3,
                      limit: int | None = None, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                      image_layers: int = 6, text_layers: int = 6, width: int = 96, heads: int = 6,
                      overrides: dict[str, Any] | None = None) -> None:
    """Train a CPU-scale CLIP ancestry (for methods that condense CLIPs) contrastively on a dataset's
    image-caption pairs.

    Args:
        data: labelled dataset whose images get templated captions (see learngene.clip.data).
        out: CLIP folder to write: clip_arch.json, model.safetensors (open_clip keys), tokenizer.json.
        epochs: training epochs.
        limit: use this many training images (drawn at random, seeded); default all.
        batch_size: global batch size (the contrastive batch).
        lr: peak learning rate.
        seed: seed of init and data order.
        image_layers: image tower depth.
        text_layers: text tower depth.
        width: width of both towers (equal, so a learngene can share blocks between them).
        heads: attention heads of both towers.
    """
    overrides = dict(overrides or {})
    train = overrides.pop("train", {})
    if overrides:
        raise ConfigError(f"unknown option(s) {sorted(overrides)}; use train.<field>=...")
    cfg = _train_config({"warmup_epochs": min(0.5, float(epochs)), "weight_decay": 0.05, **train},
                        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    write_run_config(out, dict(command="clip-ancestry", data=data, limit=limit, train=cfg.to_dict(),
                               image_layers=image_layers, text_layers=text_layers, width=width, heads=heads))
    summary = train_clip_ancestry(data, out, cfg, limit=limit, image_layers=image_layers, text_layers=text_layers,
                                  width=width, heads=heads)
    if is_main_process():
        print(json.dumps(summary))


def cmd_extract(method: str, *, ancestry: str = "runs/ancestry", out: str = "genes/learngene",
                data: str | None = None, overrides: dict[str, Any] | None = None) -> None:
    """Condense an ancestry into a learngene with METHOD (options as key=value, e.g. k=3,
    or under `options:` in a --config YAML file).

    Args:
        method: method name (see `learngene list`).
        ancestry: run folder, .safetensors/.pth file (a DeiT release .pth too), preset or timm model
            name (for methods that condense CLIPs: a folder from `learngene clip-ancestry`, a Hugging
            Face CLIP folder, or open_clip:MODEL/FILE such as open_clip:ViT-B-32/clip.pt).
        out: learngene folder to write.
        data: dataset the method reads (for methods that need data).
    """
    options = dict(overrides or {})
    nested = options.pop("options", {})  # YAML presets put method options under `options:`
    options = {**nested, **options}
    spec = get_method(method)
    resolved = json.loads(json.dumps(config_to_dict(make_config(spec, options))))  # tuples -> lists, for YAML
    if not ancestry.startswith(("open_clip:", "hf:")):  # CLIP sources by scheme: their loader checks the path
        _require_path(ancestry, "an ancestry folder or weights file",
                      "train one with `learngene ancestry` (a CLIP: `learngene clip-ancestry`)",
                      option="--ancestry", bare_names_too=False)
    gene = extract(method, ancestry, data=data, **options)
    path = gene.save(out)
    # after save, which replaces the folder whole
    write_run_config(path, dict(command="extract", method=method, ancestry=ancestry, data=data, options=resolved))
    print(json.dumps({"out": str(path), "method": gene.method, "stored_parameters": gene.num_parameters,
                      "config": gene.config}))


def cmd_expand(gene: str, *, out: str = "runs/descendant", depth: int | None = None,
               embed_dim: int | None = None, num_heads: int | None = None, num_classes: int | None = None,
               seed: int = 0, clip: bool = False, text_depth: int | None = None) -> None:
    """Grow a descendant (a plain timm VisionTransformer, or with --clip a whole CLIP) from a learngene folder.

    Args:
        gene: learngene folder.
        out: model folder to write (model.safetensors + model_config.json).
        depth: descendant depth (default: the ancestry's).
        embed_dim: descendant width (default: the ancestry's).
        num_heads: descendant head count (default: the ancestry's).
        num_classes: classifier size (default: the ancestry's).
        seed: seed of the random init of what the learngene does not provide.
        clip: write a whole CLIP descendant (a CLIP folder, open_clip weights) with an image tower
            of --depth blocks and a text tower of --text-depth blocks, from a learngene that grows
            CLIPs (`learngene info GENE` says).
        text_depth: with --clip: text tower depth (default: the ancestry's).
    """
    if text_depth is not None and not clip:
        raise ConfigError("--text-depth applies with --clip (a whole CLIP descendant)")
    kind = dict(kind="clip", text_depth=text_depth) if clip else {}
    summary = recipes.expand_to_folder(gene, out, shape=Shape(depth, embed_dim, num_heads), num_classes=num_classes,
                                       seed=seed, **kind)
    write_run_config(out, dict(command="expand", gene=gene, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                               num_classes=num_classes, seed=seed, clip=clip, text_depth=text_depth))
    print(json.dumps(summary))


def cmd_finetune(model: str, *, data: str = "mnist-5k", out: str = "runs/finetune", epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None, seed: int | None = None,
                 depth: int | None = None, embed_dim: int | None = None, num_heads: int | None = None,
                 resume: bool = False, augment: bool = False, overrides: dict[str, Any] | None = None) -> None:
    """Fine-tune a model folder, or a learngene folder's descendant, on a dataset.

    Args:
        model: a model folder (from `expand`/`ancestry`) or a learngene folder (expanded first).
        data: dataset name.
        out: output folder.
        epochs: training epochs (train.epochs; default 10).
        batch_size: images per optimizer step, summed over all processes and accumulation
            steps (train.batch_size; default 128, or the --config file's train.batch_size).
        lr: peak learning rate (train.lr; default 1e-3).
        seed: training seed (and descendant init seed when expanding).
        depth: descendant depth when MODEL is a learngene.
        embed_dim: descendant width when MODEL is a learngene.
        num_heads: descendant heads when MODEL is a learngene.
        resume: continue from out/checkpoint.pt.
        augment: augment the training images: a random shift of up to 2 pixels for in-memory
            datasets, RandomResizedCrop + horizontal flip for streamed image folders; DeiT's
            RandAugment, random erasing and Mixup/CutMix are the train.* options.
    """
    overrides = dict(overrides or {})
    train = overrides.pop("train", {})
    if overrides:
        raise ConfigError(f"unknown option(s) {sorted(overrides)}; use train.<field>=...")
    cfg = _train_config(train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    _require_path(model, "a model folder or learngene folder",
                  "create one with `learngene ancestry`, `expand` or `extract`", bare_names_too=False)
    shape = Shape(depth, embed_dim, num_heads)
    record = dict(command="finetune", model=model, data=data, train=cfg.to_dict())
    if recipes.folder_kind(model) is None:  # a model or learngene folder: the shape and augmentation too
        record.update(depth=depth, embed_dim=embed_dim, num_heads=num_heads, augment=augment)
    summary = recipes.finetune_folder(model, data, cfg, out, shape=shape, augment=augment, resume=resume,
                                      record=record)
    if is_main_process():
        print(json.dumps(summary))


def cmd_eval(model: str, *, data: str = "mnist-5k", split: str = "test", batch_size: int = 256) -> None:
    """Evaluate a model folder on a dataset split; prints top-1 accuracy and loss as JSON
    (a CLIP folder: zero-shot accuracy and retrieval recall@1/5).

    Args:
        model: model folder (or weights file / preset).
        data: dataset name.
        split: train or test.
        batch_size: evaluation batch size.
    """
    if recipes.folder_kind(model) is None:
        _require_path(model, "a model folder", "create one with `learngene ancestry`, `expand` or `finetune`",
                      bare_names_too=False)
    metrics = recipes.evaluate_model(model, data, split, batch_size=batch_size)
    print(json.dumps({"model": model, "data": data, "split": split, **metrics}))


def _short_config(config: dict[str, Any], limit: int = 80) -> dict[str, Any]:
    """The config for display: long measurements (per-head distances, similarity matrices...)
    become a one-word summary; `--json-output` prints them whole."""
    def short(value: Any) -> Any:
        text = json.dumps(value)
        if len(text) <= limit:
            return value
        if isinstance(value, list):
            return f"<list of {len(value)}, {len(text):,} characters: see --json-output>"
        return f"<{type(value).__name__}, {len(text):,} characters: see --json-output>"
    return {k: short(v) for k, v in config.items()}


def cmd_info(gene: str, *, json_output: bool = False, plot: str | None = None) -> None:
    """Show a learngene: method, stored parameters, provenance, descendant shapes it can produce.

    Args:
        gene: learngene folder.
        json_output: print the whole config as JSON instead of a summary.
        plot: write the method's picture of the learngene (a PNG) to this path, for methods that
            draw one (e.g. attention distances per head and layer, clusters coloured).
    """
    import math

    learngene = load(gene)
    if plot:
        plot = str(learngene.plot(plot))
    if json_output:
        print(json.dumps(learngene.to_config_dict(), indent=2))
        return

    def part(d: Any, key: str) -> dict[str, Any]:  # provenance is free-form: read it defensively
        value = d.get(key) if isinstance(d, dict) else None
        return value if isinstance(value, dict) else {}

    def number(value: Any) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else 0.0

    prov = learngene.provenance
    arch = part(part(prov, "ancestry"), "arch")
    anc_params = number(part(prov, "ancestry").get("num_parameters"))
    stored = learngene.num_parameters
    print(f"method:            {learngene.method}")
    print(f"method config:     {json.dumps(_short_config(learngene.config))}")
    share = f" ({100 * stored / anc_params:.1f}% of the ancestry's {int(anc_params):,})" if anc_params > 0 else ""
    print(f"stored parameters: {stored:,}{share}")
    print(f"ancestry:          depth {arch.get('depth')}, width {arch.get('embed_dim')}, {arch.get('num_heads')} heads, "
          f"{arch.get('img_size')}px/{arch.get('patch_size')} patch, {arch.get('num_classes')} classes "
          f"(from {part(prov, 'ancestry').get('source')})")
    if prov.get("data"):
        print(f"data seen:         {json.dumps(prov['data'])}")
    cost = part(prov, "cost")
    samples, flops = int(number(cost.get("samples_seen"))), number(cost.get("flops"))
    print(f"extraction cost:   {samples:,} samples, {flops:.3g} FLOPs")
    print(f"descendants:       {learngene.describe_shapes()}")
    print(f"created:           {prov.get('created')} by {prov.get('library')}")
    if plot:
        print(f"plot:              {plot}")


def cmd_demo(*, out: str = "runs/demo", ancestry: str | None = None, ancestry_epochs: int = 2,
             depths: list[int] | None = None, downstream: str = "mnist-5k", epochs: int = 6, seed: int = 0,
             overrides: dict[str, Any] | None = None) -> None:
    """The end-to-end demo: ancestry -> learngene -> descendants of 3 depths vs the same shapes
    from a random init, table + plot.

    Args:
        out: output folder (the ancestry is cached here, keyed by its config).
        ancestry: use this ancestry folder instead of training one.
        ancestry_epochs: epochs of ancestry training on Fashion-MNIST.
        depths: descendant depths (default: 3 6 9).
        downstream: dataset the descendants are fine-tuned on.
        epochs: fine-tuning epochs of every descendant.
        seed: seed of everything.
    """
    if ancestry is not None:
        _require_path(ancestry, "an ancestry folder", "train one with `learngene ancestry` or leave --ancestry out",
                      option="--ancestry")
    options = dict(overrides or {})
    method_options = options.pop("method_options", None)
    import dataclasses

    known = {f.name for f in dataclasses.fields(DemoConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown demo option(s) {unknown}; valid: {', '.join(sorted(known))}")
    cfg = DemoConfig(out=out, ancestry=ancestry, ancestry_epochs=ancestry_epochs, downstream=downstream,
                     epochs=epochs, seed=seed, **({"depths": depths} if depths else {}), **options,
                     **({"method_options": method_options} if method_options else {}))
    run_demo(cfg)


def cmd_bench(suite: str, *, methods: str | None = None, datasets: str | None = None, seeds: str | None = None,
              out: str = "runs/bench", results_dir: str | None = None, ancestry: str | None = None,
              workers: int = 1) -> None:
    """Run a benchmark suite: ancestry -> learngenes -> descendants x datasets x seeds, cached per cell.

    Writes RESULTS_DIR/SUITE.json, SUITE.md and SUITE-*.png from every cached cell of the suite
    (RESULTS_DIR defaults to OUT/results; `--results-dir benchmarks/results` updates the committed ones).

    Args:
        suite: a suite name under benchmarks/suites/ (mini, smoke) or a suite YAML file.
        methods: run only these method labels (comma-separated).
        datasets: run only these datasets (comma-separated).
        seeds: run these seeds instead of the suite's (comma-separated).
        out: cache folder: ancestry, learngenes, one JSON record per cell.
        results_dir: where the results JSON, markdown table and plots go (default: OUT/results).
        ancestry: use this ancestry folder instead of training (or reusing) the suite's.
        workers: train this many cells at once, one process each, torch threads split between them.
    """
    bench(suite, methods=methods, datasets=datasets, seeds=seeds, out=out, results_dir=results_dir,
          ancestry=ancestry, workers=workers)


COMMANDS = {
    "demo": cmd_demo,
    "bench": cmd_bench,
    "list": cmd_list,
    "ancestry": cmd_ancestry,
    "clip-ancestry": cmd_clip_ancestry,
    "extract": cmd_extract,
    "expand": cmd_expand,
    "finetune": cmd_finetune,
    "eval": cmd_eval,
    "info": cmd_info,
}


def _method_options_help(namespace: argparse.Namespace) -> str:
    """`learngene extract METHOD --help`: METHOD's options, read from its config dataclass."""
    method = getattr(namespace, "method", None)
    if method is None:
        return f"METHOD's options: `learngene extract METHOD --help` (methods: {', '.join(list_methods())})"
    try:
        spec = get_method(method)
    except UnknownMethodError as e:
        return str(e)
    return dataclass_help(spec.config_cls, f"options of {method} (key=value after the arguments, or under "
                                           "`options:` in a --config file):")


MORE_HELP = {"extract": _method_options_help}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="learngene", description="Learngene: condense an ancestry model, grow descendants.")
    parser.add_argument("--version", action="version", version=f"learngene-kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, func in COMMANDS.items():
        add_subcommand(sub, name, func, more_help=MORE_HELP.get(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Anything argparse did not recognise must be a key=value override.
    unknown = [item for item in rest if "=" not in item or item.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = rest
    if not getattr(args, "_func", None):
        parser.print_help()
        print("learngene: error: no command given; choose one of the commands above", file=sys.stderr)
        return 2
    try:
        kwargs = resolve_call(args._func, args)
        args._func(**kwargs)
    except LearngeneError as e:
        print(one_line(f"learngene {args.command}: error: {e}"), file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave: missing, unwritable, too long, a file where a folder goes...
        where = f": {e.filename}" if e.filename else ""
        print(one_line(f"learngene {args.command}: error: {e.strerror or e}{where}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"learngene {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
