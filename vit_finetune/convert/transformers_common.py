"""What the transformers family importers (`transformers_dinov2.py`, `transformers_dinov3.py`, `transformers_siglip.py`,
`transformers_clip.py`, `transformers_deit.py`, `transformers_vit_mae.py`) share: renaming an in-memory state dict by
a table of rules, fusing the separate query/key/value projections into our `qkv` (and a gated MLP's gate and up
projections into our `fc1`), zero biases where the source has none, and the entry point's last step.

Each family module maps the IN-MEMORY transformers names (`model.state_dict()`): folders and Hub ids are loaded with
the stock transformers class first (`pretrained.py`), so any on-disk naming transformers understands is handled by
transformers itself.

A Linear without bias is exactly a Linear with a zero bias, so a source without some bias (CLIP's patch convolution,
DINOv3's `mlp_bias=False`) converts exactly; the zero bias is then an ordinary parameter that fine-tuning may move.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from ..configuration_vit import ViTConfig
from ..modeling_vit import ViTForImageClassification
from .build import build_model, merge_overrides, split_labels

# Our per-layer names that are assembled from several source tensors.
_ATTENTION_PARTS = ("q", "k", "v")
_LAYER_KEY = re.compile(r"^vit\.layers\.(\d+)\.(attention\.[qkv]|mlp\.gate|mlp\.up)\.(weight|bias)$")

Rules = Sequence[tuple[str, str | None]]


def rename_state_dict(state_dict: dict[str, torch.Tensor], rules: Rules, *, family: str) -> dict[str, torch.Tensor]:
    """Every key renamed by the first rule (regex, replacement) that matches it whole; a replacement of None drops
    the key (weights our model has no use for, e.g. a text tower). A key no rule matches is a ValueError naming it:
    a weight silently dropped would be a silently different model."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in compiled:
            match = pattern.fullmatch(key)
            if match:
                if replacement is not None:
                    out[match.expand(replacement)] = tensor
                break
        else:
            raise ValueError(f"unexpected {family} weight {key!r}: this importer does not know where it goes")
    return out


