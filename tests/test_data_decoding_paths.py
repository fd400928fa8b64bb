"""One image decoder: training, `vit-finetune eval`, `predict` and the demo see the same pixels for every awkward file.

Every file is SIZE x SIZE, the model resolution, so no path resizes and what is compared is decoding alone (the
demo resizes with the model's image processor, the data pipeline with PIL: see test_data_processor.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import image_fixtures as fx
from vit_finetune import ViTConfig, ViTForImageClassification, predict
from vit_finetune.data import (
    DataArguments,
    build_image_processor,
    load_image,
    normalize,
    prepare_datasets,
    prepare_image_folder,
    preprocess_image,
)
from vit_finetune.demo import classifier as demo_classifier
from vit_finetune.demo import uploads as demo_uploads

SIZE = 16
STATS = {3: ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), 1: ([0.45], [0.25])}


@pytest.fixture(scope="module")
def awkward_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fx.write_awkward_images(tmp_path_factory.mktemp("awkward") / "images", SIZE)


def rows_by_class(split, id2label: dict[int, str]) -> dict[str, torch.Tensor]:
    """A prepared split's images by class name (each class here holds exactly one image)."""
    batch = split[:]
    names = [id2label[label] for label in batch["labels"].tolist()]
    assert len(set(names)) == len(names)
    return dict(zip(names, batch["pixel_values"], strict=True))


def save_tiny_model(folder: Path, num_channels: int, id2label: dict[int, str]) -> ViTForImageClassification:
    """A random-weight model folder as training writes it: the model and our image processor."""
    torch.manual_seed(0)
    config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=num_channels, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=len(id2label),
                       id2label=id2label, label2id={name: i for i, name in id2label.items()})
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(folder)
    build_image_processor(SIZE, num_channels, *STATS[num_channels]).save_pretrained(folder)
    return model


def record_inputs(model: torch.nn.Module) -> list[torch.Tensor]:
    """The pixel_values of every forward call of `model`, appended to the returned list."""
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("pixel_values", args[0] if args else None)),
        with_kwargs=True,
    )
    return seen


@pytest.mark.parametrize("num_channels", [3, 1])
def test_every_path_sees_the_pixels_training_stored(
        awkward_files: dict[str, Path], tmp_path: Path, num_channels: int) -> None:
    kinds = sorted(awkward_files)
    paths = [awkward_files[kind] for kind in kinds]
    folder = str(paths[0].parent.parent)
    mean, std = STATS[num_channels]

    # Training: each file is its own class, in training and in validation alike.
    args = DataArguments(train_dir=folder, validation_dir=folder, cache_dir=str(tmp_path / "cache"))
    prepared = prepare_datasets(args, image_size=SIZE, num_channels=num_channels,
                                output_dir=str(tmp_path / "train"), seed=0)
    assert prepared.report["num_skipped"] == 0
    stored = rows_by_class(prepared.train, prepared.id2label)
    assert sorted(stored) == kinds
    paths_seen = {"validation split": rows_by_class(prepared.validation, prepared.id2label)}

    # `vit-finetune eval`: a folder of class sub-folders, labelled with the trained model's ids.
    evaluated, _ = prepare_image_folder(folder, label2id=prepared.label2id, image_size=SIZE,
                                        num_channels=num_channels, output_dir=str(tmp_path / "eval"),
                                        cache_dir=str(tmp_path / "cache"))
    paths_seen["eval"] = rows_by_class(evaluated, prepared.id2label)
    paths_seen["preprocess_image"] = {
        kind: preprocess_image(awkward_files[kind], image_size=SIZE, num_channels=num_channels) for kind in kinds}

    # The demo: the images its load_image hands the classifier, as uint8 (C, H, W).
    demo_images = [demo_uploads.load_image(path, num_channels=num_channels)[0] for path in paths]
    paths_seen["demo load_image"] = {
        kind: torch.from_numpy(np.array(image)).reshape(SIZE, SIZE, -1).permute(2, 0, 1)
        for kind, image in zip(kinds, demo_images, strict=True)}

    mismatches = [f"{path} differs for {kind}" for path, images in paths_seen.items() for kind in kinds
                  if not torch.equal(images[kind], stored[kind])]
    assert mismatches == []

    # What the model itself receives: normalised pixels, from `predict` and from the demo's Classifier.
    model = save_tiny_model(tmp_path / "model", num_channels, prepared.id2label)
    fed_by_predict = record_inputs(model)
    results = list(predict.predict(model, [str(path) for path in paths], mean=mean, std=std, top_k=1))
    assert all(result.error is None for result in results)
    expected = normalize(torch.stack([stored[kind] for kind in kinds]), mean, std)
    assert torch.equal(torch.cat(fed_by_predict), expected)

    classifier = demo_classifier.load_model(str(tmp_path / "model"), device="cpu")
    fed_by_demo = record_inputs(classifier.model)
    classifier.predict(demo_images)
    # A 1-channel model's processor hands it the gray image as 3 equal channels (see build_image_processor).
    torch.testing.assert_close(fed_by_demo[0], expected.expand(-1, 3, -1, -1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode, values, expected, scaled", [
    ("I;16", [0, 128 * 257, 65535, 1000], [0, 128, 255, 4], True),  # 16-bit: / 257
    ("I", [0, 7, 128, 255], [0, 7, 128, 255], False),  # 8-bit values in a 32-bit image: as they are
    ("I", [0, 300, 25700, 65535], [0, 1, 100, 255], True),  # 16-bit values: / 257, like I;16
    ("I", [0, 35000, 140000, -5], [0, 64, 255, 0], True),  # beyond 16 bits: the maximum becomes 255; negatives 0
    ("F", [0.0, 0.25, 1.0, -0.5], [0, 64, 255, 0], True),  # a 0..1 float image: x 255
    ("F", [0.0, 2.4, 200.0, 255.0], [0, 2, 200, 255], False),  # 8-bit values as floats: as they are (rounded)
])
def test_high_bit_depths_become_8_bits_by_the_range_of_their_values(
        mode: str, values: list[float], expected: list[int], scaled: bool) -> None:
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(np.array([values], dtype=dtype))
    assert image.mode == mode
    assert np.asarray(load_image(image, num_channels=1)).tolist() == [expected]
    demo_image, notes = demo_uploads.load_image(image, num_channels=1)
    assert np.asarray(demo_image).tolist() == [expected]
    # The demo tells the user when values were scaled, not when 8-bit values were only converted.
    assert [note for note in notes if "scaled to 8 bits" in note] == ([notes[0]] if scaled else [])
