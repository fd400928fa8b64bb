"""timm's `Eva` class onto our model: EVA-02 (`eva02_*`: rotary positions "eva02" over a reference grid plus a
learned table, SwiGLU with the MLP's sub-LN, query and value biases only) and the DINOv3 ViTs (`vit_*_dinov3*`:
rotary positions "dinov3", no table, 4 registers, LayerScale, average pooling by default).

What our model cannot reproduce exactly is refused with an error naming it: the attention's sub-LN
(`scale_attn_inner`, EVA-CLIP), post-norm blocks, gated attention, grouped-query or `attn_type='rope'` attention,
LayerScale on the attention branch only, rope types 'mixed', 'base' and 'mrope', pixel-frequency or offset rope
grids, 'xy' grid indexing, another rotation layout than each kind's own, and non-square reference grids.

Not represented, and not refused: the rope's train-time coordinate augmentation (DINOv3's `rope_shift_coords`,
`rope_jitter_coords`, `rope_rescale_coords`), which timm applies in training mode only. The imported model's
outputs equal timm's in eval mode; fine-tuning it trains without that augmentation. Dynamic image sizes are fine:
rotary positions need no interpolation, and a learned table is resampled as timm does (bicubic, antialiased).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..configuration_vit import ViTConfig
from .timm_vit import (
    attention_pool_fields,
    check_norms,
    final_norm_fields,
    head_fields,
    is_identity,
    mlp_fields,
    patch_fields,
    pooling_field,
    put_ends,
    put_linear,
    put_mlp,
    put_norm,
    put_tokens,
    unsupported,
)

logger = logging.getLogger(__name__)


def _rope_fields(model: nn.Module, head_dim: int, problems: list[str]) -> dict[str, Any]:
    """rotary_embedding, rotary_theta and rotary_reference_grid of the model's rope module."""
    rope = model.rope
    if rope is None:
        return dict(rotary_embedding=None)
    kind = type(rope).__name__
    if getattr(model, "rope_mixed", False) or kind not in ("RotaryEmbeddingCat", "RotaryEmbeddingDinoV3"):
        name = "mixed" if getattr(model, "rope_mixed", False) else kind
        problems.append(f"rope {name} (only rope_type 'cat' as EVA-02 and 'dinov3')")
        return {}
    if rope.dim != head_dim:
        problems.append(f"rope over {rope.dim} channels of {head_dim}-channel heads")
    if float(rope.grid_offset) != 0.0:
        problems.append(f"rope_grid_offset={rope.grid_offset}")
    if rope.grid_indexing != "ij":
        problems.append(f"rope_grid_indexing={rope.grid_indexing!r} (only 'ij')")
    halves = {block.attn.rotate_half for block in model.blocks}
    if halves != {rope.rotate_half}:
        problems.append("blocks rotating otherwise than the rope embedding is laid out")
    if getattr(rope, "aug_active", False):
        logger.warning("the timm model's rope coordinate augmentation (rope_shift_coords / rope_jitter_coords / "
                       "rope_rescale_coords, training mode only) is not carried over: fine-tuning runs without it")
    fields: dict[str, Any] = dict(rotary_theta=float(rope.temperature))
    if kind == "RotaryEmbeddingDinoV3":
        fields["rotary_embedding"] = "dinov3"
        if rope.normalize_coords != "separate":
            problems.append(f"DINOv3 rope coordinates normalised by {rope.normalize_coords!r} (only 'separate')")
        if rope.min_period is not None and rope.max_period is not None:
            problems.append("DINOv3 rope periods from min_period/max_period (only from the temperature)")
        if not rope.rotate_half:
            problems.append("DINOv3 rope with interleaved pairs (ours rotates halves)")
        return fields
    fields["rotary_embedding"] = "eva02"
    if rope.grid_type != "index" or rope.in_pixels:
        problems.append(f"rope on a {rope.grid_type!r} grid with pixel frequencies (in_pixels; only EVA-02's "
                        "patch indices and inverse-frequency bands)")
    if rope.rotate_half:
        problems.append("EVA-02 rope rotating halves (rope_rotate_half; ours pairs neighbours)")
    reference = rope.ref_feat_shape
    if reference is not None:
        reference = tuple(int(side) for side in reference)
        if reference[0] != reference[1]:
            problems.append(f"a non-square rope reference grid {reference}")
        fields["rotary_reference_grid"] = reference[0]
    return fields


