"""The demo's functions, called directly: reading uploads, attention maps, predictions, model id lookup.

The running app (gradio_client and a real browser) is tested in test_demo_app.py.
"""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import io
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit_finetune.demo import SPACE_FILES, app, uploads
from vit_finetune.demo.attention import attention_map, attention_rollout, display_copy, overlay_attention, patch_grid
from vit_finetune.demo.classifier import Classifier, ModelLoadError, load_model
from vit_finetune.demo.uploads import ImageInputError, load_image

LABELS = ["cat", "dog", "bird"]


# ------------------------------------------------------------------------------------------------
# Helpers shared with test_demo_app.py
# ------------------------------------------------------------------------------------------------


def make_model_folder(folder: Path, *, num_channels: int = 3, pooling: str = "cls",
                      patch_embedding: str = "patch", image_size: int = 32, patch_size: int = 8,
                      **options) -> Path:
    """A tiny random-weight vit-finetune model folder, laid out as training writes it, with examples."""
    from transformers import ViTImageProcessor

    import vit_finetune

    config = vit_finetune.ViTConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_channels=num_channels, pooling=pooling, patch_embedding=patch_embedding,
        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
        **options,
    )
    torch.manual_seed(0)
    vit_finetune.ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5] * num_channels, image_std=[0.5] * num_channels,
    ).save_pretrained(folder)
    (folder / "examples").mkdir()
    for index, label in enumerate(LABELS):
        pattern_image(index).save(folder / "examples" / f"{label}.png")
    return folder


def pattern_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A reproducible RGB image with structure (a bright square on noise), different for each seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 120, (size[1], size[0], 3), dtype=np.uint8)
    top, left = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    pixels[top:top + size[1] // 2, left:left + size[0] // 2] = rng.integers(150, 256, 3, dtype=np.uint8)
    return Image.fromarray(pixels)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds no pixels: a 'decompression bomb' stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def truncated_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()[:200]  # keeps the header, cuts the pixel data


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="module")
def classifier(model_folder: Path) -> Classifier:
    return load_model(str(model_folder), device="cpu")


# ------------------------------------------------------------------------------------------------
# The Space constraint: the demo's files run flat beside app.py where our package is not installed
# ------------------------------------------------------------------------------------------------

SPACE_MODULES = {Path(name).stem: source for name, source in SPACE_FILES.items() if name.endswith(".py")}
THIRD_PARTY = {"torch", "transformers", "gradio", "numpy", "PIL"}


def imports_of(source: Path) -> tuple[set[str], set[tuple[str, tuple[str, ...]]], set[tuple[Path, tuple[str, ...]]]]:
    """(top-level modules imported absolutely, (module, names) of absolute from-imports, (file, names) of
    relative from-imports, the file resolved inside our package)."""
    modules, absolute, relative = set(), set(), set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = tuple(sorted(alias.name for alias in node.names))
            if node.level == 0:
                modules.add(node.module.split(".")[0])
                absolute.add((node.module, names))
            else:
                package = source.parents[node.level - 1]
                relative.add((package.joinpath(*node.module.split(".")).with_suffix(".py"), names))
    return modules, absolute, relative


def test_space_files_import_only_what_a_space_has() -> None:
    assert set(SPACE_FILES) >= {"app.py", "decode.py", "requirements.txt"}
    assert all(source.is_file() for source in SPACE_FILES.values())
    allowed = THIRD_PARTY | set(sys.stdlib_module_names) | set(SPACE_MODULES)
    flat_name = {source: stem for stem, source in SPACE_MODULES.items()}
    for source in SPACE_MODULES.values():
        modules, absolute, relative = imports_of(source)
        assert modules - allowed == set(), f"{source.name} imports {modules - allowed}, which a Space lacks"
        for target, names in relative:
            # Inside the package a sibling is imported relatively; in the Space the same names come from the
            # flat file of that name, so each relative import needs its absolute twin.
            assert target in flat_name, f"{source.name} imports {target}, which is not uploaded to the Space"
            assert (flat_name[target], names) in absolute, f"{source.name}: no flat-layout import of {names}"


