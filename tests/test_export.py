"""`vit-finetune export`: a tiny trained model (conftest's `model_and_data`: a real training run with a test split)
to each format, with the parity numbers of the issue: the stock transformers folder loaded in a process where
vit_finetune cannot be imported (1e-5), onnxruntime on real-photo images with a dynamic batch (1e-4), int8 with its
test-split accuracy and speed-up, torch.export; the refusal of non-stock options naming the field; push --export.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import LocalHub, hub_env, local_hub  # noqa: F401  (fixtures)
from image_fixtures import CLASS_COLOURS, photo
from PIL import Image
from training_fixtures import subprocess_env

import vit_finetune
from vit_finetune.export import ExportError, export_model, main as export_main
from vit_finetune.export import stock
from vit_finetune.export.source import load_source

# A process that cannot import vit_finetune, whatever sys.path or the installed package say: a finder first in
# sys.meta_path refuses the package and every submodule.
BLOCKED_LOAD = textwrap.dedent("""
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "vit_finetune" or name.startswith("vit_finetune."):
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import vit_finetune
        raise SystemExit("vit_finetune is importable")
    except ImportError:
        pass
    import json
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    folder, images = sys.argv[1], sys.argv[2:]
    model = AutoModelForImageClassification.from_pretrained(folder).eval()  # no trust_remote_code
    processor = AutoImageProcessor.from_pretrained(folder)
    pixels = processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    top = pipeline("image-classification", model=folder)(images[0], top_k=1)[0]["label"]
    print(json.dumps({"module": type(model).__module__, "logits": logits.tolist(), "pipeline_top": top,
                      "blocked": "vit_finetune" not in sys.modules}))
""")


def real_photos(folder: Path, count: int = 5) -> list[Path]:
    """Noisy photo-like images of the training classes' colours and of others, at other sizes than the model's."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = [*CLASS_COLOURS.values(), (120, 120, 30), (10, 130, 160)]
    paths = []
    for index in range(count):
        path = folder / f"photo{index}.jpg"
        photo(colours[index % len(colours)], size=(40 + 7 * index, 30 + 5 * index), seed=index).save(path)
        paths.append(path)
    return paths


def our_logits(model_folder: Path, images: list[Path]) -> torch.Tensor:
    source = load_source(str(model_folder))
    return source.logits(source.pixels([Image.open(p) for p in images]))


@pytest.fixture(scope="module")
def trained(model_and_data: tuple[Path, Path]) -> Path:
    return model_and_data[0]


