"""`vit-finetune eval`: the metrics of a trained model folder on a folder of images or a split of a dataset.

    vit-finetune eval outputs/fashion_mnist --image_dir data/fashion_mnist/test
    vit-finetune eval outputs/fashion_mnist --dataset_name some/hub_dataset --split test

Images go through training's data path (`vit_finetune.data`: same decoding, same pixels, bad files skipped and
reported) and the metrics are `vit_finetune.evaluation`'s, so a model evaluated here on its test folder scores
what metrics.json says. Writes eval_results.json and confusion_matrix.png into `<model>/eval_<split>/`.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .arguments import ConfigError, parse_arguments
from .evaluation import MetricSuite, evaluate_model, format_metrics


@dataclass
class EvalArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A model folder written by `vit-finetune train` (or a Hub id of one)."}
    )
    image_dir: str | None = field(
        default=None,
        metadata={"help": "Evaluate the images of this folder (one sub-folder per class, named like the model's "
                  "labels). Otherwise the data arguments (--dataset_name, --train_dir ...) and --split say what."},
    )
    split: str = field(default="test", metadata={"help": "With the data arguments: train, validation or test."})
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where eval_results.json and confusion_matrix.png go (default: <model>/eval_<split>)."},
    )
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    mixed_precision: str | None = field(default=None, metadata={"help": "no, bf16 or fp16 (fp16 needs a GPU)."})
    use_cpu: bool = field(default=False, metadata={"help": "Evaluate on the CPU even if a GPU is present."})
    seed: int = field(default=42, metadata={"help": "Seed of the train/validation split when one is carved."})

    def __post_init__(self) -> None:
        if self.split not in ("train", "validation", "test"):
            raise ValueError(f"split must be train, validation or test, got {self.split!r}")
        if self.per_device_eval_batch_size < 1:
            raise ValueError(f"per_device_eval_batch_size must be >= 1, got {self.per_device_eval_batch_size}")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.image_dir is not None and not Path(self.image_dir).is_dir():
            raise ValueError(f"image_dir {self.image_dir}: no such folder")


def remap_labels(dataset: Any, data_id2label: dict[int, str], model_label2id: dict[str, int]) -> Any:
    """The dataset's label ids translated into the model's ids, matching classes by name."""
    unknown = sorted(set(data_id2label.values()) - set(model_label2id))
    if unknown:
        raise ValueError(
            f"the dataset has classes the model does not know: {unknown} (model classes: {sorted(model_label2id)})"
        )
    table = torch.tensor([model_label2id[data_id2label[i]] for i in range(len(data_id2label))])
    if torch.equal(table, torch.arange(len(table))):
        return dataset
    remapped = dataset.with_format(None).map(
        lambda batch: {"labels": table[torch.as_tensor(batch["labels"])].tolist()}, batched=True
    )
    remapped.set_format("torch", columns=["pixel_values", "labels"], dtype=None)
    return remapped


def load_split(eval_args: EvalArguments, data_args: Any, config: Any, split: str, output_dir: Path,
               accelerator: Any) -> tuple[Any, dict[str, Any], str]:
    """(dataset labelled with the model's ids, data report, source) of what to evaluate. ValueError: bad data."""
    from .data import prepare_datasets, prepare_image_folder

    model_label2id = {str(name): int(i) for name, i in config.label2id.items()}
    if eval_args.image_dir:
        # The data path of training's --test_dir: same decoding, same pixels, bad files skipped and reported.
        dataset, report = prepare_image_folder(
            eval_args.image_dir,
            label2id=model_label2id,
            image_size=config.image_size,
            num_channels=config.num_channels,
            output_dir=str(output_dir),
            split=split,
            cache_dir=data_args.cache_dir,
            num_proc=data_args.preprocessing_num_workers,
            overwrite_cache=data_args.overwrite_cache,
            main_process_first=accelerator.main_process_first,
        )
        return dataset, report, eval_args.image_dir
    prepared = prepare_datasets(
        data_args,
        image_size=config.image_size,
        num_channels=config.num_channels,
        output_dir=str(output_dir),
        seed=eval_args.seed,
        main_process_first=accelerator.main_process_first,
    )
    dataset = getattr(prepared, eval_args.split)
    if dataset is None:
        raise ValueError(f"the dataset has no {eval_args.split} split")
    dataset = remap_labels(dataset, {int(k): v for k, v in prepared.id2label.items()}, model_label2id)
    return dataset, prepared.report, prepared.report.get("source", "")


# Skipped files listed one per line on stderr; the rest are in the report.
MAX_SKIPPED_SHOWN = 20


def print_skipped(skipped: list[dict[str, str]], report_path: Path) -> None:
    """One line per unreadable image that was left out of the metrics (stderr), then where the full list is."""
    if not skipped:
        return
    print(f"vit-finetune eval: skipped {len(skipped)} unreadable image(s), not counted in the metrics:",
          file=sys.stderr)
    for item in skipped[:MAX_SKIPPED_SHOWN]:
        print(f"  {item['path']}: {item['reason']}", file=sys.stderr)
    if len(skipped) > MAX_SKIPPED_SHOWN:
        print(f"  ... and {len(skipped) - MAX_SKIPPED_SHOWN} more", file=sys.stderr)
    print(f"  (all of them in {report_path})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """0 on success, 2 on bad arguments, a model that cannot be loaded or data that cannot be evaluated."""
    from accelerate import Accelerator

    from .convert import ModelLoadError
    from .data import DataArguments
    from .predict import load_model_and_stats
    from .training.devices import accelerator_kwargs

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # `vit-finetune eval MODEL_DIR ...`
        argv = ["--model_name_or_path", argv[0], *argv[1:]]
    try:
        eval_args, data_args = parse_arguments(argv, (EvalArguments, DataArguments), prog="vit-finetune eval")
        if not eval_args.model_name_or_path:
            raise ConfigError("--model_name_or_path (a trained model folder) is required")
    except ValueError as error:
        print(f"vit-finetune eval: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("accelerate").setLevel(logging.WARNING)

    try:  # before any work: a missing folder, a folder without a model, a Hub id that cannot be fetched
        model, mean, std = load_model_and_stats(eval_args.model_name_or_path, "cpu")
    except ModelLoadError as error:
        print(f"vit-finetune eval: error: {error}", file=sys.stderr)
        return 2
    accelerator = Accelerator(**accelerator_kwargs(eval_args.use_cpu, eval_args.mixed_precision))
    split = "images" if eval_args.image_dir else eval_args.split
    output_dir = Path(eval_args.output_dir or Path(eval_args.model_name_or_path) / f"eval_{split}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    try:
        dataset, report, source = load_split(eval_args, data_args, model.config, split, output_dir, accelerator)
    except ValueError as error:  # data errors name the folder, file or class
        print(f"vit-finetune eval: error: {error}", file=sys.stderr)
        return 2
    # Only the evaluated split's bad files matter here (the data arguments' path also decodes the others).
    skipped = [item for item in report["skipped"] if item["split"] == split]

    loader = torch.utils.data.DataLoader(dataset, batch_size=eval_args.per_device_eval_batch_size)
    config = model.config
    model, loader = accelerator.prepare(model, loader)
    with accelerator.local_main_process_first():  # one process per machine copies the metric modules first
        metrics = MetricSuite()
    result = evaluate_model(model, loader, accelerator, metrics, mean=mean, std=std)
    if accelerator.is_main_process:
        write_results(result, config, split, source, skipped, eval_args, data_args, accelerator.num_processes,
                      output_dir)
    accelerator.end_training()
    return 0


def write_results(result: Any, config: Any, split: str, source: str, skipped: list[dict[str, str]],
                  eval_args: EvalArguments, data_args: Any, num_processes: int, output_dir: Path) -> None:
    """eval_results.json and confusion_matrix.png into `output_dir`, and the summary on the terminal."""
    from .data import REPORT_FILENAME
    from .plots import plot_confusion_matrix

    labels = [config.id2label[i] for i in range(config.num_labels)]
    plot_confusion_matrix(result.predictions, result.references, labels, output_dir / "confusion_matrix.png",
                          title=split)
    record = {split: result.metrics, "model": str(eval_args.model_name_or_path), "data": source,
              "skipped": skipped, "num_processes": num_processes,
              "arguments": {**asdict(eval_args), **({} if eval_args.image_dir else asdict(data_args))}}
    (output_dir / "eval_results.json").write_text(json.dumps(record, indent=2))
    print_skipped(skipped, output_dir / REPORT_FILENAME)
    print(f"{split}: {format_metrics(result.metrics)}")
    print(f"results: {output_dir / 'eval_results.json'}; confusion matrix: {output_dir / 'confusion_matrix.png'}")


if __name__ == "__main__":
    sys.exit(main())
