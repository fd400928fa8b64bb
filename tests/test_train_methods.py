"""Fine-tuning methods: LoRA (peft), staged unfreezing, the weight EMA, early stopping, class imbalance, gradient
checkpointing, and the errors of their flags. Tiny runs in this process (a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_model import save_tiny_model
from training_fixtures import CLASSES, REPO, TINY_MODEL, load_weights, tiny_args, write_dataset

from vit_finetune.hub.push import push_main
from vit_finetune.train import main
from vit_finetune.training.arguments import parse_train_arguments
from vit_finetune.modeling_vit import classification_loss
from vit_finetune.training.imbalance import balanced_class_weights, weighted_loss
from vit_finetune.training.optim import Schedule, build_scheduler
from vit_finetune.training.sampling import BalancedSampler

FROM_SOURCE = {k: None for k in TINY_MODEL}  # the architecture is the source model's (32 px, patch 8)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained model to fine-tune: a real (random-weight) vit-finetune folder, labels cat/dog/bird."""
    folder = tmp_path_factory.mktemp("source") / "model"
    save_tiny_model(folder)
    return folder


@pytest.fixture(scope="module")
def lora_run(data: Path, source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("lora") / "model"
    assert main(tiny_args(data, output, model_name_or_path=source, finetune="lora", lora_r=4, lora_alpha=8,
                          checkpointing_steps=4, num_train_epochs=2, **FROM_SOURCE)) == 0
    return output


def _base_name(key: str) -> str:
    """A peft checkpoint key as the plain model names it (the adapted layers keep theirs under base_layer)."""
    return key.removeprefix("base_model.model.").replace(".base_layer.", ".")


# ----------------------------------------------------------------------------------------------------------
# LoRA


def test_lora_trains_only_the_adapters_and_the_head(lora_run: Path, source: Path) -> None:
    before = load_weights(source / "model.safetensors")
    after = load_weights(lora_run / "checkpoints" / "checkpoint-12" / "model.safetensors")
    adapters = [k for k in after if ".lora_" in k]
    assert {k.split(".")[-4] for k in adapters} == {"qkv", "proj"}  # the default targets, in every block
    assert any(k.endswith("lora_B.default.weight") and after[k].abs().sum() > 0 for k in adapters), \
        "the adapters did not train (lora_B starts at zero)"
    head = "base_model.model.classifier.modules_to_save.default.weight"
    assert not torch.equal(after[head], after["base_model.model.classifier.original_module.weight"])
    frozen = [k for k in after if ".lora_" not in k and ".classifier." not in k]
    assert frozen and all(torch.equal(after[k], before[_base_name(k)]) for k in frozen), "a frozen weight changed"


def test_lora_merged_model_equals_the_adapter_loaded_with_peft(lora_run: Path, data: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageClassification, pipeline

    from vit_finetune.convert import load_pretrained_vit

    adapter = lora_run / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in adapter.iterdir()}
    assert "lora_" in "".join(load_weights(adapter / "adapter_model.safetensors"))
    # The adapter card's recipe, step by step.
    record = json.loads((adapter / "base_model_overrides.json").read_text())
    base = load_pretrained_vit(record["base_model"], revision=record["revision"], **record["overrides"])
    adapted = PeftModel.from_pretrained(base, str(adapter)).eval()
    merged = AutoModelForImageClassification.from_pretrained(lora_run).eval()
    assert "PeftModel.from_pretrained" in (adapter / "README.md").read_text()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=images).logits, adapted(pixel_values=images).logits,
                                   rtol=0, atol=1e-5)
    assert not any("lora" in k for k in load_weights(lora_run / "model.safetensors"))  # a plain model
    result = pipeline("image-classification", model=str(lora_run))(str(data / "test" / "dog" / "0.png"))
    assert {r["label"] for r in result} <= set(CLASSES)


