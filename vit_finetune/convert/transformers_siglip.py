"""transformers' SigLIP and SigLIP 2 vision towers onto our model: `SiglipVisionModel` (`siglip_vision_model`),
`Siglip2VisionModel` (`siglip2_vision_model`), the vision tower of a full `SiglipModel` / `Siglip2Model` (`siglip` /
`siglip2`; the text tower and the logit scale and bias are left out), and `Siglip(2)ForImageClassification`.

The mapping, all exact:
- no CLS token (`class_token=False`); a position table over the patches only;
- SigLIP's `interpolate_pos_encoding` resizes the table with plain bicubic ("bicubic");
- SigLIP 2 (NaFlex) ALWAYS resizes its table (a square grid of `num_patches`) to each image's patch grid with an
  antialiased bilinear filter: its `resize_positional_embeddings` is the triangle filter widened by the
  downscaling factor, weights renormalised at the borders, half-pixel centres (`align_corners=False`), which is
  `F.interpolate(mode="bilinear", antialias=True)`: our "bilinear_antialias". At the table's own grid it is the
  identity, so our model (built at `sqrt(num_patches) * patch_size` px) uses the table as is there and resizes it
  with `interpolate_pos_encoding=True` elsewhere;
- SigLIP 2's patch embedding is a Linear over each flattened (p, p, C) patch (the NaFlex processor's layout); it is
  reshaped into our convolution's (D, C, p, p) weight, the same function on an image. Our model takes images
  (B, C, H, W), not NaFlex's padded patch sequences: it matches an unpadded sequence (an attention mask of ones)
  whose `spatial_shapes` is the image's patch grid;
- pooling: the vision models' pooler is SigLIP's attention-pooling head ("map": `probe` -> `latent`, the
  MultiheadAttention's `in_proj` split into `q` and `kv`, `out_proj` -> `proj`); without a head
  (`vision_use_head=False`) and for `Siglip(2)ForImageClassification` (which averages every token) "mean", with its
  head.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..modeling_vit import ViTForImageClassification
from .transformers_common import config_dict, expect_class, finish, labels_of, layer_rules, refuse, rename_state_dict

MODEL_TYPES = ("siglip_vision_model", "siglip2_vision_model", "siglip", "siglip2")
_CLASSES = {
    "SiglipVisionModel": "vision",
    "SiglipModel": "full",
    "SiglipForImageClassification": "classifier",
    "Siglip2VisionModel": "vision",
    "Siglip2Model": "full",
    "Siglip2ForImageClassification": "classifier",
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
_POOLER_IN_PROJ = "vit.pooler.in_proj"


def vision_config_of(source: Any) -> dict[str, Any]:
    """The vision config (as a dict) of a SigLIP / SigLIP 2 config: itself, or a full config's `vision_config`."""
    hf = config_dict(source)
    if hf.get("model_type") in ("siglip", "siglip2"):
        vision = hf.get("vision_config") or {}
        vision = config_dict(vision)
        vision.setdefault("model_type", f"{hf['model_type']}_vision_model")
        return vision
    return hf


def config_from_siglip(source: Any, *, pooling: str | None = None) -> dict[str, Any]:
    """ViTConfig fields for a SigLIP or SigLIP 2 config (vision or full; the labels are the full config's)."""
    top = config_dict(source)
    hf = vision_config_of(top)
    family = hf.get("model_type")
    if family not in ("siglip_vision_model", "siglip2_vision_model"):
        raise ValueError(f"expected a SigLIP / SigLIP 2 config (model_type {MODEL_TYPES}), "
                         f"got {top.get('model_type')!r}")
    patch_size = hf.get("patch_size", 16)
    if family == "siglip2_vision_model":
        num_patches = int(hf.get("num_patches", 256))
        side = math.isqrt(num_patches)
        refuse(side * side != num_patches, family, f"a position table of num_patches={num_patches} (not a square grid)")
        image_size, interpolation = side * patch_size, "bilinear_antialias"
    else:
        image_size, interpolation = hf.get("image_size", 224), "bicubic"
    refuse(not isinstance(image_size, int) or not isinstance(patch_size, int), family,
           f"a non-square image_size {image_size!r} or patch_size {patch_size!r}")
    if pooling is None:
        pooling = "map" if hf.get("vision_use_head", True) else "mean"
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=hf.get("num_channels", 3),
        hidden_size=hf["hidden_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        hidden_act=hf.get("hidden_act", "gelu_pytorch_tanh"),
        attention_probs_dropout_prob=hf.get("attention_dropout", 0.0),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-6),
        qkv_bias=True,
        position_embedding="learned",
        position_interpolation=interpolation,
        class_token=False,
        pooling=pooling,
        **labels_of(top),
    )


