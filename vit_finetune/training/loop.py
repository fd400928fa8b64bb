"""The training loop: set-up, then for every batch the step, and at step boundaries logging, evaluation and
checkpoints; at the end the model folder.

    train(model_args, data_args, args) -> metrics.json's contents

Batches are augmented on the device, gradients accumulate over `gradient_accumulation_steps` batches, and the
host reads anything from the device only at a step that logs, evaluates or saves (`LossMeter.read`, also the
NaN guard). A checkpoint is written at each evaluation, every `checkpointing_steps` and at each epoch end; a
resumed run skips the batches its epoch already consumed and reseeds every batch, so it continues exactly.

The fine-tuning methods hook in at four places: the epoch's start (which parameters train: `freezing.py`), the
loss (class weights: `imbalance.py`), after each optimizer step (the weight EMA: `ema.py`) and after each
evaluation (early stopping: `early_stopping.py`). LoRA is set up once (`run.py`, `lora.py`) and needs no hook.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..evaluation import evaluate_model, format_metrics
from . import checkpointing
from .divergence import LossMeter, check_finite_weights
from ..modeling_vit import classification_loss
from .early_stopping import should_stop
from .imbalance import weighted_loss
from .export import finish
from .output_folder import claimed
from .run import Run, set_up
from .sampling import reseed_for_batch

logger = logging.getLogger(__name__)


def train(model_args: Any, data_args: Any, args: Any) -> dict[str, Any]:
    """Runs one training job and writes the model folder; returns the contents of metrics.json."""
    with claimed(Path(args.output_dir), model_args.model_name_or_path):
        run = set_up(model_args, data_args, args)
        fit(run)
        return finish(run)


def fit(run: Run) -> None:
    """From the run's state (step 0, or a checkpoint's) to `max_steps`, evaluating and saving on the way."""
    from tqdm.auto import tqdm

    args, state, accelerator, schedule = run.args, run.state, run.accelerator, run.schedule
    losses = LossMeter(accelerator.device)  # on the device: no host sync per step
    progress = tqdm(total=schedule.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True,
                    disable=not accelerator.is_local_main_process)
    stop = state.global_step >= schedule.max_steps or state.stopped_early_at is not None
    start_epoch, resume_steps = state.epoch, state.step_in_epoch
    for epoch in range(start_epoch, schedule.num_epochs):
        if stop:
            break
        run.train_sampler.set_epoch(epoch)  # the shuffle order of this epoch, the same on every process
        run.freezing.apply_stage(run.model, run.unwrapped(), epoch)  # train mode; a frozen backbone for a probe
        skipped = resume_steps * args.gradient_accumulation_steps if epoch == start_epoch else 0
        batches = accelerator.skip_first_batches(run.train_loader, skipped) if skipped else run.train_loader
        step_in_epoch = skipped // args.gradient_accumulation_steps
        epoch_finished = due_eval = False
        for batch_index, batch in enumerate(batches, start=skipped):
            reseed_for_batch(args.seed, epoch, batch_index, accelerator.process_index)
            losses.add(train_step(run, batch))
            state.train_samples += batch["labels"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue  # inside an accumulation window: no optimizer step yet

            # -- one optimizer step is done --
            # fp16 skips steps with inf gradients (the scaler's check read the device: fp16 only)
            stepped = not accelerator.optimizer_step_was_skipped
            if stepped:
                run.scheduler.step()
            state.global_step += 1
            if run.ema is not None and stepped:
                run.ema.update(run.unwrapped(), step=state.global_step)
            step_in_epoch += 1
            progress.update(1)
            last_batch = batch_index + 1 == schedule.batches_per_epoch
            stop = state.global_step >= schedule.max_steps
            due_eval = args.eval_strategy == "steps" and state.global_step % args.eval_steps == 0
            due_save = bool(args.checkpointing_steps) and state.global_step % args.checkpointing_steps == 0
            due_log = state.global_step % args.logging_steps == 0
            if not (due_log or due_eval or due_save or last_batch or stop):
                continue

            time_up = args.max_train_minutes is not None and run.elapsed() > 60 * args.max_train_minutes
            # The loop's one host sync, only at these steps: mean loss, NaN check, everyone's time budget.
            mean_loss, time_up = losses.read(accelerator, state, run.output_dir, time_up)
            log_training(run, progress, mean_loss)
            if time_up:
                logger.info("max_train_minutes=%s spent at step %d: stopping", args.max_train_minutes,
                            state.global_step)
            stop = stop or time_up
            if last_batch:
                epoch_finished = True
                break  # evaluated and saved below, as the end of the epoch
            if due_eval or stop:
                stop = evaluate(run) or stop  # syncs: gathers every process's predictions; may stop early
            if due_eval or due_save or stop:
                save(run, epoch, step_in_epoch)  # mid-epoch: a resume skips the batches of step_in_epoch steps
            if stop:
                break

        if epoch_finished:
            if args.eval_strategy == "epoch" or due_eval or stop:
                stop = evaluate(run) or stop
            save(run, epoch + 1, 0)
        resume_steps = 0
    progress.close()
    if not state.history or state.history[-1]["step"] != state.global_step:
        evaluate(run)  # only when resuming a run that stopped before its last evaluation


def train_step(run: Run, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Forward and backward of one batch; the optimizer steps on the last batch of an accumulation window."""
    accelerator, model, optimizer, args = run.accelerator, run.model, run.optimizer, run.args
    with accelerator.accumulate(model):
        images, targets = run.augment(batch["pixel_values"], batch["labels"])
        logits = model(pixel_values=images).logits
        if run.class_weights is None:
            loss = classification_loss(logits, targets, "single_label_classification",
                                       label_smoothing=args.label_smoothing_factor)
        else:  # --class_weights balanced
            loss = weighted_loss(logits, targets, run.class_weights, label_smoothing=args.label_smoothing_factor)
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()  # a no-op until the last batch of an accumulation window
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def log_training(run: Run, progress: Any, mean_loss: float | None) -> None:
    if mean_loss is None:
        return
    state = run.state
    lr = max(run.scheduler.get_last_lr())
    speed = (state.global_step - run.step_at_start) * run.images_per_step / max(time.time() - run.started, 1e-9)
    progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}")
    run.accelerator.log({"train/loss": mean_loss, "train/learning_rate": lr, "train/images_per_s": speed,
                         "train/epoch": state.global_step / run.schedule.steps_per_epoch}, step=state.global_step)