def test_push_adapter_uploads_the_adapter_alone(lora_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert push_main([str(lora_run), "--repo_id", "me/tiny-lora", "--adapter", "--dry_run"]) == 0
    listed = capsys.readouterr().out
    assert "adapter_model.safetensors" in listed and "adapter_config.json" in listed
    assert "model.safetensors  " not in listed.replace("adapter_model.safetensors", "")
    assert "adapter card, generated for me/tiny-lora" in listed


def test_lora_without_merge_writes_the_adapter_folder(data: Path, source: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "adapter_only"
    assert main(tiny_args(data, output, model_name_or_path=source, finetune="lora", merge_lora="false",
                          max_steps=3, **FROM_SOURCE)) == 0
    assert (output / "adapter_model.safetensors").is_file() and not (output / "model.safetensors").exists()
    assert json.loads((output / "metrics.json").read_text())["finetune"] == "lora"
    assert main(tiny_args(data, output, model_name_or_path=source, finetune="lora", max_steps=3,
                          **FROM_SOURCE)) == 2  # a finished (adapter) folder is not overwritten silently
    assert "already holds" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Staged unfreezing


def test_staged_unfreezing_trains_the_head_first_then_everything(data: Path, source: Path, tmp_path: Path) -> None:
    output = tmp_path / "staged"
    assert main(tiny_args(data, output, model_name_or_path=source, freeze_epochs=1, num_train_epochs=3,
                          layer_decay=0.8, save_total_limit=5, load_best_model_at_end="false",
                          **FROM_SOURCE)) == 0
    before = load_weights(source / "model.safetensors")
    after_stage_one = load_weights(output / "checkpoints" / "checkpoint-6" / "model.safetensors")
    final = load_weights(output / "model.safetensors")
    backbone = [k for k in before if k.startswith("vit.")]
    assert all(torch.equal(after_stage_one[k], before[k]) for k in backbone), "the backbone trained in stage one"
    assert not all(torch.equal(final[k], before[k]) for k in backbone), "the backbone never trained"
    history = json.loads((output / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [6, 12, 18]


def test_each_stage_has_its_own_warmup() -> None:
    _, _, args = parse_train_arguments(["--output_dir", "x", "--freeze_epochs", "1", "--warmup_steps", "2",
                                        "--lr_scheduler_type", "linear", "--learning_rate", "1.0"])
    schedule = Schedule(batches_per_epoch=4, steps_per_epoch=4, max_steps=12, num_epochs=3, warmup_steps=4,
                        freeze_steps=4)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = build_scheduler(optimizer, args, schedule)
    lrs = []
    for _ in range(12):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.0, 0.5, 1.0, 0.5])  # head alone: warm-up over 2 steps, decay over 4
    assert lrs[4:7] == pytest.approx([0.0, 0.5, 1.0])  # everything: warm-up again from 0
    assert json.dumps(scheduler.state_dict())  # plain numbers: trainer_state.json holds it


# ----------------------------------------------------------------------------------------------------------
# EMA, early stopping, class imbalance


@pytest.fixture(scope="module")
def ema_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("ema") / "model"
    # A noisy run (constant high learning rate, mixup), where the average beats the raw weights; metric loss:
    # no ties (accuracy is often 1 for both), so the comparison decides.
    assert main(tiny_args(data, output, ema_decay=0.7, num_train_epochs=3, save_total_limit=5, learning_rate=2e-2,
                          lr_scheduler_type="constant", mixup_alpha=0.8, metric_for_best_model="loss",
                          sampler="balanced", class_weights="balanced")) == 0
    return output


def test_ema_is_evaluated_beside_the_raw_weights_and_the_better_one_is_exported(ema_run: Path) -> None:
    metrics = json.loads((ema_run / "metrics.json").read_text())
    assert metrics["ema_decay"] == 0.7 and metrics["exported_weights"] in ("raw", "ema")
    assert all("ema_eval_accuracy" in h and "eval_accuracy" in h for h in metrics["history"])
    best = ema_run / "checkpoints" / f"checkpoint-{metrics['best_step']}"
    raw, ema = load_weights(best / "model.safetensors"), load_weights(best / "ema.safetensors")
    assert any(not torch.equal(raw[k], ema[k]) for k in raw), "the EMA is a copy of the weights"
    entry = next(h for h in metrics["history"] if h["step"] == metrics["best_step"])
    ema_better = entry["ema_eval_loss"] < entry["eval_loss"]
    assert metrics["exported_weights"] == ("ema" if ema_better else "raw")
    assert ema_better, "this recipe should make the EMA win (deterministic on the CPU); the export path is untested"
    exported = load_weights(ema_run / "model.safetensors")
    chosen = ema if ema_better else raw
    assert exported.keys() == chosen.keys() and all(torch.equal(exported[k], chosen[k]) for k in exported)


def test_the_ema_follows_timms_update_rule(data: Path, tmp_path: Path) -> None:
    """Two steps with decay 0.5 and no warm-up: ema_1 = w_1 (timm's first update copies), ema_2 = (w_1 + w_2)/2."""
    output = tmp_path / "ema2"
    assert main(tiny_args(data, output, ema_decay=0.5, ema_warmup="false", max_steps=2, checkpointing_steps=1,
                          save_total_limit=None, eval_strategy="no", load_best_model_at_end="false")) == 0
    checkpoints = output / "checkpoints"
    w1, w2 = (load_weights(checkpoints / f"checkpoint-{s}" / "model.safetensors") for s in (1, 2))
    ema1 = load_weights(checkpoints / "checkpoint-1" / "ema.safetensors")
    ema2 = load_weights(checkpoints / "checkpoint-2" / "ema.safetensors")
    for key in w1:
        torch.testing.assert_close(ema1[key], w1[key])
        torch.testing.assert_close(ema2[key], (w1[key] + w2[key]) / 2)


def test_per_class_metrics_in_metrics_json_and_the_model_card(ema_run: Path) -> None:
    metrics = json.loads((ema_run / "metrics.json").read_text())
    test = metrics["per_class"]["test"]
    assert list(test) == list(CLASSES)
    assert sum(c["support"] for c in test.values()) == 9
    assert all(0 <= c[m] <= 1 for c in test.values() for m in ("precision", "recall", "f1"))
    card = (ema_run / "README.md").read_text()
    assert "### Per class (test)" in card and "| fox |" in card
    assert "weight EMA" in card


def test_early_stopping_stops_after_patience_evaluations_without_improvement(data: Path, tmp_path: Path) -> None:
    output = tmp_path / "early"
    # No gain can exceed a threshold of 1 (accuracy is at most 1): the second evaluation ends the run.
    assert main(tiny_args(data, output, num_train_epochs=4, early_stopping_patience=1,
                          early_stopping_threshold=1.0)) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["global_step"] == 12 and metrics["stopped_early_at"] == 12
    assert [h["step"] for h in metrics["history"]] == [6, 12]


def test_balanced_class_weights_and_the_weighted_loss() -> None:
    labels = [0] * 6 + [1] * 3 + [2] * 1
    weights = balanced_class_weights(labels, 4)
    assert weights.tolist() == pytest.approx([10 / 24, 10 / 12, 10 / 4, 0.0])  # n / (classes * n_c); absent: 0
    logits, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 2, 0])
    per_image = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    expected = (weights[targets] * per_image).sum() / weights[targets].sum()
    torch.testing.assert_close(weighted_loss(logits, targets, weights, label_smoothing=0.0), expected)
    uniform = weighted_loss(logits, targets, torch.ones(4), label_smoothing=0.1)
    torch.testing.assert_close(uniform, classification_loss(logits, targets, "single_label_classification",
                                                            label_smoothing=0.1))


