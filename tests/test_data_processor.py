"""The image processor saved with every model: transformers' pipeline must predict what our own path predicts."""

from __future__ import annotations

from pathlib import Path

import torch

import image_fixtures as fx
from vit_finetune.data import build_image_processor, load_image, normalize, preprocess_image

SIZE = 32
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_processor_settings_and_round_trip(tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    build_image_processor(SIZE, 3, MEAN, STD).save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "ViTImageProcessor"
    assert loaded.size == {"height": SIZE, "width": SIZE} and loaded.do_resize and loaded.do_normalize
    assert list(loaded.image_mean) == MEAN and list(loaded.image_std) == STD
    gray = build_image_processor(SIZE, 1, [0.5], [0.25])
    assert list(gray.image_mean) == [0.5] * 3 and list(gray.image_std) == [0.25] * 3  # pipeline feeds RGB


def test_processor_matches_our_normalisation_exactly_without_resize(tmp_path: Path) -> None:
    fx.photo((120, 30, 200), size=(SIZE, SIZE)).save(tmp_path / "exact.png")
    ours = normalize(preprocess_image(tmp_path / "exact.png", image_size=SIZE, num_channels=3), MEAN, STD)
    theirs = build_image_processor(SIZE, 3, MEAN, STD)(load_image(tmp_path / "exact.png"), return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_processor_resize_is_close_to_ours(tmp_path: Path) -> None:
    fx.photo((120, 30, 200), size=(97, 61), seed=3).save(tmp_path / "odd.png")
    ours = normalize(preprocess_image(tmp_path / "odd.png", image_size=SIZE, num_channels=3), MEAN, STD)
    theirs = build_image_processor(SIZE, 3, MEAN, STD)(load_image(tmp_path / "odd.png"), return_tensors="pt")["pixel_values"][0]
    # Same geometry (squash to SIZE x SIZE, bilinear, both through PIL); a few pixels round to the next level.
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().mean() < 0.05


def awkward_images(folder: Path) -> list[Path]:
    """Opaque images of the awkward kinds, so both paths see the same picture (see build_image_processor)."""
    paths = []
    for i, (name, colour) in enumerate(fx.CLASS_COLOURS.items()):
        for j, size in enumerate([(40, 30), (64, 64), (23, 51)]):
            path = folder / f"{name}{j}.{'jpg' if j % 2 else 'png'}"
            fx.photo(colour, size=size, seed=10 * i + j).save(path)
            paths.append(path)
    fx.exif_rotated_jpeg(folder / "rotated.jpg")
    fx.cmyk_jpeg(folder / "cmyk.jpg", (30, 160, 90))
    fx.sixteen_bit_png(folder / "deep.png")
    fx.one_bit_png(folder / "bw.png")
    fx.photo((10, 200, 240), size=(50, 40)).convert("L").save(folder / "gray.png")
    return paths + [folder / n for n in ("rotated.jpg", "cmyk.jpg", "deep.png", "bw.png", "gray.png")]


def save_tiny_model(folder: Path, num_channels: int, mean: list[float], std: list[float]) -> torch.nn.Module:
    from vit_finetune import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=SIZE, patch_size=8, num_channels=num_channels, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=5,
        id2label={i: f"class{i}" for i in range(5)}, label2id={f"class{i}": i for i in range(5)},
    )
    model = ViTForImageClassification(config).eval()
    # Random weights give nearly tied logits; a sharper head makes top-1 meaningful without changing the check.
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(folder)
    build_image_processor(SIZE, num_channels, mean, std).save_pretrained(folder)
    return model


def check_pipeline_agrees(tmp_path: Path, num_channels: int, mean: list[float], std: list[float]) -> None:
    from transformers import pipeline

    model = save_tiny_model(tmp_path / "model", num_channels, mean, std)
    paths = awkward_images(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path / "model"), device="cpu")
    with torch.no_grad():
        pixels = torch.stack([preprocess_image(p, image_size=SIZE, num_channels=num_channels) for p in paths])
        ours = model(pixel_values=normalize(pixels, mean, std)).logits.argmax(dim=1).tolist()
    theirs = [classifier(str(p), top_k=1)[0]["label"] for p in paths]
    assert theirs == [model.config.id2label[i] for i in ours]
    assert len(set(ours)) > 1  # the check is not trivially passed by a constant model


def test_pipeline_top1_agrees_with_our_predict_path_rgb(tmp_path: Path) -> None:
    check_pipeline_agrees(tmp_path, 3, MEAN, STD)


def test_pipeline_top1_agrees_with_our_predict_path_grayscale(tmp_path: Path) -> None:
    check_pipeline_agrees(tmp_path, 1, [0.286], [0.353])
