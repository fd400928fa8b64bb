"""From a data source to ready-to-train splits: `prepare_datasets` (training) and `prepare_image_folder`
(one folder of class sub-folders, e.g. the test set of `vit-finetune eval`).

`prepare_datasets` in steps: load the raw splits (sources.py); find their image and label columns; turn labels
into class ids (class names come from training, other splits are mapped onto them by name); carve a validation
split from training when the source has none; apply the sample limits; decode and resize every split once
(preprocess.py); write `data_report.json` (report.py); refuse data that cannot be trained on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ContextManager

import datasets
import numpy as np

from .arguments import IMAGE_COLUMN_CANDIDATES, LABEL_COLUMN_CANDIDATES, DataArguments
from .decode import check_num_channels, describe_source
from .preprocess import decode_split
from .report import build_report, publish_report
from .sources import (
    MISSING_LABEL,
    DataError,
    RawSplit,
    find_column,
    label_names_of,
    load_raw_splits,
    ordered_class_names,
)

logger = logging.getLogger(__name__)

MainProcessFirst = Callable[[], ContextManager[Any]]


@dataclass
class PreparedData:
    """Ready-to-train splits (torch format: `pixel_values` uint8 (C, H, W), `labels` int64) and the label maps."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None
    id2label: dict[int, str]
    label2id: dict[str, int]
    report: dict[str, Any]


@dataclass
class _LabelledSplit:
    """A raw split with its image column and each row's class id, ready to decode."""

    raw: RawSplit
    image_column: str
    label_ids: np.ndarray


def prepare_datasets(
    data_args: DataArguments,
    *,
    image_size: int,
    num_channels: int,
    output_dir: str,
    seed: int,
    main_process_first: MainProcessFirst = contextlib.nullcontext,
) -> PreparedData:
    """Load the data described by `data_args`, decode + resize every image once (cached), drop and report bad files.

    Args:
        data_args: the source, columns, split and sampling options.
        image_size: the model resolution; every stored image is `image_size x image_size`.
        num_channels: 3 (RGB) or 1 (grayscale) as the model expects.
        output_dir: where `data_report.json` (skipped files with reasons, counts per split and class) is written.
        seed: seeds the carved validation split and the `max_*_samples` subsets.
        main_process_first: Accelerate's `accelerator.main_process_first` so only rank 0 decodes in multi-process
            runs and the other ranks read its cache.

    Raises:
        DataError: a split ends up empty, validation/test holds a label training never saw, or there is one class.
        ValueError: `num_channels` is neither 1 nor 3.
    """
    check_num_channels(num_channels)  # before any work: otherwise every image would be "unreadable"
    with main_process_first():
        raw_splits, description = load_raw_splits(data_args)
        columns = _find_columns(raw_splits, data_args, description)
        class_names, splits = _label_splits(raw_splits, columns, description)
        validation_origin = "validation split of the source"
        if "validation" not in splits:
            validation_origin = _carve_validation(splits, data_args.train_val_split, seed)
        limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
                  "test": data_args.max_eval_samples}
        splits = {role: _subsample(split, limits[role], seed) for role, split in splits.items()}

        processed: dict[str, datasets.Dataset] = {}
        skipped: list[dict[str, str]] = []
        split_info: dict[str, dict[str, Any]] = {}
        for role in ("train", "validation", "test"):
            if role in splits:
                processed[role], split_skipped, split_info[role] = _decode(
                    splits[role], role, class_names, image_size=image_size, num_channels=num_channels,
                    num_proc=data_args.preprocessing_num_workers, overwrite_cache=data_args.overwrite_cache,
                )
                skipped += split_skipped

    image_column, label_column = columns["train"]
    report = build_report(
        source=description, image_column=image_column, label_column=label_column, image_size=image_size,
        num_channels=num_channels, classes=class_names, validation=validation_origin, splits=split_info,
        skipped=skipped,
    )
    report_path = publish_report(report, output_dir)
    # Checked after the report is written so the user can see which files were dropped.
    _check_trainable(split_info, description, report_path)
    return PreparedData(
        train=processed["train"],
        validation=processed["validation"],
        test=processed.get("test"),
        id2label=dict(enumerate(class_names)),
        label2id={name: index for index, name in enumerate(class_names)},
        report=report,
    )