def test_balanced_sampler_draws_classes_equally_and_repeats_each_epoch() -> None:
    labels = [0] * 900 + [1] * 100
    sampler = BalancedSampler(labels, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    drawn_from_rare = sum(labels[i] for i in first) / len(first)
    assert len(first) == 1000 and 0.44 < drawn_from_rare < 0.56
    again = BalancedSampler(labels, seed=3)
    again.set_epoch(2)
    assert list(again) == first  # a function of (seed, epoch): a resumed run draws the same images
    again.set_epoch(3)
    assert list(again) != first


# ----------------------------------------------------------------------------------------------------------
# Memory switches


def test_gradient_checkpointing_trains_to_the_same_weights(data: Path, tmp_path: Path) -> None:
    from vit_finetune.modeling_vit import ViTForImageClassification
    from vit_finetune.configuration_vit import ViTConfig
    from vit_finetune.training.model import enable_gradient_checkpointing

    model = ViTForImageClassification(ViTConfig(**TINY_MODEL, num_labels=3))
    enable_gradient_checkpointing(model)
    assert model.is_activation_checkpointing  # and the runs below log it
    runs = {}
    for flag in ("false", "true"):
        output = tmp_path / f"gc_{flag}"
        assert main(tiny_args(data, output, gradient_checkpointing=flag, max_steps=4, hidden_dropout_prob=0.1,
                              drop_path_rate=0.1)) == 0
        runs[flag] = load_weights(output / "checkpoints" / "checkpoint-4" / "model.safetensors")
    for key in runs["false"]:
        torch.testing.assert_close(runs["true"][key], runs["false"][key], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Bad combinations stop before any work, naming the flag


@pytest.mark.parametrize("flags, named", [
    ({"finetune": "adapters"}, "finetune"),
    ({"finetune": "lora"}, "model_name_or_path"),  # LoRA from scratch
    ({"finetune": "linear_probe", "freeze_epochs": 1}, "freeze_epochs"),
    ({"ema_decay": 1.5}, "ema_decay"),
    ({"early_stopping_patience": 2, "eval_strategy": "no"}, "early_stopping_patience"),
    ({"early_stopping_patience": 0}, "early_stopping_patience"),
    ({"class_weights": "inverse"}, "class_weights"),
    ({"sampler": "weighted"}, "sampler"),
    ({"freeze_epochs": 5}, "freeze_epochs"),  # longer than the 2-epoch run
])
def test_bad_method_flags_name_the_flag(flags: dict, named: str, data: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    assert main(tiny_args(data, tmp_path / "out", **flags)) == 2
    assert named in capsys.readouterr().err


def test_lora_flags_are_checked_against_the_model(data: Path, source: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(tiny_args(data, tmp_path / "out", model_name_or_path=source, finetune="lora",
                          lora_target_modules="attention.query", **FROM_SOURCE)) == 2
    assert "lora_target_modules" in capsys.readouterr().err
    assert main(tiny_args(data, tmp_path / "out2", model_name_or_path=source, finetune="lora",
                          freeze_backbone="true", **FROM_SOURCE)) == 2
    assert "freeze_backbone" in capsys.readouterr().err


def test_freeze_backbone_is_the_linear_probe() -> None:
    model_args, _, _ = parse_train_arguments(["--output_dir", "x", "--freeze_backbone", "true"])
    assert model_args.finetune == "linear_probe"
    model_args, _, _ = parse_train_arguments(["--output_dir", "x", "--finetune", "linear_probe"])
    assert model_args.freeze_backbone  # training_args.json says it both ways


def test_every_method_flag_is_in_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--finetune", "--lora_r", "--lora_alpha", "--lora_dropout", "--lora_target_modules",
                 "--merge_lora", "--freeze_epochs", "--ema_decay", "--early_stopping_patience",
                 "--early_stopping_threshold", "--class_weights", "--sampler", "--gradient_checkpointing",
                 "--torch_compile"):
        assert flag in text, flag


def test_the_lora_recipe_parses() -> None:
    model_args, _, args = parse_train_arguments(["--config", str(REPO / "configs/finetune_vit_base_lora.yaml")])
    assert model_args.finetune == "lora" and model_args.lora_target_modules == ["attention.qkv", "attention.proj"]
    assert args.early_stopping_patience == 3
