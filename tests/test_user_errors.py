"""A user's mistake with a model (a Hub id while offline, a missing folder, a folder that holds no model, an
image_size the pretrained patches do not divide) ends in one `vit-finetune <cmd>: error: ...` line naming it and
exit code 2, never in a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from image_fixtures import write_class_folder
from tiny_model import save_tiny_model
from training_fixtures import REPO

from vit_finetune import convert, evaluate, predict
from vit_finetune import train as train_module

HUB_ID = "google/vit-base-patch16-224-in21k"


def run_command(command: str, model: str, tmp_path: Path, *extra: str) -> int:
    """`vit-finetune <command> MODEL ...` in this process, with the inputs each command needs."""
    images = tmp_path / "images"
    if not images.exists():
        write_class_folder(images, ("cat", "dog"), per_class=2)
    if command == "convert":
        return convert.main([model, str(tmp_path / "converted"), *extra])
    if command == "eval":
        return evaluate.main([model, "--image_dir", str(images), "--output_dir", str(tmp_path / "eval"), *extra])
    if command == "predict":
        return predict.main([model, str(images), *extra])
    return train_module.main(["--model_name_or_path", model, "--train_dir", str(images),
                              "--output_dir", str(tmp_path / "run"), "--use_cpu", "true", *extra])


def the_error_line(stderr: str, command: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"vit-finetune {command}: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No request leaves the machine: offline mode on, and the endpoint a closed local port should one be made."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    # huggingface_hub reads the environment once, at import: set what it read.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))


@pytest.mark.parametrize("command", ["convert", "eval", "predict", "train"])
def test_hub_id_while_offline(command: str, offline: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_command(command, HUB_ID, tmp_path) == 2
    line = the_error_line(capsys.readouterr().err, command)
    assert HUB_ID in line and "offline" in line


def test_hub_id_while_offline_from_the_shell(tmp_path: Path) -> None:
    """The real command line: the environment variables are read at start-up, as a user sets them."""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "vit_finetune.cli", "convert", HUB_ID, str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [the_error_line(result.stderr, "convert")]
    assert HUB_ID in result.stderr and "offline" in result.stderr


def test_unreachable_hub_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, but the connection fails: the message says the Hub cannot be reached, and where it was sought."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    error = convert.hub_fetch_error(HUB_ID, ConnectionError("[Errno 111] Connection refused"))
    assert isinstance(error, ValueError)
    assert HUB_ID in str(error) and "cannot be reached (http://127.0.0.1:9" in str(error)


@pytest.mark.parametrize("command", ["convert", "eval", "predict", "train"])
def test_missing_model_folder(command: str, offline: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = str(tmp_path / "outputs" / "no_such_run")
    assert run_command(command, missing, tmp_path) == 2
    line = the_error_line(capsys.readouterr().err, command)
    assert f"{missing}: no such folder" in line


@pytest.mark.parametrize("command", ["convert", "eval", "predict", "train"])
@pytest.mark.parametrize("content", ["nothing", "config only"])
def test_folder_without_a_model(command: str, content: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("a folder, but no model in it\n")
    if content == "config only":
        save_tiny_model(tmp_path / "tiny")
        (folder / "config.json").write_text((tmp_path / "tiny" / "config.json").read_text())
    assert run_command(command, str(folder), tmp_path) == 2
    line = the_error_line(capsys.readouterr().err, command)
    assert str(folder) in line and "not a model folder" in line
    assert ("no config.json" if content == "nothing" else "no weights") in line


def test_predict_and_eval_of_a_model_without_image_processor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    save_tiny_model(model)
    (model / "preprocessor_config.json").unlink()
    for command in ("eval", "predict"):
        assert run_command(command, str(model), tmp_path) == 2
        assert "preprocessor_config.json" in the_error_line(capsys.readouterr().err, command)


@pytest.mark.parametrize("command", ["convert", "train"])
def test_image_size_not_divisible_by_the_pretrained_patch_size(command: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    save_tiny_model(model)  # image 32, patch 8
    assert json.loads((model / "config.json").read_text())["patch_size"] == 8
    assert run_command(command, str(model), tmp_path, "--image_size", "30") == 2
    line = the_error_line(capsys.readouterr().err, command)
    assert "image_size 30" in line and "patch_size 8" in line and str(model) in line
    assert not (tmp_path / "converted").exists()


def test_image_size_of_a_transformers_vit_is_checked_before_its_weights_are_read(tmp_path: Path) -> None:
    import transformers

    source = tmp_path / "hf_vit"
    transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64)).save_pretrained(source)
    (source / "model.safetensors").write_bytes(b"not read: the size is refused first")
    with pytest.raises(convert.ModelLoadError, match="image_size 225 is not divisible by the patch_size 16"):
        convert.load_pretrained_vit(str(source), image_size=225)


@pytest.mark.parametrize("name, is_path", [
    ("./run", True), ("../run", True), ("~/models/run", True), ("/abs/run", True), ("outputs/runs/3", True),
    ("run/", True), ("my model", True), ("google/vit-base-patch16-224", False), ("bert-base-uncased", False),
])
def test_what_counts_as_a_path_rather_than_a_hub_id(name: str, is_path: bool) -> None:
    assert convert.looks_like_local_path(name) is is_path