@pytest.fixture(scope="module")
def onnx_export(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export with int8 (the test split is found through the model's training_args.json)."""
    output = tmp_path_factory.mktemp("onnx") / "export"
    assert export_main([str(trained), str(output), "--format", "onnx", "--quantize", "int8"]) == 0
    return output


# ----------------------------------------------------------------------------- transformers


def test_transformers_export_loads_without_our_package(trained: Path, tmp_path: Path) -> None:
    from vit_finetune.cli import main as cli_main

    output = tmp_path / "stock"
    assert cli_main(["export", str(trained), str(output), "--format", "transformers"]) == 0
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "vit" and config["architectures"] == ["ViTForImageClassification"]
    assert "auto_map" not in config
    assert not list(output.glob("*.py")) and not list(output.glob("*.bin"))  # no code, no pickles
    assert (output / "model.safetensors").is_file() and (output / "preprocessor_config.json").is_file()
    assert "trust_remote_code=True" not in (output / "README.md").read_text()

    images = real_photos(tmp_path / "photos")
    result = subprocess.run([sys.executable, "-c", BLOCKED_LOAD, str(output), *map(str, images)],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["blocked"] and loaded["module"].startswith("transformers.models.vit")
    expected = our_logits(trained, images)
    difference = (torch.tensor(loaded["logits"]) - expected).abs().max().item()
    assert difference <= 1e-5, difference
    assert loaded["pipeline_top"] == json.loads((trained / "config.json").read_text())["id2label"][
        str(int(expected[0].argmax()))]
    assert json.loads((output / "export.json").read_text())["parity"]["max_abs_logit_difference"] <= 1e-5


def test_grayscale_model_exports_with_the_luma_fold(tmp_path: Path) -> None:
    from transformers import AutoModelForImageClassification

    from vit_finetune.data import build_image_processor

    config = vit_finetune.ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    vit_finetune.ViTForImageClassification(config).save_pretrained(tmp_path / "gray")
    build_image_processor(16, 1, [0.3], [0.4]).save_pretrained(tmp_path / "gray")
    export_model(str(tmp_path / "gray"), tmp_path / "stock", "transformers")

    stock_model = AutoModelForImageClassification.from_pretrained(tmp_path / "stock").eval()
    assert not isinstance(stock_model, vit_finetune.ViTForImageClassification)
    images = real_photos(tmp_path / "photos", 3)
    source = load_source(str(tmp_path / "gray"))
    pixels = source.pixels([Image.open(p) for p in images])
    assert pixels.shape[1] == 3  # the processor hands over RGB; the stock model folds it as ours does
    with torch.no_grad():
        difference = (stock_model(pixel_values=pixels).logits - source.logits(pixels)).abs().max().item()
    assert difference <= 1e-5, difference


@pytest.mark.parametrize("option, field", [
    ({"pooling": "mean"}, "pooling='mean'"),
    ({"position_embedding": "sincos"}, "position_embedding='sincos'"),
    ({"patch_embedding": "conv"}, "patch_embedding='conv'"),
    ({"layerscale_init": 1e-5}, "layerscale_init=1e-05"),
    ({"num_register_tokens": 2}, "num_register_tokens=2"),
    ({"qk_norm": True}, "qk_norm=True"),
])
def test_options_without_a_stock_counterpart_are_refused_by_name(tmp_path: Path, capsys, option: dict,
                                                                 field: str) -> None:
    config = vit_finetune.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=2, **option)
    vit_finetune.ViTForImageClassification(config).save_pretrained(tmp_path / "model")
    capsys.readouterr()  # what saving printed (transformers' progress bar, when it shows one)
    assert export_main([str(tmp_path / "model"), str(tmp_path / "out"), "--format", "transformers"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vit-finetune export: error:") and field in err and "ViTForImageClassification" in err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_check_covers_options_added_later(monkeypatch) -> None:
    """Every ViTConfig.__init__ parameter is compared with its default: a new one is refused until a mapping says
    the stock class holds it, without anyone listing it."""
    from vit_finetune.export.to_transformers import MAPPINGS

    defaults = stock.option_defaults()
    assert {"image_size", "pooling", "qk_norm", "num_register_tokens"} <= set(defaults)
    monkeypatch.setattr(stock, "option_defaults", lambda: {**defaults, "future_option": False})
    config = vit_finetune.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64)
    assert stock.choose_mapping(config, MAPPINGS) is MAPPINGS[0]
    config.future_option = True
    with pytest.raises(ExportError, match=r"future_option=True \(stock: False\)"):
        stock.choose_mapping(config, MAPPINGS)
    # Shape fields are what the stock class represents; fields of an unused stem are not options.
    config = vit_finetune.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1,
                                    num_attention_heads=3, intermediate_size=96, conv_stem_channels=64,
                                    drop_path_rate=0.1)
    assert stock.choose_mapping(config, MAPPINGS) is MAPPINGS[0]


# ----------------------------------------------------------------------------- onnx and int8


def test_onnx_matches_on_real_images_with_any_batch_size(trained: Path, onnx_export: Path, tmp_path: Path) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_export / "model.onnx"), providers=["CPUExecutionProvider"])
    images = real_photos(tmp_path / "photos", 5)
    expected = our_logits(trained, images)
    pixels = load_source(str(trained)).pixels([Image.open(p) for p in images]).numpy()
    for batch in (pixels, pixels[:1]):
        logits = session.run(["logits"], {"pixel_values": batch})[0]
        difference = np.abs(logits - expected[: len(batch)].numpy()).max()
        assert difference <= 1e-4, difference
    assert (onnx_export / "preprocessor_config.json").is_file()
    record = json.loads((onnx_export / "export.json").read_text())
    assert record["inputs"]["pixel_values"][0] == "batch" and record["parity"]["max_abs_logit_difference"] <= 1e-4


