"""The data pipeline: load any image dataset through `datasets`, decode robustly, preprocess once, augment in batches.

The flow, for newcomers:

1. **Sources** (`load_raw_splits`): a Hub id / local dataset repository / `save_to_disk` folder
   (`--dataset_name`), class-per-sub-folder directories (`--train_dir` ...), or CSV / JSON-lines manifests of
   `path,label` (`--train_file` ...). Everything goes through `datasets`, so Arrow caching comes for free.
2. **Decoding** (`load_image`, `preprocess_image`): every PIL mode becomes RGB (or L for 1-channel models);
   bad files raise `BadImageError`, which the dataset pass turns into a skipped row plus a line in
   `data_report.json` instead of a crashed run.
3. **Preprocess once** (`prepare_datasets`): decode + resize to the model resolution a single time with
   `datasets.map`; the result is uint8 Arrow on disk, memory-mapped, reused from the fingerprint cache next run.
4. **Read in batches** (`BatchReader`): the training loop's loaders copy a batch's rows out of the memory-mapped
   Arrow file in one go (datasets' own list indexing converts row by row, ~30x slower for small images).
5. **Augment in batches** (`BatchAugmentation`): random resized crop, flip, RandAugment / TrivialAugment,
   random erasing and Mixup / CutMix on whole uint8 batches on the training device, with per-sample random
   parameters drawn from torch's global RNG (so seeded runs reproduce and resume exactly).
6. **An image processor** (`build_image_processor`) saved beside every model so that
   `transformers.pipeline("image-classification", model=folder)` preprocesses like our evaluation path.

All stored images are resized straight to `image_size x image_size` (bilinear, no crop), which is exactly what
`ViTImageProcessor` does, so evaluation, `predict` and the transformers pipeline see the same pixels; the
training-time random resized crop adds the scale/aspect variation.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ContextManager

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

REPORT_FILENAME = "data_report.json"
# Columns searched, in order, when --image_column_name / --label_column_name are not given.
IMAGE_COLUMN_CANDIDATES = ("image", "img", "pixel_values", "path", "file_name", "filename", "file", "image_path")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "class", "class_name", "category")
VALIDATION_SPLIT_CANDIDATES = ("validation", "valid", "val", "dev", "eval")
TEST_SPLIT_CANDIDATES = ("test",)
AUTO_AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment")
# Transparent pixels are composited onto this background: the RGB values under alpha 0 are arbitrary, and most
# cut-out images (products, icons, logos) are meant to be seen on white.
TRANSPARENCY_BACKGROUND = (255, 255, 255)
# Part of the preprocessing cache fingerprint: bump it when decoding or resizing changes, so caches written by an
# older version are not reused (datasets fingerprints the map function by reference, not by what it calls).
PREPROCESSING_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DataArguments:
    """What data to train on and how to augment it (field names follow transformers' image-classification example).

    Give exactly one source for the training data: `dataset_name`, `train_dir` or `train_file`.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hugging Face Hub dataset id (e.g. 'fashion_mnist'), a local dataset repository folder "
            "(parquet/image files, loaded with the same `datasets.load_dataset` call), or a folder written by "
            "`Dataset.save_to_disk` / `DatasetDict.save_to_disk`."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration (subset) name of `dataset_name`, if it has several."}
    )
    train_split_name: str = field(
        default="train", metadata={"help": "Name of the training split of `dataset_name`."}
    )
    validation_split_name: str | None = field(
        default=None,
        metadata={
            "help": "Name of the validation split of `dataset_name`. Default: the first of "
            "validation/valid/val/dev/eval that exists; if none does, one is carved from training "
            "(see `train_val_split`)."
        },
    )
    test_split_name: str | None = field(
        default=None,
        metadata={"help": "Name of the test split of `dataset_name`. Default: 'test' if it exists, else no test split."},
    )
    train_dir: str | None = field(
        default=None,
        metadata={"help": "A folder with one sub-folder of images per class (the class name is the folder name)."},
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "Validation images, laid out like `train_dir`."}
    )
    test_dir: str | None = field(default=None, metadata={"help": "Test images, laid out like `train_dir`."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "A CSV (.csv/.tsv) or JSON-lines (.json/.jsonl) manifest with an image path column and a label "
            "column; relative paths are relative to the manifest's folder."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation manifest, like `train_file`."})
    test_file: str | None = field(default=None, metadata={"help": "Test manifest, like `train_file`."})
    image_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the images (or image paths). Default: the first of "
            + "/".join(IMAGE_COLUMN_CANDIDATES)
            + " that exists."
        },
    )
    label_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the labels (class ids or names). Default: the first of "
            + "/".join(LABEL_COLUMN_CANDIDATES)
            + " that exists."
        },
    )
    train_val_split: float = field(
        default=0.15,
        metadata={
            "help": "Fraction of the training data held out (stratified by class, seeded) as validation when the "
            "source has no validation split."
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only this many (randomly chosen, seeded) training images; for quick runs."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only this many (randomly chosen, seeded) validation and test images; for quick runs."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes used to decode and resize the images once (datasets' num_proc)."}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where `datasets` keeps downloaded and preprocessed data (default: HF_DATASETS_CACHE)."},
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Decode and resize again even if a cached result exists."}
    )
    # --- augmentation (applied to whole batches on the training device, see BatchAugmentation) ---
    hflip: bool = field(
        default=True,
        metadata={"help": "Random horizontal flips during training. Turn off for text, digits or other "
                  "orientation-sensitive images (--hflip false)."},
    )
    random_resized_crop_min_scale: float = field(
        default=0.08,
        metadata={
            "help": "Smallest area fraction kept by the training random resized crop (aspect 3/4..4/3). "
            "1.0 turns the crop off; 0.08 is the ImageNet recipe, 0.35-0.5 suits small or centred images."
        },
    )
    auto_augment: str = field(
        default="none",
        metadata={"help": "Per-sample automatic augmentation policy: none, randaugment or trivialaugment."},
    )
    randaugment_num_ops: int = field(
        default=2, metadata={"help": "RandAugment: number of operations applied to each image."}
    )
    randaugment_magnitude: int = field(
        default=9, metadata={"help": "RandAugment: magnitude of every operation, 0..30."}
    )
    random_erasing_prob: float = field(
        default=0.0, metadata={"help": "Probability of erasing a random rectangle of each training image."}
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "Mixup Beta(alpha, alpha) parameter; 0 turns Mixup off (DeiT uses 0.8)."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix Beta(alpha, alpha) parameter; 0 turns CutMix off (DeiT uses 1.0)."}
    )
    mixup_prob: float = field(
        default=1.0, metadata={"help": "Probability that an image is mixed at all when Mixup or CutMix is on."}
    )
    mixup_switch_prob: float = field(
        default=0.5, metadata={"help": "When both Mixup and CutMix are on, probability of CutMix for a mixed image."}
    )

    def __post_init__(self) -> None:
        self.auto_augment = (self.auto_augment or "none").lower()
        if self.auto_augment not in AUTO_AUGMENT_POLICIES:
            raise ValueError(f"auto_augment must be one of {AUTO_AUGMENT_POLICIES}, got {self.auto_augment!r}")
        if not 0.0 < self.random_resized_crop_min_scale <= 1.0:
            raise ValueError(f"random_resized_crop_min_scale must be in (0, 1], got {self.random_resized_crop_min_scale}")
        if not 0.0 < self.train_val_split < 1.0:
            raise ValueError(f"train_val_split must be in (0, 1), got {self.train_val_split}")
        for name in ("random_erasing_prob", "mixup_prob", "mixup_switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.randaugment_magnitude <= 30:
            raise ValueError(f"randaugment_magnitude must be in 0..30, got {self.randaugment_magnitude}")
        for name in ("max_train_samples", "max_eval_samples"):
            # A negative limit would silently drop that many images (a slice [:-5]) and 0 leaves nothing to use.
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset for all images), got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


class BadImageError(ValueError):
    """An image that cannot be used: `reason` says why, `path` which file (or row) it was."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _describe_source(source: Any, base_dir: str | None = None) -> str:
    if isinstance(source, dict):
        if source.get("path"):
            return _resolve_path(source["path"], base_dir)
        return "<image bytes>"
    if isinstance(source, (str, os.PathLike)):
        return _resolve_path(os.fspath(source), base_dir)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return f"<{type(source).__name__}>"


def _resolve_path(path: str, base_dir: str | None) -> str:
    if base_dir and not os.path.isabs(path):
        return os.path.normpath(os.path.join(base_dir, path))
    return path


def _open_image(source: Any, base_dir: str | None = None) -> Image.Image:
    """Open (lazily) whatever a dataset row or a user hands us: a path, bytes, a datasets image dict, a PIL image
    or an array. Raises BadImageError for files that are missing, empty or not images."""
    where = _describe_source(source, base_dir)
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, dict):  # datasets' Image(decode=False) value: {"bytes": ..., "path": ...}
        source = source.get("bytes") or source.get("path")
        if source is None:
            raise BadImageError(where, "empty row: no image bytes and no path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadImageError(where, "empty file (0 bytes)")
        fp: Any = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        fp = _resolve_path(os.fspath(source), base_dir)
        if not os.path.isfile(fp):
            raise BadImageError(where, "file not found")
        if os.path.getsize(fp) == 0:
            raise BadImageError(where, "empty file (0 bytes)")
    elif isinstance(source, (np.ndarray, list, torch.Tensor)):
        array = np.asarray(source.cpu() if isinstance(source, torch.Tensor) else source)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)  # channels-first (e.g. a pixel_values column) -> HWC for PIL
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8:
            array = np.clip(array * 255 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
        try:
            return Image.fromarray(array)
        except (TypeError, ValueError) as error:
            raise BadImageError(where, f"array of shape {array.shape} is not an image: {error}") from error
    else:
        raise BadImageError(where, f"unsupported image value of type {type(source).__name__}")
    try:
        # Image.open keeps PIL's decompression-bomb guard (MAX_IMAGE_PIXELS): huge images raise, we report them.
        return Image.open(fp)
    except Image.DecompressionBombError as error:
        raise BadImageError(where, f"decompression bomb guard: {error}") from error
    except UnidentifiedImageError as error:
        raise BadImageError(where, "not an image (PIL cannot identify the file)") from error
    except OSError as error:
        raise BadImageError(where, f"unreadable: {error}") from error


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale -> 8-bit L. PIL's own convert() clips 16-bit values at 255,
    which turns most 16-bit photos white, so scale by the range of the data type instead."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = array.astype(np.float32) / 257.0  # 65535 -> 255
    elif image.mode == "F" and array.size and float(array.max()) <= 1.0:
        scaled = array.astype(np.float32) * 255.0
    else:  # "I" (32-bit) or "F": 8-bit data stays as is, 16-bit range is scaled down, anything else by its max
        peak = float(array.max()) if array.size else 0.0
        scaled = array.astype(np.float32) * (255.0 / 65535.0 if 255 < peak <= 65535 else 255.0 / peak if peak > 65535 else 1.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _to_model_mode(image: Image.Image, num_channels: int) -> Image.Image:
    """Any PIL mode -> "RGB" (3 channels) or "L" (1 channel)."""
    target = "L" if num_channels == 1 else "RGB"
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        image = _high_bit_depth_to_8bit(image)
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        # Palette transparency must go through RGBA, otherwise PIL drops it (and warns).
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    elif mode in ("L", "RGB") and "transparency" in image.info:  # a tRNS colour key
        image = image.convert("RGBA")
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (*TRANSPARENCY_BACKGROUND, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode != target:
        # CMYK, YCbCr, HSV, LAB... and RGB <-> L. L from RGB uses ITU-R 601-2 luma (what PIL and ImageNet tools do).
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image = image.convert(target)
    return image


def check_num_channels(num_channels: int) -> None:
    """Images decode to RGB or L only: anything else is a configuration error, not a bad image."""
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}")


def _decode(source: Any, num_channels: int, base_dir: str | None, draft_size: int | None) -> Image.Image:
    check_num_channels(num_channels)
    where = _describe_source(source, base_dir)
    image = _open_image(source, base_dir)
    try:
        if draft_size and image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is much bigger than the model input:
            # several times faster, and the result stays >= draft_size so the final resize still antialiases.
            image.draft(None, (draft_size, draft_size))
        image.load()  # full decode now, so truncated / corrupt data raises here and not later
        image = ImageOps.exif_transpose(image)
        return _to_model_mode(image, num_channels)
    except Image.DecompressionBombError as error:
        raise BadImageError(where, f"decompression bomb guard: {error}") from error
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, struct.error) as error:
        # PIL reports truncation as OSError("image file is truncated ..."), bad headers as SyntaxError etc.
        raise BadImageError(where, f"corrupt or truncated image: {type(error).__name__}: {error}") from error


def load_image(image: str | os.PathLike | bytes | Image.Image, num_channels: int = 3) -> Image.Image:
    """Decode one image the way the training data is decoded: EXIF orientation applied, every PIL mode (palette,
    alpha, CMYK, 16-bit, 1-bit ...) converted to "RGB" (`num_channels=3`) or "L" (`num_channels=1`), transparent
    pixels composited on white. Raises `BadImageError` (a ValueError naming the file and the reason) for missing,
    empty, corrupt, truncated or non-image files."""
    return _decode(image, num_channels, base_dir=None, draft_size=None)


def _resize(image: Image.Image, image_size: int) -> Image.Image:
    # Straight to a square with bilinear (antialiased) resampling: the same geometry as ViTImageProcessor.
    if image.size == (image_size, image_size):
        return image
    return image.resize((image_size, image_size), Image.Resampling.BILINEAR)


def _to_chw_uint8(image: Image.Image) -> np.ndarray:
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def preprocess_image(
    image: str | os.PathLike | bytes | Image.Image, *, image_size: int, num_channels: int
) -> torch.Tensor:
    """The evaluation preprocessing of one image: decode like `load_image`, resize to `image_size` squared.
    Returns a uint8 tensor (num_channels, image_size, image_size), identical to a row of `prepare_datasets`'
    validation/test split for the same file; feed it (batched) through `normalize`."""
    decoded = _decode(image, num_channels, base_dir=None, draft_size=image_size)
    return torch.from_numpy(np.array(_to_chw_uint8(_resize(decoded, image_size)), copy=True))


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _RawSplit:
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


def load_raw_splits(args: DataArguments) -> tuple[dict[str, _RawSplit], str]:
    """The undecoded splits ("train" and optionally "validation", "test") and a one-line description of the source."""
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

    splits: dict[str, _RawSplit] = {}
    if args.dataset_name:
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
        train_name = _pick_split(available, args.train_split_name, (), "train")
        validation_name = _pick_split(available, args.validation_split_name, VALIDATION_SPLIT_CANDIDATES, "validation")
        test_name = _pick_split(available, args.test_split_name, TEST_SPLIT_CANDIDATES, "test")
        for role, split_name in (("train", train_name), ("validation", validation_name), ("test", test_name)):
            if split_name is not None:
                splits[role] = _RawSplit(loaded[split_name], base_dir=name if os.path.isdir(name) else None,
                                         origin=f"{name} split {split_name!r}")
    elif args.train_dir:
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
        splits = {role: _RawSplit(loaded[role], base_dir=folders[role], origin=folders[role]) for role in folders}
        description = "image folders " + ", ".join(f"{role}={folder}" for role, folder in folders.items())
    else:
        files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
        files = {role: path for role, path in files.items() if path}
        for role, path in files.items():
            if not os.path.isfile(path):
                raise ValueError(f"--{role}_file {path}: no such file")
            dataset = _load_manifest(path, role, args.cache_dir)
            splits[role] = _RawSplit(dataset, base_dir=os.path.dirname(os.path.abspath(path)), origin=path)
        description = "manifests " + ", ".join(f"{role}={path}" for role, path in files.items())
    return splits, description


def _find_column(dataset: datasets.Dataset, requested: str | None, candidates: Sequence[str], what: str, split: str) -> str | None:
    columns = dataset.column_names
    if requested:
        if requested not in columns:
            raise ValueError(f"--{what}_column_name={requested!r} is not a column of the {split} split (columns: {columns})")
        return requested
    return next((name for name in candidates if name in columns), None)


def _label_names_of(dataset: datasets.Dataset, column: str) -> list[str]:
    """Every row's label as a class name (string)."""
    values = dataset.data.column(column).to_pylist() if dataset._indices is None else dataset[column]
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(int(v)) if v is not None and v >= 0 else "<missing>" for v in values]
    return ["<missing>" if v is None else str(v) for v in values]


def _class_names(dataset: datasets.Dataset, column: str, row_names: list[str]) -> list[str]:
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    unique = sorted(set(row_names) - {"<missing>"})
    # Integer labels sort numerically (2 before 10), names alphabetically.
    if all(name.lstrip("-").isdigit() for name in unique):
        unique.sort(key=int)
    return unique


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing (one datasets.map pass, cached by fingerprint)
# ---------------------------------------------------------------------------------------------------------------


def _unlabelled_rows_message(
    role: str, names: list[str], label2id: dict[str, int], raw: _RawSplit, image_column: str, description: str
) -> str:
    """"The validation split (val.csv) has 2 row(s) without a label: data row 7 (pics/cat/3.png, no label), ...":
    the first rows whose label is empty or unknown, by data row number (1 = the first row after any header) and
    image, so that they can be found and fixed."""
    bad_rows = [index for index, name in enumerate(names) if name not in label2id]
    unknown = sorted({names[index] for index in bad_rows} - {"<missing>"})
    missing = sum(names[index] == "<missing>" for index in bad_rows)
    problems = []
    if missing:
        problems.append(f"{missing} row(s) without a label")
    if unknown:
        problems.append(f"labels {unknown} that the training split never uses")
    images = raw.dataset.select_columns([image_column]).select(bad_rows[:3])
    if isinstance(images.features[image_column], datasets.Image):
        images = images.cast_column(image_column, datasets.Image(decode=False))  # name the file, do not decode it
    examples = ", ".join(
        f"data row {index + 1} ({_describe_source(value, raw.base_dir)}, "
        + ("no label)" if names[index] == "<missing>" else f"label {names[index]!r})")
        for index, value in zip(bad_rows, images[image_column])
    )
    more = f" and {len(bad_rows) - 3} more" if len(bad_rows) > 3 else ""
    return f"The {role} split ({raw.origin or description}) has {' and '.join(problems)}: {examples}{more}"


def _keep_ok_rows(errors: list[str]) -> list[bool]:
    return [not error for error in errors]



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
        where = _describe_source(value, base_dir)
        if where.startswith("<"):  # bytes without a file name: name the row instead
            where = f"{split}[{index}]"
        try:
            decoded = _decode(value, num_channels, base_dir, draft_size=image_size)
            pixels.append(_to_chw_uint8(_resize(decoded, image_size)))
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


def _preprocess_split(
    raw: _RawSplit,
    *,
    split: str,
    image_column: str,
    label_ids: list[int],
    image_size: int,
    num_channels: int,
    num_proc: int | None,
    overwrite_cache: bool,
) -> datasets.Dataset:
    dataset = raw.dataset
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
            "base_dir": raw.base_dir,
            "split": split,
            "version": PREPROCESSING_VERSION,
        },
        num_proc=num_proc,
        load_from_cache_file=not overwrite_cache,
        desc=f"Decoding and resizing {split} images to {image_size}px",
    )


