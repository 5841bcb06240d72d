"""Turn typed functions into argparse subcommands (the CLI stays a list of plain functions).

Each subcommand function's keyword parameters become ``--flags`` (parameters without a
default become positionals); the type annotation gives the parser, the docstring's
``Args:`` section gives the help. Every subcommand also takes ``--config FILE.yaml``
and trailing ``key=value`` overrides. Precedence, lowest first: the function's
defaults, the YAML file, ``--flags``, ``key=value``.
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError


def one_line(message: str) -> str:
    """The message on one line: control characters (newlines, form feeds... e.g. inside a
    path the user typed) are shown escaped, as in a Python string literal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``learngene CMD: error: ... (see ...)``, exit status 2)
    instead of the usage block: bad arguments read like every other CLI error.
    Subparsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, one_line(f"{self.prog}: error: {message} (see `{self.prog} --help`)") + "\n")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_list) for annotations like int, int | None, list[int] | None."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing), {})  # our own annotations only  # noqa: S307
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else (str, False)
    if origin is list:
        (inner,) = typing.get_args(annotation) or (str,)
        return inner, True
    return annotation, False


def _doc_args(func: Callable) -> dict[str, str]:
    doc = inspect.getdoc(func) or ""
    helps: dict[str, str] = {}
    in_args, current = False, None
    for line in doc.splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if in_args:
            m = re.match(r"\s{2,}(\w+):\s*(.*)", line)
            if m:
                current = m.group(1)
                helps[current] = m.group(2)
            elif line.startswith("    ") and current:
                helps[current] += " " + line.strip()
            elif line.strip() == "":
                continue
            else:
                in_args = False
    return helps


def parse_value(text: str) -> Any:
    """key=value values: YAML scalars/lists (3 -> int, 1e-3 -> float, [0, 5] -> list, none -> None)."""
    if text.lower() in ("none", "null"):
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d*\.?\d+[eE][-+]?\d+", value):
        return float(value)  # YAML 1.1 reads 1e-3 as a string
    return value


def add_subcommand(subparsers: argparse._SubParsersAction, name: str, func: Callable) -> None:
    doc = inspect.getdoc(func) or ""
    summary = doc.split("\n\n")[0].strip()
    parser = subparsers.add_parser(name, help=summary, description=doc.split("Args:")[0].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    helps = _doc_args(func)
    for param in inspect.signature(func).parameters.values():
        if param.name == "overrides":
            continue
        kind, is_list = _base_type(param.annotation)
        help_text = helps.get(param.name, "")
        if param.default is inspect.Parameter.empty:
            parser.add_argument(param.name, type=kind, help=help_text)
            continue
        flag = "--" + param.name.replace("_", "-")
        default_note = f" (default: {param.default})" if param.default not in (None, "") else ""
        if kind is bool:
            parser.add_argument(flag, dest=param.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text + default_note)
        elif is_list:
            parser.add_argument(flag, dest=param.name, type=kind, nargs="+", default=argparse.SUPPRESS,
                                help=help_text + default_note)
        else:
            parser.add_argument(flag, dest=param.name, type=kind, default=argparse.SUPPRESS,
                                help=help_text + default_note)
    parser.add_argument("--config", dest="_config", default=None, metavar="FILE.yaml",
                        help="YAML file of option values (lowest precedence after the defaults)")
    parser.epilog = ("Trailing key=value overrides are accepted anywhere: command options (epochs=5), "
                     "train options (train.lr=3e-4), method options (k=3).")
    parser.set_defaults(_func=func)


def resolve_call(func: Callable, namespace: argparse.Namespace) -> dict[str, Any]:
    """Merge defaults < YAML < flags < key=value into the function's keyword arguments.

    Keys that are not parameters of ``func`` are collected into its ``overrides`` dict
    parameter (dotted keys become nested dicts), or refused if it has none.
    """
    params = inspect.signature(func).parameters
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in params and key != "overrides":
            values[key] = value
            return
        if "overrides" not in params:
            raise ConfigError(f"unknown option {key!r}; valid options: {', '.join(p for p in params if p != 'overrides')}")
        target = extra
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"option {key!r} conflicts with a scalar value of {part!r}")
        target[parts[-1]] = value

    config_file = getattr(namespace, "_config", None)
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of option: value")
        for key, value in loaded.items():
            if isinstance(value, dict) and key not in params:
                for sub, v in value.items():
                    put(f"{key}.{sub}", v)
            else:
                put(str(key), value)
    for key, value in vars(namespace).items():
        if not key.startswith("_") and key not in ("overrides", "command"):
            put(key, value)
    for item in getattr(namespace, "overrides", None) or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, _, text = item.partition("=")
        put(key.strip().replace("-", "_"), parse_value(text))
    if "overrides" in params:
        values["overrides"] = extra
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in values]
    if missing:
        raise ConfigError(f"missing required argument(s): {', '.join(missing)}")
    return values