def _find_columns(
    raw_splits: dict[str, RawSplit], data_args: DataArguments, description: str
) -> dict[str, tuple[str, str]]:
    """Each split's (image column, label column). Looked up per split (a validation manifest may name them
    differently) unless --image_column_name / --label_column_name say."""
    columns = {}
    for role, raw in raw_splits.items():
        image_column = find_column(raw.dataset, data_args.image_column_name, IMAGE_COLUMN_CANDIDATES, "image", role)
        label_column = find_column(raw.dataset, data_args.label_column_name, LABEL_COLUMN_CANDIDATES, "label", role)
        if image_column is None:
            raise DataError(
                f"No image column found in the {role} split of {description} (columns "
                f"{raw.dataset.column_names}); name it with --image_column_name"
            )
        if label_column is None:
            if data_args.train_dir:
                raise DataError(
                    f"{data_args.train_dir}: found no labels. Put the images in one sub-folder per class "
                    "(at least two classes), e.g. train/cat/1.jpg and train/dog/2.jpg."
                )
            raise DataError(
                f"No label column found in the {role} split of {description} (columns "
                f"{raw.dataset.column_names}); name it with --label_column_name"
            )
        columns[role] = (image_column, label_column)
    return columns


def _label_splits(
    raw_splits: dict[str, RawSplit], columns: dict[str, tuple[str, str]], description: str
) -> tuple[list[str], dict[str, _LabelledSplit]]:
    """The class names (from training) and every split with its rows' class ids. An unlabelled test split is
    left out; a row whose label is empty or unknown to training is a DataError naming it."""
    train = raw_splits["train"]
    train_row_names = label_names_of(train.dataset, columns["train"][1])
    class_names = ordered_class_names(train.dataset, columns["train"][1], train_row_names)
    label2id = {name: index for index, name in enumerate(class_names)}
    splits = {}
    for role, raw in raw_splits.items():
        names = train_row_names if role == "train" else label_names_of(raw.dataset, columns[role][1])
        if role == "test" and set(names) == {MISSING_LABEL}:
            # Many Hub datasets ship an unlabelled test split (labels -1): nothing to score, so leave it out.
            logger.warning("The test split of %s has no labels; it is not used", description)
            continue
        if set(names) - set(label2id):
            raise DataError(_unlabelled_rows_message(role, names, label2id, raw, columns[role][0], description))
        ids = np.array([label2id[name] for name in names], dtype=np.int64)
        splits[role] = _LabelledSplit(raw, columns[role][0], ids)
    return class_names, splits


def _unlabelled_rows_message(
    role: str, names: list[str], label2id: dict[str, int], raw: RawSplit, image_column: str, description: str
) -> str:
    """"The validation split (val.csv) has 2 row(s) without a label: data row 7 (pics/cat/3.png, no label), ...":
    the first rows whose label is empty or unknown, by data row number (1 = the first row after any header) and
    image, so that they can be found and fixed."""
    bad_rows = [index for index, name in enumerate(names) if name not in label2id]
    unknown = sorted({names[index] for index in bad_rows} - {MISSING_LABEL})
    missing = sum(names[index] == MISSING_LABEL for index in bad_rows)
    problems = []
    if missing:
        problems.append(f"{missing} row(s) without a label")
    if unknown:
        problems.append(f"labels {unknown} that the training split never uses")
    images = raw.dataset.select_columns([image_column]).select(bad_rows[:3])
    if isinstance(images.features[image_column], datasets.Image):
        images = images.cast_column(image_column, datasets.Image(decode=False))  # name the file, do not decode it
    examples = ", ".join(
        f"data row {index + 1} ({describe_source(value, raw.base_dir)}, "
        + ("no label)" if names[index] == MISSING_LABEL else f"label {names[index]!r})")
        for index, value in zip(bad_rows, images[image_column])
    )
    more = f" and {len(bad_rows) - 3} more" if len(bad_rows) > 3 else ""
    return f"The {role} split ({raw.origin or description}) has {' and '.join(problems)}: {examples}{more}"


def _carve_validation(splits: dict[str, _LabelledSplit], fraction: float, seed: int) -> str:
    """Split a validation set off training (stratified by class, seeded), in place; returns how it was made.
    A class with a single image cannot be stratified: a plain seeded random split is used then."""
    from sklearn.model_selection import train_test_split

    train = splits["train"]
    positions = np.arange(len(train.label_ids))
    try:
        kept, held_out = train_test_split(positions, test_size=fraction, stratify=train.label_ids, random_state=seed)
        how = "stratified by class"
    except ValueError:
        kept, held_out = train_test_split(positions, test_size=fraction, random_state=seed)
        how = "random (a class has one image)"
    for role, rows in (("validation", np.sort(held_out)), ("train", np.sort(kept))):
        raw = RawSplit(train.raw.dataset.select(rows), train.raw.base_dir)
        splits[role] = _LabelledSplit(raw, train.image_column, train.label_ids[rows])
    return f"{fraction:.0%} of training, {how}, seed {seed}"


def _subsample(split: _LabelledSplit, limit: int | None, seed: int) -> _LabelledSplit:
    """At most `limit` rows, chosen at random (seeded), in their original order."""
    if limit is None or limit >= len(split.label_ids):
        return split
    chosen = np.sort(np.random.default_rng(seed).permutation(len(split.label_ids))[:limit])
    raw = dataclasses.replace(split.raw, dataset=split.raw.dataset.select(chosen))
    return _LabelledSplit(raw, split.image_column, split.label_ids[chosen])