def test_space_requirements_cover_every_import() -> None:
    lines = SPACE_FILES["requirements.txt"].read_text().splitlines()
    requirements = {re.split(r"[<>=!~;\[ ]", line.strip())[0].lower()
                    for line in lines if line.strip() and not line.startswith("#")}
    distributions = importlib.metadata.packages_distributions()
    imported = set().union(*(imports_of(source)[0] for source in SPACE_MODULES.values()))
    third_party = imported - set(sys.stdlib_module_names) - set(SPACE_MODULES)
    assert third_party == THIRD_PARTY
    for module in third_party:
        installed_as = {name.lower() for name in distributions[module]}
        assert installed_as & requirements, f"{module} ({installed_as}) is not in the Space's requirements.txt"
    assert "safetensors" in requirements  # not imported, but transformers needs it to read model.safetensors


def test_model_id_comes_from_the_command_line_then_env_then_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_ID", raising=False)
    with pytest.raises(SystemExit, match="MODEL_ID"):
        app.resolve_model_id(None, tmp_path)
    (tmp_path / "model_id.txt").write_text("someone/from-file\n")
    assert app.resolve_model_id(None, tmp_path) == "someone/from-file"
    monkeypatch.setenv("MODEL_ID", "someone/from-env")
    assert app.resolve_model_id(None, tmp_path) == "someone/from-env"
    assert app.resolve_model_id("outputs/local", tmp_path) == "outputs/local"


def test_cli_dispatches_to_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    from vit_finetune import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--share", "--server_name", "--server_port", "--max_file_size", "--concurrency_limit"):
        assert option in help_text


# ------------------------------------------------------------------------------------------------
# Reading uploads
# ------------------------------------------------------------------------------------------------


