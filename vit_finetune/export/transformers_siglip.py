"""Our CLS-less mean-pooled model as transformers' stock `SiglipForImageClassification` (`model_type: siglip`,
`vision_use_head=False`): the inverse of `convert/transformers_siglip.py`, whose renamer places the weights
(`family_mapping.stock_weights`).

`SiglipForImageClassification` (transformers 5.24) runs `SiglipVisionModel` (patch convolution plus a table over
the patches, pre-norm blocks, `post_layernorm` on every token) and classifies `mean(last_hidden_state)` over all
tokens. Ours computes the same with: `class_token=False` (so no CLS row either way; `class_position_embedding` is
then ignored), no registers, pooling "mean", the final LayerNorm on every token (no fc_norm), a plain MLP with any
activation, q/k/v biases, bicubic table resizing (SigLIP's `interpolate_pos_encoding`). The vision model's attention
pooling head would be computed but never read by the classifier, so it is switched off.

Pooling "map" (SigLIP's attention-pooling head) is refused: no stock transformers classification class reads a
MAP head (Siglip/Siglip2ForImageClassification average the tokens; Aimv2's head has no classification class).

Not carried: `initializer_range` (SigLIP initialises by its own scheme; no effect on trained weights).
`hidden_dropout_prob` is refused when set (SigLIP has no such dropout).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch

from ..configuration_vit import ViTConfig
from ..convert.transformers_siglip import state_dict_from_siglip
from .family_mapping import OUR_PATCH, FamilyMapping, labels, rgb_patch, stock_weights

# Our fields that transformers' SiglipVisionConfig holds under the same name and meaning.
SHARED_FIELDS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "layer_norm_eps")
VISION_PREFIX = "vision_model."
FAMILY = "siglip_vision_model"


def constraints(config: ViTConfig) -> list[str]:
    if config.pooling == "mean":
        return []
    if config.pooling == "map":
        return ["pooling='map' (stock: 'mean'; SiglipForImageClassification averages the post-layernorm tokens "
                "and never reads SigLIP's attention-pooling head: no stock transformers classification class has "
                "a MAP head)"]
    return [f"pooling={config.pooling!r} (stock: 'mean')"]


def stock_config(config: ViTConfig):
    """transformers' `SiglipConfig` (vision tower without its head, 3 channels), labels included."""
    from transformers import SiglipConfig

    vision = dict(**{name: getattr(config, name) for name in SHARED_FIELDS}, num_channels=3,
                  attention_dropout=config.attention_probs_dropout_prob, vision_use_head=False)
    return SiglipConfig(vision_config=vision, architectures=["SiglipForImageClassification"], **labels(config))


def stock_state_dict(state_dict: dict[str, torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Our weights in the stock model's names, through `state_dict_from_siglip` (which reads the vision tower's
    names without `vision_model.`)."""
    state_dict = rgb_patch(state_dict)
    importer = partial(state_dict_from_siglip, family=FAMILY, patch_size=state_dict[OUR_PATCH].shape[-1])
    return stock_weights(state_dict, names, importer, family=FAMILY,
                         source_key=lambda name: name.removeprefix(VISION_PREFIX))


MAPPING = FamilyMapping(
    architecture="SiglipForImageClassification",
    represented=(*SHARED_FIELDS, "num_channels", "attention_probs_dropout_prob", "initializer_range",
                 "class_position_embedding", "pooling"),
    required={"class_token": (False,)},
    constraints=constraints,
    config=stock_config,
    state_dict=stock_state_dict,
)
