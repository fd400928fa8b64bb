"""Which device(s) a run uses: Accelerate's `Accelerator`, set up the same way by `train` and `eval`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def has_accelerator_device() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def accelerator_kwargs(use_cpu: bool, mixed_precision: str | None) -> dict[str, Any]:
    """Device arguments for `Accelerator`, making multi-process CPU runs work without a special flag.

    Under torchrun or `accelerate launch --multi_gpu` on a machine with no GPU, Accelerate (1.15) only turns
    on gloo multi-process training when created with `cpu=True`; otherwise each process trains alone.
    """
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = use_cpu or (launched_distributed and not has_accelerator_device())
    return {"cpu": cpu, "mixed_precision": mixed_precision}


def training_accelerator(args: Any, output_dir: Path) -> Any:
    """The Accelerator of a training run: devices, mixed precision, accumulation, trackers' folder."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    handlers = []
    if args.freeze_epochs:
        from accelerate.utils import DistributedDataParallelKwargs

        # Staged unfreezing: the frozen backbone gets no gradients, which DDP must be told to expect.
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    accelerator = Accelerator(
        **accelerator_kwargs(args.use_cpu, args.mixed_precision),
        kwargs_handlers=handlers or None,
        # --torch_compile: Accelerate compiles the model in prepare() (inductor) and unwraps it for saving.
        dynamo_backend="inductor" if args.torch_compile else None,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=[t for t in args.trackers() if t != "none"] or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # Pinned host memory lets the copy of the next batch to the GPU overlap with compute.
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
    )
    logger.info("%d process(es) on %s (%s), mixed precision %s", accelerator.num_processes, accelerator.device,
                accelerator.distributed_type.value, accelerator.mixed_precision)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere+: free speed for training
        torch.backends.cudnn.allow_tf32 = True
    return accelerator


def reset_accelerate() -> None:
    """Forgets Accelerate's process-wide state so that a command can run again in the same process (tests,
    notebooks); a launched multi-process run keeps it, its processes exit after one run."""
    from accelerate.state import AcceleratorState, GradientState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
