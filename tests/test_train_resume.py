"""A run killed with SIGKILL while writing a checkpoint, then resumed, ends with exactly the weights of an
uninterrupted run: same shuffle order, same augmentation (mixup, cutmix, crops, erasing), same dropout and
stochastic depth, same optimizer and schedule; and so with the fine-tuning methods: LoRA, the weight EMA, staged
unfreezing (killed inside the frozen stage), the balanced sampler and class weights."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import save_tiny_model
from training_fixtures import (
    REPO,
    assert_same_weights,
    load_weights,
    run_python,
    subprocess_env,
    tiny_args,
    write_dataset,
)

# Dies right after Accelerate has written the files of checkpoint 12, before the checkpoint is published:
# exactly the "crash mid-save" that must never leave a checkpoint that looks complete.
KILL_DURING_SAVE = """
import os, signal, sys
import accelerate
from vit_finetune import train
original = accelerate.Accelerator.save_state
def save_then_die(self, output_dir=None, **kwargs):
    result = original(self, output_dir, **kwargs)
    if str(output_dir).endswith(".incomplete-checkpoint-12"):
        os.kill(os.getpid(), signal.SIGKILL)
    return result
accelerate.Accelerator.save_state = save_then_die
sys.exit(train.main(sys.argv[1:]))
"""

RANDOM_EVERYTHING = dict(
    per_device_train_batch_size=2, gradient_accumulation_steps=2,  # 12 batches, 6 steps per epoch
    num_train_epochs=3, checkpointing_steps=4, save_total_limit=3, logging_steps=3,
    mixup_alpha=0.8, cutmix_alpha=1.0, random_resized_crop_min_scale=0.5, hflip="true", random_erasing_prob=0.25,
    drop_path_rate=0.1, hidden_dropout_prob=0.1, label_smoothing_factor=0.1, warmup_steps=2,
)


ARCHITECTURE_OF_THE_SOURCE = {"image_size": None, "patch_size": None, "num_channels": None, "hidden_size": None,
                              "num_hidden_layers": None, "num_attention_heads": None, "intermediate_size": None}
METHODS = {
    "full": {},
    # LoRA from a pretrained folder, with the EMA, the balanced sampler and class weights.
    "lora_ema_balanced": dict(finetune="lora", lora_r=4, ema_decay=0.9, sampler="balanced", class_weights="balanced",
                              **ARCHITECTURE_OF_THE_SOURCE),
    # Killed at step 12 and resumed from step 8: inside the head-only stage (epochs 0-1), thawed at epoch 2.
    "staged_ema_balanced": dict(freeze_epochs=2, layer_decay=0.8, ema_decay=0.9, sampler="balanced"),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_resume_after_sigkill_matches_an_uninterrupted_run(method: str, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "images")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    options = {**RANDOM_EVERYTHING, **METHODS[method]}
    if method.startswith("lora"):
        save_tiny_model(tmp_path / "source")
        options["model_name_or_path"] = tmp_path / "source"
    env = subprocess_env()
    # The uninterrupted run and the run that will be killed, side by side.
    uninterrupted = subprocess.Popen([sys.executable, "-m", "vit_finetune.train",
                                      *tiny_args(data, straight, **options)],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    crash = run_python(["-c", KILL_DURING_SAVE, *tiny_args(data, killed, **options)])
    log = uninterrupted.communicate(timeout=240)[0]
    assert uninterrupted.returncode == 0, log[-3000:]
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]

    checkpoints = killed / "checkpoints"
    half_written = checkpoints / ".incomplete-checkpoint-12"
    assert (half_written / "model.safetensors").is_file() and not (half_written / "trainer_state.json").exists()
    assert not (checkpoints / "checkpoint-12").exists()
    latest = json.loads((checkpoints / "checkpoint-8" / "trainer_state.json").read_text())
    assert (latest["epoch"], latest["step_in_epoch"]) == (1, 2)  # mid-epoch: the resume must skip 4 batches

    resumed = run_python(["-m", "vit_finetune.train", *tiny_args(data, killed, **options),
                          "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "checkpoint-8" in resumed.stderr
    assert not half_written.exists()

    assert_same_weights(load_weights(straight / "model.safetensors"), load_weights(killed / "model.safetensors"))
    last = Path("checkpoints") / "checkpoint-18"
    saved = ["model.safetensors"] + (["ema.safetensors"] if "ema_decay" in options else [])
    if method.startswith("lora"):
        assert_same_weights(*(load_weights(run / "adapter" / "adapter_model.safetensors") for run in (straight, killed)))
    for name in saved:
        assert_same_weights(load_weights(straight / last / name), load_weights(killed / last / name))
    history = [json.loads((run / "metrics.json").read_text())["history"] for run in (straight, killed)]
    for entry in history[0] + history[1]:
        entry.pop("elapsed_s")
    assert history[0] == history[1]
