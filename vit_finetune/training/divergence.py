"""A run that diverges stops before anything its NaNs touched is saved, and says how to recover.

The loss is summed on the device (`LossMeter`) and read by the host only when the loop logs, evaluates or
saves: that one sync is also the NaN check. Weights are checked again before every save (`check_finite_weights`),
since a finite loss does not prove finite weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import checkpointing


class NonFiniteLossError(RuntimeError):
    """The training loss or the weights became NaN or infinite."""


def recovery_advice(latest: Path | None) -> str:
    if latest is None:
        return ("No checkpoint was saved before it. Start again with a lower --learning_rate (and "
                "--overwrite_output_dir), keep --max_grad_norm on, or use bf16 rather than fp16.")
    return (f"Last good checkpoint: {latest}. Continue from it with a lower learning rate: "
            f"--resume_from_checkpoint {latest} --learning_rate <lower> (keep --max_grad_norm on; bf16 is steadier "
            "than fp16).")


def check_finite_weights(model: torch.nn.Module, accelerator: Any, step: int, output_dir: Path) -> None:
    """Refuses to save or export weights holding NaN or inf: a checkpoint is only ever a good one.

    A finite loss does not prove finite weights: the update after it may overflow (a huge learning rate).
    """
    bad = torch.zeros((), device=accelerator.device)
    for parameter in model.parameters():
        bad += (~torch.isfinite(parameter.detach())).any()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")  # FSDP shards: every process must agree
    if bad.item():
        latest = checkpointing.latest_checkpoint(output_dir)
        raise NonFiniteLossError(f"the weights became NaN or infinite by step {step}; training stopped and they "
                                 f"were not saved. {recovery_advice(latest)}")


class LossMeter:
    """The training loss since the last read, kept on the device so that a step costs no host sync."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.count = torch.zeros((), device=device)
        self.nonfinite = torch.zeros((), device=device, dtype=torch.bool)

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.count += 1
        self.nonfinite |= ~torch.isfinite(loss)

    def read(self, accelerator: Any, state: Any, output_dir: Path, time_up: bool) -> tuple[float | None, bool]:
        """One host sync: the mean loss since the last read (all processes), and whether any process's time
        budget is spent (so that all stop at the same step). Adds the sums to the state's since-eval totals.

        Raises NonFiniteLossError before anything is saved from weights a non-finite loss touched.
        """
        packed = torch.stack([self.total, self.count, self.nonfinite.float(),
                              torch.tensor(float(time_up), device=self.total.device)])
        if accelerator.num_processes > 1:
            packed = accelerator.reduce(packed, reduction="sum")  # every process then agrees on what to do
        total, count, bad, up = packed.tolist()
        self.total.zero_()
        self.count.zero_()
        if bad:
            latest = checkpointing.latest_checkpoint(output_dir)
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite by step {state.global_step}; training stopped and "
                f"nothing was saved after it. {recovery_advice(latest)}"
            )
        state.loss_sum_since_eval += total
        state.loss_count_since_eval += int(count)
        return (total / count if count else None), bool(up)