def test_int8_reports_its_test_accuracy_change_and_speedup(trained: Path, onnx_export: Path) -> None:
    quantization = json.loads((onnx_export / "quantization.json").read_text())
    split = quantization["test_split"]
    assert split["available"], split
    metrics = json.loads((trained / "metrics.json").read_text())
    assert split["float32"]["samples"] == split["int8"]["samples"] == metrics["test"]["samples"]
    # float32 onnxruntime reproduces the recorded test accuracy; the change is int8's against it.
    assert split["float32"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert split["accuracy_change"] == pytest.approx(split["int8"]["accuracy"] - split["float32"]["accuracy"])
    speed = quantization["speed"]
    assert speed["speedup"]["batch_1"] > 0 and speed["int8"]["batch_64_images_per_s"] > 0
    card = (onnx_export / "README.md").read_text()
    assert "Accuracy change:" in card and "Speed-up:" in card
    assert (onnx_export / "model.int8.onnx").stat().st_size < (onnx_export / "model.onnx").stat().st_size


def test_int8_without_a_test_split_says_why(tmp_path: Path) -> None:
    from vit_finetune.export.quantize import TestSplitUnavailable, test_split

    config = vit_finetune.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=2)
    vit_finetune.ViTForImageClassification(config).save_pretrained(tmp_path / "model")
    with pytest.raises(TestSplitUnavailable, match="no training_args.json"):
        test_split(load_source(str(tmp_path / "model")), None, tmp_path, None)
    (tmp_path / "model" / "training_args.json").write_text(json.dumps({"test_dir": "gone/test"}))
    with pytest.raises(TestSplitUnavailable, match="gone/test is not a folder here"):
        test_split(load_source(str(tmp_path / "model")), None, tmp_path, None)


def test_quantize_needs_onnx(trained: Path, tmp_path: Path, capsys) -> None:
    assert export_main([str(trained), str(tmp_path / "x"), "--format", "pt2", "--quantize", "int8"]) == 2
    assert "--quantize int8 needs --format onnx" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pt2


def test_pt2_runs_with_torch_alone(trained: Path, tmp_path: Path) -> None:
    export_model(str(trained), tmp_path / "pt2", "pt2")
    program = torch.export.load(str(tmp_path / "pt2" / "model.pt2")).module()  # written by this test
    images = real_photos(tmp_path / "photos", 3)
    pixels = load_source(str(trained)).pixels([Image.open(p) for p in images])
    expected = our_logits(trained, images)
    with torch.no_grad():
        for count in (3, 1):
            assert (program(pixels[:count]) - expected[:count]).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------- push --export


def test_push_export_uploads_the_stock_folder(hub_env: LocalHub, trained: Path, capsys) -> None:
    from vit_finetune import hub

    assert hub.push_main([str(trained), "--repo_id", "alice/stock-vit", "--export", "transformers"]) == 0
    out = capsys.readouterr().out
    assert 'from_pretrained("alice/stock-vit")' in out and "trust_remote_code" not in out
    stored = hub_env.files("alice/stock-vit")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "export.json"} <= set(stored)
    assert not [name for name in stored if name.endswith(".py")]
    assert json.loads(stored["config.json"])["model_type"] == "vit"
    card = stored["README.md"].decode()
    assert 'model="alice/stock-vit"' in card and "trust_remote_code=True" not in card
    assert str(trained) not in stored["export.json"].decode()  # no local paths


def test_push_export_refuses_a_non_stock_model(hub_env: LocalHub, tmp_path: Path, capsys) -> None:
    from vit_finetune import hub

    config = vit_finetune.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=2, pooling="mean")
    vit_finetune.ViTForImageClassification(config).save_pretrained(tmp_path / "model")
    assert hub.push_main([str(tmp_path / "model"), "--repo_id", "alice/x", "--export", "transformers"]) == 1
    err = capsys.readouterr().err
    assert "pooling='mean'" in err and err.count("\n") == 1
    assert not hub_env.paths_requested("POST")  # nothing was sent


# ----------------------------------------------------------------------------- transformers: DINOv2 and SigLIP

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=3, layer_norm_eps=1e-6)
DINOV2 = dict(layerscale_init=0.5, pooling="cls_mean")
DINOV2_REGISTERS = dict(DINOV2, num_register_tokens=3, position_interpolation="bicubic_antialias")
SIGLIP = dict(class_token=False, class_position_embedding=False, pooling="mean", hidden_act="gelu_pytorch_tanh")


def family_model(folder: Path | None = None, **options) -> vit_finetune.ViTForImageClassification:
    """A tiny model of ours with every weight moved off its initial value (LayerScale, biases, tokens), so a weight
    put in the wrong place or left at the stock class's initial value changes the logits; saved with a processor."""
    from vit_finetune.data import build_image_processor

    config = vit_finetune.ViTConfig(**{**TINY, **options})
    torch.manual_seed(0)
    model = vit_finetune.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    if folder is not None:
        model.save_pretrained(folder)
        build_image_processor(config.image_size, config.num_channels, [0.5] * config.num_channels,
                              [0.25] * config.num_channels).save_pretrained(folder)
    return model


