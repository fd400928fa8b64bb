"""`vit-finetune eval`: the metrics of a trained folder on image folders or on the data arguments' splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from image_fixtures import add_bad_files, write_class_folder
from training_fixtures import CLASSES

from vit_finetune import evaluate, evaluation
from vit_finetune.data import REPORT_FILENAME
from vit_finetune.plots import confusion_matrix


def test_eval_on_an_image_folder_reproduces_the_training_test_metrics(
    model_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model, data = model_and_data
    assert evaluate.main([str(model), "--image_dir", str(data / "test"), "--output_dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())["images"]
    expected = json.loads((model / "metrics.json").read_text())["test"]
    assert results["samples"] == 9
    for key in ("accuracy", "top5_accuracy", "f1_macro"):
        assert results[key] == pytest.approx(expected[key])
    assert results["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert "accuracy" in capsys.readouterr().out


def test_eval_on_a_split_of_the_data_arguments(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = model_and_data
    argv = ["--model_name_or_path", str(model), "--train_dir", str(data / "train"),
            "--validation_dir", str(data / "validation"), "--split", "validation", "--output_dir", str(tmp_path)]
    assert evaluate.main(argv) == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())["validation"]
    expected = json.loads((model / "metrics.json").read_text())["eval"]  # the exported (best) model's validation
    assert results["samples"] == 9
    assert results["accuracy"] == pytest.approx(expected["accuracy"])


def test_classes_are_matched_by_name(tmp_path: Path) -> None:
    from vit_finetune.data import prepare_image_folder

    model_label2id = {c: i for i, c in enumerate(CLASSES)}  # cat 0, dog 1, fox 2
    write_class_folder(tmp_path / "foxes_and_cats", ("fox", "cat"), per_class=2)
    dataset, _ = prepare_image_folder(str(tmp_path / "foxes_and_cats"), label2id=model_label2id, image_size=16,
                                      num_channels=3, output_dir=str(tmp_path / "out"),
                                      cache_dir=str(tmp_path / "cache"))
    assert sorted(dataset[:]["labels"].tolist()) == [0, 0, 2, 2]
    # A single class folder is labelled too (imagefolder on its own infers labels only from two folders on).
    write_class_folder(tmp_path / "only_dogs", ("dog",), per_class=3)
    dataset, report = prepare_image_folder(str(tmp_path / "only_dogs"), label2id=model_label2id, image_size=16,
                                           num_channels=3, output_dir=str(tmp_path / "out"),
                                           cache_dir=str(tmp_path / "cache"))
    assert dataset[:]["labels"].tolist() == [1, 1, 1]
    assert report["splits"]["images"]["class_counts"] == {"cat": 0, "dog": 3, "fox": 0}


def test_unknown_class_is_named(model_and_data: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    model, _ = model_and_data
    write_class_folder(tmp_path / "images", ("cat",), per_class=1)
    (tmp_path / "images" / "zebra").mkdir(parents=True)
    shutil.copy(tmp_path / "images" / "cat" / "0.png", tmp_path / "images" / "zebra" / "0.png")
    assert evaluate.main([str(model), "--image_dir", str(tmp_path / "images"),
                            "--output_dir", str(tmp_path / "out")]) == 2
    assert "zebra" in capsys.readouterr().err


def test_unreadable_images_are_skipped_and_named(model_and_data: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """A truncated JPEG, a text file named .jpg and an empty .png among good images: the eval runs on the good ones
    (the same pixels and metrics as without the bad files) and names every skipped file."""
    model, data = model_and_data
    images = tmp_path / "images"
    shutil.copytree(data / "test", images)
    bad = add_bad_files(images / "dog")
    (images / "cat" / "README.txt").write_text("not an image, and not named like one: ignored as training does\n")
    out = tmp_path / "out"
    assert evaluate.main([str(model), "--image_dir", str(images), "--output_dir", str(out),
                            "--cache_dir", str(tmp_path / "cache")]) == 0
    captured = capsys.readouterr()
    results = json.loads((out / "eval_results.json").read_text())
    assert results["images"]["samples"] == 9  # the 9 good test images
    expected = json.loads((model / "metrics.json").read_text())["test"]
    assert results["images"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert sorted(item["path"] for item in results["skipped"]) == sorted(bad)
    report = json.loads((out / REPORT_FILENAME).read_text())
    assert {item["path"]: item["reason"] for item in report["skipped"]}.keys() == bad.keys()
    assert all(item["reason"].startswith(bad[item["path"]]) for item in report["skipped"])
    for path in bad:  # a line per skipped file, with its reason
        assert any(line.strip().startswith(f"{path}: {bad[path]}") for line in captured.err.splitlines()), path
    assert "Traceback" not in captured.err and "accuracy" in captured.out


def test_metric_suite_on_known_values() -> None:
    suite = evaluation.MetricSuite()
    ranked = np.array([[0, 1], [1, 0], [2, 0], [2, 0]])
    references = np.array([0, 0, 2, 1])
    metrics = suite.compute(ranked, references, np.array([0.5, 1.0, 1.5, 2.0]))
    assert metrics["accuracy"] == 0.5
    assert metrics["top5_accuracy"] == 0.75  # only the last sample's label (1) is not ranked
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)  # per class: 2/3, 0, 2/3
    assert metrics["loss"] == 1.25 and metrics["samples"] == 4
    assert confusion_matrix(ranked[:, 0], references, 3).tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 1]]
