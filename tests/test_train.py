"""Training: tiny end-to-end runs (in this process), argument errors, gradient accumulation, the NaN guard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from training_fixtures import CLASSES, TINY_MODEL, load_weights, tiny_args, write_dataset

from vit_finetune.train import main
from vit_finetune.training import loop
from vit_finetune.training.arguments import ModelArguments, TrainingArguments, parse_train_arguments
from vit_finetune.training.optim import build_optimizer
from vit_finetune.training.sampling import EpochSampler

CONTRACT_FILES = [
    "config.json", "model.safetensors", "configuration_vit.py", "modeling_vit.py", "preprocessor_config.json",
    "training_args.json", "metrics.json", "training_curves.png", "confusion_matrix.png", "data_report.json",
    "README.md",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One tiny run shared by the tests that inspect a finished model folder."""
    output = tmp_path_factory.mktemp("run") / "model"
    argv = tiny_args(data, output, checkpointing_steps=4, report_to="tensorboard", num_train_epochs=3)
    assert main(argv) == 0
    return output, " ".join(argv)


# ----------------------------------------------------------------------------------------------------------
# A finished run


def test_output_folder_has_every_contract_file(trained: tuple[Path, str]) -> None:
    output, _ = trained
    missing = [name for name in CONTRACT_FILES if not (output / name).is_file()]
    assert not missing, f"missing from the model folder: {missing}"
    assert sorted(p.name for p in (output / "examples").iterdir()) == [f"{c}.png" for c in CLASSES]
    assert list((output / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    assert not list((output / "checkpoints").glob(".incomplete-*"))


def test_metrics_json_follows_the_contract(trained: tuple[Path, str]) -> None:
    output, _ = trained
    metrics = json.loads((output / "metrics.json").read_text())
    for split in ("eval", "test"):
        assert set(metrics[split]) == {"accuracy", "top5_accuracy", "f1_macro", "loss", "samples"}
        assert metrics[split]["samples"] == 9  # every image once
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0
        assert metrics[split]["top5_accuracy"] == 1.0  # 3 classes: the label is always in the top 5
    assert metrics["num_processes"] == 1
    assert metrics["global_step"] == 18  # 24 images / 4 per batch = 6 steps per epoch, 3 epochs
    assert metrics["epochs"] == 3.0
    assert metrics["best_metric"] == "accuracy"
    assert metrics["best_step"] in {h["step"] for h in metrics["history"]}
    assert [h["step"] for h in metrics["history"]] == [6, 12, 18]
    elapsed = [h["elapsed_s"] for h in metrics["history"]]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert all(h["train_loss"] > 0 for h in metrics["history"])
    assert metrics["base_model"] is None
    assert metrics["dataset"].endswith("train")
    # The colours are trivially separable: a working loop learns them.
    assert metrics["test"]["accuracy"] >= 2 / 3


def test_exported_model_is_the_best_checkpoint(trained: tuple[Path, str]) -> None:
    output, _ = trained
    metrics = json.loads((output / "metrics.json").read_text())
    best = output / "checkpoints" / f"checkpoint-{metrics['best_step']}" / "model.safetensors"
    exported, saved = load_weights(output / "model.safetensors"), load_weights(best)
    assert all(torch.equal(exported[k], saved[k]) for k in exported)


def test_model_folder_loads_with_from_pretrained_and_pipeline(trained: tuple[Path, str], data: Path) -> None:
    from transformers import AutoModelForImageClassification, pipeline

    output, _ = trained
    model = AutoModelForImageClassification.from_pretrained(output)
    assert model.config.id2label == dict(enumerate(CLASSES))
    assert model.config.image_size == TINY_MODEL["image_size"]
    classify = pipeline("image-classification", model=str(output))
    result = classify(str(data / "test" / "dog" / "0.png"), top_k=3)
    assert sorted(r["label"] for r in result) == sorted(CLASSES)
    assert math.isclose(sum(r["score"] for r in result), 1.0, rel_tol=1e-4)


def test_training_args_json_repeats_the_run(trained: tuple[Path, str]) -> None:
    output, _ = trained
    model_args, data_args, args = parse_train_arguments(["--config", str(output / "training_args.json")])
    assert args.output_dir == str(output)
    assert args.num_train_epochs == 3 and args.checkpointing_steps == 4
    assert model_args.hidden_size == TINY_MODEL["hidden_size"]
    assert data_args.train_dir.endswith("train")


def test_checkpoints_are_rotated_but_the_best_is_kept(trained: tuple[Path, str]) -> None:
    output, _ = trained
    metrics = json.loads((output / "metrics.json").read_text())
    steps = sorted(int(p.name.split("-")[1]) for p in (output / "checkpoints").glob("checkpoint-*"))
    assert steps[-2:] == [16, 18]  # save_total_limit=2 newest
    assert set(steps) == {16, 18, metrics["best_step"]}
    state = json.loads((output / "checkpoints" / "checkpoint-16" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 4, 16)


def test_start_from_our_folder_with_new_labels_resolution_and_frozen_backbone(
    trained: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, _ = trained
    data = tmp_path / "two_classes"
    from image_fixtures import write_class_folder

    write_class_folder(data / "train", ("cat", "dog"), per_class=6)
    write_class_folder(data / "validation", ("cat", "dog"), per_class=2, start_seed=500)
    output = tmp_path / "probe"
    argv = tiny_args(data, output, test_dir=None, model_name_or_path=source, image_size=24, freeze_backbone="true",
                     max_steps=3, **{k: None for k in TINY_MODEL if k != "image_size"})
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    assert "classification head is re-initialised" in caplog.text
    config = json.loads((output / "config.json").read_text())
    assert config["image_size"] == 24 and config["id2label"] == {"0": "cat", "1": "dog"}
    before, after = load_weights(source / "model.safetensors"), load_weights(output / "model.safetensors")
    frozen = [k for k in after if k.startswith("vit.layers.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), "the frozen backbone changed"
    position = "vit.embeddings.position_embeddings"
    assert after[position].shape[1] == 1 + (24 // 4) ** 2  # interpolated from a 4x4 to a 6x6 grid
    assert after["classifier.weight"].shape == (2, TINY_MODEL["hidden_size"])
    assert json.loads((output / "metrics.json").read_text())["base_model"] == str(source)


# ----------------------------------------------------------------------------------------------------------
# Arguments: bad keys and values stop before any work


def test_unknown_yaml_key_names_it_and_suggests(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nlerning_rate: 0.1\n")
    assert main(["--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "'lerning_rate'" in error and "did you mean 'learning_rate'" in error and "bad.yaml" in error
    assert not (tmp_path / "out").exists()


def test_unknown_flag_names_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--output_dir", str(tmp_path / "out"), "--per_device_batch_size", "8"]) == 2
    assert "--per_device_batch_size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("yaml_text, key", [
    ("num_train_epochs: [1, 2]", "num_train_epochs"),
    ("eval_strategy: sometimes", "eval_strategy"),
    ("mixed_precision: fp8", "mixed_precision"),
    ("hidden_size: 30\nnum_attention_heads: 4", "hidden_size"),
    ("image_size: 15\npatch_size: 4", "image_size"),
    ("model_name_or_path: some/model\nhidden_size: 64", "hidden_size"),
    ("learning_rate: -1.0", "learning_rate"),
    ("random_resized_crop_min_scale: 2.0", "random_resized_crop_min_scale"),
])
def test_bad_yaml_value_names_the_key(yaml_text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\n{yaml_text}\n")
    assert main(["--config", str(config)]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unconvertible_flag_value_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--learning_rate", "fast"])
    assert exit_info.value.code == 2
    assert "--learning_rate" in capsys.readouterr().err


def test_flags_override_the_yaml_file_and_yaml_scientific_notation_parses(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("output_dir: out\nlearning_rate: 1e-3\nnum_train_epochs: 4\n")  # YAML reads 1e-3 as a string
    _, _, args = parse_train_arguments(["--config", str(config), "--num_train_epochs", "2"])
    assert args.learning_rate == 1e-3 and args.num_train_epochs == 2.0


def test_existing_checkpoints_need_resume_or_overwrite(trained: tuple[Path, str], data: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    output, _ = trained
    assert main(tiny_args(data, output)) == 2
    assert "--resume_from_checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Optimisation


def test_no_weight_decay_on_norms_biases_positions_and_cls_token() -> None:
    from vit_finetune import ViTConfig, ViTForImageClassification

    model = ViTForImageClassification(ViTConfig(**TINY_MODEL, num_labels=3))
    args = TrainingArguments(output_dir="x", weight_decay=0.05, learning_rate=1.0, layer_decay=0.5)
    optimizer = build_optimizer(model, args)
    decayed = {n for g in optimizer.param_groups if g["weight_decay"] > 0 for n in g["names"]}
    not_decayed = {n for g in optimizer.param_groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "vit.embeddings.cls_token" in not_decayed and "vit.embeddings.position_embeddings" in not_decayed
    assert "vit.layers.0.norm1.weight" in not_decayed and "classifier.bias" in not_decayed
    assert "vit.layers.0.attention.qkv.weight" in decayed and "classifier.weight" in decayed
    assert len(decayed | not_decayed) == len(list(model.parameters()))
    lr = {n: g["lr"] for g in optimizer.param_groups for n in g["names"]}
    # 2 blocks: head/final norm at depth 3 (lr 1), block 1 at depth 2 (0.5), block 0 (0.25), embeddings (0.125)
    assert lr["classifier.weight"] == 1.0 and lr["vit.layernorm.weight"] == 1.0
    assert lr["vit.layers.1.mlp.fc1.weight"] == 0.5 and lr["vit.layers.0.mlp.fc1.weight"] == 0.25
    assert lr["vit.embeddings.cls_token"] == 0.125


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochSampler(50, seed=3)
    sampler.set_epoch(4)
    order = list(sampler)
    again = EpochSampler(50, seed=3)
    again.set_epoch(4)
    assert list(again) == order and sorted(order) == list(range(50))
    again.set_epoch(5)
    assert list(again) != order


def test_gradient_accumulation_matches_the_large_batch(data: Path, tmp_path: Path) -> None:
    """One step of batch 8 = one step of 2 x 4 accumulated; a plain step of 4 differs (so the test can fail).

    adam_epsilon=1 makes AdamW's first update proportional to the gradient (with a tiny epsilon Adam's first
    step is sign(gradient) and would hide a wrongly scaled accumulation).
    """
    common = dict(max_steps=1, adam_epsilon=1.0, learning_rate=0.5, weight_decay=0.0, eval_strategy="no",
                  warmup_steps=0, lr_scheduler_type="constant", test_dir=None)
    runs = {"large": dict(per_device_train_batch_size=8, gradient_accumulation_steps=1),
            "accumulated": dict(per_device_train_batch_size=4, gradient_accumulation_steps=2),
            "small": dict(per_device_train_batch_size=4, gradient_accumulation_steps=1)}
    weights = {}
    for name, settings in runs.items():
        assert main(tiny_args(data, tmp_path / name, **common, **settings)) == 0
        weights[name] = load_weights(tmp_path / name / "model.safetensors")
    for key in weights["large"]:
        torch.testing.assert_close(weights["accumulated"][key], weights["large"][key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(weights["small"][k], weights["large"][k], atol=1e-6) for k in weights["large"])


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_loss, calls = loop.classification_loss, []

    def loss_turning_nan(logits, targets, problem_type, **options):
        calls.append(1)
        loss = real_loss(logits, targets, problem_type, **options)
        return loss * float("nan") if len(calls) >= 5 else loss

    monkeypatch.setattr(loop, "classification_loss", loss_turning_nan)
    output = tmp_path / "nan"
    # The NaN appears at step 5; the loss is read only at step 6 (a checkpoint step), which must not be saved.
    assert main(tiny_args(data, output, checkpointing_steps=2, logging_steps=100, eval_strategy="no")) == 1
    error = capsys.readouterr().err
    assert "NaN or infinite" in error and "checkpoint-4" in error
    steps = sorted(int(p.name.split("-")[1]) for p in (output / "checkpoints").glob("checkpoint-*"))
    assert steps[-1] == 4
    weights = load_weights(output / "checkpoints" / "checkpoint-4" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (output / "model.safetensors").exists()


def test_time_budget_stops_cleanly_evaluates_and_saves(data: Path, tmp_path: Path) -> None:
    output = tmp_path / "budget"
    assert main(tiny_args(data, output, max_train_minutes=1e-6, num_train_epochs=50)) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["global_step"] == 2  # stopped at the first loss read (logging_steps=2)
    assert [h["step"] for h in metrics["history"]] == [2]
    assert (output / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert metrics["test"]["samples"] == 9


def test_model_arguments_know_what_a_pretrained_model_may_change() -> None:
    ModelArguments(model_name_or_path="x", image_size=384, drop_path_rate=0.1)
    with pytest.raises(ValueError, match="patch_size"):
        ModelArguments(model_name_or_path="x", patch_size=8)
    with pytest.raises(ValueError, match="layer_norm_eps"):
        ModelArguments(model_name_or_path="x", layer_norm_eps=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Model options come from ViTConfig alone


class DocumentedConfig:
    """A config whose parameters are all documented.

    Args:
        size: side of the image,
            in pixels.
        depth: number of blocks.
    """

    pretrained_overridable = ("size",)

    def __init__(self, size: int = 8, depth: int = 2, **kwargs):
        pass


class UndocumentedConfig(DocumentedConfig):
    """Args:
        size: side of the image.
    """

    def __init__(self, size: int = 8, depth: int = 2, width: float | None = None, **kwargs):
        pass


def test_model_options_are_the_config_parameters_with_their_docstring_help() -> None:
    from vit_finetune.training.arguments import architecture_options

    options = {name: (hint, option) for name, hint, option in architecture_options(DocumentedConfig)}
    assert list(options) == ["size", "depth"]
    assert options["size"][0] == int | None and options["size"][1].default is None
    assert options["size"][1].metadata["help"].startswith("side of the image, in pixels. Unset: 8 from scratch")
    assert "From scratch only" in options["depth"][1].metadata["help"]
    with pytest.raises(TypeError, match="does not document depth, width"):
        architecture_options(UndocumentedConfig)


def test_help_lists_every_vit_config_parameter_with_help(capsys: pytest.CaptureFixture) -> None:
    import inspect

    from vit_finetune import ViTConfig

    names = [p for p in inspect.signature(ViTConfig.__init__).parameters if p not in ("self", "kwargs")]
    assert ModelArguments.architecture_fields() == tuple(names)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in names:
        entry = text.split(f"\n  --{name} ", 1)[1].split("\n  --", 1)[0]
        assert "Unset:" in entry, f"--{name} has no help text"
    assert "stochastic depth; block `i` of `n` drops its residual branch" in " ".join(text.split())


def test_a_config_parameter_reaches_the_model(tmp_path: Path) -> None:
    from vit_finetune.training.model import load_model

    argv = ["--output_dir", str(tmp_path), "--layer_norm_eps", "1e-6", "--layerscale_init", "0.1",
            *[f"--{k}={v}" for k, v in TINY_MODEL.items()]]
    model_args, _, _ = parse_train_arguments(argv)
    model, _, _ = load_model(model_args)
    assert model.config.layer_norm_eps == 1e-6 and model.config.layerscale_init == 0.1
    assert model.config.hidden_size == TINY_MODEL["hidden_size"] and model.config.qkv_bias is True  # unset: default


def test_finetune_a_transformers_vit_folder_keeps_its_normalisation(data: Path, tmp_path: Path) -> None:
    from transformers import ViTConfig as HFViTConfig
    from transformers import ViTForImageClassification as HFViT
    from transformers import ViTImageProcessor

    source = tmp_path / "hf_vit"
    hf_config = HFViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, num_labels=5)
    HFViT(hf_config).save_pretrained(source)
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.4] * 3, image_std=[0.2] * 3)
    processor.save_pretrained(source)
    output = tmp_path / "finetuned"
    argv = tiny_args(data, output, model_name_or_path=source, layer_decay=0.75, max_steps=2, test_dir=None,
                     **{k: None for k in TINY_MODEL})
    assert main(argv) == 0
    processor = json.loads((output / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.4] * 3 and processor["image_std"] == [0.2] * 3
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "vit_finetune" and len(config["id2label"]) == 3


def test_finetune_our_grayscale_folder(data: Path, tmp_path: Path) -> None:
    # A grayscale model folder stores RGB-repeated statistics (the pipeline sends RGB); fine-tuning it must work.
    first, second = tmp_path / "gray", tmp_path / "gray_finetuned"
    assert main(tiny_args(data, first, num_channels=1, max_steps=2, test_dir=None, image_mean=0.3,
                          image_std=0.4)) == 0
    saved = json.loads((first / "preprocessor_config.json").read_text())
    assert len(saved["image_mean"]) == 3
    argv = tiny_args(data, second, model_name_or_path=first, max_steps=2, test_dir=None,
                     **{k: None for k in TINY_MODEL})
    assert main(argv) == 0
    processor = json.loads((second / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == saved["image_mean"] and processor["image_std"] == saved["image_std"]


@pytest.mark.parametrize("recipe", sorted(p.name for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")))
def test_every_shipped_recipe_parses_and_describes_a_valid_model(recipe: str, tmp_path: Path) -> None:
    """The YAML files in configs/ are what users run first: unknown keys, bad values or an impossible
    architecture must fail here, not minutes into someone's run."""
    import yaml

    from vit_finetune import ViTConfig

    path = Path(__file__).parent.parent / "configs" / recipe
    parse_train_arguments(["--config", str(path), "--output_dir", str(tmp_path / "out")])
    fields = ModelArguments.architecture_fields()
    architecture = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k in fields}
    ViTConfig(**architecture)  # raises ValueError naming the field
