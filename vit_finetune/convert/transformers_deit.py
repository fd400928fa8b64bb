"""transformers' DeiT (`deit`: `DeiTModel`, `DeiTForImageClassification`) onto our model.

transformers' DeiT always has a distillation token after the CLS token, with its own row in the position table.
It is our one register token, whose value is exactly `distillation_token + position_embeddings[:, 1]` (a register
gets no position, and the distillation token's position row never changes with the resolution: transformers keeps
the first two rows as they are and resizes the patch rows with plain bicubic, as ours does). The position table is
then the CLS row and the patch rows. Pooling "cls": `DeiTForImageClassification` classifies the CLS token alone.
`DeiTModel`'s tanh pooler (`add_pooling_layer=True`) is not used for classification and is left out.

Refused: `DeiTForImageClassificationWithTeacher`, whose logits average a CLS head and a distillation-token head;
our model has one head on one pooled feature.
"""

from __future__ import annotations

from typing import Any

import torch

from ..modeling_vit import ViTForImageClassification
from .transformers_common import config_dict, expect_class, finish, labels_of, layer_rules, refuse, rename_state_dict
from .transformers_vit import VIT_LAYER_NAMES

MODEL_TYPES = ("deit",)
_CLASSES = {"DeiTModel": "backbone", "DeiTForImageClassification": "classifier"}
_REFUSED = {
    "DeiTForImageClassificationWithTeacher": "its logits are the average of two heads (on the CLS token and on the "
                                             "distillation token), which vit-finetune's ViT (one head on one pooled "
                                             "feature) cannot represent; convert its backbone "
                                             "(DeiTModel, model.deit) or a DeiTForImageClassification",
}
# DeiT and ViT-MAE are transformers' ViT with other embeddings: its in-memory layer names.
_LAYER_NAMES = VIT_LAYER_NAMES


def config_from_deit(source: Any) -> dict[str, Any]:
    """ViTConfig fields for a transformers `DeiTConfig`."""
    hf = config_dict(source)
    if hf.get("model_type") not in MODEL_TYPES:
        raise ValueError(f"expected a DeiT config (model_type 'deit'), got {hf.get('model_type')!r}")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    refuse(hf.get("head_dim") not in (None, hidden // heads), "deit",
           f"head_dim={hf.get('head_dim')} (not hidden_size / num_attention_heads)")
    image_size, patch_size = hf.get("image_size", 224), hf.get("patch_size", 16)
    refuse(not isinstance(image_size, int) or not isinstance(patch_size, int), "deit",
           f"a non-square image_size {image_size!r} or patch_size {patch_size!r}")
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=hf.get("num_channels", 3),
        hidden_size=hidden,
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=heads,
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
        num_register_tokens=1,
        pooling="cls",
        **labels_of(hf),
    )


def state_dict_from_deit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames an in-memory DeiT state dict onto our names: the distillation token (plus its position row) becomes
    the register token, the position table loses that row."""
    prefix = r"(?:deit\.)?"
    rules = [
        (prefix + r"embeddings\.cls_token", "vit.embeddings.cls_token"),
        (prefix + r"embeddings\.distillation_token", "vit.embeddings.distillation_token"),
        (prefix + r"embeddings\.position_embeddings", "vit.embeddings.position_embeddings"),
        (prefix + r"embeddings\.patch_embeddings\.projection\.(weight|bias)",
         r"vit.embeddings.patch_embeddings.projection.\1"),
        (prefix + r"embeddings\.mask_token", None),  # masked image modelling only
        (prefix + r"layernorm\.(weight|bias)", r"vit.layernorm.\1"),
        (prefix + r"pooler\.dense\.(weight|bias)", None),  # DeiTModel's tanh pooler: not a classification path
        (r"classifier\.(weight|bias)", r"classifier.\1"),
        *[(prefix + pattern, ours) for pattern, ours in layer_rules("layers", _LAYER_NAMES)],
    ]
    out = rename_state_dict(state_dict, rules, family="deit")
    table = out.pop("vit.embeddings.position_embeddings")
    distillation = out.pop("vit.embeddings.distillation_token")
    out["vit.embeddings.register_tokens"] = distillation + table[:, 1:2]
    out["vit.embeddings.position_embeddings"] = torch.cat([table[:, :1], table[:, 2:]], dim=1)
    return out


def from_deit(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory `DeiTModel` or `DeiTForImageClassification` (pooling "cls")."""
    expect_class(model, _CLASSES, "deit", _REFUSED)
    return finish(config_from_deit(model.config), state_dict_from_deit(model.state_dict()), overrides,
                  family="deit", source=type(model).__name__)


__all__ = ["MODEL_TYPES", "config_from_deit", "from_deit", "state_dict_from_deit"]
