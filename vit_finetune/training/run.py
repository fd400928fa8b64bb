"""The set-up of a training run: everything the loop needs, built once, in an order that keeps runs reproducible.

The order matters for the random numbers: the model is initialised right after `set_seed`, the new head after
the data is known, and nothing else draws from torch's RNG before the loop reseeds it per batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arguments import ConfigError
from ..evaluation import MetricSuite
from .arguments import resolved_arguments
from .devices import training_accelerator
from .ema import WeightEma
from .freezing import Freezing
from .imbalance import balanced_class_weights, class_counts
from .model import enable_gradient_checkpointing, load_model, prepare_model
from .optim import Schedule, build_optimizer, build_scheduler
from .output_folder import resume_point, start_run_records
from .sampling import BalancedSampler, EpochSampler, batch_loader
from .state import TrainerState, resume

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """The objects of one training run, shared by the loop (`loop.py`) and the export (`export.py`)."""

    model_args: Any
    data_args: Any
    args: Any  # TrainingArguments
    output_dir: Path
    run_dir: Path  # this run's training_args.json and data_report.json, until the model folder is published
    accelerator: Any
    model: Any  # as prepared by Accelerate (wrapped for DDP / FSDP, autocast)
    optimizer: Any
    scheduler: Any
    augment: Any  # data.BatchAugmentation, on the device
    train_sampler: EpochSampler
    train_loader: Any
    eval_loader: Any
    metrics: MetricSuite
    prepared: Any  # data.PreparedData
    mean: list[float]
    std: list[float]
    schedule: Schedule
    state: TrainerState
    freezing: Freezing
    ema: WeightEma | None = None  # --ema_decay
    class_weights: Any = None  # --class_weights balanced: a (num_labels,) tensor on the device
    started: float = field(default_factory=time.time)  # this process's start of training
    step_at_start: int = 0
    elapsed_at_start: float = 0.0

    def unwrapped(self) -> Any:
        """The model inside Accelerate's wrappers (DDP, torch.compile), still training under its autocast (taking
        that off, keep_fp32_wrapper=False, changes the model in place: export does it at the very end)."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def elapsed(self) -> float:
        """Seconds of training, across resumes."""
        return self.elapsed_at_start + time.time() - self.started

    @property
    def images_per_step(self) -> int:
        args = self.args
        return args.per_device_train_batch_size * args.gradient_accumulation_steps * self.accelerator.num_processes


def set_up(model_args: Any, data_args: Any, args: Any) -> Run:
    from accelerate.utils import set_seed

    from ..data import BatchAugmentation

    output_dir = Path(args.output_dir)
    accelerator = training_accelerator(args, output_dir)
    main_process = accelerator.is_main_process
    resume_from = resume_point(output_dir, args, main_process)  # a fresh run, or a resumed one?
    run_dir = start_run_records(output_dir, resolved_arguments(model_args, data_args, args), main_process)
    accelerator.wait_for_everyone()

    set_seed(args.seed)  # same initial weights on every process
    with accelerator.local_main_process_first():  # one Hub download per machine; the others read the cache
        model, source_mean, source_std = load_model(model_args)
    config = model.config
    prepared = prepare_data(data_args, config, run_dir, args.seed, accelerator)
    mean, std = prepare_model(model, model_args, prepared.id2label, source_mean, source_std)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if model_args.finetune == "lora":
        from .lora import add_adapters

        model = add_adapters(model, model_args)
    augment = BatchAugmentation(data_args, image_size=config.image_size, num_channels=config.num_channels,
                                num_labels=len(prepared.id2label), mean=mean, std=std).to(accelerator.device)
    train_labels = prepared.train.with_format(None)["labels"]
    if args.sampler == "balanced":
        train_sampler = BalancedSampler(train_labels, args.seed)
        logger.info("sampler balanced: classes drawn equally often (training images per class: %s)",
                    class_counts(train_labels, len(prepared.id2label)).tolist())
    else:
        train_sampler = EpochSampler(len(prepared.train), args.seed)
    workers = args.dataloader_num_workers
    train_loader = batch_loader(prepared.train, args.per_device_train_batch_size, workers, sampler=train_sampler)
    eval_loader = batch_loader(prepared.validation, args.per_device_eval_batch_size, workers)
    optimizer = build_optimizer(model, args)
    ema = None
    if args.ema_decay:
        if accelerator.distributed_type.value == "FSDP":
            raise ConfigError("ema_decay averages the whole model on every process: it does not work with FSDP's "
                              "sharded parameters (use DDP, or train without --ema_decay)")
        # Copied before prepare(): the copy must be of the plain model, not of its autocast or compiled wrappers.
        ema = WeightEma.create(model.to(accelerator.device), args.ema_decay, args.ema_warmup)
    # The loaders must be sharded before the schedule is sized: each process sees 1/N of the batches.
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    schedule = Schedule.of(len(train_loader), args)
    scheduler = build_scheduler(optimizer, args, schedule)
    class_weights = None
    if args.class_weights == "balanced":
        class_weights = balanced_class_weights(train_labels, len(prepared.id2label)).to(accelerator.device)
        logger.info("class_weights balanced: %s", [round(w, 3) for w in class_weights.tolist()])
    with accelerator.local_main_process_first():  # one process per machine copies the metric modules first
        metrics = MetricSuite()

    state = TrainerState.start(args, model_args, num_processes=accelerator.num_processes,
                               train_images=len(prepared.train))
    if resume_from is not None:
        state = resume(resume_from, state, accelerator, optimizer, scheduler)
        if ema is not None:
            try:
                ema.load(resume_from)
            except FileNotFoundError as error:
                raise ConfigError(str(error)) from None
        logger.info("resumed from %s: epoch %d, step %d of %d", resume_from, state.epoch, state.global_step,
                    schedule.max_steps)
    run = Run(model_args, data_args, args, output_dir, run_dir, accelerator, model, optimizer, scheduler, augment,
              train_sampler, train_loader, eval_loader, metrics, prepared, mean, std, schedule, state,
              Freezing(model_args.finetune, args.freeze_epochs), ema, class_weights)
    logger.info("%d training images, %d validation images; %d steps of %d images (%d per epoch, %d epochs), "
                "warmup %d", len(prepared.train), len(prepared.validation), schedule.max_steps, run.images_per_step,
                schedule.steps_per_epoch, schedule.num_epochs, schedule.warmup_steps)
    if any(t != "none" for t in args.trackers()):
        loggable = {k: v for k, v in resolved_arguments(model_args, data_args, args).items()
                    if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(args.run_name or output_dir.name, config=loggable)
    run.started, run.step_at_start, run.elapsed_at_start = time.time(), state.global_step, state.elapsed_s
    return run


def prepare_data(data_args: Any, config: Any, run_dir: Path, seed: int, accelerator: Any) -> Any:
    """The splits at the model's resolution (data.prepare_datasets); bad data is a ConfigError naming it."""
    from ..data import prepare_datasets

    try:
        return prepare_datasets(
            data_args,
            image_size=config.image_size,
            num_channels=config.num_channels,
            output_dir=str(run_dir),
            seed=seed,
            main_process_first=accelerator.main_process_first,
        )
    except ValueError as error:  # missing folders, empty splits, unknown columns: the message names them
        raise ConfigError(f"data: {error}") from error