def evaluate(run: Run) -> bool:
    """Validation metrics of the model as it trains (with its autocast), and of its EMA beside it, recorded in the
    history; returns whether early stopping ends the run here."""
    state, accelerator, metric = run.state, run.accelerator, run.args.metric_for_best_model
    result = evaluate_model(run.model, run.eval_loader, accelerator, run.metrics, mean=run.mean, std=run.std)
    ema_metrics = None
    if run.ema is not None:
        with accelerator.autocast():  # the same precision as the raw weights' evaluation
            ema_metrics = evaluate_model(run.ema.module, run.eval_loader, accelerator, run.metrics, mean=run.mean,
                                         std=run.std).metrics
        accelerator.log({f"eval_ema/{k}": v for k, v in ema_metrics.items()}, step=state.global_step)
    record = state.record_evaluation(result.metrics, metric=metric, steps_per_epoch=run.schedule.steps_per_epoch,
                                     learning_rate=max(run.scheduler.get_last_lr()), elapsed_s=run.elapsed(),
                                     ema_values=ema_metrics)
    accelerator.log({f"eval/{k}": v for k, v in result.metrics.items()}, step=state.global_step)
    logger.info("eval at step %d (epoch %.2f, %.1f min): %s%s%s", state.global_step, record["epoch"],
                record["elapsed_s"] / 60, format_metrics(result.metrics),
                f" | EMA: {format_metrics(ema_metrics)}" if ema_metrics else "",
                " (best so far)" if state.best_step == state.global_step else "")
    return should_stop(state, state.last_eval[metric], run.args)


def save(run: Run, epoch: int, step_in_epoch: int) -> None:
    """A checkpoint to resume from at (epoch, step_in_epoch); never one of non-finite weights."""
    state = run.state
    check_finite_weights(run.model, run.accelerator, state.global_step, run.output_dir)  # syncs: reads one flag
    state.epoch, state.step_in_epoch, state.elapsed_s = epoch, step_in_epoch, run.elapsed()
    state.scheduler = run.scheduler.state_dict()
    keep = {state.best_step} if state.best_step is not None else set()  # rotation never deletes the best
    path = checkpointing.save_checkpoint(run.accelerator, run.output_dir, dataclasses.asdict(state),
                                         save_total_limit=run.args.save_total_limit, keep_steps=keep,
                                         write_extra=run.ema.save if run.ema is not None else None)
    logger.debug("saved %s", path)
