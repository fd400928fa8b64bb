"""What `vit-finetune push` uploads from a real-looking output folder: nothing of the user's machine.

A training run records local paths (its arguments, the data folders, the skipped files), `vit-finetune eval`
leaves `eval_*/` folders, and users link files into the folder. The push must upload the model unchanged,
render local paths relative to the folder or as `<local>/name`, leave evaluation output local and never
follow a link out of the folder; `--dry_run` says what it leaves out and why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hub_server import LocalHub, hub_env, local_hub  # noqa: F401  (fixtures)
from tiny_model import METRICS, TRAINING_ARGS, trained_folder, trained_folder_template  # noqa: F401

from vit_finetune import hub

REPO = "alice/tiny-vit"
SECRET = b"TOP-SECRET: the contents of a file outside the model folder"
MODEL_FILES = ("config.json", "model.safetensors", "configuration_vit.py", "modeling_vit.py",
               "preprocessor_config.json", "training_curves.png")
WINDOWS_FILE = r"C:\Users\zed-windows\shapes\train.csv"


@pytest.fixture
def leaky_folder(trained_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny trained folder as a real run on this machine leaves it, with local paths everywhere."""
    home = tmp_path / "home-of-zed"
    monkeypatch.setenv("HOME", str(home))
    data = home / "datasets" / "shapes"
    for split in ("train", "validation"):
        (data / split / "cat").mkdir(parents=True)
    (data / "train" / "notes.txt").write_bytes(SECRET)
    folder = trained_folder

    arguments = dict(
        TRAINING_ARGS, output_dir=str(folder), logging_dir=str(folder / "logs"),
        resume_from_checkpoint=str(folder / "checkpoints" / "checkpoint-30"),
        train_dir=str(data / "train"), validation_dir=str(data / "validation"), test_dir=None,
        train_file=WINDOWS_FILE, cache_dir=str(home / ".cache" / "vit-finetune"),
        model_name_or_path=str(home / "models" / "vit-small"), hub_model_id=REPO,
        report_url="https://example.org/runs/42", data_files=[str(data / "train" / "cat" / "1.png")],
    )
    (folder / "training_args.json").write_text(json.dumps(arguments, indent=2))
    metrics = dict(METRICS, dataset=str(data / "train"), base_model=str(home / "models" / "vit-small"))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report = {
        "source": f"image folders train={data / 'train'}, validation={data / 'validation'}",
        "classes": ["cat", "dog", "bird"], "num_skipped": 1,
        "skipped": [{"split": "train", "path": str(data / "train" / "cat" / "broken.png"),
                     "reason": f"cannot decode {data / 'train' / 'cat' / 'broken.png'}: truncated"}],
        "by_file": {str(data / "train" / "cat" / "broken.png"): "truncated"},
    }
    (folder / "data_report.json").write_text(json.dumps(report, indent=2))

    # `vit-finetune eval` output, resumable state, and links in and out of the folder.
    (folder / "eval_validation").mkdir()
    (folder / "eval_validation" / "eval_results.json").write_text(json.dumps({"model": str(folder)}))
    (folder / "checkpoints" / "checkpoint-30").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-30" / "optimizer.pt").write_bytes(b"state")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (folder / "secret.png").symlink_to(outside / "secret.txt")
    (folder / "shared_data").symlink_to(data)
    (folder / "examples").mkdir()
    (folder / "examples" / "cat.png").write_bytes((folder / "training_curves.png").read_bytes())
    (folder / "examples" / "kitty.png").symlink_to("cat.png")  # a link inside the folder
    (folder / "examples_again").symlink_to("examples")  # a link to a folder, even inside, is not followed
    return folder


