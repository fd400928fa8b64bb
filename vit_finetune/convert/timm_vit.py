"""timm's ViTs onto our model: its configuration (from the model, or from a plain ViT's state dict alone) onto a
`ViTConfig`, its weights onto our names.

Two timm classes are understood, each option mapped onto ours or refused with an error naming it:

    VisionTransformer  (here)         vit_*_augreg, vit_*_dinov2, vit_*_reg4_dinov2, vit_*_siglip* (SigLIP 2's
                                      `.v2_webli` too), vit_*_clip_*, deit3_*, vit_*_gap, qk_norm and SwiGLU variants
    Eva                (timm_eva.py)  eva02_*, the DINOv3 ViTs (vit_*_dinov3*)

`from_timm(model)` dispatches by class. The shared helpers below check what both classes build alike (patch
embedding, LayerNorms, activations, the attention-pooling head, the final norm) and write their weights.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from ..configuration_vit import ViTConfig
from ..modeling_vit import ViTForImageClassification
from .build import build_model, merge_overrides, split_labels

# ----------------------------------------------------------------------------------------------------------
# Shared by the VisionTransformer and Eva importers


def unsupported(kind: str, problems: list[str]) -> None:
    """Raises the one ValueError naming every feature of a timm model that our ViT cannot reproduce exactly."""
    if problems:
        raise ValueError(f"this timm {kind} uses {'; '.join(problems)}, which vit-finetune's ViT does not have "
                         "(it cannot be imported exactly)")


def activation_name(module: nn.Module) -> str | None:
    """Our `hidden_act` for a timm activation module, None for one we do not have."""
    if isinstance(module, nn.GELU):
        return "gelu_pytorch_tanh" if module.approximate == "tanh" else "gelu"
    return {"GELU": "gelu", "GELUTanh": "gelu_pytorch_tanh", "QuickGELU": "quick_gelu", "SiLU": "silu",
            "Swish": "silu", "ReLU": "relu"}.get(type(module).__name__)


def is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def check_norms(norms: dict[str, nn.Module | None], problems: list[str]) -> float | None:
    """The one epsilon of the model's LayerNorms (ours share `layer_norm_eps`); records what does not fit: another
    norm type (RmsNorm...) or LayerNorms with different epsilons. Absent norms (None, Identity) are skipped."""
    eps = set()
    for name, norm in norms.items():
        if is_identity(norm):
            continue
        if not isinstance(norm, nn.LayerNorm):
            problems.append(f"{type(norm).__name__} for {name} (only LayerNorm)")
            continue
        eps.add(float(norm.eps))
    if len(eps) > 1:
        problems.append(f"LayerNorms with different epsilons {sorted(eps)}")
    return eps.pop() if len(eps) == 1 else None


def patch_fields(model: nn.Module, problems: list[str]) -> dict[str, Any]:
    """image_size, patch_size and num_channels of timm's PatchEmbed: one square strided convolution, no norm."""
    embed = model.patch_embed
    proj = getattr(embed, "proj", None)
    if type(embed).__name__ != "PatchEmbed" or not isinstance(proj, nn.Conv2d):
        problems.append(f"patch embedding {type(embed).__name__} (only PatchEmbed, one convolution)")
        return {}
    if not is_identity(getattr(embed, "norm", None)):
        problems.append("a norm in the patch embedding (embed_norm_layer)")
    kernel, stride = tuple(proj.kernel_size), tuple(proj.stride)
    if kernel != stride or kernel[0] != kernel[1] or any(proj.padding) or proj.groups != 1:
        problems.append(f"a patch convolution of kernel {kernel}, stride {stride}, padding {proj.padding} "
                        "(only square non-overlapping patches)")
    image_size = tuple(embed.img_size) if embed.img_size is not None else None
    if image_size is None or image_size[0] != image_size[1]:
        problems.append(f"a non-square image size {image_size}")
        return {}
    if proj.in_channels not in (1, 3):
        problems.append(f"{proj.in_channels} input channels (only 1 or 3)")
    if image_size[0] % kernel[0]:
        problems.append(f"an image size {image_size[0]} that is not a whole number of {kernel[0]}-pixel patches "
                        "(timm drops the remainder; ours takes whole patches only)")
        return {}
    return dict(image_size=image_size[0], patch_size=kernel[0], num_channels=proj.in_channels)