def eva_fields(model: nn.Module) -> dict[str, Any]:
    """Our config fields for a timm Eva, or a ValueError naming everything that does not fit."""
    problems: list[str] = []
    kinds = {type(block).__name__ for block in model.blocks}
    if kinds != {"EvaBlock"}:
        unsupported("Eva", [f"blocks {sorted(kinds)} (only the pre-norm EvaBlock: no use_post_norm)"])
    attention_kinds = {type(block.attn).__name__ for block in model.blocks}
    if attention_kinds != {"EvaAttention"}:
        unsupported("Eva", [f"attention {sorted(attention_kinds)} (only EvaAttention: no attn_type='rope' or "
                            "grouped-query attention)"])
    block = model.blocks[0]
    attn = block.attn
    hidden = model.embed_dim
    fields: dict[str, Any] = dict(hidden_size=hidden, num_hidden_layers=len(model.blocks),
                                  num_attention_heads=attn.num_heads)
    fields.update(patch_fields(model, problems))
    if attn.head_dim * attn.num_heads != hidden:
        problems.append(f"attention heads of {attn.head_dim} channels x {attn.num_heads} != {hidden} (attn_head_dim)")
    if any(not is_identity(b.attn.norm) for b in model.blocks):
        problems.append("a LayerNorm inside the attention (scale_attn_inner, the attention's sub-LN)")
    if any(getattr(b.attn, "gate", None) is not None for b in model.blocks):
        problems.append("gated attention (gated_attn)")
    if any(b.attn.num_prefix_tokens != model.num_prefix_tokens for b in model.blocks):
        problems.append("attention that leaves another number of prefix tokens unrotated than the model has")
    mlp = mlp_fields(block.mlp, problems)
    fields.update(mlp)
    scales = {(b.gamma_1 is not None, b.gamma_2 is not None) for b in model.blocks}
    if len(scales) > 1 or next(iter(scales))[0] != next(iter(scales))[1]:
        problems.append("LayerScale on the attention branch only (attn_only_layer_scale)")
    fields["layerscale_init"] = float(block.init_values) if block.gamma_1 is not None else None

    # q, k, v: fused (q_bias, a k_bias buffer held at zero, v_bias) or separate (q_proj, k_proj without bias, v_proj)
    fused = attn.qkv is not None
    biased = attn.q_bias is not None if fused else attn.q_proj.bias is not None
    fields["qkv_bias"] = biased
    fields["key_bias"] = False
    if not fused and (attn.k_proj.bias is not None or (attn.v_proj.bias is not None) != biased):
        problems.append("separate q/k/v projections with biases other than on q and v")
    fields["qk_norm"] = not is_identity(attn.q_norm)
    for index, other in enumerate(model.blocks):
        other_fused = other.attn.qkv is not None
        other_biased = other.attn.q_bias is not None if other_fused else other.attn.q_proj.bias is not None
        if (mlp_fields(other.mlp, []) != mlp or other_biased != biased or other.attn.num_heads != attn.num_heads
                or is_identity(other.attn.q_norm) == fields["qk_norm"]):
            problems.append(f"block {index} built unlike block 0")
            break
    fields.update(_rope_fields(model, attn.head_dim, problems))

    # tokens and positions
    fields["class_token"] = model.cls_token is not None
    fields["num_register_tokens"] = int(model.reg_token.shape[1]) if model.reg_token is not None else 0
    fields["position_embedding"] = "learned" if model.pos_embed is not None else "none"
    if model.pos_embed is None and fields.get("rotary_embedding") is None:
        problems.append("neither a position table nor rotary positions")
    fields["class_position_embedding"] = not model.no_embed_class
    fields["position_interpolation"] = "bicubic_antialias"
    fields["norm_pre"] = not is_identity(model.norm_pre)

    # final norm and pooling (Eva's attention pooling reads every token, as ours)
    fields.update(final_norm_fields(model, problems))
    fields["pooling"] = pooling_field(model.global_pool, attn_pool=model.attn_pool, fc_norm=fields["fc_norm"],
                                      problems=problems)
    if fields["pooling"] == "map" and model.attn_pool is not None:
        attention_pool_fields(model.attn_pool, fields, problems)

    norms = {"norm_pre": model.norm_pre, "norm": model.norm, "fc_norm": model.fc_norm}
    for index, other in enumerate(model.blocks):
        norms.update({f"blocks.{index}.norm1": other.norm1, f"blocks.{index}.norm2": other.norm2,
                      f"blocks.{index}.attn.q_norm": other.attn.q_norm,
                      f"blocks.{index}.attn.k_norm": other.attn.k_norm,
                      f"blocks.{index}.mlp.norm": getattr(other.mlp, "norm", None)})
    if model.attn_pool is not None and hasattr(model.attn_pool, "norm"):
        norms["attn_pool.norm"] = model.attn_pool.norm
    fields["layer_norm_eps"] = check_norms(norms, problems)
    fields.update(head_fields(model, problems))
    unsupported("Eva", problems)
    return fields


def _qkv(attn: nn.Module, biased: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eva's query, key and value projections as our one fused qkv (weight, bias): the key's bias rows are zero."""
    if attn.qkv is not None:
        weight = attn.qkv.weight.detach().clone()
        if not biased:
            return weight, None
        return weight, torch.cat([attn.q_bias.detach(), torch.zeros_like(attn.q_bias.detach()),
                                  attn.v_bias.detach()]).clone()
    weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach().clone()
    if not biased:
        return weight, None
    bias = attn.q_proj.bias.detach()
    return weight, torch.cat([bias, torch.zeros_like(bias), attn.v_proj.bias.detach()]).clone()


def eva_state_dict(model: nn.Module, config: ViTConfig) -> dict[str, torch.Tensor]:
    """The weights of a timm Eva in our names (its config from `eva_fields`)."""
    out: dict[str, torch.Tensor] = {}
    put_tokens(out, model)
    put_ends(out, model)
    for index, block in enumerate(model.blocks):
        prefix = f"vit.layers.{index}"
        put_norm(out, f"{prefix}.norm1", block.norm1)
        weight, bias = _qkv(block.attn, config.qkv_bias)
        out[f"{prefix}.attention.qkv.weight"] = weight
        if bias is not None:
            out[f"{prefix}.attention.qkv.bias"] = bias
        if config.qk_norm:
            put_norm(out, f"{prefix}.attention.q_norm", block.attn.q_norm)
            put_norm(out, f"{prefix}.attention.k_norm", block.attn.k_norm)
        put_linear(out, f"{prefix}.attention.proj", block.attn.proj)
        put_norm(out, f"{prefix}.norm2", block.norm2)
        put_mlp(out, f"{prefix}.mlp", block.mlp)
        if config.layerscale_init is not None:
            out[f"{prefix}.ls1.gamma"] = block.gamma_1.detach().clone()
            out[f"{prefix}.ls2.gamma"] = block.gamma_2.detach().clone()
    return out
