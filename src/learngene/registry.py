"""Method registry, in the spirit of PEFT's ``register_peft_method``.

Each method folder registers one ``MethodSpec`` in its ``__init__``: a name, a config
dataclass, and two functions:

    extract(ancestry: VisionTransformer, config, data) -> Learngene
    expand(gene: Learngene, arch: dict) -> VisionTransformer   (Learngene.expand seeds the RNG)

``arch`` is the descendant's full timm VisionTransformer kwargs, already validated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError, UnknownMethodError

if TYPE_CHECKING:
    from .artifact import Learngene


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type
    extract: Callable[..., "Learngene"]
    expand: Callable[..., Any]
    summary: str                                   # one line for `learngene list`
    needs_data: bool = False                       # extraction reads (and maybe trains on) data
    describe_shapes: Callable[["Learngene"], str] | None = None  # for `learngene info`
    validate: Callable[["Learngene"], None] | None = None        # extra checks on load
    # Methods whose descendants train extra machinery (PEG's layer/head maps, Cluster-Learngene's
    # FFN layer transform) give both: expand_trainable(gene, arch) -> nn.Module to train with
    # `learngene.train.fit`, and fold(module) -> the plain timm VisionTransformer it computes.
    expand_trainable: Callable[..., Any] | None = None
    fold: Callable[[Any], Any] | None = None
    # "vit": extract gets the loaded timm ViT and a resolved dataset; "clip" (mm-lg): extract gets
    # the ancestry source and `data` exactly as the caller gave them (a CLIP and caption pairs).
    ancestry_kind: str = "vit"


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
