"""Progress that is not a tensor (`TrainerState`, saved as trainer_state.json in each checkpoint), and resuming it.

Exact resume: model, optimizer and scaler states come back from `accelerator.load_state`, the schedule and the
progress from trainer_state.json (no pickle is ever loaded), and the batch order from `sampling`. What the order
of batches depends on must not change between a checkpoint and its resumption (`RESUME_INVARIANTS`); optimizer
settings may, and a change applies from the resume point on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arguments import ConfigError
from ..evaluation import LOWER_IS_BETTER
from . import checkpointing

logger = logging.getLogger(__name__)

# Fields that must not change on resume: the order of batches, the parameter groups and what the checkpoint
# holds (adapters, the EMA) depend on them.
RESUME_INVARIANTS = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_processes", "seed",
                     "train_images", "freeze_backbone", "finetune", "lora", "freeze_epochs", "ema_decay", "sampler")
# Optimizer settings a resumed run may change: they apply from the resume point on, and are recorded.
OPTIMIZER_SETTINGS = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "layer_decay")


@dataclass
class TrainerState:
    """Everything about progress that is not a tensor; saved as trainer_state.json in each checkpoint."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress
    step_in_epoch: int = 0  # optimizer steps done within it
    train_samples: int = 0  # images consumed, all processes together
    elapsed_s: float = 0.0  # wall time of training so far, across resumes
    best_metric: float | None = None
    best_step: int | None = None
    best_eval: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None
    best_weights: str = "raw"  # which weights scored best_metric: "raw", or "ema" (--ema_decay)
    # early stopping: the best value it counts from, evaluations since it improved, where it stopped the run
    patience_best: float | None = None
    evaluations_without_improvement: int = 0
    stopped_early_at: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    loss_sum_since_eval: float = 0.0  # for the mean train loss that each history entry records
    loss_count_since_eval: int = 0
    # what must not change between a checkpoint and its resumption (for the order of batches to be the same)
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 0
    num_processes: int = 0
    seed: int = 0
    train_images: int = 0
    freeze_backbone: bool = False
    finetune: str | None = None  # full | linear_probe | lora (None: a checkpoint from before the option)
    lora: dict[str, Any] | None = None  # rank, alpha, dropout, targets, modules_to_save (the parameter set)
    freeze_epochs: int = 0
    ema_decay: float | None = None
    sampler: str = "random"
    # the LR schedule's state (plain numbers): kept here rather than in a pickle that resuming would unpickle
    scheduler: dict[str, Any] | None = None
    # optimizer settings in force, and each change a resumed run made to them: {"step", "field", "from", "to"}
    optimizer_settings: dict[str, Any] = field(default_factory=dict)
    setting_changes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, args: Any, model_args: Any, *, num_processes: int, train_images: int) -> TrainerState:
        """The state of a run at step 0, holding what a resume of it must match."""
        lora = None
        if model_args.finetune == "lora":
            lora = {"r": model_args.lora_r, "alpha": model_args.lora_alpha, "dropout": model_args.lora_dropout,
                    "target_modules": list(model_args.lora_target_modules),
                    "modules_to_save": list(model_args.lora_modules_to_save)}
        return cls(per_device_train_batch_size=args.per_device_train_batch_size,
                   gradient_accumulation_steps=args.gradient_accumulation_steps, num_processes=num_processes,
                   seed=args.seed, train_images=train_images, freeze_backbone=model_args.finetune == "linear_probe",
                   finetune=model_args.finetune, lora=lora, freeze_epochs=args.freeze_epochs,
                   ema_decay=args.ema_decay, sampler=args.sampler,
                   optimizer_settings={name: getattr(args, name) for name in OPTIMIZER_SETTINGS})

    def record_evaluation(self, values: dict[str, Any], *, metric: str, steps_per_epoch: int, learning_rate: float,
                          elapsed_s: float, ema_values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Appends a history entry (with the mean train loss since the last one) and keeps the best; returns it.

        With `ema_values` (the EMA weights' metrics) the entry has both, and this evaluation counts with the
        better of the two; `last_eval["weights"]` and `best_weights` say which one that was.
        """
        count = self.loss_count_since_eval
        train_loss = self.loss_sum_since_eval / count if count else None
        self.loss_sum_since_eval, self.loss_count_since_eval = 0.0, 0
        record = {"step": self.global_step, "epoch": round(self.global_step / steps_per_epoch, 4),
                  "train_loss": train_loss, "eval_accuracy": values["accuracy"], "eval_loss": values["loss"],
                  "eval_top5_accuracy": values["top5_accuracy"], "eval_f1_macro": values["f1_macro"],
                  "learning_rate": learning_rate, "elapsed_s": round(elapsed_s, 2)}
        weights, chosen = "raw", values
        if ema_values is not None:
            record.update({f"ema_eval_{key}": ema_values[key] for key in ("accuracy", "loss", "top5_accuracy",
                                                                           "f1_macro")})
            if is_better(ema_values[metric], values[metric], metric):
                weights, chosen = "ema", ema_values
        self.history.append(record)
        self.last_eval = dict(chosen, step=self.global_step, weights=weights)
        if is_better(chosen[metric], self.best_metric, metric):
            self.best_metric, self.best_step, self.best_eval = chosen[metric], self.global_step, self.last_eval
            self.best_weights = weights
        return record


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def resume(checkpoint: Path, state: TrainerState, accelerator: Any, optimizer: Any, scheduler: Any) -> TrainerState:
    """Loads a checkpoint into the prepared objects and returns its trainer state.

    Optimizer settings changed since the checkpoint (a lower learning rate after a divergence, say) apply from
    the resume point on: `load_state` brings back the checkpoint's values, which are replaced by this run's,
    and each change is recorded in `setting_changes` (metrics.json and the model card show them).
    """
    saved_fields = checkpointing.read_trainer_state(checkpoint)
    saved = TrainerState(**saved_fields)
    if "finetune" not in saved_fields:  # older checkpoints: a linear probe or full fine-tuning
        saved.finetune = "linear_probe" if saved.freeze_backbone else "full"
    for name in RESUME_INVARIANTS:
        if getattr(saved, name) != getattr(state, name):
            raise ConfigError(f"{checkpoint} was written with {name}={getattr(saved, name)}, this run has "
                              f"{getattr(state, name)}: an exact resume needs the same value")
    before = saved.optimizer_settings.get("layer_decay")
    if saved.optimizer_settings and (before is None) != (state.optimizer_settings["layer_decay"] is None):
        raise ConfigError(f"{checkpoint} was written with layer_decay={before}: switching layer-wise decay on or "
                          "off changes the optimizer's parameter groups, so it cannot change on resume")
    built = [{"initial_lr": g["initial_lr"], "weight_decay": g["weight_decay"], "betas": g["betas"], "eps": g["eps"]}
             for g in optimizer.param_groups]
    try:
        schedule = saved.scheduler or checkpointing.read_legacy_scheduler_state(checkpoint)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    checkpointing.load_state_without_pickles(accelerator, checkpoint)
    scheduler.load_state_dict(schedule)
    changes = [{"step": saved.global_step, "field": name, "from": old, "to": state.optimizer_settings[name]}
               for name, old in saved.optimizer_settings.items() if old != state.optimizer_settings.get(name)]
    if changes or not saved.optimizer_settings:  # a checkpoint from before settings were recorded: apply them
        _apply_settings(optimizer, scheduler, built)
        for change in changes:
            logger.info("resuming with %s=%s (the checkpoint had %s): applied from step %d on",
                        change["field"], change["to"], change["from"], change["step"])
    saved.setting_changes = saved.setting_changes + changes
    saved.optimizer_settings = state.optimizer_settings
    return saved


def _apply_settings(optimizer: Any, scheduler: Any, built: list[dict[str, Any]]) -> None:
    """Puts this run's group settings back over the checkpoint's, and the learning rate at the resume point on
    the schedule of the new peak (transformers' schedules are LambdaLR: base lr times a factor of the step)."""
    for group, values in zip(optimizer.param_groups, built, strict=True):
        group.update(values)
    scheduler.base_lrs = [values["initial_lr"] for values in built]
    lrs = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs
