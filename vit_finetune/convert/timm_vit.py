"""timm's `VisionTransformer` (`vit_*` with a class token) onto our model: its configuration (from the model or
from a state dict alone) onto a `ViTConfig`, its weights onto our names."""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from ..configuration_vit import ViTConfig
from ..modeling_vit import ViTForImageClassification
from .build import build_model, merge_overrides, split_labels


def config_from_timm(model: torch.nn.Module, **overrides: Any) -> ViTConfig:
    """A `ViTConfig` from a timm `VisionTransformer` instance (vit_*_patch*_* with a class token)."""
    if type(model).__name__ != "VisionTransformer":
        raise ValueError(f"expected a timm VisionTransformer, got {type(model).__name__}")
    unsupported = {
        "no class token": getattr(model, "cls_token", None) is None,
        "register tokens": getattr(model, "num_reg_tokens", 0) > 0,
        "position embedding without the class token (no_embed_class)": getattr(model, "no_embed_class", False),
        "a norm before the blocks (norm_pre)": not isinstance(getattr(model, "norm_pre", torch.nn.Identity()),
                                                               torch.nn.Identity),
        "a norm after pooling (fc_norm)": not isinstance(getattr(model, "fc_norm", torch.nn.Identity()),
                                                         torch.nn.Identity),
        f"global_pool={getattr(model, 'global_pool', None)!r}": getattr(model, "global_pool", "token") != "token",
        "qk_norm": not isinstance(getattr(model.blocks[0].attn, "q_norm", torch.nn.Identity()), torch.nn.Identity),
    }
    problems = [name for name, present in unsupported.items() if present]
    if problems:
        raise ValueError(f"this timm ViT uses {', '.join(problems)}, which vit-finetune's ViT does not have")
    patch = model.patch_embed.proj
    block = model.blocks[0]
    layerscale = getattr(block, "ls1", None)
    fields = dict(
        image_size=model.patch_embed.img_size[0],
        patch_size=patch.kernel_size[0],
        num_channels=patch.in_channels,
        hidden_size=model.embed_dim,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=block.attn.num_heads,
        intermediate_size=block.mlp.fc1.out_features,
        hidden_act="gelu",
        layer_norm_eps=block.norm1.eps,
        qkv_bias=block.attn.qkv.bias is not None,
        position_embedding="learned",
        pooling="cls",
        patch_embedding="patch",
        layerscale_init=float(layerscale.gamma.detach().mean()) if hasattr(layerscale, "gamma") else None,
    )
    num_classes = getattr(model, "num_classes", 0)
    if num_classes:
        fields["num_labels"] = num_classes
    return ViTConfig(**merge_overrides(fields, overrides))


def config_from_timm_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None, **overrides: Any
) -> ViTConfig:
    """A `ViTConfig` read off the shapes of a timm ViT state dict (e.g. a downloaded `model.safetensors`).

    The head count is not visible in the shapes: pass it, or the ViT convention (64 channels per head,
    16 heads for ViT-Huge) is assumed.
    """
    hidden = state_dict["cls_token"].shape[-1]
    proj = state_dict["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    grid = int(math.sqrt(state_dict["pos_embed"].shape[1] - 1))
    fields = dict(
        image_size=grid * proj.shape[-1],
        patch_size=proj.shape[-1],
        num_channels=proj.shape[1],
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=num_attention_heads or (16 if hidden == 1280 else max(hidden // 64, 1)),
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        layer_norm_eps=1e-6,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        layerscale_init=1e-5 if "blocks.0.ls1.gamma" in state_dict else None,
    )
    if "head.weight" in state_dict:
        fields["num_labels"] = state_dict["head.weight"].shape[0]
    return ViTConfig(**merge_overrides(fields, overrides))


def state_dict_from_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a timm VisionTransformer state dict onto ours (timm's qkv is already fused)."""
    renames = [
        (r"^cls_token$", "vit.embeddings.cls_token"),
        (r"^pos_embed$", "vit.embeddings.position_embeddings"),
        (r"^patch_embed\.proj\.", "vit.embeddings.patch_embeddings.projection."),
        (r"^blocks\.(\d+)\.attn\.", r"vit.layers.\1.attention."),
        (r"^blocks\.(\d+)\.ls(\d)\.gamma$", r"vit.layers.\1.ls\2.gamma"),
        (r"^blocks\.(\d+)\.", r"vit.layers.\1."),
        (r"^norm\.", "vit.layernorm."),
        (r"^head\.", "classifier."),
    ]
    out = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in renames:
            new_key, found = re.subn(pattern, replacement, key)
            if found:
                out[new_key] = tensor
                break
        else:
            raise ValueError(f"unexpected timm ViT weight {key!r}")
    return out


def from_timm(
    model_or_state_dict: torch.nn.Module | dict[str, torch.Tensor], **overrides: Any
) -> ViTForImageClassification:
    """Our model from a timm `VisionTransformer`, or from its state dict (see `config_from_timm_state_dict`)."""
    overrides, id2label = split_labels(overrides)
    if isinstance(model_or_state_dict, dict):
        config = config_from_timm_state_dict(model_or_state_dict, **overrides)
        return build_model(config, state_dict_from_timm(model_or_state_dict), source="timm state dict",
                           id2label=id2label)
    config = config_from_timm(model_or_state_dict, **overrides)
    return build_model(config, state_dict_from_timm(model_or_state_dict.state_dict()), source="timm model",
                       id2label=id2label)
