"""The product of a run: the model folder (docs/CONTRACTS.md lists its files), written whole beside the old one
and swapped in (`output_folder.publish_model_folder`), so the folder always holds one run's complete model.

The reported numbers are those of the saved model as users will run it (from_pretrained, pipeline,
`vit-finetune eval`): in float32, without the training autocast, so they reproduce exactly.

Which weights: the best evaluated checkpoint's (or the last), and of those the raw weights or their EMA, whichever
scored better (`metrics.json` "exported_weights"). With LoRA the merged model is the model folder and the adapter
goes to `adapter/` (with `--no_merge_lora` the folder holds the adapter alone; `lora.py`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import evaluate_model, format_metrics, per_class_metrics
from . import checkpointing, lora
from .divergence import check_finite_weights
from .output_folder import publish_model_folder, staging_dir
from .sampling import batch_loader

logger = logging.getLogger(__name__)


def finish(run: Any) -> dict[str, Any]:
    """Exports the best (or last) weights with their metrics; returns the contents of metrics.json."""
    accelerator, state, args = run.accelerator, run.state, run.args
    train_runtime = run.elapsed()
    weights = (state.last_eval or {}).get("weights", "raw")
    if args.load_best_model_at_end and state.best_step is not None:
        weights = state.best_weights
        if state.best_step != state.global_step:
            best_dir = checkpointing.checkpoints_root(run.output_dir) / f"checkpoint-{state.best_step}"
            checkpointing.load_state_without_pickles(accelerator, best_dir)
            if run.ema is not None:
                run.ema.load(best_dir)
            logger.info("exporting the best checkpoint: step %d (%s %.4f)", state.best_step,
                        args.metric_for_best_model, state.best_metric)
    if run.ema is not None:
        logger.info("exporting the %s weights (they scored better on %s)", "EMA" if weights == "ema" else "raw",
                    args.metric_for_best_model)

    # float32, no autocast: keep_fp32_wrapper=False takes Accelerate's autocast off the model (in place).
    trained = run.ema.module if weights == "ema" else accelerator.unwrap_model(
        run.model, keep_fp32_wrapper=False, keep_torch_compile=False)
    adapter = trained if lora.is_peft_model(trained) else None
    final_model = lora.merged_copy(adapter) if adapter is not None and run.model_args.merge_lora else trained
    validation = evaluate_model(final_model, run.eval_loader, accelerator, run.metrics, mean=run.mean, std=run.std)
    logger.info("validation (exported model, float32): %s", format_metrics(validation.metrics))
    test = None
    if run.prepared.test is not None:
        test_loader = accelerator.prepare(batch_loader(run.prepared.test, args.per_device_eval_batch_size,
                                                       args.dataloader_num_workers))
        test = evaluate_model(final_model, test_loader, accelerator, run.metrics, mean=run.mean, std=run.std)
        logger.info("test (exported model, float32): %s", format_metrics(test.metrics))

    if final_model is trained and weights == "raw" and adapter is None:
        state_dict = accelerator.get_state_dict(run.model)  # on every process (FSDP/DeepSpeed gather here)
    else:
        state_dict = final_model.state_dict()  # the EMA copy or the merged model: whole on every process
    results = metrics_record(run, validation, test, train_runtime, weights)
    check_finite_weights(final_model, accelerator, state.global_step, run.output_dir)
    if accelerator.is_main_process:
        report, split = (test, "test") if test else (validation, "validation")  # the confusion matrix's split
        staging = staging_dir(run.output_dir)
        try:
            if adapter is not None:
                write_lora_folders(run, adapter, final_model, state_dict, staging, results, report, split)
            else:
                write_model_folder(final_model, state_dict, accelerator, staging, run.run_dir, run.prepared,
                                   results, report, split, run.mean, run.std)
        except Exception as error:  # noqa: BLE001 - safetensors' write error is neither OSError nor RuntimeError
            shutil.rmtree(staging, ignore_errors=True)
            checkpointing.raise_if_disk_full(error, run.output_dir, "the model folder")
            raise
        publish_model_folder(staging, run.output_dir)
        logger.info("model folder: %s", run.output_dir.resolve())
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def metrics_record(run: Any, validation: Any, test: Any | None, train_runtime: float,
                   weights: str) -> dict[str, Any]:
    """metrics.json (its keys are a contract: docs/CONTRACTS.md)."""
    state, steps_per_epoch = run.state, run.schedule.steps_per_epoch
    eval_metrics, test_metrics = validation.metrics, test.metrics if test else None
    id2label = run.prepared.id2label
    labels = [str(id2label[i]) for i in range(len(id2label))]
    per_class = {"eval": per_class_metrics(validation.predictions, validation.references, labels)}
    if test is not None:
        per_class["test"] = per_class_metrics(test.predictions, test.references, labels)
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
        "per_class": per_class,
        "finetune": run.model_args.finetune,
        "exported_weights": weights,  # "raw", or "ema": the weight average scored better
        "ema_decay": run.args.ema_decay,
        "stopped_early_at": state.stopped_early_at,
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

    config = model.config
    model.save_pretrained(output_dir, state_dict=state_dict, save_function=accelerator.save)
    build_image_processor(config.image_size, config.num_channels, mean, std).save_pretrained(output_dir)
    write_records(output_dir, run_dir, prepared, results, report, report_split, config.id2label)
    write_model_card(output_dir)  # last: it reads the files above


def write_records(output_dir: Path, run_dir: Path, prepared: Any, results: dict, report: Any, report_split: str,
                  id2label: dict[int, str]) -> None:
    """metrics.json, the run's training_args.json and data_report.json, the plots and the examples."""
    from ..plots import plot_confusion_matrix, plot_training_curves

    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    for name in ("training_args.json", "data_report.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, output_dir / name)
    labels = [id2label[i] for i in range(len(id2label))]
    plot_confusion_matrix(report.predictions, report.references, labels, output_dir / "confusion_matrix.png",
                          title=report_split)
    plot_training_curves(results["history"], output_dir / "training_curves.png")
    write_examples(prepared.validation, id2label, output_dir / "examples")


def write_lora_folders(run: Any, adapter: Any, merged: Any, state_dict: dict, staging: Path, results: dict,
                       report: Any, split: str) -> None:
    """The adapter folder (and, with merge_lora, the merged model folder around it), main process only."""
    from ..hub.model_card import write_adapter_card

    config = adapter.get_base_model().config
    if run.model_args.merge_lora:
        write_model_folder(merged, state_dict, run.accelerator, staging, run.run_dir, run.prepared, results, report,
                           split, run.mean, run.std)
        folder = staging / lora.ADAPTER_DIR
    else:  # the output folder is the adapter's, with the run's records and plots
        write_records(staging, run.run_dir, run.prepared, results, report, split, config.id2label)
        folder = staging
    write_adapter_folder(adapter, folder, run, config, results)
    write_adapter_card(folder)


def write_adapter_folder(adapter: Any, folder: Path, run: Any, config: Any, results: dict) -> None:
    """adapter_config.json, adapter_model.safetensors, base_model_overrides.json, preprocessor_config.json and the
    records the adapter's model card reads (metrics.json, training_args.json)."""
    from ..data import build_image_processor

    lora.write_adapter_folder(adapter, folder, run.model_args, config)
    build_image_processor(config.image_size, config.num_channels, run.mean, run.std).save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps(results, indent=2))
    if (run.run_dir / "training_args.json").is_file():
        shutil.copy2(run.run_dir / "training_args.json", folder / "training_args.json")


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
