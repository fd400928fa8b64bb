"""Our plain ViT (learned table, CLS pooling, patch stem, no LayerScale) as transformers' stock
`ViTForImageClassification`: the inverse of `convert/transformers_vit.py`, whose name table it reads.

Grayscale models: transformers' ViT has no RGB-to-luma fold, and its pipeline always hands over RGB; our
`PatchEmbedding` folds RGB to luma before its (linear) projection, so the stock model gets a 3-channel projection
with the luma weights multiplied in, which computes the same thing on the same RGB input.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..configuration_vit import ViTConfig
from ..convert.transformers_vit import state_dict_to_transformers
from .stock import StockMapping

# The ITU-R 601 weights of modeling_vit.PatchEmbedding.forward (and of PIL's "L"); the grayscale parity test
# (tests/test_export.py) fails if the two drift apart.
LUMA = (0.299, 0.587, 0.114)
PATCH_WEIGHT = "vit.embeddings.patch_embeddings.projection.weight"

# Our fields that transformers' ViTConfig holds under the same name and meaning.
SHARED_FIELDS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
                 "layer_norm_eps", "qkv_bias", "initializer_range")


def stock_config(config: ViTConfig):
    """transformers' `ViTConfig` of the same model (3 channels: see the module docstring), labels included."""
    from transformers import ViTConfig as StockViTConfig

    labels = {int(i): str(name) for i, name in config.id2label.items()}
    return StockViTConfig(
        **{name: getattr(config, name) for name in SHARED_FIELDS},
        num_channels=3,
        id2label=labels,
        label2id={name: i for i, name in labels.items()},
        problem_type=config.problem_type,
        architectures=["ViTForImageClassification"],
    )


def stock_state_dict(state_dict: dict[str, torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Our weights in the stock model's names; a 1-channel patch projection becomes a 3-channel one."""
    state_dict = dict(state_dict)
    weight = state_dict[PATCH_WEIGHT]
    if weight.shape[1] == 1:
        state_dict[PATCH_WEIGHT] = weight * weight.new_tensor(LUMA).view(1, 3, 1, 1)
    return state_dict_to_transformers(state_dict, names)


MAPPING = StockMapping(
    architecture="ViTForImageClassification",
    represented=(*SHARED_FIELDS, "num_channels"),
    config=stock_config,
    state_dict=stock_state_dict,
)
