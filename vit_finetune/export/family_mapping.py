"""What the stock mappings onto transformers' model families (`transformers_dinov2.py`, `transformers_siglip.py`)
share: a `StockMapping` whose class needs some options at given values even where those are not our defaults, and
the weights renamed by running the family's importer (`convert/transformers_*.py`) backwards.

`FamilyMapping.required`: a field whose value must be one of these, the default included (Dinov2's classifier needs
pooling "cls_mean": a model with our default "cls" is *not* Dinov2). `constraints`: rules across fields that a
per-field check cannot say (Dinov2's MLP width comes from an integer `mlp_ratio`); each returns `field=value
(stock: ...)` like the shared check.

`stock_weights` does not restate a name table: it hands the stock model's own state-dict keys, each with a marker
tensor, to the importer's renamer and reads off where each marker landed. The importer's fusions are undone here
(our `attention.qkv` is [q; k; v], a gated `mlp.fc1` is [gate; up], as `transformers_common.fuse_layers` builds them)
and so are the leading dimensions an importer adds (SigLIP's position table gains a batch dimension).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..configuration_vit import ViTConfig
from .stock import StockMapping
from .transformers_vit import LUMA

OUR_PATCH = "vit.embeddings.patch_embeddings.projection.weight"
# Our names that the importers assemble from several stock tensors (see transformers_common.fuse_layers).
_FUSED = re.compile(r"^(vit\.layers\.\d+)\.(?:attention\.([qkv])|mlp\.(gate|up))\.(weight|bias)$")


@dataclass(frozen=True)
class FamilyMapping(StockMapping):
    """A `StockMapping` with fields that must take given values (`required`) and cross-field `constraints`."""

    required: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    constraints: Callable[[ViTConfig], list[str]] | None = None

    def unsupported(self, config: ViTConfig) -> list[str]:
        problems = [f"{name}={getattr(config, name)!r} (stock: {' or '.join(map(repr, allowed))})"
                    for name, allowed in self.required.items() if getattr(config, name) not in allowed]
        # The shared check for every other field: the required ones are judged above.
        problems += StockMapping.unsupported(replace(self, represented=(*self.represented, *self.required)), config)
        if self.constraints is not None:
            problems += self.constraints(config)
        return problems


def labels(config: ViTConfig) -> dict[str, Any]:
    """The label fields of a stock config."""
    id2label = {int(i): str(name) for i, name in config.id2label.items()}
    return dict(id2label=id2label, label2id={name: i for i, name in id2label.items()}, problem_type=config.problem_type)


def rgb_patch(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A grayscale model's 1-channel patch projection as the 3-channel one with the luma weights multiplied in (the
    pipeline hands over RGB; see transformers_vit.py)."""
    state_dict = dict(state_dict)
    weight = state_dict[OUR_PATCH]
    if weight.shape[1] == 1:
        state_dict[OUR_PATCH] = weight * weight.new_tensor(LUMA).view(1, 3, 1, 1)
    return state_dict


def stock_weights(
    ours: dict[str, torch.Tensor],
    names: Iterable[str],
    importer: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    *,
    family: str,
    source_key: Callable[[str], str] = lambda name: name,
    dropped: Callable[[str], torch.Tensor | None] = lambda name: None,
) -> dict[str, torch.Tensor]:
    """Our weights under the stock model's `names`, placed by the family's `importer` (stock names -> ours).

    `source_key`: a stock name as the importer expects it (e.g. without SigLIP's `vision_model.`). `dropped`: the
    value of a stock weight the importer discards (a masked-modelling token), None when it has none. ValueError for
    a stock weight with no source and for any weight of ours left over (a part the stock class has no place for)."""
    names = list(names)
    markers = {source_key(name): torch.tensor([index]) for index, name in enumerate(names)}
    renamed = importer(markers)
    target = {names[int(marker.reshape(-1)[0])]: (key, marker.dim() - 1) for key, marker in renamed.items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name in names:
        if name not in target:
            value = dropped(name)
            if value is None:
                raise ValueError(f"{family} weight {name!r} has no counterpart in our model")
            out[name] = value
            continue
        key, added_dims = target[name]
        fused = _FUSED.match(key)
        if fused:
            prefix, qkv, gated, kind = fused.groups()
            key = f"{prefix}.attention.qkv.{kind}" if qkv else f"{prefix}.mlp.fc1.{kind}"
            parts, index = (3, "qkv".index(qkv)) if qkv else (2, ("gate", "up").index(gated))
        if key not in ours:
            raise ValueError(f"{family} weight {name!r} needs our {key!r}, which the model does not have")
        tensor = ours[key].chunk(parts)[index].clone() if fused else ours[key]
        for _ in range(added_dims):  # undo the importer's unsqueeze(0)
            tensor = tensor.squeeze(0)
        out[name] = tensor
        used.add(key)
    left_over = sorted(set(ours) - used)
    if left_over:
        raise ValueError(f"the {family} class has no place for these weights: {left_over}")
    return out