def _strings(value):
    """Every string (keys included) in a parsed JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def test_push_uploads_no_local_path_no_eval_output_and_no_link_target(hub_env: LocalHub, leaky_folder: Path,
                                                                       tmp_path: Path, capsys) -> None:
    before = {p: p.read_bytes() for p in leaky_folder.glob("*.json")}
    assert hub.push_main([str(leaky_folder), "--repo_id", REPO]) == 0, capsys.readouterr().err
    stored = hub_env.files(REPO)

    # What the model needs to load arrives byte for byte; a link inside the folder arrives as its file.
    for name in MODEL_FILES:
        assert stored[name] == (leaky_folder / name).read_bytes(), name
    assert stored["examples/kitty.png"] == stored["examples/cat.png"]

    # Left local: evaluation output, checkpoints, and everything reached through a link out of the folder.
    assert not [p for p in stored if p.startswith(("eval_", "checkpoints/", "shared_data", "examples_again"))]
    assert "secret.png" not in stored
    home = str(tmp_path / "home-of-zed")
    for name, content in stored.items():
        assert SECRET not in content, name
        for needle in (str(tmp_path), home, "home-of-zed", "zed-windows"):
            assert needle.encode() not in content, f"{needle} in uploaded {name}"
        if name.endswith(".json"):  # also after JSON escaping (backslashes of Windows paths)
            for text in _strings(json.loads(content)):
                assert "home-of-zed" not in text and "zed-windows" not in text, (name, text)

    # Paths inside the folder become relative to it; other local paths keep only their last part.
    arguments = json.loads(stored["training_args.json"])
    assert arguments["output_dir"] == "." and arguments["logging_dir"] == "logs"
    assert arguments["resume_from_checkpoint"] == "checkpoints/checkpoint-30"
    assert arguments["train_dir"] == "<local>/train" and arguments["train_file"] == "<local>/train.csv"
    assert arguments["model_name_or_path"] == "<local>/vit-small"
    assert arguments["data_files"] == ["<local>/1.png"]
    # Hub ids, URLs, relative paths and every other value stay as they are.
    assert arguments["hub_model_id"] == REPO and arguments["report_url"] == "https://example.org/runs/42"
    assert {k: arguments[k] for k in ("learning_rate", "seed", "test_dir", "hub_token")} == {
        "learning_rate": 0.001, "seed": 0, "test_dir": None, "hub_token": TRAINING_ARGS["hub_token"]}
    metrics = json.loads(stored["metrics.json"])
    assert metrics["dataset"] == "<local>/train" and metrics["base_model"] == "<local>/vit-small"
    assert metrics["eval"] == METRICS["eval"] and metrics["history"] == METRICS["history"]
    report = json.loads(stored["data_report.json"])
    assert report["source"] == "image folders train=<local>/train, validation=<local>/validation"
    assert report["skipped"][0]["path"] == "<local>/broken.png"
    assert report["skipped"][0]["reason"] == "cannot decode <local>/broken.png: truncated"
    assert report["by_file"] == {"<local>/broken.png": "truncated"}
    assert report["classes"] == ["cat", "dog", "bird"]

    # The card names the data by its folder, not its path; the local files keep their real paths.
    assert "shapes" in stored["README.md"].decode()
    assert {p: p.read_bytes() for p in leaky_folder.glob("*.json")} == before


def test_dry_run_names_everything_it_leaves_out_and_why(hub_env: LocalHub, leaky_folder: Path, capsys) -> None:
    assert hub.push_main([str(leaky_folder), "--repo_id", REPO, "--dry_run"]) == 0
    out = capsys.readouterr().out
    listed, left_out = out.split("Left out")
    for reason in ("checkpoints/ (resumable state, stays local)",
                   "eval_validation/ (evaluation output, stays local)",
                   "secret.png (a link to outside the folder)",
                   "shared_data/ (a link to outside the folder)",
                   "examples_again/ (a link to a folder)"):
        assert reason in left_out, reason
    assert "  examples/kitty.png " in listed  # a link inside the folder is uploaded as its file
    for name in ("training_args.json", "metrics.json", "data_report.json"):
        assert re.search(rf"^  {re.escape(name)} .*\(\d+ local paths? redacted\)$", listed, re.MULTILINE), name
    assert re.search(r"^  training_args\.json .*\(9 local paths redacted\)$", listed, re.MULTILINE)
    for name in MODEL_FILES:  # uploaded as they are: no note
        assert re.search(rf"^  {re.escape(name)} +[\d.]+ k?B$", listed, re.MULTILINE), name
    assert hub_env.requests == []
