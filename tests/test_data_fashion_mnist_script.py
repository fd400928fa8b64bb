"""scripts/prepare_fashion_mnist.py: IDX parsing, PNG folders, idempotence."""

from __future__ import annotations

import gzip
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from image_fixtures import write_idx
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_fashion_mnist.py"
spec = importlib.util.spec_from_file_location("prepare_fashion_mnist", SCRIPT)
fm = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = fm  # so the worker processes of --workers 2 can pickle its functions
spec.loader.exec_module(fm)



def fake_source(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    data = {}
    for split, (images_name, labels_name), count in (("train", fm.FILES["train"], 30), ("test", fm.FILES["test"], 12)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.arange(count) % 10
        write_idx(folder / images_name, images)
        write_idx(folder / labels_name, labels)
        data[split] = (images, labels)
    return data


def test_writes_class_folders_with_exact_pixels_and_is_idempotent(tmp_path: Path) -> None:
    source, out = tmp_path / "idx", tmp_path / "out"
    source.mkdir()
    data = fake_source(source)
    info = fm.prepare(str(out), str(source), workers=1)
    assert info["counts"] == {"train": 30, "test": 12}
    assert sorted(os.listdir(out / "train")) == sorted(fm.CLASS_NAMES)
    images, labels = data["train"]
    for index in (0, 7, 29):
        png = out / "train" / fm.CLASS_NAMES[labels[index]] / f"{index:05d}.png"
        with Image.open(png) as image:
            assert image.mode == "L" and np.array_equal(np.asarray(image), images[index])
    assert sum(len(files) for _, _, files in os.walk(out / "test")) == 12

    marker_time = (out / fm.MARKER).stat().st_mtime_ns
    png_time = png.stat().st_mtime_ns
    fm.prepare(str(out), str(source), workers=1)  # complete already: nothing rewritten
    assert (out / fm.MARKER).stat().st_mtime_ns == marker_time and png.stat().st_mtime_ns == png_time
    (out / "train" / "Bag" / "stray.png").write_bytes(b"")
    fm.prepare(str(out), str(source), workers=2, force=True)  # --force starts from scratch
    assert not (out / "train" / "Bag" / "stray.png").exists() and (out / fm.MARKER).stat().st_mtime_ns != marker_time


def test_missing_or_corrupt_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="dataset-fashion-mnist"):
        fm.prepare(str(tmp_path / "out"), str(tmp_path / "nowhere"))
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(ValueError, match="not an IDX file"):
        fm.read_idx(str(tmp_path / "bad.gz"))


@pytest.mark.skipif(not os.path.isdir(fm.DEFAULT_SOURCE), reason="Debian's dataset-fashion-mnist is not installed")
def test_reads_the_debian_package(tmp_path: Path) -> None:
    info = fm.prepare(str(tmp_path / "out"), workers=1, limit=20)
    assert info["counts"] == {"train": 20, "test": 20}
    labels = fm.read_idx(os.path.join(fm.DEFAULT_SOURCE, fm.FILES["test"][1]))
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10
