"""transformers' DINOv2 (`dinov2`: `Dinov2Model`, `Dinov2ForImageClassification`) and DINOv2 with registers
(`dinov2_with_registers`: `Dinov2WithRegistersModel`, `Dinov2WithRegistersForImageClassification`) onto our model.

The mapping, all exact:
- the position table has a CLS row (`class_position_embedding=True`); registers (after the CLS token) get none;
- the table is resized with plain bicubic (DINOv2) or antialiased bicubic (DINOv2 with registers), as each
  transformers class does at any other resolution (both always interpolate: our model does with
  `interpolate_pos_encoding=True`, or once at conversion with a new `image_size`);
- LayerScale (`layerscale_value`) on both branches; `use_swiglu_ffn` (DINOv2-giant) is our gated MLP with silu and
  transformers' hidden width `(int(hidden * mlp_ratio * 2 / 3) + 7) // 8 * 8`;
- pooling: `Dinov2Model`'s pooler is the normed CLS token ("cls"); the classifier reads the CLS token concatenated
  with the mean of the patch tokens ("cls_mean"), with its head.

Training differs in one respect only: transformers' DINOv2 drops every block's path with `drop_path_rate`, ours
grows the rate linearly with depth up to it (eval-mode outputs are unaffected).
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

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_CLASSES = {
    "Dinov2Model": "backbone",
    "Dinov2ForImageClassification": "classifier",
    "Dinov2WithRegistersModel": "backbone",
    "Dinov2WithRegistersForImageClassification": "classifier",
}
_LAYER_NAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.q_proj": "attention.q",
    "attention.k_proj": "attention.k",
    "attention.v_proj": "attention.v",
    "attention.o_proj": "attention.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.gate_proj": "mlp.gate",
    "mlp.up_proj": "mlp.up",
    "mlp.down_proj": "mlp.fc2",
}


def swiglu_hidden_size(hidden_size: int, mlp_ratio: float) -> int:
    """The hidden width of transformers' (and Meta's) DINOv2 SwiGLU FFN."""
    hidden = int(hidden_size * mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8


def config_from_dinov2(source: Any, *, pooling: str = "cls") -> dict[str, Any]:
    """ViTConfig fields for a transformers `Dinov2Config` or `Dinov2WithRegistersConfig`."""
    hf = config_dict(source)
    family = hf.get("model_type", "dinov2")
    if family not in MODEL_TYPES:
        raise ValueError(f"expected a DINOv2 config (model_type {MODEL_TYPES}), got {family!r}")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    refuse(hf.get("head_dim") not in (None, hidden // heads), family,
           f"head_dim={hf.get('head_dim')} (not hidden_size / num_attention_heads)")
    image_size, patch_size = hf.get("image_size", 224), hf.get("patch_size", 14)
    refuse(not isinstance(image_size, int) or not isinstance(patch_size, int), family,
           f"a non-square image_size {image_size!r} or patch_size {patch_size!r}")
    swiglu = bool(hf.get("use_swiglu_ffn", False))
    mlp_ratio = hf.get("mlp_ratio", 4)
    registers = int(hf.get("num_register_tokens", 0)) if family == "dinov2_with_registers" else 0
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=hf.get("num_channels", 3),
        hidden_size=hidden,
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=heads,
        intermediate_size=swiglu_hidden_size(hidden, mlp_ratio) if swiglu else int(hidden * mlp_ratio),
        hidden_act="silu" if swiglu else hf.get("hidden_act", "gelu"),
        mlp_type="glu" if swiglu else "mlp",
        hidden_dropout_prob=hf.get("hidden_dropout_prob", 0.0),
        attention_probs_dropout_prob=hf.get("attention_probs_dropout_prob", 0.0),
        drop_path_rate=hf.get("drop_path_rate", 0.0),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-6),
        qkv_bias=hf.get("qkv_bias", True),
        initializer_range=hf.get("initializer_range", 0.02),
        layerscale_init=float(hf.get("layerscale_value", 1.0)),
        position_embedding="learned",
        class_position_embedding=True,
        position_interpolation="bicubic_antialias" if family == "dinov2_with_registers" else "bicubic",
        num_register_tokens=registers,
        pooling=pooling,
        **labels_of(hf),
    )


def state_dict_from_dinov2(state_dict: dict[str, torch.Tensor], family: str = "dinov2") -> dict[str, torch.Tensor]:
    """Renames an in-memory DINOv2 (with or without registers) state dict onto our names (q/k/v and SwiGLU's gate/up
    are fused by `transformers_common.fuse_layers`)."""
    prefix = r"(?:dinov2\.|dinov2_with_registers\.)?"
    rules = [
        (prefix + r"embeddings\.cls_token", "vit.embeddings.cls_token"),
        (prefix + r"embeddings\.register_tokens", "vit.embeddings.register_tokens"),
        (prefix + r"embeddings\.position_embeddings", "vit.embeddings.position_embeddings"),
        (prefix + r"embeddings\.patch_embeddings\.projection\.(weight|bias)",
         r"vit.embeddings.patch_embeddings.projection.\1"),
        (prefix + r"embeddings\.mask_token", None),  # masked image modelling only
        (prefix + r"layernorm\.(weight|bias)", r"vit.layernorm.\1"),
        (r"classifier\.(weight|bias)", r"classifier.\1"),
    ]
    rules += [(prefix + pattern, ours) for pattern, ours in layer_rules("encoder.layer", _LAYER_NAMES)]
    rules += [(prefix + pattern, ours) for pattern, ours in layerscale_rules("encoder.layer")]
    return rename_state_dict(state_dict, rules, family=family)


def from_dinov2(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory `Dinov2Model`, `Dinov2ForImageClassification` or their `Dinov2WithRegisters`
    versions: pooling "cls" for the backbones (their pooler output), "cls_mean" with the head for the classifiers."""
    family = model.config.model_type
    role = expect_class(model, _CLASSES, family)
    fields = config_from_dinov2(model.config, pooling="cls_mean" if role == "classifier" else "cls")
    state_dict = state_dict_from_dinov2(model.state_dict(), family)
    return finish(fields, state_dict, overrides, family=family, source=type(model).__name__)


__all__ = ["MODEL_TYPES", "config_from_dinov2", "from_dinov2", "state_dict_from_dinov2", "swiglu_hidden_size"]
