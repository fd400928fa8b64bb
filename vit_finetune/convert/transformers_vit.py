"""transformers' ViT (`google/vit-*`, `ViTModel`, `ViTForImageClassification`) onto our model: its config onto a
`ViTConfig`, its weights onto our names (and back: `state_dict_to_transformers`, for `vit-finetune export`).

Our layout (fused qkv, as timm) differs from transformers' (separate q, k, v), so transformers weights are
concatenated; transformers 5 names the same weights differently in memory (`vit.layers.N.attention.q_proj`)
and on disk (`vit.encoder.layer.N.attention.attention.query`), and both are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from ..configuration_vit import ViTConfig
from ..modeling_vit import ViTForImageClassification
from .build import build_model, merge_overrides, split_labels

# Names of the per-layer weights of a transformers ViT, in memory (v5) and on disk (v4 and v5 checkpoints),
# mapped to ours. Attention q/k/v are listed separately and fused afterwards.
# transformers 5, in memory (also the names of its ViT copies: DeiT, ViT-MAE)
VIT_LAYER_NAMES = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.q_proj": "attention.q",
    "attention.k_proj": "attention.k",
    "attention.v_proj": "attention.v",
    "attention.o_proj": "attention.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_TRANSFORMERS_LAYER_NAMES = {
    **VIT_LAYER_NAMES,
    # checkpoints on disk
    "attention.attention.query": "attention.q",
    "attention.attention.key": "attention.k",
    "attention.attention.value": "attention.v",
    "attention.output.dense": "attention.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_TRANSFORMERS_LAYER = re.compile(r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")



def config_from_transformers(source: dict[str, Any] | Any, **overrides: Any) -> ViTConfig:
    """A `ViTConfig` from a transformers `ViTConfig` (object or its config.json dict)."""
    hf = source if isinstance(source, dict) else source.to_dict()
    if hf.get("model_type") not in (None, "vit"):
        raise ValueError(f"expected a transformers ViT config (model_type 'vit'), got {hf.get('model_type')!r}")
    fields = dict(
        image_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 16),
        num_channels=hf.get("num_channels", 3),
        hidden_size=hf.get("hidden_size", 768),
        num_hidden_layers=hf.get("num_hidden_layers", 12),
        num_attention_heads=hf.get("num_attention_heads", 12),
        intermediate_size=hf.get("intermediate_size", 3072),
        hidden_act=hf.get("hidden_act", "gelu"),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        qkv_bias=hf.get("qkv_bias", True),
        initializer_range=hf.get("initializer_range", 0.02),
        position_embedding="learned",
        pooling="cls",
        patch_embedding="patch",
    )
    if "id2label" in hf:
        fields["id2label"] = {int(k): v for k, v in hf["id2label"].items()}
    return ViTConfig(**merge_overrides(fields, overrides))


def state_dict_from_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a transformers ViT state dict (either naming, with or without `vit.`) onto ours."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        match = _TRANSFORMERS_LAYER.match(key)
        if match:
            index, name, kind = int(match.group(1)), match.group(2), match.group(3)
            if name not in _TRANSFORMERS_LAYER_NAMES:
                raise ValueError(f"unexpected transformers ViT weight {key!r}")
            ours = _TRANSFORMERS_LAYER_NAMES[name]
            if ours in ("attention.q", "attention.k", "attention.v"):
                qkv.setdefault((index, kind), {})[ours[-1]] = tensor
            else:
                out[f"vit.layers.{index}.{ours}.{kind}"] = tensor
            continue
        bare = key.removeprefix("vit.")
        if bare.startswith("embeddings.") or bare.startswith("layernorm."):
            if "mask_token" in bare:
                continue  # only used for masked image modeling
            out[f"vit.{bare}"] = tensor
        elif bare.startswith("classifier."):
            out[bare] = tensor
        elif bare.startswith("pooler."):
            continue  # ViTModel's tanh pooler; image classification never uses it
        else:
            raise ValueError(f"unexpected transformers ViT weight {key!r}")
    for (index, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {index} lacks one of query/key/value {kind}")
        out[f"vit.layers.{index}.attention.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def state_dict_to_transformers(state_dict: dict[str, torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The inverse of `state_dict_from_transformers`: our weights under `names`, the state-dict keys of the
    transformers ViT to fill (either naming; the target model's own keys, so its version decides), read off the
    same name table. Fused qkv is split back into query, key and value. Raises ValueError for a target name the
    table does not know and for any weight of ours left over (a part the transformers ViT has no place for)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key in names:
        match = _TRANSFORMERS_LAYER.match(key)
        part = None
        if match:
            index, name, kind = int(match.group(1)), match.group(2), match.group(3)
            if name not in _TRANSFORMERS_LAYER_NAMES:
                raise ValueError(f"unexpected transformers ViT weight {key!r}")
            ours = _TRANSFORMERS_LAYER_NAMES[name]
            if ours in ("attention.q", "attention.k", "attention.v"):
                source, part = f"vit.layers.{index}.attention.qkv.{kind}", "qkv".index(ours[-1])
            else:
                source = f"vit.layers.{index}.{ours}.{kind}"
        else:
            bare = key.removeprefix("vit.")
            if not bare.startswith(("embeddings.", "layernorm.", "classifier.")) or "mask_token" in bare:
                raise ValueError(f"unexpected transformers ViT weight {key!r}")
            source = bare if bare.startswith("classifier.") else f"vit.{bare}"
        if source not in state_dict:
            raise ValueError(f"transformers ViT weight {key!r} needs {source!r}, which the model does not have")
        tensor = state_dict[source]
        out[key] = tensor.chunk(3)[part].clone() if part is not None else tensor
        used.add(source)
    left_over = sorted(set(state_dict) - used)
    if left_over:
        raise ValueError(f"the transformers ViT has no place for these weights: {left_over}")
    return out


def from_transformers(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory transformers `ViTModel` or `ViTForImageClassification`."""
    overrides, id2label = split_labels(overrides)
    config = config_from_transformers(model.config, **overrides)
    return build_model(config, state_dict_from_transformers(model.state_dict()), source=type(model).__name__,
                       id2label=id2label)