def _decode(
    split: _LabelledSplit, role: str, class_names: list[str], *, image_size: int, num_channels: int,
    num_proc: int | None, overwrite_cache: bool,
) -> tuple[datasets.Dataset, list[dict[str, str]], dict[str, Any]]:
    return decode_split(
        split.raw.dataset, split=role, image_column=split.image_column, label_ids=split.label_ids,
        class_names=class_names, base_dir=split.raw.base_dir, image_size=image_size, num_channels=num_channels,
        num_proc=num_proc, overwrite_cache=overwrite_cache,
    )


def _check_trainable(split_info: dict[str, dict[str, Any]], description: str, report_path: str) -> None:
    """Refuse an empty split, fewer than two classes, or validation/test labels no readable training image has."""
    for role, info in split_info.items():
        if info["kept"] == 0:
            raise DataError(
                f"The {role} split is empty ({info['skipped']} of {info['rows']} images unreadable, see {report_path})"
            )
    train_counts = split_info["train"]["class_counts"]
    seen = {name for name, count in train_counts.items() if count > 0}
    if len(seen) < 2:
        raise DataError(
            f"Training needs at least two classes; the readable training images all belong to {sorted(seen)} ({description})"
        )
    for role in ("validation", "test"):
        if role in split_info:
            unseen = sorted(name for name, count in split_info[role]["class_counts"].items() if count and name not in seen)
            if unseen:
                raise DataError(
                    f"The {role} split has labels {unseen} that no readable training image has "
                    f"({description}; see {report_path})"
                )


def _has_image_file(folder: str) -> bool:
    """Whether imagefolder will find anything: a file with one of its image extensions, anywhere below."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = {extension.lower() for extension in ImageFolder.EXTENSIONS}
    return any(
        os.path.splitext(name)[1].lower() in extensions for _, _, files in os.walk(folder) for name in files
    )


def prepare_image_folder(
    folder: str,
    *,
    label2id: dict[str, int],
    image_size: int,
    num_channels: int,
    output_dir: str,
    split: str = "images",
    cache_dir: str | None = None,
    num_proc: int | None = None,
    overwrite_cache: bool = False,
    main_process_first: MainProcessFirst = contextlib.nullcontext,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """One folder of class sub-folders (e.g. a test set for `vit-finetune eval`) loaded, decoded and resized exactly
    as `--test_dir` is for training, each image labelled with `label2id[its sub-folder's name]` (a trained model's
    label ids, so classes match by name). Unreadable files are skipped: listed in the returned report (the
    structure of `prepare_datasets`' report) and in `output_dir/data_report.json`.

    Returns the split in torch format (`pixel_values` uint8, `labels` int64) and the report. Raises DataError for a
    missing folder, no class sub-folders, classes the model does not know, or no readable image.
    """
    check_num_channels(num_channels)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    if not any(entry.is_dir() for entry in os.scandir(folder)):
        raise DataError(f"{folder}: expected one sub-folder of images per class, found none")
    if not _has_image_file(folder):  # datasets would only say 'Instruction "images" corresponds to no data!'
        raise DataError(f"{folder}: no image files found in it")
    class_names = sorted(label2id, key=label2id.__getitem__)  # the model's classes, by id
    with main_process_first():
        # drop_labels=False: label by folder name even with a single class folder (imagefolder infers labels only
        # from two on); drop_metadata: a stray metadata.csv must not replace the folder names.
        loaded = datasets.load_dataset(
            "imagefolder", data_files={split: os.path.join(folder, "**")}, cache_dir=cache_dir,
            drop_labels=False, drop_metadata=True,
        )[split]
        names = label_names_of(loaded, "label")
        unknown = sorted(set(names) - set(label2id))
        if unknown:
            raise DataError(
                f"{folder}: classes {unknown} are not labels of the model (its labels: {sorted(label2id)}); "
                "images must sit in one sub-folder per class, named like the model's labels"
            )
        ids = np.array([label2id[name] for name in names], dtype=np.int64)
        dataset, skipped, info = decode_split(
            loaded, split=split, image_column="image", label_ids=ids, class_names=class_names, base_dir=folder,
            image_size=image_size, num_channels=num_channels, num_proc=num_proc, overwrite_cache=overwrite_cache,
        )
    report = build_report(
        source=f"image folder {folder}", image_column="image", label_column="label", image_size=image_size,
        num_channels=num_channels, classes=class_names, splits={split: info}, skipped=skipped,
    )
    report_path = publish_report(report, output_dir)
    if info["kept"] == 0:
        raise DataError(f"{folder}: no readable image ({info['skipped']} unreadable, see {report_path})")
    return dataset, report


__all__ = ["PreparedData", "prepare_datasets", "prepare_image_folder"]
