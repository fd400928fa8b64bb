"""Our LayerScale + CLS-and-mean model as transformers' stock `Dinov2ForImageClassification` (no registers, plain
bicubic table resizing) or `Dinov2WithRegistersForImageClassification` (registers, antialiased bicubic): the
inverse of `convert/transformers_dinov2.py`, whose renamer places the weights (`family_mapping.stock_weights`).

What must hold, and why:
- pooling "cls_mean": the classifier reads [CLS; mean of the patch tokens] (registers excluded), after the final
  LayerNorm on every token (so no fc_norm);
- a learned table with a CLS row; transformers' DINOv2 always resizes it away from its own square grid (ours with
  `interpolate_pos_encoding=True`), bicubic for Dinov2, antialiased bicubic for Dinov2WithRegisters: so
  `position_interpolation` picks the class;
- the MLP width is `hidden_size * mlp_ratio` for an integer `mlp_ratio` (transformers 5's Dinov2Config types it
  int and has no intermediate_size); mlp_type "glu" is `use_swiglu_ffn`, always silu, of width
  `swiglu_hidden_size(hidden_size, mlp_ratio)`; any other width is refused;
- LayerScale on both branches; a model without it (`layerscale_init=None`) gets factors of one, the same function
  (the stock model would then train them if fine-tuned further).

Not carried (training only): `drop_path_rate` (Dinov2 drops every block with the same rate, ours grows it with
depth; listed in the card). `hidden_dropout_prob` is refused when set: Dinov2 applies it to the embeddings only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import partial

import torch

from ..configuration_vit import ViTConfig
from ..convert.transformers_dinov2 import state_dict_from_dinov2, swiglu_hidden_size
from .family_mapping import FamilyMapping, labels, rgb_patch, stock_weights

# Our fields that transformers' Dinov2Config holds under the same name and meaning.
SHARED_FIELDS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "hidden_act", "attention_probs_dropout_prob", "layer_norm_eps", "qkv_bias", "initializer_range")
REPRESENTED = (*SHARED_FIELDS, "num_channels", "intermediate_size", "mlp_type", "layerscale_init")
REQUIRED = {"pooling": ("cls_mean",)}
_LAYER = re.compile(r"^vit\.layers\.(\d+)\.")


def mlp_ratio(config: ViTConfig) -> int | None:
    """The integer `mlp_ratio` that gives our MLP width in transformers' Dinov2, None when there is none."""
    hidden, width = config.hidden_size, config.intermediate_size
    if config.mlp_type != "glu":
        return width // hidden if width % hidden == 0 else None
    for ratio in range(1, 2 * width // hidden + 2):
        if swiglu_hidden_size(hidden, ratio) == width:
            return ratio
    return None


def constraints(config: ViTConfig) -> list[str]:
    problems = []
    glu = config.mlp_type == "glu"
    if glu and config.hidden_act != "silu":
        problems.append(f"hidden_act={config.hidden_act!r} with mlp_type='glu' (stock: 'silu', use_swiglu_ffn)")
    if config.mlp_type in ("mlp", "glu") and mlp_ratio(config) is None:
        rule = ("swiglu_hidden_size(hidden_size, mlp_ratio)" if glu else "hidden_size * mlp_ratio")
        problems.append(f"intermediate_size={config.intermediate_size!r} (stock: {rule} for an integer mlp_ratio, "
                        f"hidden_size={config.hidden_size})")
    return problems


def stock_config(config: ViTConfig, *, registers: bool):
    """transformers' `Dinov2Config` / `Dinov2WithRegistersConfig` of the same model (3 channels), labels included."""
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    glu = config.mlp_type == "glu"
    fields = dict(
        **{name: getattr(config, name) for name in SHARED_FIELDS},
        num_channels=3,
        mlp_ratio=mlp_ratio(config),
        use_swiglu_ffn=glu,
        layerscale_value=float(1.0 if config.layerscale_init is None else config.layerscale_init),
        hidden_dropout_prob=0.0,
        drop_path_rate=0.0,  # not carried: see the module docstring
        **labels(config),
    )
    if registers:
        return Dinov2WithRegistersConfig(**fields, num_register_tokens=config.num_register_tokens,
                                         architectures=["Dinov2WithRegistersForImageClassification"])
    return Dinov2Config(**fields, use_mask_token=False, architectures=["Dinov2ForImageClassification"])


def stock_state_dict(state_dict: dict[str, torch.Tensor], names: Iterable[str], *,
                     family: str) -> dict[str, torch.Tensor]:
    """Our weights in the stock model's names, through `state_dict_from_dinov2`; LayerScale factors of one for a
    model without LayerScale, a zero mask token (unused by classification) and an empty register table where the
    class always has them."""
    state_dict = rgb_patch(state_dict)
    width = state_dict["vit.embeddings.cls_token"].shape[-1]
    layers = {int(match.group(1)) for key in state_dict if (match := _LAYER.match(key))}
    for index in layers:
        for branch in (1, 2):
            state_dict.setdefault(f"vit.layers.{index}.ls{branch}.gamma", torch.ones(width))
    if family == "dinov2_with_registers":  # the class always has the (here possibly empty) register table
        state_dict.setdefault("vit.embeddings.register_tokens", torch.zeros(1, 0, width))

    def dropped(name: str) -> torch.Tensor | None:
        return torch.zeros(1, width) if name.endswith("embeddings.mask_token") else None

    return stock_weights(state_dict, names, partial(state_dict_from_dinov2, family=family), family=family,
                         dropped=dropped)


DINOV2 = FamilyMapping(
    architecture="Dinov2ForImageClassification",
    represented=REPRESENTED,
    required={**REQUIRED, "position_interpolation": ("bicubic",)},
    constraints=constraints,
    config=partial(stock_config, registers=False),
    state_dict=partial(stock_state_dict, family="dinov2"),
)
DINOV2_WITH_REGISTERS = FamilyMapping(
    architecture="Dinov2WithRegistersForImageClassification",
    represented=(*REPRESENTED, "num_register_tokens"),
    required={**REQUIRED, "position_interpolation": ("bicubic_antialias",)},
    constraints=constraints,
    config=partial(stock_config, registers=True),
    state_dict=partial(stock_state_dict, family="dinov2_with_registers"),
)
