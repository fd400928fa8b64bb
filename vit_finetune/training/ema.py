"""An exponential moving average of the weights (`--ema_decay`), through timm's `ModelEmaV3`.

    WeightEma.create(model, decay, warmup)  a float32 copy of the model's state, updated after each optimizer step
    ema.update(model, step)                 decay warmed up from the step alone (timm's `get_decay(step)`)
    ema.save(folder) / ema.load(folder)     ema.safetensors in a checkpoint: tensors only, no pickle

The EMA's whole state is its tensors plus the step, which trainer_state.json already holds, so a resumed run
continues the average exactly. The copy is kept in float32: an EMA update (1 - decay) * (w - ema) is below
bfloat16's resolution at typical decays (timm would then round stochastically, with a generator of its own whose
state would also have to be saved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

EMA_FILE = "ema.safetensors"


class WeightEma:
    """timm's ModelEmaV3 over the unwrapped model (the same on every process under DDP: the weights are)."""

    def __init__(self, ema: Any):
        self.ema = ema

    @classmethod
    def create(cls, model: torch.nn.Module, decay: float, warmup: bool) -> WeightEma:
        from timm.utils import ModelEmaV3

        return cls(ModelEmaV3(model, decay=decay, use_warmup=warmup, dtype=torch.float32))

    @property
    def module(self) -> torch.nn.Module:
        """The averaged model (in eval mode): what is evaluated and, if it is the better one, exported."""
        return self.ema.module

    def update(self, model: torch.nn.Module, step: int) -> None:
        """After optimizer step `step` (1-based): ema = decay(step) * ema + (1 - decay(step)) * weights."""
        self.ema.update(model, step=step)

    def decay_at(self, step: int) -> float:
        return self.ema.get_decay(step)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.module.state_dict().items()}
        save_file(dedupe(state), str(folder / EMA_FILE))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        path = folder / EMA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {EMA_FILE}: it was written without --ema_decay")
        saved = load_file(str(path))
        state = self.module.state_dict()
        missing = sorted(set(state) - set(saved))
        if missing:
            raise FileNotFoundError(f"{path} lacks {len(missing)} tensors of this model (e.g. {missing[0]}): it was "
                                    "written for another model")
        with torch.no_grad():
            for name, tensor in state.items():
                tensor.copy_(saved[name])


def dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): store a copy of each repeat."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        pointer = tensor.data_ptr()
        out[name] = tensor.clone() if pointer in seen and tensor.numel() else tensor
        seen.add(pointer)
    return out