def test_dinov2_with_registers_export_loads_without_our_package(tmp_path: Path) -> None:
    family_model(tmp_path / "model", **DINOV2_REGISTERS, drop_path_rate=0.1)
    output = tmp_path / "stock"
    record = export_model(str(tmp_path / "model"), output, "transformers")
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "dinov2_with_registers" and config["num_register_tokens"] == 3
    assert config["architectures"] == ["Dinov2WithRegistersForImageClassification"] and "auto_map" not in config
    assert config["drop_path_rate"] == 0.0 and record["not_carried"] == ["drop_path_rate=0.1"]
    assert not list(output.glob("*.py"))

    images = real_photos(tmp_path / "photos", 3)
    result = subprocess.run([sys.executable, "-c", BLOCKED_LOAD, str(output), *map(str, images)],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["blocked"] and loaded["module"].startswith("transformers.models.dinov2_with_registers")
    difference = (torch.tensor(loaded["logits"]) - our_logits(tmp_path / "model", images)).abs().max().item()
    assert difference <= 1e-5, difference


@pytest.mark.parametrize("options, architecture", [
    (DINOV2, "Dinov2ForImageClassification"),
    # no LayerScale: factors of one; grayscale: the luma fold
    ({"pooling": "cls_mean", "num_channels": 1, "hidden_act": "gelu_new"}, "Dinov2ForImageClassification"),
    # SwiGLU: 64 = swiglu_hidden_size(32, 3)
    ({**DINOV2_REGISTERS, "mlp_type": "glu", "hidden_act": "silu", "intermediate_size": 64},
     "Dinov2WithRegistersForImageClassification"),
    ({**DINOV2, "position_interpolation": "bicubic_antialias"}, "Dinov2WithRegistersForImageClassification"),
    (SIGLIP, "SiglipForImageClassification"),
    ({**SIGLIP, "class_position_embedding": True, "num_channels": 1}, "SiglipForImageClassification"),
])
def test_family_exports_compute_our_logits(tmp_path: Path, options: dict, architecture: str) -> None:
    """In process, at the model's resolution and (table resized: the interpolation must be the class's) at a
    smaller one."""
    from transformers import AutoModelForImageClassification

    ours = family_model(tmp_path / "model", **options)
    record = export_model(str(tmp_path / "model"), tmp_path / "stock", "transformers")
    assert record["architecture"] == architecture
    stock_model = AutoModelForImageClassification.from_pretrained(tmp_path / "stock").eval()
    assert type(stock_model).__name__ == architecture
    torch.manual_seed(1)
    for size in (32, 20):
        pixels = torch.randn(2, 3, size, size)
        extra = {"interpolate_pos_encoding": True} if architecture.startswith("Siglip") and size != 32 else {}
        with torch.no_grad():
            expected = ours(pixel_values=pixels, interpolate_pos_encoding=size != 32).logits
            difference = (stock_model(pixel_values=pixels, **extra).logits - expected).abs().max().item()
        assert difference <= 1e-5, (size, difference)


@pytest.mark.parametrize("options, message", [
    ({**DINOV2_REGISTERS, "pooling": "cls"},
     "Dinov2WithRegistersForImageClassification has no counterpart for pooling='cls' (stock: 'cls_mean')"),
    ({**DINOV2, "intermediate_size": 48}, "intermediate_size=48 (stock: hidden_size * mlp_ratio"),
    ({**DINOV2, "mlp_type": "glu", "intermediate_size": 64}, "hidden_act='gelu' with mlp_type='glu'"),
    ({**DINOV2, "mlp_type": "glu", "hidden_act": "silu", "intermediate_size": 60},
     "intermediate_size=60 (stock: swiglu_hidden_size(hidden_size, mlp_ratio)"),
    ({**DINOV2, "hidden_dropout_prob": 0.1}, "hidden_dropout_prob=0.1"),
    ({**DINOV2, "class_position_embedding": False}, "class_position_embedding=False"),
    ({**SIGLIP, "pooling": "map"}, "no stock transformers classification class has a MAP head"),
    ({**SIGLIP, "fc_norm": True}, "SiglipForImageClassification has no counterpart for fc_norm=True"),
    ({**SIGLIP, "num_register_tokens": 1}, "num_register_tokens=1"),
])
def test_family_options_without_a_stock_counterpart_are_refused_by_name(tmp_path: Path, capsys, options: dict,
                                                                        message: str) -> None:
    family_model(tmp_path / "model", **options)
    assert export_main([str(tmp_path / "model"), str(tmp_path / "out"), "--format", "transformers"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out").exists()
