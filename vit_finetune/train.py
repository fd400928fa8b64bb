"""`vit-finetune train`: fine-tune (or train from scratch) a Vision Transformer, from a laptop CPU to many GPUs.

    vit-finetune train --config configs/fashion_mnist.yaml [--learning_rate 1e-3 ...]
    accelerate launch -m vit_finetune.train --config configs/fashion_mnist.yaml
    torchrun --nproc_per_node 2 -m vit_finetune.train --config configs/fashion_mnist.yaml

This module is the command: it parses the arguments, sets up logging and turns errors into exit codes. The
training itself is the `vit_finetune.training` package; start reading at `training/loop.py`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .arguments import ConfigError
from .training.arguments import parse_train_arguments
from .training.checkpointing import DiskFullError
from .training.devices import reset_accelerate
from .training.divergence import NonFiniteLossError
from .training.loop import train


def main(argv: list[str] | None = None) -> int:
    """0 on success, 1 on a failed run (diverged, disk full), 2 on bad arguments, models or data."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        model_args, data_args, args = parse_train_arguments(argv)
    except ConfigError as error:
        print(f"vit-finetune train: error: {error}", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per save/load is noise here
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            results = train(model_args, data_args, args)
    except ConfigError as error:
        print(f"vit-finetune train: error: {error}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, DiskFullError) as error:
        print(f"vit-finetune train: error: {error}", file=sys.stderr)
        return 1
    finally:
        reset_accelerate()  # so that main() can run again in this process (tests, notebooks)
    if rank == 0:
        split = "test" if "test" in results else "eval"
        print(f"{split} accuracy: {100 * results[split]['accuracy']:.2f}% "
              f"({results[split]['samples']} images); model folder: {Path(args.output_dir).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
