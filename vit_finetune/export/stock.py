"""Which stock transformers class can hold one of our models: the `StockMapping` of a target class, and the check
that refuses every option the target has no counterpart for, naming it.

The check is not a list of the options we know to be unsupported: it compares *every* parameter of
`ViTConfig.__init__` with its default, and only the fields a mapping declares (`represented`, any value, and
`accepted`, these values) may differ. An option added to `ViTConfig` later is therefore refused by every
mapping until a mapping says it can hold it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..configuration_vit import ViTConfig

# Fields that change nothing at inference, so a stock class without them still computes the same logits.
# (Stochastic depth: a stock ViT fine-tuned further trains without it.)
INFERENCE_NEUTRAL = ("drop_path_rate",)
# Fields that matter only when another field has a given value (ViTConfig's docstring says so); otherwise their
# value is ignored by the model, so it is not an option the stock class lacks.
ONLY_USED_WITH = {
    "conv_stem_channels": ("patch_embedding", "conv"),
    "conv_stem_depth": ("patch_embedding", "conv"),
    "key_bias": ("qkv_bias", True),
}


class ExportError(ValueError):
    """A model that cannot be exported as asked, said in one line naming the field, file or format."""


def option_defaults() -> dict[str, Any]:
    """Every model option (parameter of `ViTConfig.__init__`) and its default."""
    parameters = inspect.signature(ViTConfig.__init__).parameters.values()
    return {p.name: p.default for p in parameters
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


@dataclass(frozen=True)
class StockMapping:
    """How our model becomes one stock transformers class.

    architecture: the transformers class written into config.json (`ViTForImageClassification`).
    represented: our fields the stock config holds, whatever their value (the shape fields, ...).
    accepted: our fields the stock class holds at these values only (e.g. {"pooling": ("cls_mean",)}).
    config: our config -> the stock config (a transformers `PretrainedConfig`, labels included).
    state_dict: (our state dict, the stock model's state-dict keys) -> the stock state dict; ValueError when a
        weight has no place.
    """

    architecture: str
    represented: tuple[str, ...]
    config: Callable[[ViTConfig], Any]
    state_dict: Callable[[dict[str, torch.Tensor], Iterable[str]], dict[str, torch.Tensor]]
    accepted: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def unsupported(self, config: ViTConfig) -> list[str]:
        """`field=value (default ...)` for each option of `config` this stock class has no counterpart for."""
        problems = []
        for name, default in option_defaults().items():
            value = getattr(config, name, default)
            if name in self.represented or name in INFERENCE_NEUTRAL:
                continue
            if name in self.accepted and value in self.accepted[name]:
                continue
            other, needed = ONLY_USED_WITH.get(name, (None, None))
            if other is not None and getattr(config, other, None) != needed:
                continue
            if value != default:
                problems.append(f"{name}={value!r} (stock: {default!r})")
        return problems


def choose_mapping(config: ViTConfig, mappings: Iterable[StockMapping]) -> StockMapping:
    """The first mapping that holds every option of `config`; ExportError naming, for each, what it lacks."""
    reasons = []
    for mapping in mappings:
        problems = mapping.unsupported(config)
        if not problems:
            return mapping
        reasons.append(f"{mapping.architecture} has no counterpart for {', '.join(problems)}")
    raise ExportError("no stock transformers class holds this model: " + "; ".join(reasons)
                      + " (export it with --format onnx or pt2, which take every option)")