# ---------------------------------------------------------------------------------------------------------------
# prepare_datasets
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Ready-to-train splits (torch format: `pixel_values` uint8 (C, H, W), `labels` int64) and the label maps."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None
    id2label: dict[int, str]
    label2id: dict[str, int]
    report: dict[str, Any]


class DataError(ValueError):
    """The data cannot be trained on (empty split, unseen validation label, a single class...)."""


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train indices, validation indices, stratified?) A class with a single image cannot be stratified; fall back
    to a plain seeded random split then."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels))
    try:
        train, validation = train_test_split(positions, test_size=fraction, stratify=labels, random_state=seed)
        stratified = True
    except ValueError:
        train, validation = train_test_split(positions, test_size=fraction, random_state=seed)
        stratified = False
    return np.sort(train), np.sort(validation), stratified


def _subsample(raw: _RawSplit, ids: np.ndarray, limit: int | None, seed: int) -> tuple[_RawSplit, np.ndarray]:
    if limit is None or limit >= len(ids):
        return raw, ids
    chosen = np.sort(np.random.default_rng(seed).permutation(len(ids))[:limit])
    return _RawSplit(raw.dataset.select(chosen), raw.base_dir), ids[chosen]


def _write_report(report: dict[str, Any], output_dir: str) -> str:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, REPORT_FILENAME)
    # Write-then-rename: every process of a multi-GPU run may write the same report, never a half-written one.
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
    os.replace(temporary, path)
    return path


