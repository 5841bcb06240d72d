"""Method registry, in the spirit of PEFT's ``register_peft_method``.

Each method folder registers one ``MethodSpec`` in its ``__init__``: a name, a config
dataclass, and two functions:

    extract(ancestry: VisionTransformer, config, data) -> Artifact
    expand(gene: Artifact, arch: ViTArch) -> VisionTransformer   (Learngene.expand seeds the RNG)

``arch`` is the descendant's architecture, already validated. Everything a method adds to
the common workflow (a trainable descendant and its fold, a plot for ``learngene info``,
descendants that are not timm ViTs) is an optional field of its spec, so the API, the
recipes and the command line dispatch on the spec and never on a method's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError, UnknownMethodError

if TYPE_CHECKING:
    from .artifact import Artifact


@dataclass(frozen=True)
class DescendantKind:
    """Descendants a method grows besides the timm ViT, kept in their own kind of folder
    (mm-lg's whole CLIPs): how to grow one into a folder, and how to recognise, fine-tune
    and evaluate such a folder. ``learngene expand --<name>`` grows one; ``learngene
    finetune`` and ``learngene eval`` recognise the folders (whatever method made them).
    Each function returns the JSON-able summary the command line prints."""

    name: str                                         # "clip": the expand option that asks for one
    title: str                                        # how messages call it: "CLIP"
    is_folder: Callable[[Path], bool]                 # a cheap file check, no heavy imports
    expand: Callable[..., dict[str, Any]]             # (gene, out, *, depth=None, **options) -> summary
    finetune: Callable[..., dict[str, Any]]           # (folder, data, out, train_config) -> summary
    evaluate: Callable[..., dict[str, Any]]           # (folder, data, split) -> metrics


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type
    extract: Callable[..., "Artifact"]
    expand: Callable[..., Any]
    summary: str                                   # one line for `learngene list`
    needs_data: bool = False                       # extraction reads (and maybe trains on) data
    describe_shapes: Callable[["Artifact"], str] | None = None  # for `learngene info`
    validate: Callable[["Artifact"], None] | None = None        # extra checks on load
    # Methods whose descendants train extra machinery (PEG's layer/head maps, Cluster-Learngene's
    # FFN layer transform) give both: expand_trainable(gene, arch) -> nn.Module to train with
    # `learngene.train.fit`, and fold(module) -> the plain timm VisionTransformer it computes.
    expand_trainable: Callable[..., Any] | None = None
    fold: Callable[[Any], Any] | None = None
    # "vit": extract gets the loaded timm ViT and a resolved dataset; "clip" (mm-lg): extract gets
    # the ancestry source and `data` exactly as the caller gave them (a CLIP and caption pairs).
    ancestry_kind: str = "vit"
    # `learngene info --plot PATH`: plot(gene, path) -> the image written (Cluster-Learngene's
    # attention distances per head and layer).
    plot: Callable[["Artifact", Any], Path] | None = None
    # Descendants that are not a timm ViT, each with its own folder format (mm-lg's CLIPs).
    descendant_kinds: tuple[DescendantKind, ...] = ()


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    if not spec.name or spec.name != spec.name.strip().lower() or " " in spec.name:
        raise ValueError(f"method names are lower-case without spaces, got {spec.name!r}")
    if spec.name in _METHODS and _METHODS[spec.name] is not spec:
        raise ValueError(f"method {spec.name!r} is already registered")
    if not dataclasses.is_dataclass(spec.config_cls):
        raise TypeError(f"{spec.name}: config_cls must be a dataclass")
    if spec.ancestry_kind not in ("vit", "clip"):
        raise TypeError(f"{spec.name}: ancestry_kind must be 'vit' or 'clip', got {spec.ancestry_kind!r}")
    if (spec.expand_trainable is None) != (spec.fold is None):
        raise TypeError(f"{spec.name}: give both expand_trainable and fold, or neither")
    if not all(isinstance(kind, DescendantKind) for kind in spec.descendant_kinds):
        raise TypeError(f"{spec.name}: descendant_kinds must be a tuple of DescendantKind")
    _METHODS[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    from . import methods  # noqa: F401  (importing registers the built-in methods)


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    _ensure_loaded()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    _ensure_loaded()
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise UnknownMethodError(f"unknown method {name!r}; choose one of: {', '.join(sorted(_METHODS))}") from None


def methods_with(hook: str) -> list[str]:
    """Names of the registered methods whose spec sets ``hook`` (e.g. "plot"), sorted."""
    _ensure_loaded()
    return sorted(name for name, spec in _METHODS.items() if getattr(spec, hook))


def descendant_kind(name: str) -> DescendantKind | None:
    """The registered descendant kind called ``name`` (any method's), or None."""
    _ensure_loaded()
    return next((kind for spec in _METHODS.values() for kind in spec.descendant_kinds if kind.name == name), None)


def descendant_kinds() -> list[DescendantKind]:
    """Every registered descendant kind, in method-name order."""
    _ensure_loaded()
    return [kind for name in sorted(_METHODS) for kind in _METHODS[name].descendant_kinds]


def make_config(spec: MethodSpec, values: dict[str, Any] | None = None) -> Any:
    """Build the method's config dataclass; unknown keys are a ConfigError listing the valid ones."""
    values = dict(values or {})
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"method {spec.name!r} has no option {', '.join(map(repr, unknown))}; "
                          f"its options are: {', '.join(sorted(fields)) or '(none)'}")
    try:
        return spec.config_cls(**values)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"bad option for method {spec.name!r}: {e}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
