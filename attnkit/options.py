"""Command-line options from typed dataclasses, YAML presets, and their merge.

Each field of an options dataclass becomes `--field-name` with the field's help; booleans get
`--name/--no-name`. Values come, in rising priority, from the dataclass defaults, the task's
defaults, a `--config` YAML preset, and the command line.

A field's valid values are declared beside its type and default, in its metadata: `ge`, `gt`,
`le`, `lt` bound a number (floats must also be finite), a `Literal` type lists the choices.
`build` checks every given value against its field before anything is constructed, so a bad
option from the command line or a preset is one line naming the option, the value and what is
allowed, before any data is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnkit.errors import UserError


def add_options(parser: argparse.ArgumentParser, cls: type, title: str, skip: set[str] = frozenset()) -> None:
    """Add one option per field of dataclass `cls`; unset options stay out of the namespace."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        help_text = f.metadata.get("help") or _doc_help(cls, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
            group.add_argument(
                flag,
                type=kind,
                default=argparse.SUPPRESS,
                help=help_text,
                choices=choices,
                metavar=f.name.upper() if not choices else None,
            )


def _base_type(hint: Any) -> type:
    if typing.get_origin(hint) is typing.Literal:
        return type(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    return hint


def _doc_help(cls: type, name: str) -> str:
    doc = cls.__doc__ or ""
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith(f"{name}:"):
            return stripped.split(":", 1)[1].strip()
    return ""


def load_preset(path: str | None) -> dict[str, Any]:
    """A YAML preset: a flat mapping of option names (dashes or underscores) to values."""
    if not path:
        return {}
    import yaml

    preset_path = Path(path)
    if not preset_path.is_file():
        raise UserError(f"{preset_path}: no such preset file")
    try:
        data = yaml.safe_load(preset_path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{preset_path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{preset_path}: a preset must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build(cls: type, *layers: dict[str, Any]) -> Any:
    """Instantiate dataclass `cls` from merged layers (later wins), taking only its own fields, after
    checking each value against its field's type and bounds (`check_values`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k in names})
    check_values(cls, values)
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from None


def check_known(values: dict[str, Any], *classes: type, extra: set[str] = frozenset()) -> None:
    """Unknown keys in a preset are an error, not ignored."""
    names = set(extra)
    for cls in classes:
        names |= {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown option(s) in preset: {', '.join(unknown)}")


def check_model_options(make_config: Callable[[], Any]) -> None:
    """Build a model configuration from command-line options once, so that sizes that cannot work
    together (heads that do not divide the width, ...) fail at once as a `UserError` instead of a
    traceback after the data is read."""
    try:
        make_config()
    except ValueError as error:
        raise UserError(f"bad model options: {error}") from None


def model_option(config_cls: type, name: str, help_text: str) -> Any:
    """An option field whose default is the model configuration's own default for `name`, so that a
    model's defaults live in one place (its config) and task options reference them."""
    default = next(f.default for f in dataclasses.fields(config_cls) if f.name == name)
    return dataclasses.field(default=default, metadata={"help": help_text})


def config_from(options: Any, config_cls: type, **given: Any) -> Any:
    """`config_cls` built from the fields of `options` that it shares by name, then `given` (what the
    data decides, such as the vocabulary size, and fields whose option means something else)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    shared = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name in names}
    return config_cls(**{**shared, **given})


BOUNDS = ("ge", "gt", "le", "lt")


def bounds(ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None):
    """Field metadata bounding a number: `field(default=..., metadata={"help": ..., **bounds(ge=0)})`."""
    given = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    return {k: v for k, v in given.items() if v is not None}


def check_values(cls: type, values: dict[str, Any]) -> None:
    """Each value against its field of dataclass `cls`: its type (None where the type allows it, a
    `Literal`'s choices, no text where a number belongs, finite floats) and its metadata bounds.
    The first problem is a `UserError`: "--lr must be greater than 0, got -1.0"."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        problem = _type_problem(hints[f.name], values[f.name]) or _bound_problem(f.metadata, values[f.name])
        if problem:
            raise UserError(f"--{f.name.replace('_', '-')} must be {problem}, got {values[f.name]!r}")


def _type_problem(hint: Any, value: Any) -> str | None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(a, value) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in args else "one of " + ", ".join(map(str, args))
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "a number"
        return None if math.isfinite(value) else "a finite number"
    if hint is str:
        return None if isinstance(value, str) else "text"
    return None


def _bound_problem(metadata: Any, value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    ge, gt, le, lt = (metadata.get(k) for k in BOUNDS)
    if (
        (ge is not None and value < ge)
        or (gt is not None and value <= gt)
        or (le is not None and value > le)
        or (lt is not None and value >= lt)
    ):
        return _describe(ge, gt, le, lt)
    return None


def _describe(ge: Any, gt: Any, le: Any, lt: Any) -> str:
    low, high = (ge, "[") if ge is not None else (gt, "(")
    top, close = (le, "]") if le is not None else (lt, ")")
    if low is not None and top is not None:
        return f"in {high}{low:g}, {top:g}{close}"
    if low is not None:
        return f"at least {low:g}" if ge is not None else f"greater than {low:g}"
    return f"at most {top:g}" if le is not None else f"less than {top:g}"
