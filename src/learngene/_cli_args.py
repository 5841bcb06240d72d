"""Turn typed functions into argparse subcommands (the CLI stays a list of plain functions).

Each subcommand function's keyword parameters become ``--flags`` (parameters without a
default become positionals); the type annotation gives the parser, the docstring's
``Args:`` section gives the help. Every subcommand also takes ``--config FILE.yaml``
and trailing ``key=value`` overrides. Precedence, lowest first: the function's
defaults, the YAML file, ``--flags``, ``key=value``.

Options that depend on a positional (a method's options under ``learngene extract METHOD``)
are described by ``dataclass_help`` from their config dataclass and appended to ``--help``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import shutil
import textwrap
import tokenize
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


def _field_comments(cls: type) -> dict[str, str]:
    """field name -> the comment after it in ``cls``'s source, with the comment-only lines below
    it whose text lines up with it (a comment wrapped onto the next lines)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return {}
    comments = {tok.start[0]: tok for tok in tokens if tok.type == tokenize.COMMENT}
    lines = source.splitlines()

    def text_column(tok: tokenize.TokenInfo) -> int:  # where the words start: "#   words" -> the w
        return tok.start[1] + 1 + len(tok.string[1:]) - len(tok.string[1:].lstrip())

    found: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        own = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        if not own:
            continue
        parts, column, n = [own[0].string[1:].strip()], text_column(own[0]), node.end_lineno + 1
        while n in comments and lines[n - 1].lstrip().startswith("#") and text_column(comments[n]) >= column:
            parts.append(comments[n].string[1:].strip())
            n += 1
        found[node.target.id] = " ".join(parts)
    return found


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "(required)"


def dataclass_help(cls: type, title: str) -> str:
    """A help section for the fields of dataclass ``cls``: ``title``, the class's docstring,
    then per field ``name: type = default`` and its help: ``metadata["help"]``, else the
    comment after the field in the source."""
    width = max(40, min(100, shutil.get_terminal_size().columns) - 2)
    lines = [title]
    doc = cls.__doc__ or ""
    if doc and not doc.startswith(f"{cls.__name__}("):  # not the signature dataclasses writes
        for para in inspect.cleandoc(doc).split("\n\n"):
            # one item per paragraph, or per "- " bullet inside it
            items = re.split(r"\n(?=\s*- )", para.strip())
            lines += [textwrap.fill(" ".join(item.split()), width, initial_indent="  ", break_on_hyphens=False,
                                    subsequent_indent="    " if item.lstrip().startswith("- ") else "  ")
                      for item in items]
            lines.append("")
    comments = _field_comments(cls)
    fields = dataclasses.fields(cls)
    for f in fields:
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"  {f.name}: {kind} = {_default_text(f)}")
        text = f.metadata.get("help") or comments.get(f.name)
        if text:
            lines.append(textwrap.fill(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                                       break_on_hyphens=False))
    if not fields and lines == [title]:
        lines.append("  (no options)")
    return "\n".join(lines).rstrip()


class _HelpWithMore(argparse.Action):
    """``-h/--help`` that prints the parser's help, then ``more(namespace)``: help that depends
    on the positionals given before it (``learngene extract METHOD --help``)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None,
                 more: Callable[[argparse.Namespace], str] | None = None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)
        self.more = more

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        extra = self.more(namespace) if self.more else ""
        if extra:
            print("\n" + extra)
        parser.exit()


def add_subcommand(subparsers: argparse._SubParsersAction, name: str, func: Callable, *,
                   more_help: Callable[[argparse.Namespace], str] | None = None) -> None:
    """Add ``func`` as subcommand ``name``. ``more_help(namespace)`` is appended to its
    ``--help``, with the positionals given before ``--help`` in ``namespace``."""
    doc = inspect.getdoc(func) or ""
    summary = doc.split("\n\n")[0].strip()
    parser = subparsers.add_parser(name, help=summary, description=doc.split("Args:")[0].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   add_help=more_help is None)
    if more_help is not None:
        parser.add_argument("-h", "--help", action=_HelpWithMore, more=more_help,
                            help="show this help message and exit")
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
