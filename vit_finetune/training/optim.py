"""The optimizer and the learning-rate schedule: AdamW over parameter groups, warmup then the chosen decay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..arguments import ConfigError


def build_optimizer(model: torch.nn.Module, args: Any) -> torch.optim.AdamW:
    """AdamW over parameter groups: decay or not, and (with layer_decay) a learning rate per depth.

    The model says which parameters take no weight decay (`no_weight_decay()`: norms, biases, LayerScale,
    position embeddings, the CLS token) and how deep each one is (`layer_id(name)`, 0 = embeddings up to
    `num_layer_ids() - 1` = final norm and head). With layer_decay, depth d gets
    lr * layer_decay^(num_layer_ids - 1 - d): the head trains at the full rate, the embeddings slowest (BEiT).

    A peft model (LoRA) is asked through its base model, whose names lack peft's "base_model.model." prefix: an
    adapter of block i is at block i's depth, and the saved copy of the head at the head's.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = "base_model.model." if inner is not model else ""
    no_decay = inner.no_weight_decay()
    top = inner.num_layer_ids() - 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for full_name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        name = full_name.removeprefix(prefix)
        layer = inner.layer_id(name) if args.layer_decay else 0
        scale = args.layer_decay ** (top - layer) if args.layer_decay else 1.0
        group = groups.setdefault((layer, name in no_decay), {
            "params": [], "names": [], "lr": args.learning_rate * scale,
            "weight_decay": 0.0 if name in no_decay else args.weight_decay,
        })
        group["params"].append(parameter)
        group["names"].append(name)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    # fused: one kernel for the whole update instead of ~8 element-wise ops per tensor (about 40% of a
    # ViT-Ti CPU step went to the unfused update; benchmarks/models.py).
    return torch.optim.AdamW(
        list(groups.values()), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        fused=True,
    )


@dataclass(frozen=True)
class Schedule:
    """How long a run is, counted on the sharded loader (each process sees 1/N of the batches)."""

    batches_per_epoch: int  # per process
    steps_per_epoch: int  # optimizer steps
    max_steps: int
    num_epochs: int
    warmup_steps: int
    freeze_steps: int = 0  # staged unfreezing: the steps of the head-only epochs

    @classmethod
    def of(cls, batches_per_epoch: int, args: Any) -> Schedule:
        steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        num_epochs = math.ceil(max_steps / steps_per_epoch)
        freeze_steps = args.freeze_epochs * steps_per_epoch
        if args.freeze_epochs and freeze_steps >= max_steps:
            raise ConfigError(f"freeze_epochs {args.freeze_epochs} covers the whole run ({max_steps} steps, "
                              f"{steps_per_epoch} per epoch): the backbone would never train; lower it or train "
                              "longer")
        if freeze_steps:
            warmup = stage_warmup_steps(freeze_steps, args) + stage_warmup_steps(max_steps - freeze_steps, args)
        else:
            warmup = args.warmup_steps or math.ceil(args.warmup_ratio * max_steps)
        return cls(batches_per_epoch=batches_per_epoch, steps_per_epoch=steps_per_epoch, max_steps=max_steps,
                   num_epochs=num_epochs, warmup_steps=warmup, freeze_steps=freeze_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, args: Any, schedule: Schedule) -> Any:
    """transformers' schedule (a LambdaLR), stepped by hand after each optimizer update.

    Not passed to `accelerator.prepare()`: Accelerate's wrapper would step it once per process per step, and
    save it as custom state (a pickle that load_state unpickles in full). Its state goes into
    trainer_state.json instead.

    With staged unfreezing (`freeze_epochs`) each stage has its own warm-up and decay: the head's epochs, then
    the rest once everything trains, so the newly thawed backbone starts from a low learning rate again.
    """
    from transformers import get_scheduler

    if not schedule.freeze_steps:
        return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=schedule.warmup_steps,
                             num_training_steps=schedule.max_steps)
    first = _schedule_factor(args.lr_scheduler_type, schedule.freeze_steps, args)
    second = _schedule_factor(args.lr_scheduler_type, schedule.max_steps - schedule.freeze_steps, args)
    boundary = schedule.freeze_steps

    def staged(step: int) -> float:  # a plain function: LambdaLR's state_dict then stays plain numbers (JSON)
        return first(step) if step < boundary else second(step - boundary)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, staged)


def stage_warmup_steps(stage_steps: int, args: Any) -> int:
    """A stage's warm-up: warmup_steps (at most the stage's length) if set, else warmup_ratio of the stage."""
    return min(args.warmup_steps, stage_steps) if args.warmup_steps else math.ceil(args.warmup_ratio * stage_steps)


def _schedule_factor(name: str, steps: int, args: Any) -> Any:
    """transformers' learning-rate factor of step t for a schedule `steps` long (read off a throwaway LambdaLR)."""
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return get_scheduler(name, probe, num_warmup_steps=stage_warmup_steps(steps, args),
                         num_training_steps=steps).lr_lambdas[0]
