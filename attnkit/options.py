"""Command-line options from typed dataclasses, YAML presets, and their merge.

Each field of an options dataclass becomes `--field-name` with the field's help; booleans get
`--name/--no-name`. Values come, in rising priority, from the dataclass defaults, the task's
defaults, a `--config` YAML preset, and the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    """Instantiate dataclass `cls` from merged layers (later wins), taking only its own fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k in names})
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
