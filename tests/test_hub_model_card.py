"""The model card written into every output folder (vit_finetune.hub.model_card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard


from tiny_model import METRICS, TRAINING_ARGS, trained_folder, trained_folder_template  # noqa: F401

from vit_finetune.hub.model_card import (
    GENERATED_MARKER, count_parameters, is_generated_card, write_model_card,
)


def test_card_metadata_and_results_come_from_the_folder(trained_folder: Path) -> None:
    path = write_model_card(trained_folder, repo_id="alice/tiny-vit")
    assert path == trained_folder / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.license == "apache-2.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-classification"
    assert "vit-finetune" in data.tags and "image-classification" in data.tags
    assert data.datasets == ["tiny-shapes"]
    assert data.model_name == "tiny-vit"

    # model-index holds every number of metrics.json's eval and test splits, by split.
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    for key, split in (("eval", "validation"), ("test", "test")):
        assert results[(split, "accuracy")] == METRICS[key]["accuracy"]
        assert results[(split, "top_5_accuracy")] == METRICS[key]["top5_accuracy"]
        assert results[(split, "f1")] == METRICS[key]["f1_macro"]
    assert all(r.task_type == "image-classification" for r in data.eval_results)

    text = card.text
    assert "| validation | 0.8125 |" in text and "| test | 0.7917 |" in text
    assert "![Training loss and validation accuracy](training_curves.png)" in text
    assert 'pipeline("image-classification", model="alice/tiny-vit", trust_remote_code=True)' in text
    assert 'AutoModelForImageClassification.from_pretrained("alice/tiny-vit", trust_remote_code=True)' in text
    assert "## Intended uses & limitations" in text
    assert "| learning_rate | 0.001 |" in text and "| lr_scheduler_type | cosine |" in text
    assert TRAINING_ARGS["hub_token"] not in text  # secrets never reach a public card
    assert TRAINING_ARGS["output_dir"] not in text  # nor local paths
    for label in ("0: cat", "1: dog", "2: bird"):
        assert label in text
    assert f"| parameters | {count_parameters(trained_folder / 'model.safetensors'):,} |" in text
    assert is_generated_card(path) and GENERATED_MARKER in text


def test_parameter_count_matches_torch(trained_folder: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(trained_folder / "model.safetensors")
    assert count_parameters(trained_folder / "model.safetensors") == sum(t.numel() for t in tensors.values())


def test_untrained_folder_gets_an_honest_card(trained_folder: Path) -> None:
    for name in ("metrics.json", "training_args.json", "training_curves.png"):
        (trained_folder / name).unlink()
    card = ModelCard.load(write_model_card(trained_folder))
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "has not been evaluated yet" in card.text
    assert "training_curves.png" not in card.text
    assert "No training record" in card.text
    # Without a repo id the snippets load the local folder, and say so.
    assert f'from_pretrained("{trained_folder}", trust_remote_code=True)' in card.text
    assert "vit-finetune push" in card.text


def test_base_model_and_local_dataset_paths(trained_folder: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "flowers" / "train"  # a local folder
    data_dir.mkdir(parents=True)
    metrics = dict(METRICS, base_model="google/vit-base-patch16-224", dataset=str(data_dir))
    (trained_folder / "metrics.json").write_text(json.dumps(metrics))
    card = ModelCard.load(write_model_card(trained_folder, repo_id="alice/x"))
    assert card.data.base_model == "google/vit-base-patch16-224"
    assert card.data.datasets is None  # a local path is not a Hub dataset id ...
    assert str(tmp_path) not in card.content  # ... and is not published either
    assert {r.dataset_name for r in card.data.eval_results} == {"flowers"}
    assert {r.dataset_type for r in card.data.eval_results} == {"imagefolder"}
    assert "fine-tuned from [google/vit-base-patch16-224]" in card.text


def test_corrupt_side_files_do_not_break_the_card(trained_folder: Path) -> None:
    (trained_folder / "metrics.json").write_text("{not json")
    card = ModelCard.load(write_model_card(trained_folder))
    assert "has not been evaluated yet" in card.text


def test_folder_without_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_model_card(tmp_path)


@pytest.mark.parametrize("dataset, label", [
    (r"C:\Users\zed-win\flowers\train", "flowers"),  # a Windows path, read on any system
    ("/home/zed-home/train", None),  # the folder left after the split name is a home folder: a user name
])
def test_card_shows_no_local_path_of_any_field(trained_folder: Path, tmp_path: Path, dataset: str,
                                               label: str | None) -> None:
    (trained_folder / "metrics.json").write_text(json.dumps(dict(METRICS, dataset=dataset)))
    checkpoint = tmp_path / "zed-checkpoints" / "checkpoint-30"
    arguments = dict(TRAINING_ARGS, resume_from_checkpoint=str(checkpoint), data_files=[str(tmp_path / "a.png")],
                     dataset_name=r"D:\zed-data\saved", learning_rate=0.001)
    (trained_folder / "training_args.json").write_text(json.dumps(arguments))
    card = ModelCard.load(write_model_card(trained_folder, repo_id="alice/x"))
    assert str(tmp_path) not in card.content and "zed-" not in card.content
    assert {r.dataset_name for r in card.data.eval_results} == {label or "custom images"}
    assert "| learning_rate | 0.001 |" in card.text  # the other arguments are still shown
