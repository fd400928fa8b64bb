"""Two training processes on a CPU-only machine (gloo): launched with torchrun, and with accelerate launch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_fixtures import run_python, tiny_args, write_dataset

import vit_finetune  # noqa: F401  (registers the model with the Auto classes)

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU (gloo) path")


def check_two_process_run(output: Path) -> None:
    from transformers import AutoModelForImageClassification

    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    # 9 images in batches of 2 on 2 processes: the last batch is padded with repeats, which
    # gather_for_metrics must drop, so every image counts exactly once.
    assert metrics["eval"]["samples"] == 9 and metrics["test"]["samples"] == 9
    # 24 images / (2 processes x 4) = 3 steps per epoch, 2 epochs.
    assert metrics["global_step"] == 6
    model = AutoModelForImageClassification.from_pretrained(output)
    assert model.config.num_labels == 3


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "images")
    output = tmp_path / "ddp"
    argv = tiny_args(data, output, per_device_eval_batch_size=2)
    result = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "vit_finetune.train", *argv])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es) on cpu" in result.stderr
    check_two_process_run(output)


@pytest.mark.slow
def test_accelerate_launch_multi_gpu_flag_runs_two_cpu_processes(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "images")
    output = tmp_path / "accelerate"
    argv = tiny_args(data, output, per_device_eval_batch_size=2)
    result = run_python(["-c", "import sys; from accelerate.commands.accelerate_cli import main; sys.exit(main())",
                         "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                         "--mixed_precision", "no", "--dynamo_backend", "no",
                         "-m", "vit_finetune.train", *argv])
    assert result.returncode == 0, result.stderr[-4000:]
    check_two_process_run(output)
