"""transformers' ViT-MAE encoder (`vit_mae`: `ViTMAEModel`, or the encoder `.vit` of `ViTMAEForPreTraining`; the
decoder is left out) onto our model.

MAE's encoder is a plain ViT whose position table is the fixed 2D sine-cosine one (with a zero CLS row) stored as a
non-trained parameter. It is loaded as our learned table (exactly the stored values; fine-tuning then trains it, as
MAE's own fine-tuning recipe does), resized with plain bicubic as MAE's `interpolate_pos_encoding=True`. transformers'
MAE encoder shuffles and drops `mask_ratio` of the patches at random in every forward pass, training or not; our
model is that encoder without masking: the same as transformers' with `mask_ratio=0` and `noise` increasing along
the patches (no shuffle). Pooling "cls".
"""

from __future__ import annotations

from typing import Any

import torch

from ..modeling_vit import ViTForImageClassification
from .transformers_common import config_dict, expect_class, finish, labels_of, layer_rules, refuse, rename_state_dict
from .transformers_vit import VIT_LAYER_NAMES

MODEL_TYPES = ("vit_mae",)
_CLASSES = {"ViTMAEModel": "encoder", "ViTMAEForPreTraining": "pretraining"}
# ViT-MAE's encoder is transformers' ViT with a fixed table: its in-memory layer names.
_LAYER_NAMES = VIT_LAYER_NAMES


def config_from_vit_mae(source: Any) -> dict[str, Any]:
    """ViTConfig fields for a transformers `ViTMAEConfig` (its encoder)."""
    hf = config_dict(source)
    if hf.get("model_type") not in MODEL_TYPES:
        raise ValueError(f"expected a ViT-MAE config (model_type 'vit_mae'), got {hf.get('model_type')!r}")
    image_size, patch_size = hf.get("image_size", 224), hf.get("patch_size", 16)
    refuse(not isinstance(image_size, int) or not isinstance(patch_size, int), "vit_mae",
           f"a non-square image_size {image_size!r} or patch_size {patch_size!r}")
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=hf.get("num_channels", 3),
        hidden_size=hf["hidden_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout_prob=hf.get("hidden_dropout_prob", 0.0),
        attention_probs_dropout_prob=hf.get("attention_probs_dropout_prob", 0.0),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        qkv_bias=hf.get("qkv_bias", True),
        initializer_range=hf.get("initializer_range", 0.02),
        position_embedding="learned",
        class_position_embedding=True,
        position_interpolation="bicubic",
        pooling="cls",
        **labels_of(hf),
    )


def state_dict_from_vit_mae(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames an in-memory `ViTMAEModel` state dict (keys without `vit.`) onto our names."""
    rules = [
        (r"embeddings\.cls_token", "vit.embeddings.cls_token"),
        (r"embeddings\.position_embeddings", "vit.embeddings.position_embeddings"),
        (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"vit.embeddings.patch_embeddings.projection.\1"),
        (r"layernorm\.(weight|bias)", r"vit.layernorm.\1"),
        *layer_rules("layers", _LAYER_NAMES),
    ]
    return rename_state_dict(state_dict, rules, family="vit_mae")


def from_vit_mae(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory `ViTMAEModel` or `ViTMAEForPreTraining` (its encoder; pooling "cls")."""
    role = expect_class(model, _CLASSES, "vit_mae")
    encoder = model if role == "encoder" else model.vit
    return finish(config_from_vit_mae(model.config), state_dict_from_vit_mae(encoder.state_dict()), overrides,
                  family="vit_mae", source=type(model).__name__)


__all__ = ["MODEL_TYPES", "config_from_vit_mae", "from_vit_mae", "state_dict_from_vit_mae"]