def state_dict_from_siglip(state_dict: dict[str, torch.Tensor], family: str, *, patch_size: int,
                           num_channels: int = 3) -> dict[str, torch.Tensor]:
    """Renames an in-memory SigLIP / SigLIP 2 vision-tower state dict (a `Siglip(2)VisionModel`'s, keys without
    `vision_model.`; a `classifier.*` head may be added) onto our names."""
    rules = [
        (r"embeddings\.patch_embedding\.(weight|bias)", r"vit.embeddings.patch_embeddings.projection.\1"),
        (r"embeddings\.position_embedding\.weight", "vit.embeddings.position_embeddings"),
        (r"post_layernorm\.(weight|bias)", r"vit.layernorm.\1"),
        (r"head\.probe", "vit.pooler.latent"),
        (r"head\.attention\.in_proj_(weight|bias)", _POOLER_IN_PROJ + r".\1"),
        (r"head\.attention\.out_proj\.(weight|bias)", r"vit.pooler.proj.\1"),
        (r"head\.layernorm\.(weight|bias)", r"vit.pooler.norm.\1"),
        (r"head\.mlp\.(fc1|fc2)\.(weight|bias)", r"vit.pooler.mlp.\1.\2"),
        (r"classifier\.(weight|bias)", r"classifier.\1"),
        *layer_rules("encoder.layers", _LAYER_NAMES),
    ]
    out = rename_state_dict(state_dict, rules, family=family)
    out["vit.embeddings.position_embeddings"] = out["vit.embeddings.position_embeddings"].unsqueeze(0)
    patch = out["vit.embeddings.patch_embeddings.projection.weight"]
    if patch.dim() == 2:  # SigLIP 2: Linear over flattened (p, p, C) patches -> conv (D, C, p, p)
        width = patch.shape[0]
        out["vit.embeddings.patch_embeddings.projection.weight"] = (
            patch.reshape(width, patch_size, patch_size, num_channels).permute(0, 3, 1, 2).contiguous()
        )
    for kind in ("weight", "bias"):
        in_proj = out.pop(f"{_POOLER_IN_PROJ}.{kind}", None)
        if in_proj is not None:
            hidden = in_proj.shape[0] // 3
            out[f"vit.pooler.q.{kind}"], out[f"vit.pooler.kv.{kind}"] = in_proj[:hidden], in_proj[hidden:]
    return out


def from_siglip(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory SigLIP / SigLIP 2 vision model, full model (its vision tower) or classifier."""
    family = model.config.model_type
    role = expect_class(model, _CLASSES, family)
    vision = model if role == "vision" else model.vision_model
    fields = config_from_siglip(model.config, pooling="mean" if role == "classifier" else None)
    state_dict = dict(vision.state_dict())
    if role == "classifier":
        state_dict.update({f"classifier.{k}": v for k, v in model.classifier.state_dict().items()})
    state_dict = state_dict_from_siglip(state_dict, vision.config.model_type, patch_size=fields["patch_size"],
                                        num_channels=fields["num_channels"])
    return finish(fields, state_dict, overrides, family=family, source=type(model).__name__)


__all__ = ["MODEL_TYPES", "config_from_siglip", "from_siglip", "state_dict_from_siglip", "vision_config_of"]