def _log_summary(report: dict[str, Any], report_path: str) -> None:
    for split, info in report["splits"].items():
        logger.info("%s: %d images kept of %d", split, info["kept"], info["rows"])
    skipped = report["skipped"]
    if skipped:
        reasons = Counter(item["reason"].split(":")[0] for item in skipped)
        examples = "; ".join(f"{item['path']} ({item['reason']})" for item in skipped[:3])
        logger.warning(
            "Skipped %d unreadable image(s) (%s), e.g. %s. Full list in %s",
            len(skipped), ", ".join(f"{count} {reason}" for reason, count in reasons.items()), examples, report_path,
        )


def _decode_split(
    raw: _RawSplit,
    *,
    split: str,
    image_column: str,
    ids: np.ndarray,
    class_names: list[str],
    image_size: int,
    num_channels: int,
    num_proc: int | None,
    overwrite_cache: bool,
) -> tuple[datasets.Dataset, list[dict[str, str]], dict[str, Any]]:
    """Decode + resize one split (cached), drop its unreadable rows. Returns the split in torch format, the skipped
    rows ({split, path, reason}) and its counts for the report. `ids[i]` is row i's label id into `class_names`."""
    dataset = _preprocess_split(
        raw, split=split, image_column=image_column, label_ids=ids.tolist(), image_size=image_size,
        num_channels=num_channels, num_proc=num_proc, overwrite_cache=overwrite_cache,
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
    counts = np.bincount(np.delete(ids, bad), minlength=len(class_names))
    info = {
        "rows": len(errors),
        "kept": len(dataset),
        "skipped": len(bad),
        "class_counts": {class_names[i]: int(c) for i, c in enumerate(counts)},
    }
    # dtype=None: keep the stored dtypes (uint8 images, int64 labels); datasets would widen uint8 to int64.
    dataset.set_format("torch", columns=["pixel_values", "labels"], dtype=None)
    return dataset, skipped, info


def prepare_datasets(
    data_args: DataArguments,
    *,
    image_size: int,
    num_channels: int,
    output_dir: str,
    seed: int,
    main_process_first: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
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
        train_raw = raw_splits["train"]
        # Columns are looked up per split (a validation manifest may name them differently) unless given.
        columns: dict[str, tuple[str, str]] = {}
        for role, raw in raw_splits.items():
            image_column = _find_column(raw.dataset, data_args.image_column_name, IMAGE_COLUMN_CANDIDATES, "image", role)
            label_column = _find_column(raw.dataset, data_args.label_column_name, LABEL_COLUMN_CANDIDATES, "label", role)
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
        image_column, label_column = columns["train"]

        # Class names come from training; every other split is mapped onto them by name.
        train_row_names = _label_names_of(train_raw.dataset, label_column)
        class_names = _class_names(train_raw.dataset, label_column, train_row_names)
        label2id = {name: index for index, name in enumerate(class_names)}
        row_names: dict[str, list[str]] = {"train": train_row_names}
        for role, raw in raw_splits.items():
            if role == "train":
                continue
            row_names[role] = _label_names_of(raw.dataset, columns[role][1])
            if role == "test" and set(row_names[role]) == {"<missing>"}:
                # Many Hub datasets ship an unlabelled test split (labels -1): nothing to score, so leave it out.
                logger.warning("The test split of %s has no labels; it is not used", description)
                del row_names[role]
        raw_splits = {role: raw for role, raw in raw_splits.items() if role in row_names}
        for role, names in row_names.items():
            if set(names) - set(label2id):
                raise DataError(_unlabelled_rows_message(role, names, label2id, raw_splits[role],
                                                         columns[role][0], description))
        ids = {role: np.array([label2id[name] for name in names], dtype=np.int64) for role, names in row_names.items()}

        validation_origin = "validation split of the source"
        if "validation" not in raw_splits:
            train_positions, validation_positions, stratified = _stratified_split(ids["train"], data_args.train_val_split, seed)
            raw_splits["validation"] = _RawSplit(train_raw.dataset.select(validation_positions), train_raw.base_dir)
            raw_splits["train"] = _RawSplit(train_raw.dataset.select(train_positions), train_raw.base_dir)
            columns["validation"] = columns["train"]
            ids["validation"], ids["train"] = ids["train"][validation_positions], ids["train"][train_positions]
            validation_origin = (
                f"{data_args.train_val_split:.0%} of training, {'stratified by class' if stratified else 'random (a class has one image)'}, seed {seed}"
            )
        limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples, "test": data_args.max_eval_samples}
        for role in list(raw_splits):
            raw_splits[role], ids[role] = _subsample(raw_splits[role], ids[role], limits[role], seed)

        processed: dict[str, datasets.Dataset] = {}
        skipped: list[dict[str, str]] = []
        split_info: dict[str, dict[str, Any]] = {}
        for role in ("train", "validation", "test"):
            if role not in raw_splits:
                continue
            processed[role], split_skipped, split_info[role] = _decode_split(
                raw_splits[role], split=role, image_column=columns[role][0], ids=ids[role], class_names=class_names,
                image_size=image_size, num_channels=num_channels,
                num_proc=data_args.preprocessing_num_workers, overwrite_cache=data_args.overwrite_cache,
            )
            skipped += split_skipped

    report = {
        "source": description,
        "image_column": image_column,  # of the training split
        "label_column": label_column,
        "image_size": image_size,
        "num_channels": num_channels,
        "classes": class_names,
        "validation": validation_origin,
        "splits": split_info,
        "num_skipped": len(skipped),
        "skipped": skipped,
    }
    report_path = _write_report(report, output_dir)
    _log_summary(report, report_path)

    # Checked after the report is written so the user can see which files were dropped.
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

    return PreparedData(
        train=processed["train"],
        validation=processed["validation"],
        test=processed.get("test"),
        id2label=dict(enumerate(class_names)),
        label2id=label2id,
        report=report,
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
    main_process_first: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
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
        names = _label_names_of(loaded, "label")
        unknown = sorted(set(names) - set(label2id))
        if unknown:
            raise DataError(
                f"{folder}: classes {unknown} are not labels of the model (its labels: {sorted(label2id)}); "
                "images must sit in one sub-folder per class, named like the model's labels"
            )
        ids = np.array([label2id[name] for name in names], dtype=np.int64)
        raw = _RawSplit(loaded, base_dir=folder, origin=folder)
        dataset, skipped, info = _decode_split(
            raw, split=split, image_column="image", ids=ids, class_names=class_names, image_size=image_size,
            num_channels=num_channels, num_proc=num_proc, overwrite_cache=overwrite_cache,
        )
    report = {
        "source": f"image folder {folder}",
        "image_column": "image",
        "label_column": "label",
        "image_size": image_size,
        "num_channels": num_channels,
        "classes": class_names,
        "splits": {split: info},
        "num_skipped": len(skipped),
        "skipped": skipped,
    }
    report_path = _write_report(report, output_dir)
    _log_summary(report, report_path)
    if info["kept"] == 0:
        raise DataError(f"{folder}: no readable image ({info['skipped']} unreadable, see {report_path})")
    return dataset, report


class BatchReader(torch.utils.data.Dataset):
    """A prepared split read a whole batch at a time, straight from its Arrow table.

    Indexing a `datasets.Dataset` with a batch's indices gathers one-row slices and converts each row's Array3D
    on its own: ~8-11 ms for 128 Fashion-MNIST images here, ~10% of the recipe's training step. This reader keeps
    a zero-copy numpy view of each Arrow record batch (the table is usually a memory-mapped cache file, so nothing
    is loaded into memory) and copies the requested rows out of them. The DataLoader hands `__getitems__` a batch's
    indices and the batch comes back stacked, so build the loader with `collate_fn=keep_batch`.
    """

    def __init__(self, dataset: datasets.Dataset):
        self.dataset = dataset
        self.image_shape = tuple(dataset.features["pixel_values"].shape)
        table = dataset.data.table
        self.chunks = [_uint8_rows(chunk, self.image_shape) for chunk in table.column("pixel_values").chunks]
        self.chunk_starts = np.cumsum([0] + [len(chunk) for chunk in self.chunks[:-1]])
        self.labels = table.column("labels").to_numpy()
        # filter() (bad images dropped) and select() leave an index mapping over the table rather than a copy.
        self.rows = None if dataset._indices is None else dataset._indices.column(0).to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        if self.rows is not None:
            rows = self.rows[rows]
        chunk_of_row = np.searchsorted(self.chunk_starts, rows, side="right") - 1
        row_in_chunk = rows - self.chunk_starts[chunk_of_row]
        images = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        for i, (chunk, row) in enumerate(zip(chunk_of_row.tolist(), row_in_chunk.tolist())):
            images[i] = self.chunks[chunk][row]
        return {"pixel_values": torch.from_numpy(images), "labels": torch.from_numpy(self.labels[rows])}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    # Loader workers that are spawned, not forked, get the dataset (which pickles as its cache files' paths) and
    # rebuild the views, rather than a pickled copy of every image.
    def __getstate__(self) -> dict[str, Any]:
        return {"dataset": self.dataset}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["dataset"])


def _uint8_rows(chunk: Any, image_shape: tuple[int, ...]) -> np.ndarray:
    """A zero-copy (rows, C, H, W) uint8 view of one Arrow chunk of an Array3D column."""
    import pyarrow as pa

    values = getattr(chunk, "storage", chunk)  # Array3D is an extension type over nested lists of uint8
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    return values.to_numpy(zero_copy_only=True).reshape(len(chunk), *image_shape)


def keep_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataLoader collate_fn for BatchReader: its batches are already stacked."""
    return batch


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and batch augmentation (on the training device)
# ---------------------------------------------------------------------------------------------------------------


def _channel_stats(values: Sequence[float] | float, num_channels: int, what: str) -> list[float]:
    values = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(values) == num_channels:
        return values
    if len(values) == 1:
        return values * num_channels
    if num_channels == 1 and len(set(values)) == 1:  # e.g. (0.5, 0.5, 0.5) saved for a grayscale model
        return values[:1]
    raise ValueError(f"{what} has {len(values)} values but the images have {num_channels} channel(s)")


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (C, H, W) or (B, C, H, W) -> float32 `(images / 255 - mean) / std`, on the images' device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {images.dtype}")
    channels = images.shape[-3]
    mean_t = torch.tensor(_channel_stats(mean, channels, "mean"), dtype=torch.float32, device=images.device)
    std_t = torch.tensor(_channel_stats(std, channels, "std"), dtype=torch.float32, device=images.device)
    return (images.float().div_(255.0) - mean_t.view(-1, 1, 1)) / std_t.view(-1, 1, 1)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL ImageEnhance semantics: factor 1 keeps the image, 0 gives `other`, >1 extrapolates away from it.
    return (other + (image - other) * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL's SMOOTH kernel, borders left untouched, as torchvision's adjust_sharpness does.
    channels = images.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=images.device) / 13.0
    blurred = F.conv2d(images, kernel.expand(channels, 1, 3, 3).to(images.dtype), groups=channels)
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = blurred
    return _blend(images, degenerate, factor)


def _posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = (2.0 ** (8 - bits)).view(-1, 1, 1, 1).to(images)
    return torch.floor(torch.round(images * 255.0) / step) * step / 255.0


def _autocontrast(images: torch.Tensor) -> torch.Tensor:
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-6), torch.ones_like(high))
    offset = torch.where(high > low, low, torch.zeros_like(low))
    return ((images - offset) * scale).clamp_(0.0, 1.0)


class PerSampleAutoAugment(torch.nn.Module):
    """RandAugment / TrivialAugment with the operation *and* magnitude drawn per image.

    kornia's and torchvision's versions pick one operation per call, i.e. per batch; with batch augmentation that
    would give a whole batch the same operation, so the choice is made per image here and each operation runs once
    on the images that drew it. Operations and ranges follow torchvision (RandAugment: N ops at a fixed magnitude
    M/30; TrivialAugment: one op at a uniformly drawn magnitude, "wide" ranges). Images are float in [0, 1].
    """

    GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
    # op -> (RandAugment range, TrivialAugment-wide range) at magnitude 1. Translations are fractions of the side.
    RANGES = {
        "shear_x": (0.3, 0.99),
        "shear_y": (0.3, 0.99),
        "translate_x": (150.0 / 331.0, 32.0 / 224.0),
        "translate_y": (150.0 / 331.0, 32.0 / 224.0),
        "rotate": (30.0, 135.0),
        "brightness": (0.9, 0.99),
        "color": (0.9, 0.99),
        "contrast": (0.9, 0.99),
        "sharpness": (0.9, 0.99),
        "posterize": (4.0, 6.0),  # bits removed at magnitude 1
        "solarize": (1.0, 1.0),
    }

    def __init__(self, policy: str, num_channels: int, num_ops: int = 2, magnitude: int = 9):
        super().__init__()
        if policy not in ("randaugment", "trivialaugment"):
            raise ValueError(f"policy must be 'randaugment' or 'trivialaugment', got {policy!r}")
        self.policy = policy
        self.num_ops = num_ops if policy == "randaugment" else 1
        self.magnitude = magnitude
        self.ops = ["identity", *self.GEOMETRIC, "brightness", "color", "contrast", "sharpness", "posterize",
                    "solarize", "autocontrast", "equalize"]
        if num_channels == 1:
            self.ops.remove("color")  # saturation means nothing for grayscale
        self._range_index = 0 if policy == "randaugment" else 1

    def _range(self, op: str) -> float:
        return self.RANGES[op][self._range_index]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        for _ in range(self.num_ops):
            # Parameters come from torch's global (CPU) RNG, so a seeded run is reproducible on any device.
            op_ids = torch.randint(len(self.ops), (batch,))
            if self.policy == "trivialaugment":
                magnitude = torch.randint(0, 31, (batch,)).float() / 30.0
            else:
                magnitude = torch.full((batch,), self.magnitude / 30.0)
            sign = torch.randint(0, 2, (batch,)).float() * 2.0 - 1.0
            images = self._augment(images, op_ids, magnitude, sign)
        return images

    def _augment(self, images: torch.Tensor, op_ids: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        device = images.device
        out = images.clone()
        # All geometric ops of this round share one affine warp (one grid_sample for the subset).
        geometric_ids = torch.tensor([self.ops.index(name) for name in self.GEOMETRIC])
        is_geometric = torch.isin(op_ids, geometric_ids)
        if is_geometric.any():
            rows = is_geometric.nonzero().squeeze(1)
            theta = torch.zeros(len(rows), 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            for name in self.GEOMETRIC:
                chosen = op_ids[rows] == self.ops.index(name)
                value = (magnitude[rows] * sign[rows] * self._range(name))[chosen]
                if name == "shear_x":
                    theta[chosen, 0, 1] = value
                elif name == "shear_y":
                    theta[chosen, 1, 0] = value
                elif name == "translate_x":
                    theta[chosen, 0, 2] = 2.0 * value  # affine_grid coordinates span [-1, 1]
                elif name == "translate_y":
                    theta[chosen, 1, 2] = 2.0 * value
                else:
                    angle = torch.deg2rad(value)
                    theta[chosen, 0, 0], theta[chosen, 0, 1] = torch.cos(angle), -torch.sin(angle)
                    theta[chosen, 1, 0], theta[chosen, 1, 1] = torch.sin(angle), torch.cos(angle)
            rows = rows.to(device)
            subset = images[rows]
            grid = F.affine_grid(theta.to(device, subset.dtype), list(subset.shape), align_corners=False)
            out[rows] = F.grid_sample(subset, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        for op_index, name in enumerate(self.ops):
            if name == "identity" or name in self.GEOMETRIC:
                continue
            chosen = op_ids == op_index
            if not chosen.any():
                continue
            rows = chosen.nonzero().squeeze(1).to(device)
            subset = images[rows]
            m = magnitude[chosen].to(device)
            factor = 1.0 + (m * sign[chosen].to(device)) * (self._range(name) if name in self.RANGES else 0.0)
            if name == "brightness":
                result = _blend(subset, torch.zeros_like(subset), factor)
            elif name == "color":
                result = _blend(subset, _grayscale(subset).expand_as(subset), factor)
            elif name == "contrast":
                result = _blend(subset, _grayscale(subset).mean(dim=(-3, -2, -1), keepdim=True).expand_as(subset), factor)
            elif name == "sharpness":
                result = _sharpness(subset, factor)
            elif name == "posterize":
                result = _posterize(subset, 8 - torch.round(m * self._range(name)))
            elif name == "solarize":
                threshold = (1.0 - m).view(-1, 1, 1, 1)
                result = torch.where(subset >= threshold, 1.0 - subset, subset)
            elif name == "autocontrast":
                result = _autocontrast(subset)
            else:  # equalize
                import kornia

                result = kornia.enhance.equalize(subset)
            out[rows] = result
        return out


class MixupCutmix(torch.nn.Module):
    """Mixup and CutMix with per-image mixing weights, returning soft targets that sum to 1.

    Image i is mixed with image perm[i]; lambda_i ~ Beta(alpha, alpha). For CutMix a box of area (1 - lambda_i)
    is pasted and lambda_i is recomputed from the box actually pasted (after clipping at the border)."""

    def __init__(self, num_labels: int, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5):
        super().__init__()
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MixupCutmix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_labels = num_labels
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    @staticmethod
    def _beta(alpha: float, count: int) -> torch.Tensor:
        return torch.distributions.Beta(alpha, alpha).sample((count,)) if alpha > 0 else torch.ones(count)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = images.shape
        device = images.device
        perm = torch.randperm(batch)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = torch.rand(batch) < self.switch_prob
        else:
            use_cutmix = torch.full((batch,), self.cutmix_alpha > 0)
        lam = torch.where(use_cutmix, self._beta(self.cutmix_alpha, batch), self._beta(self.mixup_alpha, batch))
        lam = torch.where(torch.rand(batch) < self.prob, lam, torch.ones(batch))

        # CutMix boxes (vectorised): centre uniform in the image, sides sqrt(1 - lam) of the image's.
        cut = torch.sqrt(1.0 - lam)
        cy, cx = torch.rand(batch) * height, torch.rand(batch) * width
        y0 = (cy - cut * height / 2).round().clamp(0, height).long()
        y1 = (cy + cut * height / 2).round().clamp(0, height).long()
        x0 = (cx - cut * width / 2).round().clamp(0, width).long()
        x1 = (cx + cut * width / 2).round().clamp(0, width).long()
        box_area = ((y1 - y0) * (x1 - x0)).float() / (height * width)
        lam = torch.where(use_cutmix, 1.0 - box_area, lam)

        partner = images[perm.to(device)]
        rows = torch.arange(height).view(1, height, 1)
        cols = torch.arange(width).view(1, 1, width)
        inside = (rows >= y0.view(-1, 1, 1)) & (rows < y1.view(-1, 1, 1)) & (cols >= x0.view(-1, 1, 1)) & (cols < x1.view(-1, 1, 1))
        inside &= use_cutmix.view(-1, 1, 1)
        lam_d = lam.to(device).view(-1, 1, 1, 1)
        mixed = torch.where(use_cutmix.to(device).view(-1, 1, 1, 1), images, lam_d * images + (1.0 - lam_d) * partner)
        mixed = torch.where(inside.to(device).unsqueeze(1), partner, mixed)

        one_hot = F.one_hot(labels, self.num_labels).float()
        targets = lam_d.view(-1, 1) * one_hot + (1.0 - lam_d.view(-1, 1)) * one_hot[perm.to(device)]
        return mixed, targets


class BatchAugmentation(torch.nn.Module):
    """Training augmentation for whole uint8 batches on the training device.

    `forward(images uint8 (B, C, H, W), labels int64 (B,)) -> (normalised float32 images, targets)`, in order:
    random resized crop, horizontal flip, RandAugment / TrivialAugment, normalisation, random erasing (erased
    pixels become 0, i.e. the mean colour), Mixup / CutMix. `targets` are soft (B, num_labels) rows summing to 1
    when Mixup or CutMix is on, else the int64 labels. Every random parameter is drawn per image from torch's
    global RNG. In eval mode (`.eval()`) it only normalises.
    """

    def __init__(
        self,
        data_args: DataArguments,
        *,
        image_size: int,
        num_channels: int,
        num_labels: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        import kornia.augmentation as K

        self.mean = _channel_stats(mean, num_channels, "mean")
        self.std = _channel_stats(std, num_channels, "std")
        self.num_labels = num_labels
        min_scale = data_args.random_resized_crop_min_scale
        # "resample" crops the whole batch with one warp; kornia's default "slice" loops over the images.
        self.crop = (
            K.RandomResizedCrop((image_size, image_size), scale=(min_scale, 1.0), cropping_mode="resample")
            if min_scale < 1.0 else None
        )
        self.flip = K.RandomHorizontalFlip() if data_args.hflip else None
        self.auto_augment = (
            PerSampleAutoAugment(data_args.auto_augment, num_channels, data_args.randaugment_num_ops,
                                 data_args.randaugment_magnitude)
            if data_args.auto_augment != "none" else None
        )
        self.erasing = K.RandomErasing(p=data_args.random_erasing_prob, value=0.0) if data_args.random_erasing_prob > 0 else None
        self.mix = (
            MixupCutmix(num_labels, data_args.mixup_alpha, data_args.cutmix_alpha, data_args.mixup_prob, data_args.mixup_switch_prob)
            if data_args.mixup_alpha > 0 or data_args.cutmix_alpha > 0 else None
        )

    @property
    def soft_targets(self) -> bool:
        """True when training targets are (B, num_labels) probabilities (Mixup / CutMix on)."""
        return self.mix is not None

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"BatchAugmentation expects uint8 images (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if not self.training:
            return normalize(images, self.mean, self.std), labels
        x = images.float().div_(255.0)
        if self.crop is not None:
            x = self.crop(x)
        if self.flip is not None:
            x = self.flip(x)
        if self.auto_augment is not None:
            x = self.auto_augment(x)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        if self.erasing is not None:
            x = self.erasing(x)
        if self.mix is not None:
            return self.mix(x, labels)
        return x, labels


# ---------------------------------------------------------------------------------------------------------------
# The image processor saved with every model
# ---------------------------------------------------------------------------------------------------------------


def build_image_processor(image_size: int, num_channels: int, mean: Sequence[float], std: Sequence[float]):
    """A `transformers.ViTImageProcessor` that reproduces our evaluation preprocessing: bilinear resize straight to
    `image_size` squared (no crop), rescale by 1/255, normalise with `mean` / `std`.

    Grayscale models: `transformers.pipeline` always converts inputs to RGB (transformers.image_utils.load_image),
    and ViTImageProcessor has no grayscale option, so for `num_channels=1` the processor is saved with the single
    mean/std repeated for 3 channels and hands the model 3 identical-normalisation channels; the model folds them to
    one channel with the same ITU-R 601 luma weights PIL uses for "L" (mean/std being equal per channel, the fold
    commutes with normalisation).
    """
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    mean_values = _channel_stats(mean, num_channels, "mean")
    std_values = _channel_stats(std, num_channels, "std")
    if num_channels == 1:
        mean_values, std_values = mean_values * 3, std_values * 3
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=mean_values,
        image_std=std_values,
        do_convert_rgb=True,
    )


__all__ = [
    "AUTO_AUGMENT_POLICIES",
    "BadImageError",
    "BatchAugmentation",
    "DataArguments",
    "DataError",
    "MixupCutmix",
    "PerSampleAutoAugment",
    "PreparedData",
    "REPORT_FILENAME",
    "build_image_processor",
    "check_num_channels",
    "load_image",
    "load_raw_splits",
    "normalize",
    "prepare_datasets",
    "prepare_image_folder",
    "preprocess_image",
]
