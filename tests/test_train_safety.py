"""Training as a careless or hostile user meets it: planted pickles, changed settings on resume, diverging runs,
two runs in one folder, overwritten models, a full disk, bad values. Nothing already done may be lost or mixed."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_fixtures import CLASSES, load_weights, tiny_args, write_dataset

from vit_finetune.training import checkpointing
from vit_finetune.train import main

# One epoch of the tiny run is 6 optimizer steps (24 images, batches of 4).
ONE_EPOCH = dict(num_train_epochs=1, lr_scheduler_type="constant")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def one_epoch(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run with checkpoint-6; tests copy it before changing anything."""
    output = tmp_path_factory.mktemp("run") / "model"
    assert main(tiny_args(data, output, **ONE_EPOCH)) == 0
    return output


def copy_run(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(source, target, symlinks=True)
    return target


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if "error:" in line]


class RunsCode:
    """A pickle that, when unpickled, creates a marker file: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------------------------------------ pickles
def test_resume_never_unpickles_files_of_the_checkpoint(one_epoch: Path, data: Path, tmp_path: Path) -> None:
    output = copy_run(one_epoch, tmp_path)
    checkpoint = output / "checkpoints" / "checkpoint-6"
    marker = tmp_path / "code-ran"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (checkpoint / name).write_bytes(pickle.dumps(RunsCode(marker)))
    resumed = tiny_args(data, output, num_train_epochs=2, lr_scheduler_type="constant",
                        resume_from_checkpoint="latest")
    assert main(resumed) == 0
    assert not marker.exists(), "resuming ran code planted in the checkpoint"
    state = json.loads((output / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["scheduler"]["last_epoch"] == 12  # the schedule lives in JSON now


def test_an_old_checkpoint_with_a_crafted_schedule_pickle_is_refused(one_epoch: Path, data: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Checkpoints written before the schedule moved to JSON keep it in custom_checkpoint_0.pkl; a genuine one
    still loads (weights_only), a crafted one is refused without running."""
    output = copy_run(one_epoch, tmp_path)
    checkpoint = output / "checkpoints" / "checkpoint-6"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    genuine = state.pop("scheduler")
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    torch.save(genuine, checkpoint / "custom_checkpoint_0.pkl")
    assert checkpointing.read_legacy_scheduler_state(checkpoint) == genuine

    marker = tmp_path / "code-ran"
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    resumed = tiny_args(data, output, num_train_epochs=2, resume_from_checkpoint="latest")
    assert main(resumed) == 2
    [line] = error_lines(capsys)
    assert "custom_checkpoint_0.pkl" in line and not marker.exists()


