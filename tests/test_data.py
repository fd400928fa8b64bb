"""Data pipeline: decoding of awkward files, every source type, the bad-file report, the preprocessing cache."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import image_fixtures as fx
from vit_finetune.data import (
    REPORT_FILENAME,
    BadImageError,
    BatchReader,
    DataArguments,
    DataError,
    keep_batch,
    load_image,
    prepare_datasets,
    preprocess_image,
)

# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    fx.exif_rotated_jpeg(path)
    image = load_image(path, num_channels=3)
    assert image.mode == "RGB" and image.size == (20, 60)  # stored 60x20, displayed upright as 20x60
    array = np.asarray(image)
    assert array[:20].mean() > 200 and array[25:].mean() < 50  # the white third is on top once rotated


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    fx.cmyk_jpeg(path, (220, 40, 40))
    assert Image.open(path).mode == "CMYK"
    array = np.asarray(load_image(path, 3)).astype(int)
    red, green, blue = array.reshape(-1, 3).mean(axis=0)
    assert red > 150 and green < 90 and blue < 90


@pytest.mark.parametrize("num_channels, expected_mode", [(1, "L"), (3, "RGB")])
def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path, num_channels: int, expected_mode: str) -> None:
    path = tmp_path / "deep.png"
    fx.sixteen_bit_png(path, level=40000)
    assert Image.open(path).mode.startswith("I")
    image = load_image(path, num_channels)
    assert image.mode == expected_mode
    assert np.abs(np.asarray(image).astype(int) - round(40000 / 257)).max() <= 1  # PIL's convert() would give 255


@pytest.mark.parametrize("writer", [fx.palette_with_transparency, fx.rgba_png])
def test_transparency_is_composited_on_white(tmp_path: Path, writer) -> None:
    path = tmp_path / "transparent.png"
    writer(path, (0, 0, 200))
    array = np.asarray(load_image(path, 3)).astype(int)
    assert np.all(array[:, :20] == [0, 0, 200])  # opaque half keeps its colour
    assert np.all(array[:, 20:] == 255)  # transparent half: white, not the black stored under it


def test_la_and_one_bit_images(tmp_path: Path) -> None:
    fx.la_png(tmp_path / "la.png", level=60)
    fx.one_bit_png(tmp_path / "bw.png")
    la = np.asarray(load_image(tmp_path / "la.png", 1))
    assert la.shape == (30, 40) and np.all(la[:, :20] == 60) and np.all(la[:, 20:] == 255)
    bw = np.asarray(load_image(tmp_path / "bw.png", 3))
    assert bw.shape == (30, 40, 3) and np.all(bw[:, :20] == 255) and np.all(bw[:, 20:] == 0)


def test_rgb_to_grayscale_uses_luma(tmp_path: Path) -> None:
    fx.photo((200, 100, 50)).save(tmp_path / "c.png")
    gray = np.asarray(load_image(tmp_path / "c.png", 1)).astype(float)
    rgb = np.asarray(load_image(tmp_path / "c.png", 3)).astype(float)
    expected = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray - expected).max() <= 1.0


def test_bad_files_raise_with_path_and_reason(tmp_path: Path) -> None:
    expected = fx.add_bad_files(tmp_path)
    for path, reason in expected.items():
        with pytest.raises(BadImageError) as caught:
            load_image(path, 3)
        assert caught.value.reason.startswith(reason) and caught.value.path == path
        assert path in str(caught.value)
    with pytest.raises(BadImageError, match="file not found"):
        load_image(tmp_path / "missing.png", 3)


def test_decompression_bomb_guard_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fx.photo((1, 2, 3), size=(40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1200 pixels > 2 x 100: PIL raises DecompressionBombError
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(tmp_path / "big.png", 3)


def test_preprocess_image_resizes_to_a_square_uint8_tensor(tmp_path: Path) -> None:
    fx.exif_rotated_jpeg(tmp_path / "r.jpg")
    tensor = preprocess_image(tmp_path / "r.jpg", image_size=12, num_channels=1)
    assert tensor.dtype == torch.uint8 and tensor.shape == (1, 12, 12)
    assert tensor[0, :3].float().mean() > 200 and tensor[0, -3:].float().mean() < 50


# ----------------------------------------------------------------------------------------------------------------
# Sources and prepare_datasets
# ----------------------------------------------------------------------------------------------------------------


def colour_class(pixels: torch.Tensor) -> str:
    """Which fixture class a stored RGB image is, from its mean colour."""
    mean = pixels.float().mean(dim=(1, 2)).tolist()
    return min(fx.CLASS_COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(mean, fx.CLASS_COLOURS[name])))


def assert_split(dataset: datasets.Dataset, id2label: dict[int, str], size: int, channels: int = 3) -> None:
    """Shapes, dtypes, torch format, and every label matching the colour of its image."""
    assert dataset.format["type"] == "torch"
    batch = dataset[:]
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape[1:] == (channels, size, size)
    assert batch["labels"].dtype == torch.int64
    if channels == 3:
        for pixels, label in zip(batch["pixel_values"], batch["labels"].tolist()):
            assert colour_class(pixels) == id2label[label]


def prepare(tmp_path: Path, size: int = 16, channels: int = 3, seed: int = 0, **kwargs) -> object:
    args = DataArguments(cache_dir=str(tmp_path / "hf_cache"), **kwargs)
    return prepare_datasets(args, image_size=size, num_channels=channels, output_dir=str(tmp_path / "out"), seed=seed)


def test_image_folder_with_bad_files_report_and_stratified_validation(tmp_path: Path) -> None:
    root = tmp_path / "images"
    fx.write_class_folder(root, classes=("cat", "dog"), per_class=10)
    expected_bad = fx.add_bad_files(root / "dog")
    prepared = prepare(tmp_path, train_dir=str(root), train_val_split=0.2)

    assert prepared.id2label == {0: "cat", 1: "dog"} and prepared.label2id == {"cat": 0, "dog": 1}
    assert prepared.test is None
    assert len(prepared.train) + len(prepared.validation) == 20  # 23 files, 3 unreadable
    assert_split(prepared.train, prepared.id2label, 16)
    assert_split(prepared.validation, prepared.id2label, 16)
    # Stratified: the validation split holds both classes.
    assert set(prepared.validation[:]["labels"].tolist()) == {0, 1}

    report = json.loads((tmp_path / "out" / REPORT_FILENAME).read_text())
    assert report == prepared.report
    assert report["num_skipped"] == 3
    assert all(item["reason"].startswith(expected_bad[item["path"]]) for item in report["skipped"])
    assert sorted(item["path"] for item in report["skipped"]) == sorted(expected_bad)
    counted = report["splits"]["train"]["kept"] + report["splits"]["validation"]["kept"]
    assert counted == 20 and report["splits"]["train"]["skipped"] + report["splits"]["validation"]["skipped"] == 3
    assert report["classes"] == ["cat", "dog"] and "stratified" in report["validation"]

    # The evaluation path of `predict` gives exactly the stored pixels.
    stored = torch.cat([prepared.train[:]["pixel_values"], prepared.validation[:]["pixel_values"]])
    kept = [p for p in sorted(root.glob("*/*")) if os.fspath(p) not in expected_bad]
    for path in kept[:3]:
        single = preprocess_image(path, image_size=16, num_channels=3)
        assert (stored == single).flatten(1).all(dim=1).any(), path


@pytest.mark.parametrize("channels", [3, 1])
def test_batch_reader_gives_what_the_dataset_gives(tmp_path: Path, channels: int) -> None:
    """Training reads batches through BatchReader: the same pixels and labels as indexing the prepared split, for
    any order of indices, also where bad files were filtered out (an index mapping) and in a loader worker."""
    root = tmp_path / "images"
    fx.write_class_folder(root, classes=("cat", "dog", "fox"), per_class=7)
    fx.add_bad_files(root / "dog")
    prepared = prepare(tmp_path, channels=channels, train_dir=str(root), train_val_split=0.2,
                       preprocessing_num_workers=1)
    for split in (prepared.train, prepared.validation):
        reader = BatchReader(split)
        assert len(reader) == len(split)
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0)).tolist()
        batch = reader.__getitems__(order)
        expected = split[order]
        assert batch["pixel_values"].dtype == torch.uint8 and batch["labels"].dtype == torch.int64
        assert torch.equal(batch["pixel_values"], expected["pixel_values"])
        assert torch.equal(batch["labels"], expected["labels"])
        assert torch.equal(reader[order[0]]["pixel_values"], split[order[0]]["pixel_values"])
        batch["pixel_values"].zero_()  # writable, and a copy: the next read is unchanged
        assert torch.equal(reader.__getitems__(order)["pixel_values"], expected["pixel_values"])

        copy = pickle.loads(pickle.dumps(reader))  # as a spawned loader worker receives it
        assert torch.equal(copy.__getitems__(order)["pixel_values"], expected["pixel_values"])
        assert "chunks" not in reader.__getstate__()  # the dataset travels, not a copy of every image

    loader = torch.utils.data.DataLoader(BatchReader(prepared.train), batch_size=4, num_workers=1,
                                         collate_fn=keep_batch)
    batches = list(loader)
    assert torch.equal(torch.cat([b["pixel_values"] for b in batches]), prepared.train[:]["pixel_values"])
    assert torch.equal(torch.cat([b["labels"] for b in batches]), prepared.train[:]["labels"])


def test_second_run_reads_the_cache_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "images"
    fx.write_class_folder(root, per_class=4)
    fx.add_bad_files(root / "cat")
    first = prepare(tmp_path, train_dir=str(root))

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded although the preprocessed data is cached")

    monkeypatch.setattr(Image, "open", no_decoding)
    second = prepare(tmp_path, train_dir=str(root))
    assert torch.equal(first.train[:]["pixel_values"], second.train[:]["pixel_values"])
    assert first.train.cache_files == second.train.cache_files
    assert second.report["skipped"] == first.report["skipped"] and second.report["num_skipped"] == 3
    # A different resolution is a different preprocessing: it must decode (and so hit the patched Image.open).
    with pytest.raises(DataError, match="empty"):
        prepare(tmp_path, size=8, train_dir=str(root))


def test_separate_train_validation_test_folders_grayscale(tmp_path: Path) -> None:
    classes = ("cat", "dog", "fox")
    fx.write_class_folder(tmp_path / "train", classes=classes, per_class=4)
    fx.write_class_folder(tmp_path / "val", classes=classes, per_class=2, start_seed=50)
    fx.write_class_folder(tmp_path / "test", classes=classes, per_class=2, start_seed=90)
    prepared = prepare(
        tmp_path, size=8, channels=1,
        train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"), test_dir=str(tmp_path / "test"),
    )
    assert prepared.id2label == {0: "cat", 1: "dog", 2: "fox"}
    assert (len(prepared.train), len(prepared.validation), len(prepared.test)) == (12, 6, 6)
    for split in (prepared.train, prepared.validation, prepared.test):
        assert_split(split, prepared.id2label, 8, channels=1)
    assert prepared.report["validation"] == "validation split of the source"
    # Luma of the class colours differ: red 103, blue 53, green 136 -> labels follow the pixels.
    means = {label: [] for label in range(3)}
    test = prepared.test[:]
    for pixels, label in zip(test["pixel_values"], test["labels"].tolist()):
        means[label].append(pixels.float().mean().item())
    assert max(means[1]) < min(means[0]) and max(means[0]) < min(means[2])


def test_errors_before_training(tmp_path: Path) -> None:
    # A validation class that training never saw.
    fx.write_class_folder(tmp_path / "a" / "train", classes=("cat", "dog"), per_class=2)
    fx.write_class_folder(tmp_path / "a" / "val", classes=("cat", "fox"), per_class=2)
    with pytest.raises(DataError, match=r"validation split has labels \['fox'\]"):
        prepare(tmp_path, train_dir=str(tmp_path / "a" / "train"), validation_dir=str(tmp_path / "a" / "val"))
    # A single class folder: imagefolder infers no labels at all.
    fx.write_class_folder(tmp_path / "b", classes=("cat",), per_class=3)
    with pytest.raises(DataError, match="one sub-folder per class"):
        prepare(tmp_path, train_dir=str(tmp_path / "b"))
    # Two classes, but every image of one of them is unreadable.
    fx.write_class_folder(tmp_path / "c", classes=("cat",), per_class=4)
    fx.add_bad_files(tmp_path / "c" / "dog")
    with pytest.raises(DataError, match="at least two classes"):
        prepare(tmp_path, train_dir=str(tmp_path / "c"))
    # Nothing readable at all: an empty split, and the report is still written for the user.
    fx.add_bad_files(tmp_path / "d" / "x")
    fx.add_bad_files(tmp_path / "d" / "y")
    with pytest.raises(DataError, match="split is empty"):
        prepare(tmp_path, train_dir=str(tmp_path / "d"))
    assert json.loads((tmp_path / "out" / REPORT_FILENAME).read_text())["num_skipped"] == 6
    # Conflicting sources.
    with pytest.raises(ValueError, match="exactly one source"):
        prepare(tmp_path, train_dir=str(tmp_path / "b"), dataset_name="x")


def test_csv_and_jsonl_manifests_with_relative_paths(tmp_path: Path) -> None:
    images = tmp_path / "pics"
    paths = fx.write_class_folder(images, classes=("cat", "dog"), per_class=4)
    rows = [(os.path.relpath(p, tmp_path), p.parent.name) for p in paths]
    (tmp_path / "train.csv").write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows) + "pics/missing.png,cat\n")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    # JSON lines in another folder: paths are relative to *that* manifest.
    (manifests / "val.jsonl").write_text(
        "".join(json.dumps({"file_name": os.path.join("..", p), "class": label}) + "\n" for p, label in rows[::2])
    )
    prepared = prepare(
        tmp_path, train_file=str(tmp_path / "train.csv"), validation_file=str(manifests / "val.jsonl"),
    )
    assert prepared.id2label == {0: "cat", 1: "dog"}
    assert (len(prepared.train), len(prepared.validation)) == (8, 4)
    assert_split(prepared.train, prepared.id2label, 16)
    assert_split(prepared.validation, prepared.id2label, 16)
    assert prepared.report["skipped"] == [
        {"split": "train", "path": str(images / "missing.png"), "reason": "file not found"}
    ]


def make_hub_style_repository(root: Path) -> None:
    """A script-free dataset repository: parquet files per split and a README declaring two configs, loaded with
    exactly the `load_dataset(name, config)` call a Hub id goes through."""
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["cat", "dog"])})
    for config in ("small", "large"):
        for split, count in (("train", 6 if config == "small" else 10), ("test", 4)):
            images = [fx.photo(fx.CLASS_COLOURS[("cat", "dog")[i % 2]], seed=i) for i in range(count)]
            dataset = datasets.Dataset.from_dict({"img": images, "fine_label": [i % 2 for i in range(count)]}, features=features)
            if split == "test":  # one undecodable image, stored as bytes without a file name
                dataset = dataset.cast_column("img", datasets.Image(decode=False))
                rows = dataset.to_list()
                rows[3]["img"] = {"bytes": b"GIF89a-broken", "path": None}
                dataset = datasets.Dataset.from_list(rows, features=dataset.features).cast_column("img", datasets.Image())
            (root / config).mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: small\n  data_files:\n  - split: train\n    path: small/train-*\n  - split: test\n    path: small/test-*\n"
        "- config_name: large\n  data_files:\n  - split: train\n    path: large/train-*\n  - split: test\n    path: large/test-*\n"
        "---\n# toy\n"
    )


def test_hub_style_dataset_repository_with_config_and_auto_columns(tmp_path: Path) -> None:
    repo = tmp_path / "toy-dataset"
    make_hub_style_repository(repo)
    prepared = prepare(tmp_path, dataset_name=str(repo), dataset_config_name="large", train_val_split=0.2)
    assert prepared.report["image_column"] == "img" and prepared.report["label_column"] == "fine_label"
    assert prepared.id2label == {0: "cat", 1: "dog"}
    assert (len(prepared.train), len(prepared.validation), len(prepared.test)) == (8, 2, 3)  # 10 train rows: large
    assert prepared.report["skipped"][0]["path"] == "test[3]" and prepared.report["skipped"][0]["split"] == "test"
    for split in (prepared.train, prepared.validation, prepared.test):
        assert_split(split, prepared.id2label, 16)
    with pytest.raises(ValueError, match="does not exist"):
        prepare(tmp_path, dataset_name=str(repo), dataset_config_name="small", validation_split_name="dev")


def test_save_to_disk_folder_and_sample_limits(tmp_path: Path) -> None:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    splits = {}
    for split, count in (("train", 12), ("validation", 6)):
        names = [("dog", "cat")[i % 2] for i in range(count)]
        splits[split] = datasets.Dataset.from_dict(
            {"image": [fx.photo(fx.CLASS_COLOURS[n], seed=i) for i, n in enumerate(names)], "label": names}, features=features
        )
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    prepared = prepare(tmp_path, dataset_name=str(tmp_path / "saved"), max_train_samples=5, max_eval_samples=3)
    assert prepared.id2label == {0: "cat", 1: "dog"}  # string labels: sorted class names
    assert (len(prepared.train), len(prepared.validation)) == (5, 3)
    assert_split(prepared.train, prepared.id2label, 16)
    assert_split(prepared.validation, prepared.id2label, 16)


def test_parallel_preprocessing_matches_serial(tmp_path: Path) -> None:
    root = tmp_path / "images"
    fx.write_class_folder(root, per_class=8)
    fx.add_bad_files(root / "cat")
    serial = prepare(tmp_path / "serial", train_dir=str(root))
    parallel = prepare(tmp_path / "parallel", train_dir=str(root), preprocessing_num_workers=2)
    assert torch.equal(serial.train[:]["pixel_values"], parallel.train[:]["pixel_values"])
    assert serial.report["skipped"] == parallel.report["skipped"]


def test_data_arguments_parse_beside_training_arguments() -> None:
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((DataArguments, TrainingArguments))
    data_args, training_args = parser.parse_args_into_dataclasses(
        ["--train_dir", "x", "--hflip", "false", "--auto_augment", "trivialaugment", "--mixup_alpha", "0.8",
         "--output_dir", "o", "--seed", "3"]
    )
    assert data_args.train_dir == "x" and data_args.hflip is False and data_args.mixup_alpha == 0.8
    assert training_args.seed == 3
    for spec in DataArguments.__dataclass_fields__.values():
        assert spec.metadata.get("help"), f"{spec.name} has no help"
    with pytest.raises(ValueError, match="auto_augment"):
        DataArguments(auto_augment="autoaugment")


# ----------------------------------------------------------------------------------------------------------------
# Values refused before any work, and manifest problems named by file and row
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_train_samples", "max_eval_samples"])
@pytest.mark.parametrize("value", [-5, 0])
def test_sample_limits_below_one_are_refused(field: str, value: int) -> None:
    # -5 used to keep all but 5 images (a [:-5] slice) and 0 to crash later with a KeyError.
    with pytest.raises(ValueError, match=rf"{field} must be >= 1.*got {value}"):
        DataArguments(train_dir="x", **{field: value})
    assert getattr(DataArguments(train_dir="x", **{field: 1}), field) == 1


def test_num_channels_other_than_1_or_3_is_refused_before_decoding(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fx.write_class_folder(tmp_path / "images", per_class=2)

    def no_decoding(*args, **kwargs):
        raise AssertionError("images were decoded for a num_channels no image can have")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(ValueError, match="num_channels must be 1 .* or 3 .*got 2"):
        prepare(tmp_path, channels=2, train_dir=str(tmp_path / "images"))
    assert not (tmp_path / "out" / REPORT_FILENAME).exists()  # nothing was reported as unreadable


def test_truncated_json_lines_manifest_names_the_file_and_line(tmp_path: Path) -> None:
    paths = fx.write_class_folder(tmp_path / "pics", per_class=3)
    lines = [json.dumps({"path": str(p), "label": p.parent.name}) for p in paths]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n" + lines[0][:30] + "\n")  # the last line cut short
    with pytest.raises(DataError, match=rf"--train_file {manifest}: line 7 is not valid JSON"):
        prepare(tmp_path, train_file=str(manifest))


def test_malformed_csv_manifest_names_the_file(tmp_path: Path) -> None:
    paths = fx.write_class_folder(tmp_path / "pics", per_class=3)
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in paths) + "a,b,c,d\n")
    with pytest.raises(DataError, match=rf"--train_file {manifest}: cannot be read as CSV: .*line 8"):
        prepare(tmp_path, train_file=str(manifest))


@pytest.mark.parametrize("split", ["train", "validation"])
def test_rows_without_a_label_are_named(tmp_path: Path, split: str) -> None:
    paths = fx.write_class_folder(tmp_path / "pics", per_class=3)
    rows = "".join(f"{p},{p.parent.name}\n" for p in paths)
    (tmp_path / "train.csv").write_text("path,label\n" + rows)
    (tmp_path / "val.csv").write_text("path,label\n" + rows)
    unlabelled = tmp_path / ("train.csv" if split == "train" else "val.csv")
    unlabelled.write_text(unlabelled.read_text().replace(f"{paths[4]},dog\n", f"{paths[4]},\n"))
    with pytest.raises(DataError) as caught:
        prepare(tmp_path, train_file=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "val.csv"))
    message = str(caught.value)
    expected = f"The {split} split ({unlabelled}) has 1 row(s) without a label: data row 5 ({paths[4]}, no label)"
    assert expected in message
