"""Which parameters train, epoch by epoch: all of them, the head alone (a linear probe), or the head alone for the
first `freeze_epochs` epochs and then everything (staged unfreezing, fastai's `fine_tune`).

    head_only(epoch) -> bool         whether the backbone is frozen in that epoch
    apply_stage(model, unwrapped, epoch)  requires_grad and train/eval mode to match

The optimizer is built over every parameter that will ever train, before anything is frozen: a frozen
parameter gets no gradient, so AdamW leaves it (and its moments) alone until it thaws. Whether an epoch is frozen
is a function of the epoch alone, so a resumed run freezes exactly what the uninterrupted one did.
LoRA's frozen base is peft's business (`lora.py`), not this module's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The feature extractor (everything but the head) of our model, however it is wrapped."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.vit


@dataclass(frozen=True)
class Freezing:
    """The freezing plan of a run: `finetune` (full | linear_probe | lora) and `freeze_epochs`."""

    finetune: str
    freeze_epochs: int = 0

    def head_only(self, epoch: int) -> bool:
        return self.finetune == "linear_probe" or (self.finetune == "full" and epoch < self.freeze_epochs)

    def apply_stage(self, model: torch.nn.Module, unwrapped: torch.nn.Module, epoch: int) -> None:
        """Freezes or thaws the backbone for `epoch` (LoRA: untouched) and sets train mode; a frozen backbone runs
        in eval mode (no dropout, frozen BatchNorm statistics), as its features should not move.

        `model` is the prepared model (perhaps wrapped for DDP), `unwrapped` the model inside it."""
        model.train()
        if self.finetune == "lora" or (self.finetune == "full" and not self.freeze_epochs):
            return  # nothing to freeze (LoRA's frozen base is peft's)
        backbone = backbone_of(unwrapped)
        frozen = self.head_only(epoch)
        for parameter in backbone.parameters():
            parameter.requires_grad_(not frozen)
        if frozen:
            backbone.eval()
        if self.freeze_epochs and epoch == self.freeze_epochs:
            logger.info("epoch %d: staged unfreezing, the whole model trains from now on", epoch)