def test_a_normal_image_is_read_in_the_models_mode(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    pattern_image(1).save(path)
    image, notes = load_image(str(path))
    assert (image.mode, image.size, notes) == ("RGB", (48, 40), [])
    gray, _ = load_image(path, num_channels=1)  # 1-channel models get "L" images
    assert gray.mode == "L"
    payload, _ = load_image({"path": str(path), "orig_name": "photo.jpg"})  # gradio's file payload
    assert np.array_equal(np.asarray(payload), np.asarray(image))


def test_a_non_image_file_gives_a_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a picture")
    with pytest.raises(ImageInputError, match="'notes.txt' is not an image"):
        load_image(path)


def test_a_truncated_image_gives_a_readable_error() -> None:
    with pytest.raises(ImageInputError, match="corrupt or truncated"):
        load_image(truncated_png(pattern_image(2, (200, 200))))


def test_a_huge_image_is_refused_before_decoding() -> None:
    # The file is tiny; only its header claims 100 MP. Decoding would fail, so the size check came first.
    with pytest.raises(ImageInputError, match=r"10000x10000 pixels \(100 MP\).*at most 50 MP"):
        load_image(png_header_only(10_000, 10_000))
    with pytest.raises(ImageInputError, match="at most 1 MP"):
        load_image(pattern_image(3, (1200, 1000)), max_pixels=1_000_000)


def test_transparent_parts_are_shown_on_white() -> None:
    pixels = np.zeros((10, 10, 4), dtype=np.uint8)
    pixels[..., 0] = 200  # red everywhere ...
    pixels[:5, :, 3] = 255  # ... opaque in the top half, fully transparent below
    image, notes = load_image(Image.fromarray(pixels, mode="RGBA"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (200, 0, 0)
    assert image.getpixel((0, 9)) == (255, 255, 255)
    assert len(notes) == 1 and "transparent" in notes[0]
    opaque, notes = load_image(Image.new("RGBA", (4, 4), (1, 2, 3, 255)))
    assert notes == [] and opaque.getpixel((0, 0)) == (1, 2, 3)


def test_a_16_bit_image_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    values = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"  # what Pillow reads back: 16-bit grayscale
    image, notes = load_image(path)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]
    assert len(notes) == 1 and "16" in notes[0]


def test_requests_may_read_only_uploads_and_bounded_data_urls(tmp_path: Path) -> None:
    upload_folder, elsewhere = tmp_path / "gradio", tmp_path / "private"
    upload_folder.mkdir()
    elsewhere.mkdir()
    pattern_image(1).save(upload_folder / "cat.png")
    pattern_image(2).save(elsewhere / "secret.png")

    def source(payload: object, limit: int = 10**6) -> str | bytes:
        return uploads.upload_source(payload, upload_folder=upload_folder, max_file_size=limit)

    assert source({"path": str(upload_folder / "cat.png")}) == str(upload_folder / "cat.png")
    assert source(str(upload_folder / "cat.png")) == str(upload_folder / "cat.png")  # gr.File hands over paths
    for outside in [elsewhere / "secret.png", elsewhere / "missing.png",
                    upload_folder / ".." / "private" / "secret.png", f"{upload_folder}/\0.png"]:
        with pytest.raises(ImageInputError) as refused:
            source({"path": str(outside)})
        assert str(refused.value) == uploads.NOT_UPLOADED  # the same words whether the file exists or not
    (upload_folder / "link.png").symlink_to(elsewhere / "secret.png")
    with pytest.raises(ImageInputError, match="not uploaded"):
        source({"path": str(upload_folder / "link.png")})
    with pytest.raises(ImageInputError, match="at most 0.00 MB"):
        source({"path": str(upload_folder / "cat.png")}, limit=100)

    png = io.BytesIO()
    pattern_image(3).save(png, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    assert source({"url": data_url}) == png.getvalue()
    with pytest.raises(ImageInputError, match=r"is 0\.\d\d MB; this app accepts at most 0\.00 MB"):
        source({"url": data_url}, limit=1000)
    with pytest.raises(ImageInputError, match="not valid base64"):
        source({"url": "data:image/png;base64,***"})


def test_other_modes_and_animations(tmp_path: Path) -> None:
    cmyk, _ = load_image(Image.new("CMYK", (5, 5), (0, 255, 255, 0)))
    assert cmyk.mode == "RGB" and cmyk.getpixel((0, 0)) == (255, 0, 0)
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    first, notes = load_image(path)
    assert first.getpixel((0, 0))[0] > 200 and "2 frames" in notes[0]


# ------------------------------------------------------------------------------------------------
# Attention maps
# ------------------------------------------------------------------------------------------------


def test_rollout_follows_abnar_and_zuidema() -> None:
    first = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    second = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    heads = torch.stack([first, second])  # two heads in one layer: averaged
    (layer_result,) = attention_rollout([heads[None]])
    mean = (first + second) / 2 + torch.eye(3)
    assert torch.allclose(layer_result, mean / mean.sum(-1, keepdim=True))

    def residual(a: torch.Tensor) -> torch.Tensor:
        a = a + torch.eye(3)
        return a / a.sum(-1, keepdim=True)

    # Two layers: the later layer multiplies from the left (order matters: these do not commute).
    (rolled,) = attention_rollout([first[None, None], second[None, None]])
    assert torch.allclose(rolled, residual(second) @ residual(first))
    assert not torch.allclose(rolled, residual(first) @ residual(second))
    assert torch.allclose(rolled.sum(-1), torch.ones(3))


@pytest.mark.parametrize("method", ["rollout", "last_layer"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_map_peaks_where_the_pooled_tokens_look(method: str, pooling: str) -> None:
    # 1 CLS + a 2x3 patch grid, one layer. The token(s) the classifier reads (CLS, or the patches for mean
    # pooling) attend mostly to patch 4 (row 1, col 1); the other tokens attend to patch 0 as a decoy.
    tokens, target, decoy = 7, 1 + 4, 1 + 0
    attention = torch.full((1, 2, tokens, tokens), 0.02)
    readers = slice(0, 1) if pooling == "cls" else slice(1, tokens)
    others = slice(1, tokens) if pooling == "cls" else slice(0, 1)
    attention[:, :, readers, target] = 1.0
    attention[:, :, others, decoy] = 1.0
    attention = attention / attention.sum(-1, keepdim=True)
    heatmap = attention_map([attention], (1, 2, 3), method=method, pooling=pooling)
    assert heatmap.shape == (1, 2, 3)
    assert heatmap.min() == 0.0 and heatmap.max() == 1.0
    assert np.unravel_index(heatmap[0].argmax(), (2, 3)) == (1, 1)


def test_patch_grid() -> None:
    assert patch_grid(17, 32, 32, 8) == (1, 4, 4)
    assert patch_grid(18, 32, 32, 8) == (2, 4, 4)  # DeiT: CLS + distillation token
    assert patch_grid(33, 32, 64, 8) == (1, 4, 8)
    assert patch_grid(50, 28, 28, None) == (1, 7, 7)  # no patch size: square grid
    assert patch_grid(16, 32, 32, 8) == (0, 4, 4)  # SigLIP: patches only
    assert patch_grid(21, 32, 32, 8) == (5, 4, 4)  # CLS + 4 registers
    with pytest.raises(ValueError, match="grid"):
        patch_grid(8, 28, 28, None)


def test_overlay_colours_the_attended_region() -> None:
    image = Image.new("RGB", (40, 20), (128, 128, 128))
    heatmap = np.array([[0.0, 1.0]])  # right half attended
    overlay = overlay_attention(image, heatmap)
    assert overlay.size == image.size and overlay.mode == "RGB"
    left, right = overlay.getpixel((2, 10)), overlay.getpixel((37, 10))
    assert right[0] > left[0] and left[2] > right[2]  # red where attended, blue where not
    assert display_copy(Image.new("L", (28, 28))).size == (224, 224)  # small images enlarged
    assert display_copy(Image.new("RGB", (2000, 1000))).size == (512, 256)


# ------------------------------------------------------------------------------------------------
# Predictions with a real (tiny, random) vit-finetune model
# ------------------------------------------------------------------------------------------------


def test_predictions_match_the_model(classifier: Classifier) -> None:
    images = [pattern_image(10), pattern_image(11)]
    predictions = classifier.predict(images, top_k=3)
    pixel_values = classifier.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = classifier.model(pixel_values).logits.softmax(-1)
    for prediction, row in zip(predictions, expected, strict=True):
        assert list(prediction.probabilities) == [LABELS[i] for i in row.argsort(descending=True)]
        assert sorted(prediction.probabilities.values(), reverse=True) == pytest.approx(
            sorted(row.tolist(), reverse=True), abs=1e-5)
        assert prediction.heatmap.shape == (4, 4)  # 32 / 8 patches per side
        assert prediction.seconds > 0
    assert len(classifier.predict(images[:1], top_k=2)[0].probabilities) == 2


def test_the_attention_map_is_a_function_of_the_input(classifier: Classifier) -> None:
    first, second = pattern_image(20), pattern_image(21)
    map_a, map_b = (p.heatmap for p in classifier.predict([first, second]))
    (map_a_again,) = (p.heatmap for p in classifier.predict([first]))
    assert np.allclose(map_a, map_a_again, atol=1e-5)  # deterministic
    assert np.abs(map_a - map_b).max() > 0.05  # and it changes with the image
    last_a = classifier.predict([first], method="last_layer")[0].heatmap
    assert np.abs(map_a - last_a).max() > 1e-3  # the two methods really differ


def test_grayscale_mean_pooled_conv_stem_model(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "gray", num_channels=1, pooling="mean", patch_embedding="conv",
                               image_size=28, patch_size=4)
    classifier = load_model(str(folder), device="cpu")
    assert (classifier.num_channels, classifier.pooling) == (1, "mean")
    image, _ = load_image(pattern_image(5), num_channels=1)
    (prediction,) = classifier.predict([image], top_k=3)
    assert prediction.heatmap.shape == (7, 7)
    assert set(prediction.probabilities) == set(LABELS)


@pytest.mark.parametrize("options", [
    dict(num_register_tokens=4, layerscale_init=1e-5, pooling="cls_mean"),  # DINOv2 with registers
    dict(class_token=False, pooling="map", class_position_embedding=False),  # SigLIP: no CLS token
    dict(num_register_tokens=2, position_embedding="none", rotary_embedding="dinov3", key_bias=False),  # DINOv3
])
def test_register_and_cls_free_models_map_the_patches_only(tmp_path: Path, options: dict) -> None:
    """Registers take attention (they soak it up: that is what they are for) but are not image regions: the map
    covers the patch grid alone, and a model without a CLS token is drawn from its patch tokens."""
    folder = make_model_folder(tmp_path / "m", **options)
    classifier = load_model(str(folder), device="cpu")
    (prediction,) = classifier.predict([pattern_image(3)], top_k=2)
    assert prediction.heatmap.shape == (4, 4)
    assert prediction.heatmap.min() == 0.0 and prediction.heatmap.max() == 1.0


def test_a_bfloat16_checkpoint_gets_bfloat16_inputs(classifier: Classifier, model_folder: Path,
                                                    tmp_path: Path) -> None:
    # transformers loads a checkpoint in its saved dtype; float32 pixels would not match bf16 weights.
    classifier.model.to(torch.bfloat16).save_pretrained(tmp_path)
    classifier.model.to(torch.float32)  # the module fixture is shared: put it back
    shutil.copy(model_folder / "preprocessor_config.json", tmp_path)
    bf16 = load_model(str(tmp_path), device="cpu")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    (prediction,) = bf16.predict([pattern_image(7)])
    assert set(prediction.probabilities) == set(LABELS) and np.isfinite(prediction.heatmap).all()


def test_transformers_own_vit_works_too(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=2, id2label={0: "yes", 1: "no"}, label2id={"yes": 0, "no": 1})
    ViTForImageClassification(config).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    classifier = load_model(str(tmp_path), device="cpu")
    (prediction,) = classifier.predict([pattern_image(6)])
    assert set(prediction.probabilities) == {"yes", "no"} and prediction.heatmap.shape == (4, 4)


# ------------------------------------------------------------------------------------------------
# Loading models: whose code runs, and errors a user can act on
# ------------------------------------------------------------------------------------------------


def make_custom_code_folder(folder: Path, marker: Path, *, model_type: str = "custom_vit") -> Path:
    """A transformers ViT folder whose config names `model_type` and an `auto_map` to Python files shipped
    with it; importing those files writes `marker`, so a test can tell whether they ran."""
    import json

    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=2, id2label={0: "yes", 1: "no"}, label2id={"yes": 0, "no": 1})
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    (folder / "configuration_custom.py").write_text(
        "from pathlib import Path\nfrom transformers import ViTConfig\n"
        f"Path({str(marker)!r}).write_text('the shipped code ran')\n"
        f"class CustomConfig(ViTConfig):\n    model_type = {model_type!r}\n")
    (folder / "modeling_custom.py").write_text(
        "from transformers import ViTForImageClassification\nfrom .configuration_custom import CustomConfig\n"
        "class CustomForImageClassification(ViTForImageClassification):\n    config_class = CustomConfig\n")
    saved = json.loads((folder / "config.json").read_text())
    saved["model_type"] = model_type
    saved["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                         "AutoModelForImageClassification": "modeling_custom.CustomForImageClassification"}
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def test_a_model_with_its_own_code_loads_only_with_trust_remote_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "imported.txt"
    folder = make_custom_code_folder(tmp_path / "custom-model", marker)
    with pytest.raises(ModelLoadError, match="model type 'custom_vit'.*pass --trust_remote_code"):
        load_model(str(folder), device="cpu")
    capsys.readouterr()  # drop save_pretrained's progress bars
    assert app.main([str(folder), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vit-finetune demo: error: ") and error.count("\n") == 1  # not a traceback
    assert not marker.exists(), "the model's Python files were imported without --trust_remote_code"

    classifier = load_model(str(folder), device="cpu", trust_remote_code=True)  # the user trusts it
    assert marker.exists() and type(classifier.model).__name__ == "CustomForImageClassification"
    assert set(classifier.predict([pattern_image(1)])[0].probabilities) == {"yes", "no"}


def test_a_transformers_model_never_runs_code_shipped_with_it(tmp_path: Path) -> None:
    from transformers import ViTForImageClassification

    marker = tmp_path / "imported.txt"
    folder = make_custom_code_folder(tmp_path / "stock-model", marker, model_type="vit")
    classifier = load_model(str(folder), device="cpu")
    assert type(classifier.model) is ViTForImageClassification  # transformers' own class
    assert not marker.exists()


def test_a_missing_model_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "outputs" / "no-such-model"
    assert app.main([str(missing)]) == 2
    assert capsys.readouterr().err == f"vit-finetune demo: error: no model folder '{missing}': it does not exist\n"


def test_a_model_saved_without_its_image_processor_is_a_one_line_error(
        classifier: Classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What the README's Python example writes: model.save_pretrained(folder) and nothing else.
    classifier.model.save_pretrained(tmp_path / "my-vit")
    capsys.readouterr()  # drop save_pretrained's progress bar
    assert app.main([str(tmp_path / "my-vit"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"vit-finetune demo: error: the model folder '{tmp_path / 'my-vit'}' has no "
                            "preprocessor_config.json")
    assert "processor.save_pretrained(folder)" in error and error.count("\n") == 1


def test_examples_come_from_the_model_folder(model_folder: Path, tmp_path: Path) -> None:
    found = app.find_examples(str(model_folder), LABELS, app_dir=tmp_path)
    assert [Path(p).name for p in found] == ["bird.png", "cat.png", "dog.png"]
    assert app.find_examples(str(tmp_path), LABELS, app_dir=None) == []
    (tmp_path / "examples").mkdir()  # a Space keeps them next to app.py
    pattern_image(0).save(tmp_path / "examples" / "dog.png")
    assert [Path(p).name for p in app.find_examples(str(tmp_path / "none"), [], app_dir=tmp_path)] == ["dog.png"]
