"""The learngene artifact: one folder, two files, one format for every method.

    my_gene/
      learngene_config.json    method, method config, provenance, tensor manifest
      learngene.safetensors    the stored tensors, nothing else

``Artifact`` is the data: what a method condensed, with its config and provenance.
``Artifact.save`` writes the folder atomically (temp folder, fsync, rename); ``read_artifact``
validates the JSON, the safetensors file and the manifest against each other and the
ancestry architecture; any mismatch is an ``ArtifactError`` saying what is wrong. No pickle
is ever involved. Growing descendants and the method's own checks on load live one layer
up, in ``learngene.api`` (``Learngene``, ``load``), which dispatches through the registry.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ._io import atomic_replace_dir, atomic_save_safetensors, atomic_write_json
from .errors import ArtifactError, ConfigError
from .version import __version__
from .arch import ViTArch, validate_arch

FORMAT_VERSION = 1
CONFIG_NAME = "learngene_config.json"
WEIGHTS_NAME = "learngene.safetensors"
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a config is a few KB; refuse absurd (hostile) files

@dataclass
class Artifact:
    """What a method condensed from an ancestry, as stored.

    Attributes:
        method: registered method name (``learngene.list_methods()``).
        config: the method's config, as a JSON-able dict.
        tensors: the stored tensors (name -> tensor). Everything counted by ``num_parameters``.
        provenance: ancestry architecture (timm kwargs) and size, the data it saw, and the
            cost of extraction (``samples_seen``, ``flops``), library version, creation time.
    """

    method: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    # -- facts -------------------------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        """Exactly the number of values stored in the artifact."""
        return sum(t.numel() for t in self.tensors.values())

    @property
    def ancestry_arch(self) -> ViTArch:
        return ViTArch.from_dict(self._ancestry_arch_dict())

    def _ancestry_arch_dict(self) -> dict[str, Any]:
        try:
            arch = self.provenance["ancestry"]["arch"]
        except (KeyError, TypeError, IndexError):
            arch = None
        if not isinstance(arch, dict):
            raise ArtifactError("learngene has no ancestry architecture in its provenance")
        return arch

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method!r}, tensors={len(self.tensors)}, "
                f"num_parameters={self.num_parameters:,})")

    # -- storage -----------------------------------------------------------------------
    def manifest(self) -> dict[str, dict[str, Any]]:
        return {k: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                for k, t in sorted(self.tensors.items())}

    def to_config_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "library": f"learngene-kit {__version__}",
            "method": self.method,
            "method_config": self.config,
            "num_parameters": self.num_parameters,
            "provenance": self.provenance,
            "tensors": self.manifest(),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact folder atomically; an existing folder is replaced whole."""
        config = self.to_config_dict()
        try:
            json.dumps(config)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"learngene config is not JSON-serialisable: {e}") from None

        def fill(tmp: Path) -> None:
            atomic_save_safetensors(tmp / WEIGHTS_NAME, self.tensors, metadata={"format": "pt", "method": self.method})
            atomic_write_json(tmp / CONFIG_NAME, config)

        return atomic_replace_dir(path, fill)


def created_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _read_config(path: Path) -> dict[str, Any]:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise ArtifactError(f"{path} is not a learngene folder: {CONFIG_NAME} is missing "
                            "(create one with `learngene extract`)")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ArtifactError(f"{config_path} is larger than {MAX_CONFIG_BYTES} bytes; not a learngene config")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, numbers beyond int's digit limit, deep nesting
        raise ArtifactError(f"{config_path} is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{config_path} must hold a JSON object")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{config_path}: format_version {version!r} is not supported (this library reads {FORMAT_VERSION})")
    for key, kind in (("method", str), ("method_config", dict), ("provenance", dict), ("tensors", dict)):
        if not isinstance(config.get(key), kind):
            raise ArtifactError(f"{config_path}: field {key!r} is missing or not a {kind.__name__}")
    return config


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise ArtifactError(f"{path}: {WEIGHTS_NAME} is missing; the artifact is incomplete, re-create it with `learngene extract`")
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{weights_path} is corrupt or truncated ({str(e).splitlines()[0][:160]}); "
                            "re-create it with `learngene extract`") from None


def _check_manifest(config: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> None:
    manifest = config["tensors"]
    missing = sorted(set(manifest) - set(tensors))
    extra = sorted(set(tensors) - set(manifest))
    if missing:
        raise ArtifactError(f"{path}: config lists tensor {missing[0]!r} ({len(missing)} in all) that the safetensors file lacks")
    if extra:
        raise ArtifactError(f"{path}: safetensors file holds tensor {extra[0]!r} ({len(extra)} in all) that the config does not list")
    for name, entry in manifest.items():
        t = tensors[name]
        if not isinstance(entry, dict) or list(t.shape) != entry.get("shape"):
            raise ArtifactError(f"{path}: tensor {name!r} has shape {list(t.shape)} but the config says "
                                f"{entry.get('shape') if isinstance(entry, dict) else entry!r}")
        if str(t.dtype).removeprefix("torch.") != entry.get("dtype"):
            raise ArtifactError(f"{path}: tensor {name!r} has dtype {t.dtype} but the config says {entry.get('dtype')!r}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ArtifactError(f"{path}: tensor {name!r} holds NaN or inf values")


def read_artifact(path: str | os.PathLike) -> Artifact:
    """Read a learngene folder written by ``Artifact.save``, checking the files against each other
    and the ancestry architecture (the method's own checks: ``learngene.load``)."""
    path = Path(path)
    if not path.exists():
        aside = sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*")) if path.name else []
        if aside:  # Artifact.save was killed between moving the old folder aside and moving the new one in
            raise ArtifactError(f"no learngene at {path}: an interrupted save left the previous version at "
                                f"{aside[-1]}; rename it to {path.name}, or save again")
        raise ArtifactError(f"{path} is not a learngene folder: it does not exist; create one with `learngene extract`")
    if not path.is_dir():
        raise ArtifactError(f"{path} is a file; a learngene is a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    config = _read_config(path)
    tensors = _read_tensors(path)
    _check_manifest(config, tensors, path)
    artifact = Artifact(method=config["method"], config=config["method_config"], tensors=tensors,
                        provenance=config["provenance"])
    try:
        validate_arch(artifact._ancestry_arch_dict())
    except ConfigError as e:
        raise ArtifactError(f"{path}: config and tensors disagree: {e}") from None
    return artifact