def fuse_layers(state_dict: dict[str, torch.Tensor], config: ViTConfig, *, family: str) -> dict[str, torch.Tensor]:
    """Per layer: `attention.{q,k,v}` into our fused `attention.qkv` (zero biases for the parts without one when
    `config.qkv_bias`), `mlp.{gate,up}` stacked into our gated `mlp.fc1` ([gate; up]); zero biases for a bias-less
    patch embedding, attention output projection or MLP."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        match = _LAYER_KEY.match(key)
        if match:
            parts.setdefault(int(match.group(1)), {})[f"{match.group(2)}.{match.group(3)}"] = tensor
        else:
            out[key] = tensor
    hidden = config.hidden_size
    for index in range(config.num_hidden_layers):
        layer = parts.get(index, {})
        prefix = f"vit.layers.{index}"
        weights = [layer.get(f"attention.{part}.weight") for part in _ATTENTION_PARTS]
        if any(weight is None for weight in weights):
            raise ValueError(f"{family} layer {index} lacks one of the query/key/value projections")
        out[f"{prefix}.attention.qkv.weight"] = torch.cat(weights)
        biases = [layer.get(f"attention.{part}.bias") for part in _ATTENTION_PARTS]
        if config.qkv_bias:
            like = weights[0]
            out[f"{prefix}.attention.qkv.bias"] = torch.cat(
                [bias if bias is not None else like.new_zeros(hidden) for bias in biases]
            )
        elif any(bias is not None for bias in biases):
            raise ValueError(f"{family} layer {index} has query/key/value biases but the config maps to qkv_bias=False")
        if config.mlp_type == "glu":
            gate, up = layer.get("mlp.gate.weight"), layer.get("mlp.up.weight")
            if gate is None or up is None:
                raise ValueError(f"{family} layer {index} lacks the gate or up projection of its gated MLP")
            out[f"{prefix}.mlp.fc1.weight"] = torch.cat([gate, up])
            gate_bias, up_bias = layer.get("mlp.gate.bias"), layer.get("mlp.up.bias")
            if gate_bias is not None or up_bias is not None:
                out[f"{prefix}.mlp.fc1.bias"] = torch.cat([
                    gate_bias if gate_bias is not None else gate.new_zeros(gate.shape[0]),
                    up_bias if up_bias is not None else up.new_zeros(up.shape[0]),
                ])
        elif any(name.startswith("mlp.") for name in layer):
            raise ValueError(f"{family} layer {index} has a gated MLP but the config maps to mlp_type='mlp'")
    extra = sorted(set(parts) - set(range(config.num_hidden_layers)))
    if extra:
        raise ValueError(f"{family} weights have layers {extra} beyond num_hidden_layers={config.num_hidden_layers}")
    # Bias-less Linears and convolutions: a zero bias is the same function.
    optional = ["vit.embeddings.patch_embeddings.projection"]
    for index in range(config.num_hidden_layers):
        optional += [f"vit.layers.{index}.attention.proj", f"vit.layers.{index}.mlp.fc1", f"vit.layers.{index}.mlp.fc2"]
    for name in optional:
        weight = out.get(f"{name}.weight")
        if weight is not None and f"{name}.bias" not in out:
            out[f"{name}.bias"] = weight.new_zeros(weight.shape[0])
    return out


def layer_rules(source_prefix: str, names: dict[str, str]) -> list[tuple[str, str]]:
    """Rules for the per-layer weights `source_prefix.N.<source name>.(weight|bias)` -> `vit.layers.N.<ours>`."""
    rules = []
    for source, ours in names.items():
        rules.append((rf"{re.escape(source_prefix)}\.(\d+)\.{re.escape(source)}\.(weight|bias)",
                      rf"vit.layers.\1.{ours}.\2"))
    return rules


def layerscale_rules(source_prefix: str) -> list[tuple[str, str]]:
    """DINOv2/DINOv3 LayerScale `source_prefix.N.layer_scale{1,2}.lambda1` -> our `vit.layers.N.ls{1,2}.gamma`."""
    return [(rf"{re.escape(source_prefix)}\.(\d+)\.layer_scale([12])\.lambda1", r"vit.layers.\1.ls\2.gamma")]


def labels_of(config: Any) -> dict[str, Any]:
    """The source config's (object or dict) label set as ViTConfig fields (none when it has no id2label)."""
    id2label = config.get("id2label") if isinstance(config, dict) else getattr(config, "id2label", None)
    return {"id2label": {int(k): v for k, v in id2label.items()}} if id2label else {}


def config_dict(source: Any) -> dict[str, Any]:
    """A transformers config object or its config.json dict, as a dict."""
    return dict(source) if isinstance(source, dict) else source.to_dict()


def refuse(condition: bool, family: str, feature: str) -> None:
    """A ValueError naming the feature our model cannot reproduce exactly (never a silent approximation)."""
    if condition:
        raise ValueError(f"{family}: {feature} cannot be represented exactly by vit-finetune's ViT; refusing to "
                         "convert an approximation")


def expect_class(model: torch.nn.Module, accepted: dict[str, str], family: str,
                 refused: dict[str, str] | None = None) -> str:
    """The role of `model`'s class among `accepted` (class name -> role), or a ValueError naming the class: with the
    reason for one in `refused`, else the accepted ones."""
    name = type(model).__name__
    if refused and name in refused:
        raise ValueError(f"{name} cannot be converted: {refused[name]}")
    if name not in accepted:
        raise ValueError(f"{family}: cannot convert a {name}; accepted classes: {', '.join(sorted(accepted))}")
    return accepted[name]


def finish(fields: dict[str, Any], state_dict: dict[str, torch.Tensor], overrides: dict[str, Any], *,
           family: str, source: str) -> ViTForImageClassification:
    """Our model from the mapped config fields and our-named state dict, the user's overrides on top."""
    overrides, id2label = split_labels(overrides)
    config = ViTConfig(**merge_overrides(fields, overrides))
    state_dict = fuse_layers(state_dict, config, family=family)
    return build_model(config, state_dict, source=source, id2label=id2label)


__all__ = ["config_dict", "expect_class", "finish", "fuse_layers", "labels_of", "layer_rules", "layerscale_rules",
           "refuse", "rename_state_dict"]
