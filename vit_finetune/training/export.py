"""The product of a run: the model folder (docs/CONTRACTS.md lists its files), written whole beside the old one
and swapped in (`output_folder.publish_model_folder`), so the folder always holds one run's complete model.

The reported numbers are those of the saved model as users will run it (from_pretrained, pipeline,
`vit-finetune eval`): in float32, without the training autocast, so they reproduce exactly.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import evaluate_model, format_metrics
from . import checkpointing
from .divergence import check_finite_weights
from .output_folder import publish_model_folder, staging_dir
from .sampling import batch_loader

logger = logging.getLogger(__name__)


def finish(run: Any) -> dict[str, Any]:
    """Exports the best (or last) weights with their metrics; returns the contents of metrics.json."""
    accelerator, state, args = run.accelerator, run.state, run.args
    train_runtime = run.elapsed()
    if args.load_best_model_at_end and state.best_step is not None and state.best_step != state.global_step:
        best_dir = checkpointing.checkpoints_root(run.output_dir) / f"checkpoint-{state.best_step}"
        checkpointing.load_state_without_pickles(accelerator, best_dir)
        logger.info("exporting the best checkpoint: step %d (%s %.4f)", state.best_step, args.metric_for_best_model,
                    state.best_metric)

    final_model = accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)  # float32, no autocast
    validation = evaluate_model(final_model, run.eval_loader, accelerator, run.metrics, mean=run.mean, std=run.std)
    logger.info("validation (exported model, float32): %s", format_metrics(validation.metrics))
    test = None
    if run.prepared.test is not None:
        test_loader = accelerator.prepare(batch_loader(run.prepared.test, args.per_device_eval_batch_size,
                                                       args.dataloader_num_workers))
        test = evaluate_model(final_model, test_loader, accelerator, run.metrics, mean=run.mean, std=run.std)
        logger.info("test (exported model, float32): %s", format_metrics(test.metrics))

    unwrapped = accelerator.unwrap_model(run.model)
    state_dict = accelerator.get_state_dict(run.model)  # on every process (FSDP/DeepSpeed gather here)
    results = metrics_record(run, validation.metrics, test.metrics if test else None, train_runtime)
    check_finite_weights(final_model, accelerator, state.global_step, run.output_dir)
    if accelerator.is_main_process:
        report, split = (test, "test") if test else (validation, "validation")  # the confusion matrix's split
        staging = staging_dir(run.output_dir)
        try:
            write_model_folder(unwrapped, state_dict, accelerator, staging, run.run_dir, run.prepared, results,
                               report, split, run.mean, run.std)
        except Exception as error:  # noqa: BLE001 - safetensors' write error is neither OSError nor RuntimeError
            shutil.rmtree(staging, ignore_errors=True)
            checkpointing.raise_if_disk_full(error, run.output_dir, "the model folder")
            raise
        publish_model_folder(staging, run.output_dir)
        logger.info("model folder: %s", run.output_dir.resolve())
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def metrics_record(run: Any, eval_metrics: dict[str, Any], test_metrics: dict[str, Any] | None,
                   train_runtime: float) -> dict[str, Any]:
    """metrics.json (its keys are a contract: docs/CONTRACTS.md)."""
    state, steps_per_epoch = run.state, run.schedule.steps_per_epoch
    return {
        "eval": {k: eval_metrics[k] for k in ("accuracy", "top5_accuracy", "f1_macro", "loss", "samples")},
        **({"test": test_metrics} if test_metrics is not None else {}),
        "best_metric": run.args.metric_for_best_model,
        "best_step": state.best_step,
        "epochs": round(state.global_step / steps_per_epoch, 4),
        "global_step": state.global_step,
        "train_runtime_s": round(train_runtime, 2),
        "train_samples_per_second": round(state.train_samples / max(train_runtime, 1e-9), 2),
        "num_processes": run.accelerator.num_processes,
        "dataset": dataset_name(run.data_args),
        "base_model": run.model_args.model_name_or_path,
        "history": state.history,
        "setting_changes": state.setting_changes,
    }


def dataset_name(data_args: Any) -> str:
    for name in ("dataset_name", "train_dir", "train_file"):
        value = getattr(data_args, name, None)
        if value:
            return str(value)
    return "unknown"


def write_model_folder(model: Any, state_dict: dict, accelerator: Any, output_dir: Path, run_dir: Path,
                       prepared: Any, results: dict, report: Any, report_split: str, mean: list[float],
                       std: list[float]) -> None:
    """Everything docs/CONTRACTS.md lists for a model folder (main process only), into an empty `output_dir`.

    `run_dir` holds this run's training_args.json and data_report.json, copied in.
    """
    from ..data import build_image_processor
    from ..hub.model_card import write_model_card
    from ..plots import plot_confusion_matrix, plot_training_curves

    config = model.config
    model.save_pretrained(output_dir, state_dict=state_dict, save_function=accelerator.save)
    build_image_processor(config.image_size, config.num_channels, mean, std).save_pretrained(output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    for name in ("training_args.json", "data_report.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, output_dir / name)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    plot_confusion_matrix(report.predictions, report.references, labels, output_dir / "confusion_matrix.png",
                          title=report_split)
    plot_training_curves(results["history"], output_dir / "training_curves.png")
    write_examples(prepared.validation, config.id2label, output_dir / "examples")
    write_model_card(output_dir)  # last: it reads the files above


def write_examples(dataset: Any, id2label: dict[int, str], folder: Path, limit: int = 10) -> None:
    """One image per class (the first of each, at most `limit` classes) as examples/<label>.png, for the demo."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    labels = dataset.with_format(None)["labels"]
    first: dict[int, int] = {}
    for index, label in enumerate(labels):
        if int(label) not in first and len(first) < limit:
            first[int(label)] = index
    for label, index in sorted(first.items()):
        image = dataset[index]["pixel_values"]  # uint8 (C, H, W)
        array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
        name = re.sub(r"[^\w.-]+", "_", str(id2label[label])).strip("._") or f"class_{label}"
        Image.fromarray(array.astype(np.uint8)).save(folder / f"{name}.png")
