"""Arguments from a YAML file and the command line, for every command built on dataclasses (`train`, `eval`).

    parse_arguments(argv, (ModelArguments, DataArguments, TrainingArguments))

The file (`--config FILE.yaml` or .json) gives defaults, the flags win. Unknown keys and values of the wrong type
stop here with a `ConfigError` naming the key, before any work is done.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad configuration key or value, found before any work is done."""


def check_finite(arguments: Any) -> None:
    """NaN passes every `<`/`>` range check and inf overflows a step count: refuse both up front."""
    for item in dataclasses.fields(arguments):
        values = getattr(arguments, item.name)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{item.name} must be a finite number, got {value}")


def parse_arguments(argv: Sequence[str], dataclass_types: Sequence[type], prog: str = "vit-finetune train") -> tuple:
    """Fills the dataclasses from `--config FILE.yaml` (or .json) then command-line flags (flags win).

    Raises ConfigError naming the key for unknown keys (with a suggestion) and for values of the wrong type;
    argparse itself rejects unconvertible command-line values, naming the flag.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        dataclass_types, prog=prog, allow_abbrev=False,
        description="Arguments come from `--config FILE.yaml` (or .json; keys are the option names below) and "
                    "from the command line, which wins. Unknown keys and bad values stop the run before any work.",
    )
    hints = {}
    for dtype in dataclass_types:
        type_hints = typing.get_type_hints(dtype)
        hints.update({f.name: type_hints[f.name] for f in dataclasses.fields(dtype) if f.init})

    def suggest(key: str) -> str:
        close = difflib.get_close_matches(key, list(hints), n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    config_path, argv = _pop_config(list(argv))
    if config_path:
        from_file = _read_config(config_path)
        for key, value in from_file.items():
            if key not in hints:
                raise ConfigError(f"{config_path}: unknown key {key!r}{suggest(str(key))}")
            # Strings go through argparse's conversion below (YAML reads `1e-3` as a string); others must fit.
            if not isinstance(value, str) and not _type_matches(value, hints[key]):
                raise ConfigError(f"{config_path}: {key} = {value!r} is not a valid {_type_name(hints[key])}")
        parser.set_defaults(**from_file)

    *outputs, remaining = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True, look_for_args_file=False
    )
    if remaining:
        flag = next((r for r in remaining if r.startswith("-")), remaining[0])
        key = flag.lstrip("-").split("=")[0].replace("-", "_")
        raise ConfigError(f"unknown argument {flag}{suggest(key) if flag.startswith('-') else ''}")
    return tuple(outputs)


def _read_config(config_path: str) -> dict[str, Any]:
    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"--config {config_path}: no such file")
    try:
        from_file = yaml.safe_load(path.read_text()) or {}  # JSON is YAML too
    except yaml.YAMLError as error:
        raise ConfigError(f"{config_path}: not valid YAML: {error}") from error
    if not isinstance(from_file, dict):
        raise ConfigError(f"{config_path}: expected a mapping of argument names to values")
    return from_file


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Takes `--config FILE` (or `--config=FILE`) out of argv."""
    rest, config = [], None
    items = iter(argv)
    for item in items:
        if item == "--config":
            config = next(items, None)
            if config is None:
                raise ConfigError("--config needs a file")
        elif item.startswith("--config="):
            config = item.split("=", 1)[1]
        else:
            rest.append(item)
    return config, rest


def _type_matches(value: Any, hint: Any) -> bool:
    """Whether a value read from YAML fits a dataclass field's type (argparse only converts strings)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (list, Sequence):
        return isinstance(value, list) and all(_type_matches(v, args[0]) for v in value) if args else True
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
