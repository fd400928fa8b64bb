"""transformers' CLIP vision tower onto our model: `CLIPVisionModel`, `CLIPVisionModelWithProjection` (the projection
to the joint embedding space is left out) and the vision tower of a full `CLIPModel` (`clip_vision_model`, `clip`).

The mapping, all exact:
- the CLS token (`class_embedding`, a vector) and a position table with its row; plain bicubic resizing, as CLIP's
  `interpolate_pos_encoding=True`;
- CLIP's bias-less patch convolution gets a zero bias (the same function);
- `pre_layrnorm` is our `norm_pre`; `post_layernorm`, which CLIP applies to the pooled CLS token only, is our
  `fc_norm` with pooling "cls": the pooler output is the same, and our `last_hidden_state` is then, like CLIP's,
  the un-normed tokens.

Refused: `CLIPForImageClassification`, whose head reads the mean of the patch tokens WITHOUT any final LayerNorm
(`post_layernorm` is skipped on that path); our model always normalises before (or, with `fc_norm`, after) pooling.
"""

from __future__ import annotations

from typing import Any

import torch

from ..modeling_vit import ViTForImageClassification
from .transformers_common import config_dict, expect_class, finish, labels_of, layer_rules, refuse, rename_state_dict

MODEL_TYPES = ("clip_vision_model", "clip")
_CLASSES = {"CLIPVisionModel": "vision", "CLIPVisionModelWithProjection": "tower", "CLIPModel": "tower"}
_REFUSED = {
    "CLIPForImageClassification": "its head reads the mean of the patch tokens without a final LayerNorm "
                                  "(post_layernorm is skipped), which vit-finetune's ViT cannot represent exactly; "
                                  "convert its vision tower (model.vision_model, a CLIPVisionModel) and train a new "
                                  "head",
}
_LAYER_NAMES = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.q_proj": "attention.q",
    "self_attn.k_proj": "attention.k",
    "self_attn.v_proj": "attention.v",
    "self_attn.out_proj": "attention.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def config_from_clip(source: Any) -> dict[str, Any]:
    """ViTConfig fields for a `CLIPVisionConfig` or a full `CLIPConfig` (its `vision_config`)."""
    top = config_dict(source)
    hf = config_dict(top.get("vision_config") or {}) if top.get("model_type") == "clip" else top
    family = hf.get("model_type", "clip_vision_model")
    if top.get("model_type") not in MODEL_TYPES:
        raise ValueError(f"expected a CLIP config (model_type {MODEL_TYPES}), got {top.get('model_type')!r}")
    image_size, patch_size = hf.get("image_size", 224), hf.get("patch_size", 32)
    refuse(not isinstance(image_size, int) or not isinstance(patch_size, int), family,
           f"a non-square image_size {image_size!r} or patch_size {patch_size!r}")
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=hf.get("num_channels", 3),
        hidden_size=hf["hidden_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        hidden_act=hf.get("hidden_act", "quick_gelu"),
        attention_probs_dropout_prob=hf.get("attention_dropout", 0.0),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        initializer_range=hf.get("initializer_range", 0.02),
        qkv_bias=True,
        position_embedding="learned",
        class_position_embedding=True,
        position_interpolation="bicubic",
        norm_pre=True,
        fc_norm=True,
        pooling="cls",
        **labels_of(top if top.get("model_type") == "clip" else hf),
    )


def state_dict_from_clip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames an in-memory `CLIPVisionModel` state dict (keys without `vision_model.`) onto our names."""
    rules = [
        (r"embeddings\.class_embedding", "vit.embeddings.cls_token"),
        (r"embeddings\.patch_embedding\.(weight|bias)", r"vit.embeddings.patch_embeddings.projection.\1"),
        (r"embeddings\.position_embedding\.weight", "vit.embeddings.position_embeddings"),
        (r"pre_layrnorm\.(weight|bias)", r"vit.norm_pre.\1"),
        (r"post_layernorm\.(weight|bias)", r"vit.fc_norm.\1"),
        *layer_rules("encoder.layers", _LAYER_NAMES),
    ]
    out = rename_state_dict(state_dict, rules, family="clip_vision_model")
    out["vit.embeddings.cls_token"] = out["vit.embeddings.cls_token"].reshape(1, 1, -1)
    out["vit.embeddings.position_embeddings"] = out["vit.embeddings.position_embeddings"].unsqueeze(0)
    return out


def from_clip(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory `CLIPVisionModel`, `CLIPVisionModelWithProjection` or `CLIPModel` (its vision
    tower; pooling "cls" with fc_norm: CLIP's pooler output)."""
    family = model.config.model_type
    role = expect_class(model, _CLASSES, family, _REFUSED)
    vision = model if role == "vision" else model.vision_model
    fields = config_from_clip(model.config)
    return finish(fields, state_dict_from_clip(vision.state_dict()), overrides, family=family,
                  source=type(model).__name__)


__all__ = ["MODEL_TYPES", "config_from_clip", "from_clip", "state_dict_from_clip"]
