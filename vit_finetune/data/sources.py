"""Where the images come from: a Hub id / local dataset repository / `save_to_disk` folder (`--dataset_name`),
class-per-sub-folder directories (`--train_dir` ...) or CSV / JSON-lines manifests of `path,label`
(`--train_file` ...). Everything goes through `datasets`, so Arrow caching comes for free.

`load_raw_splits` returns the undecoded splits; the helpers below find their image and label columns and read
their labels as class names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from .arguments import DataArguments

VALIDATION_SPLIT_CANDIDATES = ("validation", "valid", "val", "dev", "eval")
TEST_SPLIT_CANDIDATES = ("test",)
MISSING_LABEL = "<missing>"  # the class name of a row without a label


class DataError(ValueError):
    """The data cannot be trained on (empty split, unseen validation label, a single class...)."""


@dataclass
class RawSplit:
    """One split as loaded, before decoding."""

    dataset: datasets.Dataset
    base_dir: str | None  # relative image paths are resolved against this (manifests)
    origin: str | None = None  # the manifest file, folder or dataset split the rows were read from


def _is_saved_to_disk(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json")
    )


def _manifest_builder(path: str) -> tuple[str, dict[str, Any]]:
    extension = os.path.splitext(path)[1].lower()
    if extension == ".csv":
        return "csv", {}
    if extension == ".tsv":
        return "csv", {"sep": "\t"}
    if extension in (".json", ".jsonl"):
        return "json", {}
    raise ValueError(f"{path}: manifests must be .csv, .tsv, .json or .jsonl files")


def _first_bad_json_line(path: str) -> str | None:
    """Where a JSON-lines manifest stops being JSON lines ("line 7 is not valid JSON ..."), or None."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    if text.lstrip().startswith("["):  # a single JSON document holding a list of rows, which datasets also reads
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return f"not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            return f"line {number} is not valid JSON ({error.msg}, column {error.colno}): {line[:80]!r}"
        if not isinstance(row, dict):
            return f"line {number} is not a JSON object (one object of columns per line): {line[:80]!r}"
    return None


def _load_manifest(path: str, role: str, cache_dir: str | None) -> datasets.Dataset:
    builder, kwargs = _manifest_builder(path)
    try:
        return datasets.load_dataset(
            builder, data_files=os.path.abspath(path), split="train", cache_dir=cache_dir, **kwargs
        )
    except Exception as error:  # noqa: BLE001 - datasets' errors name neither the file nor the line
        problem = _first_bad_json_line(path) if builder == "json" else None
        if problem is None:  # CSV parsers name the line themselves; the root cause holds it
            cause = error
            while cause.__cause__ is not None:
                cause = cause.__cause__
            problem = f"cannot be read as {builder.upper()}: {type(cause).__name__}: {cause}"
        raise DataError(f"--{role}_file {path}: {problem}") from error


def _pick_split(available: Sequence[str], requested: str | None, candidates: Sequence[str], what: str) -> str | None:
    if requested is not None:
        if requested not in available:
            raise ValueError(f"--{what}_split_name={requested!r} does not exist; the dataset has splits {list(available)}")
        return requested
    return next((name for name in candidates if name in available), None)


def load_raw_splits(args: DataArguments) -> tuple[dict[str, RawSplit], str]:
    """The undecoded splits ("train" and optionally "validation", "test") and a one-line description of the source."""
    _check_one_source(args)
    if args.dataset_name:
        return _load_dataset(args)
    if args.train_dir:
        return _load_image_folders(args)
    return _load_manifests(args)


def _check_one_source(args: DataArguments) -> None:
    sources = [name for name in ("dataset_name", "train_dir", "train_file") if getattr(args, name)]
    if len(sources) != 1:
        raise ValueError(
            "Give exactly one source of training data: --dataset_name, --train_dir or --train_file "
            f"(got {', '.join('--' + s for s in sources) or 'none'})."
        )
    if args.dataset_name and (args.validation_dir or args.test_dir or args.validation_file or args.test_file):
        raise ValueError("--validation_dir/--test_dir/--validation_file/--test_file cannot be combined with --dataset_name")
    if args.train_dir and (args.validation_file or args.test_file):
        raise ValueError("--validation_file/--test_file go with --train_file; use --validation_dir/--test_dir with --train_dir")
    if args.train_file and (args.validation_dir or args.test_dir):
        raise ValueError("--validation_dir/--test_dir go with --train_dir; use --validation_file/--test_file with --train_file")


def _load_dataset(args: DataArguments) -> tuple[dict[str, RawSplit], str]:
    """--dataset_name: a save_to_disk folder, or anything `datasets.load_dataset` takes (Hub id, local repository)."""
    name = args.dataset_name
    if _is_saved_to_disk(name):
        loaded = datasets.load_from_disk(name)
        description = f"save_to_disk folder {name}"
    else:
        # The call a user hits for a Hub id; a local dataset repository folder goes through it too.
        loaded = datasets.load_dataset(name, args.dataset_config_name, cache_dir=args.cache_dir)
        description = f"dataset {name}" + (f" (config {args.dataset_config_name})" if args.dataset_config_name else "")
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    available = list(loaded.keys())
    split_names = {
        "train": _pick_split(available, args.train_split_name, (), "train"),
        "validation": _pick_split(available, args.validation_split_name, VALIDATION_SPLIT_CANDIDATES, "validation"),
        "test": _pick_split(available, args.test_split_name, TEST_SPLIT_CANDIDATES, "test"),
    }
    base_dir = name if os.path.isdir(name) else None
    splits = {
        role: RawSplit(loaded[split_name], base_dir=base_dir, origin=f"{name} split {split_name!r}")
        for role, split_name in split_names.items() if split_name is not None
    }
    return splits, description


def _load_image_folders(args: DataArguments) -> tuple[dict[str, RawSplit], str]:
    """--train_dir (and --validation_dir, --test_dir): one sub-folder of images per class."""
    folders = {"train": args.train_dir, "validation": args.validation_dir, "test": args.test_dir}
    folders = {role: folder for role, folder in folders.items() if folder}
    for role, folder in folders.items():
        if not os.path.isdir(folder):
            raise ValueError(f"--{role}_dir {folder}: no such folder")
    # One load_dataset call for all folders, as transformers' example does: imagefolder then infers the class
    # names (sub-folder names) over all splits, so every split shares one ClassLabel.
    loaded = datasets.load_dataset(
        "imagefolder",
        data_files={role: os.path.join(folder, "**") for role, folder in folders.items()},
        cache_dir=args.cache_dir,
    )
    splits = {role: RawSplit(loaded[role], base_dir=folders[role], origin=folders[role]) for role in folders}
    return splits, "image folders " + ", ".join(f"{role}={folder}" for role, folder in folders.items())


def _load_manifests(args: DataArguments) -> tuple[dict[str, RawSplit], str]:
    """--train_file (and --validation_file, --test_file): CSV or JSON-lines manifests of image paths and labels."""
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    files = {role: path for role, path in files.items() if path}
    splits = {}
    for role, path in files.items():
        if not os.path.isfile(path):
            raise ValueError(f"--{role}_file {path}: no such file")
        dataset = _load_manifest(path, role, args.cache_dir)
        splits[role] = RawSplit(dataset, base_dir=os.path.dirname(os.path.abspath(path)), origin=path)
    return splits, "manifests " + ", ".join(f"{role}={path}" for role, path in files.items())


def find_column(dataset: datasets.Dataset, requested: str | None, candidates: Sequence[str], what: str, split: str) -> str | None:
    columns = dataset.column_names
    if requested:
        if requested not in columns:
            raise ValueError(f"--{what}_column_name={requested!r} is not a column of the {split} split (columns: {columns})")
        return requested
    return next((name for name in candidates if name in columns), None)


def label_names_of(dataset: datasets.Dataset, column: str) -> list[str]:
    """Every row's label as a class name (string)."""
    values = dataset.data.column(column).to_pylist() if dataset._indices is None else dataset[column]
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(int(v)) if v is not None and v >= 0 else MISSING_LABEL for v in values]
    return [MISSING_LABEL if v is None else str(v) for v in values]


def ordered_class_names(dataset: datasets.Dataset, column: str, row_names: list[str]) -> list[str]:
    """The classes, in label-id order: a ClassLabel's own order, else sorted (numerically for integer labels)."""
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    unique = sorted(set(row_names) - {MISSING_LABEL})
    # Integer labels sort numerically (2 before 10), names alphabetically.
    if all(name.lstrip("-").isdigit() for name in unique):
        unique.sort(key=int)
    return unique


__all__ = [
    "DataError",
    "MISSING_LABEL",
    "RawSplit",
    "find_column",
    "label_names_of",
    "load_raw_splits",
    "ordered_class_names",
]