def mlp_fields(mlp: nn.Module, problems: list[str], name: str = "the MLP") -> dict[str, Any]:
    """mlp_type, hidden_act, intermediate_size and mlp_norm of timm's Mlp, GluMlp (packed gate, either half) or
    SwiGLU (fc1_g, fc1_x)."""
    kind = type(mlp).__name__
    if kind == "Mlp" and isinstance(mlp.fc1, nn.Linear):
        fields = dict(mlp_type="mlp", intermediate_size=mlp.fc1.out_features)
    elif kind == "GluMlp" and isinstance(mlp.fc1, nn.Linear):
        fields = dict(mlp_type="glu", intermediate_size=mlp.fc1.out_features // 2)
    elif kind == "SwiGLU":
        fields = dict(mlp_type="glu", intermediate_size=mlp.fc1_g.out_features)
    else:
        problems.append(f"{name} {kind} (only Mlp, GluMlp and SwiGLU with linear layers)")
        return {}
    act = activation_name(mlp.act)
    if act is None:
        problems.append(f"the activation {type(mlp.act).__name__} in {name}")
    fields["hidden_act"] = act
    if mlp.fc2.in_features != fields["intermediate_size"]:
        problems.append(f"{name} with fc2 of {mlp.fc2.in_features} inputs for {fields['intermediate_size']} hidden")
    fields["mlp_norm"] = not is_identity(mlp.norm)
    return fields


def final_norm_fields(model: nn.Module, problems: list[str]) -> dict[str, Any]:
    """Our model has one final LayerNorm, on every token (timm's `norm`) or on the pooled features (`fc_norm`)."""
    norm, fc_norm = not is_identity(model.norm), not is_identity(model.fc_norm)
    if norm and fc_norm:
        problems.append("both a final norm and fc_norm (only one of them)")
    if not norm and not fc_norm:
        problems.append("no final norm (final_norm=False / use_post_transformer_norm=False)")
    return dict(fc_norm=fc_norm)


def attention_pool_fields(pool: nn.Module, fields: dict[str, Any], problems: list[str]) -> None:
    """Checks timm's AttentionPoolLatent against our attention pooling, which has the blocks' heads and MLP width,
    their activation, one latent query, no position table and no qk_norm."""
    if type(pool).__name__ != "AttentionPoolLatent":
        problems.append(f"attention pooling {type(pool).__name__} (only AttentionPoolLatent)")
        return
    if pool.latent_len != 1 or pool.pool != "token":
        problems.append(f"attention pooling with {pool.latent_len} latent queries pooled by {pool.pool!r}")
    if pool.pos_embed is not None:
        problems.append("a position table in the attention pooling (pos_embed='abs')")
    if not is_identity(pool.q_norm):
        problems.append("qk_norm in the attention pooling")
    if pool.mlp is None:
        problems.append("attention pooling without its MLP (out_features=0)")
        return
    if pool.num_heads != fields.get("num_attention_heads") or pool.latent_dim != fields.get("hidden_size"):
        problems.append(f"attention pooling with {pool.num_heads} heads and a {pool.latent_dim}-wide latent (ours: "
                        "the blocks' heads and width)")
    hidden = pool.mlp.fc1.out_features
    if hidden != fields.get("intermediate_size"):
        problems.append(f"an attention-pooling MLP {hidden} wide (ours: the blocks' {fields.get('intermediate_size')})")
    act = activation_name(pool.mlp.act)
    if act != fields.get("hidden_act"):
        problems.append(f"an attention-pooling activation {type(pool.mlp.act).__name__} other than the blocks' "
                        f"({fields.get('hidden_act')})")


def pooling_field(global_pool: str, *, attn_pool: nn.Module | None, fc_norm: bool, problems: list[str]) -> str:
    pooling = {"token": "cls", "avg": "mean", "map": "map"}.get(global_pool)
    if pooling is None:
        problems.append(f"global_pool={global_pool!r} (only 'token', 'avg' and 'map')")
        return "cls"
    if (pooling == "map") != (attn_pool is not None):
        problems.append(f"global_pool={global_pool!r} with attn_pool {type(attn_pool).__name__}")
    if pooling == "map" and fc_norm:
        problems.append("fc_norm after attention pooling")
    return pooling


def put_linear(out: dict[str, torch.Tensor], name: str, linear: nn.Linear | nn.Conv2d, *,
               bias: bool = True) -> None:
    """`linear`'s weight, and its bias (zeros where it has none; a bias of zero is the same layer) unless not
    `bias`: our layer has none either."""
    out[f"{name}.weight"] = linear.weight.detach().clone()
    if bias:
        out[f"{name}.bias"] = (linear.bias.detach().clone() if linear.bias is not None
                               else torch.zeros(linear.weight.shape[0], dtype=linear.weight.dtype))


def put_norm(out: dict[str, torch.Tensor], name: str, norm: nn.LayerNorm) -> None:
    shape = norm.normalized_shape
    out[f"{name}.weight"] = norm.weight.detach().clone() if norm.weight is not None else torch.ones(shape)
    out[f"{name}.bias"] = norm.bias.detach().clone() if getattr(norm, "bias", None) is not None else torch.zeros(shape)


def put_mlp(out: dict[str, torch.Tensor], name: str, mlp: nn.Module) -> None:
    """Our MLP: fc1 holds [gate; up] for a gated MLP (timm's GluMlp with gate_last=True keeps the gate second, SwiGLU
    keeps it in fc1_g), then the optional norm and fc2."""
    kind = type(mlp).__name__
    if kind == "SwiGLU":
        gate, up = {}, {}
        put_linear(gate, "fc", mlp.fc1_g)
        put_linear(up, "fc", mlp.fc1_x)
        for part in ("weight", "bias"):
            out[f"{name}.fc1.{part}"] = torch.cat([gate[f"fc.{part}"], up[f"fc.{part}"]])
    else:
        put_linear(out, f"{name}.fc1", mlp.fc1)
        if kind == "GluMlp" and mlp.gate_last:  # x1 * act(x2): the gate is the second half
            for part in ("weight", "bias"):
                first, second = out[f"{name}.fc1.{part}"].chunk(2)
                out[f"{name}.fc1.{part}"] = torch.cat([second, first])
    if not is_identity(mlp.norm):
        put_norm(out, f"{name}.norm", mlp.norm)
    put_linear(out, f"{name}.fc2", mlp.fc2)


def put_tokens(out: dict[str, torch.Tensor], model: nn.Module) -> None:
    """CLS token, registers and the position table. Where timm's table has rows for the registers (reg_tokens
    without no_embed_class) they are constants added to constants: folded into the register tokens, since ours
    get no position (exactly the same sums, at every resolution: timm never resamples those rows)."""
    prefix = "vit.embeddings"
    cls_token, registers, table = model.cls_token, model.reg_token, model.pos_embed
    has_cls = cls_token is not None
    if has_cls:
        out[f"{prefix}.cls_token"] = cls_token.detach().clone()
    if table is None:
        if registers is not None:
            out[f"{prefix}.register_tokens"] = registers.detach().clone()
        return
    table = table.detach().clone()
    rows = 0 if model.no_embed_class else model.num_prefix_tokens
    cls_rows = int(has_cls and rows > 0)
    if registers is not None:
        registers = registers.detach().clone()
        if rows:
            registers = registers + table[:, cls_rows:rows]
        out[f"{prefix}.register_tokens"] = registers
    out[f"{prefix}.position_embeddings"] = torch.cat([table[:, :cls_rows], table[:, rows:]], dim=1)


def put_attention_pool(out: dict[str, torch.Tensor], pool: nn.Module) -> None:
    prefix = "vit.pooler"
    out[f"{prefix}.latent"] = pool.latent.detach().clone()
    if isinstance(pool.q, nn.Identity):  # q_proj=False: the latent is the query, an identity projection exactly
        width = pool.latent.shape[-1]
        out[f"{prefix}.q.weight"] = torch.eye(width, dtype=pool.latent.dtype)
        out[f"{prefix}.q.bias"] = torch.zeros(width, dtype=pool.latent.dtype)
    else:
        put_linear(out, f"{prefix}.q", pool.q)
    put_linear(out, f"{prefix}.kv", pool.kv)
    put_linear(out, f"{prefix}.proj", pool.proj)
    put_norm(out, f"{prefix}.norm", pool.norm)
    put_linear(out, f"{prefix}.mlp.fc1", pool.mlp.fc1)
    put_linear(out, f"{prefix}.mlp.fc2", pool.mlp.fc2)


def put_ends(out: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Patch embedding, norm_pre, the final norm, attention pooling and the head."""
    put_linear(out, "vit.embeddings.patch_embeddings.projection", model.patch_embed.proj)
    if not is_identity(model.norm_pre):
        put_norm(out, "vit.norm_pre", model.norm_pre)
    if not is_identity(model.norm):
        put_norm(out, "vit.layernorm", model.norm)
    if not is_identity(model.fc_norm):
        put_norm(out, "vit.fc_norm", model.fc_norm)
    if getattr(model, "attn_pool", None) is not None:
        put_attention_pool(out, model.attn_pool)
    if isinstance(model.head, nn.Linear):
        put_linear(out, "classifier", model.head)


def head_fields(model: nn.Module, problems: list[str]) -> dict[str, Any]:
    if isinstance(model.head, nn.Linear):
        return dict(num_labels=model.head.out_features)
    if not is_identity(model.head):
        problems.append(f"a head {type(model.head).__name__} (only one Linear layer)")
    return {}


# ----------------------------------------------------------------------------------------------------------
# VisionTransformer


def _vit_fields(model: nn.Module) -> dict[str, Any]:
    """Our config fields for a timm VisionTransformer, or a ValueError naming everything that does not fit."""
    problems: list[str] = []
    kinds = {type(block).__name__ for block in model.blocks}
    if kinds != {"Block"}:
        unsupported("VisionTransformer", [f"blocks {sorted(kinds)} (only the pre-norm Block: no ResPostBlock, "
                                          "parallel or differential blocks)"])
    attention_kinds = {type(block.attn).__name__ for block in model.blocks}
    if attention_kinds != {"Attention"}:
        unsupported("VisionTransformer", [f"attention {sorted(attention_kinds)} (only Attention)"])
    block = model.blocks[0]
    attn = block.attn
    hidden = model.embed_dim
    fields: dict[str, Any] = dict(hidden_size=hidden, num_hidden_layers=len(model.blocks),
                                  num_attention_heads=attn.num_heads)
    fields.update(patch_fields(model, problems))
    if attn.head_dim * attn.num_heads != hidden:
        problems.append(f"attention heads of {attn.head_dim} channels x {attn.num_heads} != {hidden} (attn_head_dim)")
    if not is_identity(attn.norm):
        problems.append("a norm inside the attention (scale_attn_norm)")
    if getattr(attn, "gate", None) is not None:
        problems.append("gated attention (gated)")
    mlp = mlp_fields(block.mlp, problems)
    fields.update(mlp)
    layerscale = [(not is_identity(b.ls1), not is_identity(b.ls2)) for b in model.blocks]
    if len(set(layerscale)) > 1 or layerscale[0][0] != layerscale[0][1]:
        problems.append("LayerScale on some residual branches only")
    fields["layerscale_init"] = float(block.ls1.init_values) if layerscale[0][0] else None
    fields["qkv_bias"] = attn.qkv.bias is not None
    fields["qk_norm"] = not is_identity(attn.q_norm)
    for index, other in enumerate(model.blocks):  # every block alike (ours are)
        other_fields = mlp_fields(other.mlp, [])
        if (other_fields != mlp or (other.attn.qkv.bias is not None) != fields["qkv_bias"]
                or is_identity(other.attn.q_norm) == fields["qk_norm"] or other.attn.num_heads != attn.num_heads):
            problems.append(f"block {index} built unlike block 0")
            break

    # tokens and positions
    fields["class_token"] = model.cls_token is not None
    fields["num_register_tokens"] = int(model.num_reg_tokens)
    if model.pos_embed is None:
        problems.append("no position embedding (pos_embed='none'), which only rotary models can have")
    fields["position_embedding"] = "learned"
    fields["class_position_embedding"] = not model.no_embed_class
    fields["position_interpolation"] = "bicubic_antialias"  # resample_abs_pos_embed: bicubic with antialias
    fields["norm_pre"] = not is_identity(model.norm_pre)

    # final norm and pooling
    fields.update(final_norm_fields(model, problems))
    fields["pooling"] = pooling_field(model.global_pool, attn_pool=model.attn_pool, fc_norm=fields["fc_norm"],
                                      problems=problems)
    if fields["pooling"] == "mean" and model.pool_include_prefix:
        problems.append("average pooling over the class/register tokens too (pool_include_prefix)")
    if fields["pooling"] == "map" and model.attn_pool is not None:
        if model.num_prefix_tokens and not model.pool_include_prefix:
            problems.append("attention pooling over the patch tokens only while the model has class/register "
                            "tokens (ours attends over all tokens)")
        attention_pool_fields(model.attn_pool, fields, problems)

    norms = {"norm_pre": model.norm_pre, "norm": model.norm, "fc_norm": model.fc_norm}
    for index, other in enumerate(model.blocks):
        norms.update({f"blocks.{index}.norm1": other.norm1, f"blocks.{index}.norm2": other.norm2,
                      f"blocks.{index}.attn.q_norm": other.attn.q_norm,
                      f"blocks.{index}.attn.k_norm": other.attn.k_norm,
                      f"blocks.{index}.mlp.norm": other.mlp.norm})
    if model.attn_pool is not None and hasattr(model.attn_pool, "norm"):
        norms["attn_pool.norm"] = model.attn_pool.norm
    fields["layer_norm_eps"] = check_norms(norms, problems)
    fields.update(head_fields(model, problems))
    unsupported("VisionTransformer", problems)
    return fields


def _vit_state_dict(model: nn.Module, config: ViTConfig) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    put_tokens(out, model)
    put_ends(out, model)
    for index, block in enumerate(model.blocks):
        prefix = f"vit.layers.{index}"
        put_norm(out, f"{prefix}.norm1", block.norm1)
        put_linear(out, f"{prefix}.attention.qkv", block.attn.qkv, bias=config.qkv_bias)
        if config.qk_norm:
            put_norm(out, f"{prefix}.attention.q_norm", block.attn.q_norm)
            put_norm(out, f"{prefix}.attention.k_norm", block.attn.k_norm)
        put_linear(out, f"{prefix}.attention.proj", block.attn.proj)
        put_norm(out, f"{prefix}.norm2", block.norm2)
        put_mlp(out, f"{prefix}.mlp", block.mlp)
        if config.layerscale_init is not None:
            out[f"{prefix}.ls1.gamma"] = block.ls1.gamma.detach().clone()
            out[f"{prefix}.ls2.gamma"] = block.ls2.gamma.detach().clone()
    return out


# ----------------------------------------------------------------------------------------------------------
# Entry points


def _kind(model: nn.Module) -> str:
    kind = type(model).__name__
    if kind not in ("VisionTransformer", "Eva"):
        raise ValueError(f"expected a timm VisionTransformer or Eva (vit_*, deit3_*, eva02_*, vit_*_dinov3), "
                         f"got {kind}")
    return kind


def config_from_timm(model: nn.Module, **overrides: Any) -> ViTConfig:
    """A `ViTConfig` from a timm `VisionTransformer` or `Eva` instance; a ValueError naming every feature that our
    model cannot reproduce exactly."""
    if _kind(model) == "Eva":
        from .timm_eva import eva_fields

        fields = eva_fields(model)
    else:
        fields = _vit_fields(model)
    return ViTConfig(**merge_overrides(fields, overrides))


def config_from_timm_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None, **overrides: Any
) -> ViTConfig:
    """A `ViTConfig` read off the shapes of a plain timm ViT state dict (a class token with its position row,
    LayerScale or not, an MLP, CLS pooling), e.g. a downloaded `model.safetensors`. Anything else (registers,
    norm_pre, fc_norm, attention pooling, qk_norm, gated MLPs...) is not visible enough in the weights alone: build
    the timm model (`timm.create_model`, a `local-dir:` folder) and pass it to `from_timm`.

    The head count is not visible in the shapes: pass it, or the ViT convention (64 channels per head,
    16 heads for ViT-Huge) is assumed.
    """
    beyond_plain = sorted({key.split(".")[0] if not key.startswith("blocks.") else ".".join(key.split(".")[2:4])
                           for key in state_dict
                           if re.match(r"^(reg_token|norm_pre|fc_norm|attn_pool)\.?|^blocks\.\d+\.(attn\.[qk]_norm|"
                                       r"mlp\.(norm|fc1_g|fc1_x))\.?", key)})
    if beyond_plain or "cls_token" not in state_dict or "pos_embed" not in state_dict:
        found = ", ".join(beyond_plain) or "no cls_token/pos_embed"
        raise ValueError(f"a timm state dict alone describes only a plain ViT ({found} found): create the timm "
                         "model and pass it to from_timm")
    hidden = state_dict["cls_token"].shape[-1]
    proj = state_dict["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    grid = int(math.sqrt(state_dict["pos_embed"].shape[1] - 1))
    if grid * grid + 1 != state_dict["pos_embed"].shape[1]:
        raise ValueError(f"a timm state dict alone describes only a plain ViT: its pos_embed of "
                         f"{state_dict['pos_embed'].shape[1]} rows is not a class row and a square grid")
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
        position_interpolation="bicubic_antialias",
    )
    if "head.weight" in state_dict:
        fields["num_labels"] = state_dict["head.weight"].shape[0]
    return ViTConfig(**merge_overrides(fields, overrides))


def state_dict_from_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a plain timm VisionTransformer state dict onto ours (timm's qkv is already fused). The other
    layouts are read off the model itself (`from_timm(model)`)."""
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
    model_or_state_dict: nn.Module | dict[str, torch.Tensor], **overrides: Any
) -> ViTForImageClassification:
    """Our model from a timm `VisionTransformer` or `Eva` (see the module docstring for the families), or from a
    plain ViT's state dict (see `config_from_timm_state_dict`). The outputs are the timm model's in eval mode."""
    overrides, id2label = split_labels(overrides)
    if isinstance(model_or_state_dict, dict):
        config = config_from_timm_state_dict(model_or_state_dict, **overrides)
        return build_model(config, state_dict_from_timm(model_or_state_dict), source="timm state dict",
                           id2label=id2label)
    model = model_or_state_dict
    kind = _kind(model)
    config = config_from_timm(model, **overrides)
    if kind == "Eva":
        from .timm_eva import eva_state_dict

        state_dict = eva_state_dict(model, config)
    else:
        state_dict = _vit_state_dict(model, config)
    return build_model(config, state_dict, source=f"timm {kind}", id2label=id2label)
