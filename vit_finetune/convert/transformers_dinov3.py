"""transformers' DINOv3 ViTs (`dinov3_vit`: `DINOv3ViTModel`) onto our model.

The mapping, all exact in eval mode:
- no position table (`position_embedding="none"`): positions are DINOv3's 2D rotary embedding on the patch tokens
  (`rotary_embedding="dinov3"`, `rotary_theta=rope_theta`); the CLS and register tokens are not rotated, and any
  resolution runs without interpolation;
- registers after the CLS token; LayerScale (`layerscale_value`) on both branches;
- `use_gated_mlp` (DINOv3-H+) is our gated MLP ([gate; up] in fc1) with the config's `hidden_act`;
- biases: `query_bias`/`value_bias` give `qkv_bias` (a missing one of the two becomes a zero bias), `key_bias=False`
  is our `key_bias=False` (the key slice held at zero); `proj_bias=False` / `mlp_bias=False` become zero biases;
- pooling "cls": `DINOv3ViTModel`'s pooler output is the normed CLS token.

Training differs: transformers augments the rotary coordinates in training mode (`pos_embed_shift`,
`pos_embed_jitter`, `pos_embed_rescale`); our model does not (eval-mode outputs are unaffected).
"""

from __future__ import annotations

from typing import Any

import torch

from ..modeling_vit import ViTForImageClassification
from .transformers_common import (
    config_dict,
    expect_class,
    finish,
    labels_of,
    layer_rules,
    layerscale_rules,
    refuse,
    rename_state_dict,
)

MODEL_TYPES = ("dinov3_vit",)
_CLASSES = {"DINOv3ViTModel": "backbone"}
_LAYER_NAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.q_proj": "attention.q",
    "attention.k_proj": "attention.k",
    "attention.v_proj": "attention.v",
    "attention.o_proj": "attention.proj",
    "mlp.up_proj": "mlp.fc1",  # replaced by "mlp.up" for a gated MLP
    "mlp.gate_proj": "mlp.gate",
    "mlp.down_proj": "mlp.fc2",
}


def config_from_dinov3(source: Any) -> dict[str, Any]:
    """ViTConfig fields for a transformers `DINOv3ViTConfig`."""
    hf = config_dict(source)
    family = hf.get("model_type", "dinov3_vit")
    if family not in MODEL_TYPES:
        raise ValueError(f"expected a DINOv3 ViT config (model_type 'dinov3_vit'), got {family!r}")
    image_size, patch_size = hf.get("image_size", 224), hf.get("patch_size", 16)
    refuse(not isinstance(image_size, int) or not isinstance(patch_size, int), family,
           f"a non-square image_size {image_size!r} or patch_size {patch_size!r}")
    query_bias, key_bias, value_bias = (bool(hf.get(name, default)) for name, default in
                                        (("query_bias", True), ("key_bias", False), ("value_bias", True)))
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=hf.get("num_channels", 3),
        hidden_size=hf["hidden_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        hidden_act=hf.get("hidden_act", "gelu"),
        mlp_type="glu" if hf.get("use_gated_mlp", False) else "mlp",
        attention_probs_dropout_prob=hf.get("attention_dropout", 0.0),
        drop_path_rate=hf.get("drop_path_rate", 0.0),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        qkv_bias=query_bias or key_bias or value_bias,
        key_bias=key_bias,
        initializer_range=hf.get("initializer_range", 0.02),
        layerscale_init=float(hf.get("layerscale_value", 1.0)),
        position_embedding="none",
        rotary_embedding="dinov3",
        rotary_theta=float(hf.get("rope_theta", 100.0)),
        num_register_tokens=int(hf.get("num_register_tokens", 0)),
        pooling="cls",
        **labels_of(hf),
    )


def state_dict_from_dinov3(state_dict: dict[str, torch.Tensor], gated: bool) -> dict[str, torch.Tensor]:
    """Renames an in-memory `DINOv3ViTModel` state dict onto our names (q/k/v and the gated MLP's gate/up are fused
    by `transformers_common.fuse_layers`)."""
    names = dict(_LAYER_NAMES, **({"mlp.up_proj": "mlp.up"} if gated else {}))
    rules = [
        (r"embeddings\.cls_token", "vit.embeddings.cls_token"),
        (r"embeddings\.register_tokens", "vit.embeddings.register_tokens"),
        (r"embeddings\.patch_embeddings\.(weight|bias)", r"vit.embeddings.patch_embeddings.projection.\1"),
        (r"embeddings\.mask_token", None),  # masked image modelling only
        (r"norm\.(weight|bias)", r"vit.layernorm.\1"),
        *layer_rules("model.layer", names),
        *layerscale_rules("model.layer"),
    ]
    return rename_state_dict(state_dict, rules, family="dinov3_vit")


def from_dinov3(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory `DINOv3ViTModel` (pooling "cls", its pooler output)."""
    expect_class(model, _CLASSES, "dinov3_vit")
    fields = config_from_dinov3(model.config)
    state_dict = state_dict_from_dinov3(model.state_dict(), gated=fields["mlp_type"] == "glu")
    if not fields["num_register_tokens"]:
        state_dict.pop("vit.embeddings.register_tokens", None)  # an empty (1, 0, D) parameter
    return finish(fields, state_dict, overrides, family="dinov3_vit", source=type(model).__name__)


__all__ = ["MODEL_TYPES", "config_from_dinov3", "from_dinov3", "state_dict_from_dinov3"]
