"""Every shipped YAML preset parses and resolves against its subcommand's signature."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from learngene._cli_args import resolve_call
from learngene.cli import COMMANDS
from learngene.registry import get_method, make_config
from learngene.train import TrainConfig

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
COMMAND_OF = {"ancestry": "ancestry", "extract": "extract", "finetune": "finetune"}


def method_of(path: Path) -> str | None:
    """extract-<method>[-<variant>].yaml -> the longest registered method name it starts with."""
    from learngene.registry import list_methods

    rest = path.stem.split("-", 1)[1]
    names = [m for m in list_methods() if rest == m or rest.startswith(m + "-")]
    return max(names, key=len) if names else rest


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_preset_resolves(path):
    command = COMMAND_OF[path.stem.split("-")[0]]
    func = COMMANDS[command]
    positional = {"extract": {"method": method_of(path)}, "finetune": {"model": "x"}}
    namespace = argparse.Namespace(_config=str(path), overrides=[], **positional.get(command, {}))
    values = resolve_call(func, namespace)
    extra = values.get("overrides", {})
    if "train" in extra:
        TrainConfig.from_dict(extra["train"])
    if command == "extract":
        assert values["method"] == namespace.method  # the YAML must not clobber the positional method
        make_config(get_method(values["method"]), extra.get("options", {}))
