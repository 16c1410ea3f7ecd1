"""Command-line options made from the fields of a configuration dataclass.

Each field of a stage's configuration (:mod:`lensdask.config`) becomes ``--field-name``,
with the field's docstring as its help and the dataclass default shown after it, so the
command line never restates a default or a choice. Options default to None: a value given
on the command line replaces the job file's (``--job``) or the default configuration's.
Tuples are written ``a,b,c`` and mappings ``KEY=VALUE,KEY=VALUE``; nested sections (the
lens priors) are set in job files only.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import click

from lensdask.config import ConfigError, convert


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of dataclass ``cls`` (the string after its line)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = after.value.value
    return docs


def _plain(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _is_mapping(hint: Any) -> bool:
    return typing.get_origin(hint) in (collections.abc.Mapping, dict)


def _scalar(kind: Any, text: str) -> Any:
    """One item of a tuple or mapping option, as the field's item type."""
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a number") from None
    return text


def _shown(value: Any) -> str:
    if isinstance(value, collections.abc.Mapping):
        return ",".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, tuple):
        return ",".join(str(getattr(item, "name", item)) for item in value)
    return str(value)


def configurable(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that the command line can set (not nested sections)."""
    hints = typing.get_type_hints(cls)
    return [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])]


def field_options(cls: type, *, skip: tuple[str, ...] = ()) -> list[click.Option]:
    """A ``click.Option`` per settable field of ``cls`` (except those in ``skip``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    options = []
    for f in configurable(cls):
        if f.name in skip:
            continue
        hint = _plain(hints[f.name])
        flag = f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = " ".join(docs.get(f.name, "").split("\n\n")[0].replace("``", "").split())
        if default is not None:
            text += f"  [default: {_shown(default)}]"
        if hint is bool:
            options.append(click.Option([f"--{flag}/--no-{flag}", f.name], default=None, help=text))
            continue
        if hint is Path:
            kind: Any = click.Path(path_type=Path)
        elif hint in (int, float):
            kind = click.INT if hint is int else click.FLOAT
        else:
            kind = click.STRING
        metavar = None
        if typing.get_origin(hint) is tuple:
            metavar = "A,B,..."
        elif _is_mapping(hint):
            metavar = "KEY=VALUE,..."
        options.append(
            click.Option([f"--{flag}", f.name], type=kind, default=None, metavar=metavar, help=text)
        )
    return options


def apply_options(config: Any, given: dict[str, Any], *, section: str) -> Any:
    """``config`` with the command-line values in ``given`` (field -> raw value or None)
    put in: tuples split at commas, mappings merged into the configured mapping."""
    hints = typing.get_type_hints(type(config))
    changes = {}
    for name, raw in given.items():
        if raw is None:
            continue
        hint = _plain(hints[name])
        where = f"{section}.{name}"
        if typing.get_origin(hint) is tuple and isinstance(raw, str):
            args = typing.get_args(hint)
            value: Any = [
                _scalar(args[0] if args else str, item.strip()) for item in raw.split(",")
            ]
        elif _is_mapping(hint) and isinstance(raw, str):
            kind = typing.get_args(hint)[1]
            pairs = [item.partition("=") for item in raw.split(",")]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigError(f"{where}: expected KEY=VALUE,..., got {raw!r}")
            value = {key.strip(): _scalar(kind, item.strip()) for key, _, item in pairs}
        else:
            value = raw
        if _is_mapping(hint):
            value = {**getattr(config, name), **value}
        changes[name] = convert(hint, value, where=where)
    return dataclasses.replace(config, **changes) if changes else config
