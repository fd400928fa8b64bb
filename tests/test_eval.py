"""`vit-finetune eval`: the metrics of a trained folder on image folders or on the data arguments' splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from image_fixtures import write_class_folder
from training_fixtures import CLASSES

from vit_finetune import evaluation
from vit_finetune.plots import confusion_matrix


def test_eval_on_an_image_folder_reproduces_the_training_test_metrics(
    model_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model, data = model_and_data
    assert evaluation.main([str(model), "--image_dir", str(data / "test"), "--output_dir", str(tmp_path)]) == 0
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
    assert evaluation.main(argv) == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())["validation"]
    expected = json.loads((model / "metrics.json").read_text())["eval"]  # the exported (best) model's validation
    assert results["samples"] == 9
    assert results["accuracy"] == pytest.approx(expected["accuracy"])


def test_classes_are_matched_by_name(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = model_and_data
    write_class_folder(tmp_path / "foxes_and_cats", ("fox", "cat"), per_class=2)
    dataset = evaluation.ImageFolderDataset(tmp_path / "foxes_and_cats", {c: i for i, c in enumerate(CLASSES)},
                                            image_size=16, num_channels=3)
    assert sorted(int(dataset[i]["labels"]) for i in range(len(dataset))) == [0, 0, 2, 2]


def test_unknown_class_is_named(model_and_data: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    model, _ = model_and_data
    (tmp_path / "images" / "zebra").mkdir(parents=True)
    write_class_folder(tmp_path / "images", ("cat",), per_class=1)
    assert evaluation.main([str(model), "--image_dir", str(tmp_path / "images"),
                            "--output_dir", str(tmp_path / "out")]) == 2
    assert "zebra" in capsys.readouterr().err


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
