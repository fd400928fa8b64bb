"""The evaluation preprocessing: decode an image (see decode.py) and resize it straight to the model resolution,
`image_size x image_size` (bilinear, no crop, the geometry of `ViTImageProcessor`), as uint8 (C, H, W).

`preprocess_image` does it for one image (predict); `decode_split` for a whole split once, with one `datasets.map`
pass whose uint8 Arrow result is memory-mapped and reused from the fingerprint cache next run. A bad file never
stops the pass: it becomes a skipped row with a reason, listed in `data_report.json`.
"""

from __future__ import annotations

import os
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from .decode import BadImageError, describe_source, load_image

# Part of the preprocessing cache fingerprint: bump it when decoding or resizing changes, so caches written by an
# older version are not reused (datasets fingerprints the map function by reference, not by what it calls).
PREPROCESSING_VERSION = 1


def decode_and_resize(source: Any, *, image_size: int, num_channels: int, base_dir: str | None = None) -> np.ndarray:
    """One image as the model's uint8 (num_channels, image_size, image_size) array. Raises BadImageError."""
    # draft_size: big JPEGs are decoded at a reduced scale that stays >= image_size (several times faster).
    image = load_image(source, num_channels, base_dir=base_dir, draft_size=image_size)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def preprocess_image(
    image: str | os.PathLike | bytes | Image.Image, *, image_size: int, num_channels: int
) -> torch.Tensor:
    """The evaluation preprocessing of one image: decode like `load_image`, resize to `image_size` squared.
    Returns a uint8 tensor (num_channels, image_size, image_size), identical to a row of `prepare_datasets`'
    validation/test split for the same file; feed it (batched) through `normalize`."""
    pixels = decode_and_resize(image, image_size=image_size, num_channels=num_channels)
    return torch.from_numpy(np.array(pixels, copy=True))  # PIL's arrays are read-only views


def _preprocess_image_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    image_column: str,
    label_ids: list[int],
    image_size: int,
    num_channels: int,
    base_dir: str | None,
    split: str,
    version: int,
) -> dict[str, list]:
    """datasets.map function: decode + resize each image and never raise. A bad row gets an error message and a
    blank image; it is filtered out (and reported) afterwards."""
    pixels, errors, sources = [], [], []
    blank = np.zeros((num_channels, image_size, image_size), dtype=np.uint8)
    for value, index in zip(batch[image_column], indices):
        where = describe_source(value, base_dir)
        if where.startswith("<"):  # bytes without a file name: name the row instead
            where = f"{split}[{index}]"
        try:
            pixels.append(decode_and_resize(value, image_size=image_size, num_channels=num_channels, base_dir=base_dir))
            errors.append("")
        except BadImageError as error:
            pixels.append(blank)
            errors.append(error.reason)
        except Exception as error:  # noqa: BLE001 - one odd file must not kill a long run; it is reported instead
            pixels.append(blank)
            errors.append(f"unexpected decoding error: {type(error).__name__}: {error}")
        sources.append(where)
    return {
        "pixel_values": pixels,
        "labels": [label_ids[index] for index in indices],
        "decode_error": errors,
        "source_path": sources,
    }


def _keep_ok_rows(errors: list[str]) -> list[bool]:
    return [not error for error in errors]


def _map_split(
    dataset: datasets.Dataset,
    *,
    split: str,
    image_column: str,
    label_ids: list[int],
    base_dir: str | None,
    image_size: int,
    num_channels: int,
    num_proc: int | None,
    overwrite_cache: bool,
) -> datasets.Dataset:
    if isinstance(dataset.features[image_column], datasets.Image):
        # Keep the raw bytes/paths: we decode ourselves so that a bad file becomes a report line, not a crash.
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    features = datasets.Features(
        {
            "pixel_values": datasets.Array3D(shape=(num_channels, image_size, image_size), dtype="uint8"),
            "labels": datasets.Value("int64"),
            "decode_error": datasets.Value("string"),
            "source_path": datasets.Value("string"),
        }
    )
    if num_proc is not None and (num_proc <= 1 or len(dataset) < 2 * num_proc):
        num_proc = None  # worker start-up costs more than it saves on tiny splits
    return dataset.map(
        _preprocess_image_batch,
        with_indices=True,
        batched=True,
        # Small batches bound a worker's memory: 64 images of 3x224x224 are ~10 MB.
        batch_size=64,
        writer_batch_size=256,
        remove_columns=dataset.column_names,
        features=features,
        fn_kwargs={
            "image_column": image_column,
            "label_ids": label_ids,
            "image_size": image_size,
            "num_channels": num_channels,
            "base_dir": base_dir,
            "split": split,
            "version": PREPROCESSING_VERSION,
        },
        num_proc=num_proc,
        load_from_cache_file=not overwrite_cache,
        desc=f"Decoding and resizing {split} images to {image_size}px",
    )


def decode_split(
    dataset: datasets.Dataset,
    *,
    split: str,
    image_column: str,
    label_ids: np.ndarray,
    class_names: list[str],
    base_dir: str | None,
    image_size: int,
    num_channels: int,
    num_proc: int | None,
    overwrite_cache: bool,
) -> tuple[datasets.Dataset, list[dict[str, str]], dict[str, Any]]:
    """Decode + resize one split (cached) and drop its unreadable rows. `label_ids[i]` is row i's index into
    `class_names`; relative image paths are resolved against `base_dir`.

    Returns the split in torch format (`pixel_values` uint8, `labels` int64), the skipped rows
    ({split, path, reason}) and the split's counts for the report ({rows, kept, skipped, class_counts}).
    """
    dataset = _map_split(
        dataset, split=split, image_column=image_column, label_ids=label_ids.tolist(), base_dir=base_dir,
        image_size=image_size, num_channels=num_channels, num_proc=num_proc, overwrite_cache=overwrite_cache,
    )
    errors = dataset.data.column("decode_error").to_pylist()
    bad = [position for position, error in enumerate(errors) if error]
    skipped = []
    if bad:
        sources = dataset.data.column("source_path").to_pylist()
        skipped = [{"split": split, "path": sources[p], "reason": errors[p]} for p in bad]
        dataset = dataset.filter(
            _keep_ok_rows, input_columns="decode_error", batched=True, load_from_cache_file=not overwrite_cache
        )
    dataset = dataset.remove_columns(["decode_error", "source_path"])
    counts = np.bincount(np.delete(label_ids, bad), minlength=len(class_names))
    info = {
        "rows": len(errors),
        "kept": len(dataset),
        "skipped": len(bad),
        "class_counts": {class_names[i]: int(c) for i, c in enumerate(counts)},
    }
    # dtype=None: keep the stored dtypes (uint8 images, int64 labels); datasets would widen uint8 to int64.
    dataset.set_format("torch", columns=["pixel_values", "labels"], dtype=None)
    return dataset, skipped, info


__all__ = ["PREPROCESSING_VERSION", "decode_and_resize", "decode_split", "preprocess_image"]
