"""`vit-finetune predict`: top-k labels for files, folders and globs, to stdout or CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from training_fixtures import CLASSES

from vit_finetune import predict


def test_csv_predictions_reproduce_the_test_accuracy(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = model_and_data
    table = tmp_path / "predictions.csv"
    assert predict.main([str(model), str(data / "test"), "--output_csv", str(table), "--top_k", "2"]) == 0
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0]) == ["path", "label_1", "score_1", "label_2", "score_2", "error"]
    assert len(rows) == 9
    for row in rows:
        assert row["label_1"] in CLASSES and row["label_2"] in CLASSES and row["label_1"] != row["label_2"]
        assert 1.0 >= float(row["score_1"]) >= float(row["score_2"]) >= 0.0
    # Predictions use the evaluation preprocessing, so their accuracy is the one training measured.
    correct = sum(Path(row["path"]).parent.name == row["label_1"] for row in rows)
    assert correct / len(rows) == pytest.approx(json.loads((model / "metrics.json").read_text())["test"]["accuracy"])


def test_files_globs_and_folders_to_stdout(model_and_data: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    model, data = model_and_data
    single = data / "test" / "cat" / "0.png"
    assert predict.main([str(model), str(single), str(data / "test" / "dog" / "*.png"), str(data / "test" / "cat"),
                         "--top_k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    paths = [line.split("\t")[0] for line in lines]
    assert paths[0] == str(single)
    assert len(paths) == len(set(paths)) == 1 + 2 + 2  # cat/0.png is listed once; dog/*.png has 0.png and 2.png
    assert all(len(line.split("\t")[1].split(", ")) == 1 for line in lines)


def test_unreadable_images_are_reported_and_the_rest_predicted(model_and_data: tuple[Path, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    model, data = model_and_data
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert predict.main([str(model), str(tmp_path / "broken.png"), str(data / "test" / "fox" / "0.png")]) == 1
    captured = capsys.readouterr()
    assert "broken.png\tERROR" in captured.out and "fox/0.png\t" in captured.out
    assert "1 of 2 image(s) could not be read" in captured.err


def test_missing_input_is_named(model_and_data: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    model, _ = model_and_data
    assert predict.main([str(model), str(tmp_path / "nowhere.jpg")]) == 2
    assert "nowhere.jpg" in capsys.readouterr().err