# ---------------------------------------------------------------------------- changed settings and divergence
def test_a_new_learning_rate_on_resume_applies_from_there_and_is_recorded(
    one_epoch: Path, data: Path, tmp_path: Path
) -> None:
    runs = {}
    for lr in (3e-3, 1e-3):  # the first run's own rate, and a lower one
        output = copy_run(one_epoch, tmp_path / str(lr))
        argv = tiny_args(data, output, num_train_epochs=2, lr_scheduler_type="constant", learning_rate=lr,
                         resume_from_checkpoint="latest", load_best_model_at_end="false")
        assert main(argv) == 0
        runs[lr] = output
    same, lower = (json.loads((runs[lr] / "metrics.json").read_text()) for lr in (3e-3, 1e-3))
    assert same["history"][-1]["learning_rate"] == pytest.approx(3e-3)
    assert lower["history"][-1]["learning_rate"] == pytest.approx(1e-3)
    assert same["setting_changes"] == []
    assert lower["setting_changes"] == [{"step": 6, "field": "learning_rate", "from": 3e-3, "to": 1e-3}]
    weights = [load_weights(runs[lr] / "model.safetensors") for lr in (3e-3, 1e-3)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    card = (runs[1e-3] / "README.md").read_text()
    assert "learning_rate" in card and "step 6" in card and "0.003" in card and "0.001" in card


def test_diverging_weights_are_never_saved_and_the_advice_works(
    one_epoch: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = copy_run(one_epoch, tmp_path)
    good = output / "checkpoints" / "checkpoint-6"
    more = dict(num_train_epochs=2, lr_scheduler_type="constant", resume_from_checkpoint="latest")
    assert main(tiny_args(data, output, **more, learning_rate=1e39)) == 1
    [line] = error_lines(capsys)
    assert "NaN or infinite" in line and str(good) in line and "--learning_rate" in line
    assert checkpointing.latest_checkpoint(output) == good
    for checkpoint in checkpointing.list_checkpoints(output):
        assert all(torch.isfinite(t).all() for t in load_weights(checkpoint / "model.safetensors").values())
    # The advice: resume from the named checkpoint with a lower learning rate.
    assert main(tiny_args(data, output, **{**more, "resume_from_checkpoint": str(good)}, learning_rate=1e-3)) == 0
    assert all(torch.isfinite(t).all() for t in load_weights(output / "model.safetensors").values())


def test_a_run_diverging_before_its_first_checkpoint_saves_nothing(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model"
    assert main(tiny_args(data, output, **ONE_EPOCH, learning_rate=1e39)) == 1
    [line] = error_lines(capsys)
    assert "No checkpoint was saved" in line
    assert checkpointing.list_checkpoints(output) == [] and not (output / "config.json").exists()


def test_switching_layer_decay_on_resume_is_refused_by_name(
    one_epoch: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = copy_run(one_epoch, tmp_path)
    argv = tiny_args(data, output, num_train_epochs=2, layer_decay=0.75, resume_from_checkpoint="latest")
    assert main(argv) == 2
    [line] = error_lines(capsys)
    assert "layer_decay" in line


# ------------------------------------------------------------------------------------------- one folder, one run
def test_a_live_run_holds_the_folder_and_a_stale_lock_is_taken_over(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model"
    output.mkdir()
    lock = output / ".vit-finetune.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    assert main(tiny_args(data, output, **ONE_EPOCH)) == 2
    [line] = error_lines(capsys)
    assert "in use by another training run" in line and str(os.getpid()) in line
    assert sorted(p.name for p in output.iterdir()) == [lock.name]  # nothing written beside the live run

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(), "started": "earlier"}))
    assert main(tiny_args(data, output, **ONE_EPOCH)) == 0
    assert not lock.exists() and (output / "model.safetensors").is_file()


def test_two_runs_started_at_once_into_one_folder(data: Path, tmp_path: Path) -> None:
    """Real processes: exactly one trains, the other is refused naming the folder."""
    from training_fixtures import REPO, subprocess_env

    output = tmp_path / "model"
    argv = [sys.executable, "-m", "vit_finetune.train", *tiny_args(data, output, **ONE_EPOCH)]
    runs = [subprocess.Popen(argv, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(run.wait(timeout=240), run.communicate()[1]) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, err in results]
    refused = next(err for code, err in results if code == 2)
    assert "in use by another training run" in refused


def test_a_finished_model_is_not_overwritten_without_asking(
    one_epoch: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = copy_run(one_epoch, tmp_path)
    shutil.rmtree(output / "checkpoints")
    before = {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()}
    for extra in ({}, {"resume_from_checkpoint": "latest"}):
        assert main(tiny_args(data, output, **ONE_EPOCH, seed=8, **extra)) == 2
        [line] = error_lines(capsys)
        assert "finished model" in line and "--overwrite_output_dir" in line
    assert {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()} == before


def test_a_failed_overwrite_keeps_the_old_model_whole(
    one_epoch: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = copy_run(one_epoch, tmp_path)
    before = {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()}
    argv = tiny_args(data, output, **ONE_EPOCH, learning_rate=1e39, overwrite_output_dir="true")
    assert main(argv) == 1  # diverges: the new run never finishes
    assert {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()} == before


def test_an_overwritten_model_folder_is_the_new_runs_alone(
    one_epoch: Path, data: Path, tmp_path: Path
) -> None:
    output = copy_run(one_epoch, tmp_path)
    (output / "eval_test").mkdir()
    (output / "eval_test" / "metrics.json").write_text("{}")
    (output / "my_notes.txt").write_text("mine")
    two_classes = tmp_path / "two"
    for split in ("train", "validation", "test"):
        for name in CLASSES[:2]:
            shutil.copytree(data / split / name, two_classes / split / name)
    argv = tiny_args(two_classes, output, **ONE_EPOCH, overwrite_output_dir="true")
    assert main(argv) == 0
    assert sorted(p.name for p in (output / "examples").iterdir()) == [f"{c}.png" for c in CLASSES[:2]]
    assert not (output / "eval_test").exists()  # evaluations of the old model leave with it
    assert (output / "my_notes.txt").read_text() == "mine"  # files the user put there stay
    assert len(json.loads((output / "config.json").read_text())["id2label"]) == 2
    assert json.loads((output / "training_args.json").read_text())["train_dir"] == str(two_classes / "train")
    assert not [p.name for p in output.iterdir() if p.name.startswith(".")]


def test_output_dir_equal_to_the_starting_model_is_refused(
    one_epoch: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = copy_run(one_epoch, tmp_path)
    weights = (source / "model.safetensors").read_bytes()
    argv = tiny_args(data, source, model_name_or_path=source, **ONE_EPOCH, overwrite_output_dir="true")
    for name in ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
                 "num_attention_heads", "intermediate_size"):  # architecture comes from the source model
        index = argv.index(f"--{name}")
        del argv[index:index + 2]
    assert main(argv) == 2
    [line] = error_lines(capsys)
    assert "model_name_or_path" in line
    assert (source / "model.safetensors").read_bytes() == weights


# ------------------------------------------------------------------------------------------------ full disk
@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_previous_one(
    data: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output = small_disk / "model"
    filler = small_disk / "filler"
    original = checkpointing.save_checkpoint

    def save_then_fill_the_disk(*args, **kwargs):
        saved = original(*args, **kwargs)
        with open(filler, "wb") as handle:  # whatever another program might have done meanwhile
            try:
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()
            except OSError:
                pass
        return saved

    monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_fill_the_disk)
    argv = tiny_args(data, output, num_train_epochs=2, lr_scheduler_type="constant")
    assert main(argv) == 1
    [line] = error_lines(capsys)
    assert "no space left on device" in line and str(output / "checkpoints") in line and "checkpoint-6" in line
    assert [p.name for p in (output / "checkpoints").iterdir() if p.is_dir()] == ["checkpoint-6"]

    monkeypatch.setattr(checkpointing, "save_checkpoint", original)
    filler.unlink()
    assert main([*argv, "--resume_from_checkpoint", "latest"]) == 0


# ------------------------------------------------------------------------------------------- one-line errors
@pytest.mark.parametrize("key, value", [("learning_rate", ".nan"), ("num_train_epochs", ".inf")])
def test_non_finite_values_in_a_config_are_refused_by_name(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"{key}: {value}\n")  # YAML reads .nan and .inf as floats
    output = tmp_path / "model"
    argv = tiny_args(data, output)
    index = argv.index(f"--{key}")  # a flag would win over the file
    del argv[index:index + 2]
    assert main(["--config", str(config), *argv]) == 2
    [line] = error_lines(capsys)
    assert key in line and "finite" in line
    assert not output.exists()


def test_bad_places_end_in_one_line_and_leave_no_folder(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert main(tiny_args(data, a_file)) == 2
    assert "is a file" in error_lines(capsys)[0]

    output = tmp_path / "model"
    missing = tmp_path / "no-such-checkpoint"
    assert main(tiny_args(data, output, resume_from_checkpoint=missing)) == 2
    assert str(missing) in error_lines(capsys)[0]
    assert not output.exists()

    assert main(tiny_args(data, output, train_dir=tmp_path / "no-images")) == 2
    assert "no-images" in error_lines(capsys)[0]
    assert not output.exists()

