"""The vit-finetune Vision Transformer, top to bottom in the order data flows through it.

    pixels -> PatchEmbedding -> (+ position table, CLS and register tokens) -> [norm_pre]
           -> Block x N (attention with optional qk_norm and rotary positions; MLP or gated MLP)
           -> LayerNorm -> pool (cls, mean, cls_mean or attention pooling) -> [fc_norm] -> head

Every option is a `ViTConfig` field, documented there; the defaults are the original ViT.

This file is copied next to every saved model (remote code), so it imports nothing but torch and
transformers: a user without vit-finetune installed loads a shared model with `trust_remote_code=True`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_vit import ViTConfig


# ----------------------------------------------------------------------------------------------------------
# Patch embedding: image (B, C, H, W) -> tokens (B, H/p * W/p, D)


class ConvStem(nn.Module):
    """A small convolutional stem (Xiao et al. 2021, "Early convolutions help transformers see better").

    3x3 stride-2 convolutions with BatchNorm and ReLU halve the resolution until the total stride equals
    the patch size (each followed by `conv_stem_depth - 1` stride-1 ones at that resolution), then a 1x1
    convolution projects to the token width. It gives the transformer the locality prior that small datasets
    cannot teach it.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, out_channels = config.num_channels, config.conv_stem_channels
        for _ in range(int(math.log2(config.patch_size))):
            for index in range(config.conv_stem_depth):
                layers += [
                    nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2 if index == 0 else 1, padding=1,
                              bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True),
                ]
                in_channels = out_channels
            out_channels = min(out_channels * 2, config.hidden_size)
        layers.append(nn.Conv2d(in_channels, config.hidden_size, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values)


class PatchEmbedding(nn.Module):
    """Cuts the image into patches and projects each one to a token of width `hidden_size`."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        if config.patch_embedding == "patch":
            # One strided convolution = a linear projection of each flattened patch (the original ViT).
            self.projection = nn.Conv2d(
                config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
            )
        else:
            self.projection = ConvStem(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.num_channels == 1 and pixel_values.shape[1] == 3:
            # transformers' image pipeline always hands over RGB: fold it to luma (ITU-R 601 weights, as PIL's
            # "L" conversion). The weights sum to 1, so normalised RGB with equal per-channel mean/std folds to
            # exactly the normalised grayscale image.
            luma = pixel_values.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            pixel_values = (pixel_values * luma).sum(dim=1, keepdim=True)
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the model expects "
                f"config.num_channels={self.num_channels}"
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not divisible by config.patch_size={self.patch_size}"
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


def sincos_position_table(grid_height: int, grid_width: int, dim: int, cls_row: bool = True) -> torch.Tensor:
    """The fixed 2D sine-cosine table of MAE: half the channels encode the row, half the column.

    Returns (grid_height * grid_width, dim), after a first row of zeros for the CLS token with `cls_row`.
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid_height, dtype=torch.float64), torch.arange(grid_width, dtype=torch.float64), indexing="ij"
    )
    row_angles = rows.reshape(-1, 1) * omega
    col_angles = cols.reshape(-1, 1) * omega
    table = torch.cat([col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()], dim=1)
    if cls_row:
        table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), table])
    return table.float()


def is_symbolic(*sizes: int) -> bool:
    """True for sizes that torch.export or torch.compile trace symbolically (dynamic shapes): comparing one with a
    number would pin it to that number, and a Python-level cache keyed on it would outlive the trace."""
    return any(isinstance(size, torch.SymInt) for size in sizes)


def resize_position_table(
    table: torch.Tensor, new_grid: tuple[int, int], *, prefix_rows: int = 1, mode: str = "bicubic"
) -> torch.Tensor:
    """Resizes a learned (1, prefix_rows + h*w, D) table to another patch grid, the first `prefix_rows` rows (the
    CLS token's) kept as they are. `mode` is the config's `position_interpolation`; in float32 whatever the table's
    dtype, since bicubic resampling in half precision shifts the values (as transformers' DINOv2 notes)."""
    prefix, patch_rows = table[:, :prefix_rows], table[:, prefix_rows:]
    old_side = int(math.sqrt(patch_rows.shape[1]))
    if old_side * old_side != patch_rows.shape[1]:
        raise ValueError(f"cannot resize a position table of {patch_rows.shape[1]} patches (not a square grid)")
    if not is_symbolic(*new_grid) and (old_side, old_side) == tuple(new_grid):
        return table
    grid = patch_rows.reshape(1, old_side, old_side, -1).permute(0, 3, 1, 2).float()
    kind, _, antialias = mode.partition("_")
    grid = F.interpolate(grid, size=new_grid, mode=kind, align_corners=False, antialias=bool(antialias))
    grid = grid.to(table.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], -1)
    return torch.cat([prefix, grid], dim=1)


class ViTEmbeddings(nn.Module):
    """Patch tokens with their positions, and in front of them the CLS token and the register tokens:

        [CLS] [REG_1 .. REG_R] [patch_1 .. patch_N]

    The position table covers the patches and, with `class_position_embedding`, the CLS token; registers get no
    position. Without a table (`position_embedding="none"`) positions come from the rotary embedding alone."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = PatchEmbedding(config)
        hidden = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden)) if config.class_token else None
        registers = config.num_register_tokens
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, hidden)) if registers else None
        grid = config.image_size // config.patch_size
        self.grid = (grid, grid)
        # Rows of the table in front of the patches': the CLS token's, when it has one.
        self.prefix_rows = int(config.class_token and config.class_position_embedding)
        if config.position_embedding == "learned":
            self.position_embeddings = nn.Parameter(torch.zeros(1, self.prefix_rows + grid * grid, hidden))
        else:
            # Fixed table or none: not a parameter, so it is neither trained nor saved.
            self.position_embeddings = None
        # Sine-cosine tables by (grid, device, dtype), computed once each.
        self._sincos_cache: dict[tuple, torch.Tensor] = {}
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def position_table(self, grid: tuple[int, int], interpolate: bool, like: torch.Tensor) -> torch.Tensor:
        if self.position_embeddings is None:
            cls_row = bool(self.prefix_rows)
            if torch.compiler.is_compiling() or is_symbolic(*grid):
                # Traced: the grid may be symbolic, and a tensor made while tracing must not be kept after it.
                table = sincos_position_table(*grid, self.config.hidden_size, cls_row)
                return table.unsqueeze(0).to(like.device, like.dtype)
            key = (grid, like.device, like.dtype)
            if key not in self._sincos_cache:
                table = sincos_position_table(*grid, self.config.hidden_size, cls_row)
                self._sincos_cache[key] = table.unsqueeze(0).to(device=like.device, dtype=like.dtype)
            return self._sincos_cache[key]
        resize = dict(prefix_rows=self.prefix_rows, mode=self.config.position_interpolation)
        if interpolate and is_symbolic(*grid):
            return resize_position_table(self.position_embeddings, grid, **resize)
        if grid == self.grid:
            return self.position_embeddings
        if not interpolate:
            raise ValueError(
                f"input gives a {grid[0]}x{grid[1]} patch grid but the model was built for "
                f"{self.grid[0]}x{self.grid[1]} (image_size={self.config.image_size}); "
                "pass interpolate_pos_encoding=True to run at another resolution"
            )
        return resize_position_table(self.position_embeddings, grid, **resize)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        tokens = self.patch_embeddings(pixel_values)
        batch = tokens.shape[0]
        cls = self.cls_token.expand(batch, -1, -1).to(tokens.dtype) if self.cls_token is not None else None
        if cls is not None and self.prefix_rows:
            tokens = torch.cat([cls, tokens], dim=1)
        if self.config.position_embedding != "none":
            tokens = tokens + self.position_table(grid, interpolate_pos_encoding, tokens)
        if cls is not None and not self.prefix_rows:
            tokens = torch.cat([cls, tokens], dim=1)
        if self.register_tokens is not None:
            first = int(cls is not None)
            registers = self.register_tokens.expand(batch, -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :first], registers, tokens[:, first:]], dim=1)
        return self.dropout(tokens)


class RotaryEmbedding(nn.Module):
    """2D rotary position embeddings (RoFormer's rotation, per image axis): the cos and sin of each patch's
    rotation angles, (N, head_dim) each, for the queries and keys of the patch tokens. No parameters: a new
    resolution just means another grid. The two variants are those of `ViTConfig.rotary_embedding`."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.kind = config.rotary_embedding
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.theta = float(config.rotary_theta)
        self.reference_grid = config.rotary_reference_grid
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def angles(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(grid_h * grid_w, head_dim) angles in float32, laid out as `rotate` pairs the channels."""
        bands = self.theta ** -(torch.arange(self.head_dim // 4, device=device, dtype=torch.float32)
                                * 4 / self.head_dim)
        if self.kind == "dinov3":
            # Patch centres, each axis normalised to [-1, 1] by its own length.
            axes = [(torch.arange(0.5, side, device=device, dtype=torch.float32) / side) * 2.0 - 1.0 for side in grid]
            bands = bands * (2 * math.pi)
        else:
            axes = [torch.arange(side, device=device, dtype=torch.float32) for side in grid]
            if self.reference_grid is not None:
                axes = [axis / side * self.reference_grid for axis, side in zip(axes, grid)]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)  # (N, [row, col])
        angles = (coords[:, :, None] * bands).flatten(1)  # (N, head_dim / 2): row bands, then column bands
        if self.kind == "dinov3":
            return torch.cat([angles, angles], dim=-1)  # halves: channel i pairs with i + head_dim / 2
        return angles.repeat_interleave(2, dim=-1)  # interleaved: channel 2i pairs with 2i + 1

    def forward(self, grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.compiler.is_compiling() or is_symbolic(*grid):
            angles = self.angles(grid, device)
            return angles.cos(), angles.sin()
        key = (grid, device)
        if key not in self._cache:
            angles = self.angles(grid, device)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]



def rotate_pairs(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The 90-degree turn of each channel pair, (a, b) -> (-b, a), with the pairing of `kind` (see
    `RotaryEmbedding.angles`)."""
    if kind == "dinov3":
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)
    return torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)


def apply_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kind: str) -> torch.Tensor:
    """Rotates the last N tokens of x (B, heads, T, head_dim), the patches, by their angles (cos, sin of (N,
    head_dim)); the prefix tokens are left as they are. In float32 (as cos and sin are), cast back to x's dtype."""
    cos, sin = rope
    prefix = x.shape[-2] - cos.shape[0]
    patches = x[..., prefix:, :]
    rotated = (patches * cos + rotate_pairs(patches, kind) * sin).to(x.dtype)
    return torch.cat([x[..., :prefix, :], rotated], dim=-2) if prefix else rotated


# ----------------------------------------------------------------------------------------------------------
# The encoder: pre-norm blocks of self-attention and MLP, each wrapped in a residual connection


# Attention kernels. `config._attn_implementation` names the one every block uses, through transformers' attention
# interface (so `from_pretrained(..., attn_implementation=...)` and `model.set_attn_implementation(...)` switch it):
#
#   "vit_cpu_fast"  the default when nothing is asked: explicit bmm + softmax where that beats SDPA (half precision on
#                   the CPU, up to EAGER_ATTENTION_MAX_TOKENS tokens when training, with EagerAttention's backward,
#                   and up to EAGER_INFERENCE_MAX_TOKENS without autograd);
#                   SDPA everywhere else (float32, GPUs, longer sequences). Returns no probabilities.
#   "sdpa"          torch's scaled_dot_product_attention, always (transformers' own kernel).
#   "eager"         plain matmul + softmax; returns the probabilities. `output_attentions=True` runs it whatever the
#                   choice, since the other kernels never materialise the probabilities.
#   anything else registered with transformers (flex_attention, flash_attention_*, Hub kernels).
#
# Each has transformers' signature: (module, query, key, value, attention_mask, scaling, dropout, **kwargs) with
# query, key and value of (B, heads, T, head_dim); each returns (context (B, T, heads, head_dim), probabilities or
# None). The CLS-only last block of a CLS-pooled classifier (`ViTAttention.attend_from_cls`) is not a kernel call:
# its single query row is two small matmuls whatever the choice.
CPU_FAST_ATTENTION = "vit_cpu_fast"

# Why "vit_cpu_fast" splits as it does (measured on a 2-core AVX-512 CPU, torch 2.14, with
# `python -m benchmarks.models --attention`; the figures are in docs/performance.md): in half precision explicit
# bmm + softmax, with EagerAttention's backward when training, beats SDPA, whose CPU backward is slow there. In
# float32 SDPA wins whole steps: eager attention alone is faster, but the probabilities it keeps for backward are
# large fresh buffers, which cost page faults. Beyond the measured lengths SDPA, whose memory stays linear, is kept.
# Without autograd SDPA's fused CPU forward wins from about 100 tokens on (ViT-S/16's 197, DINOv2-S/14's 257).
EAGER_ATTENTION_MAX_TOKENS = 640
EAGER_INFERENCE_MAX_TOKENS = 96


def use_eager_attention(implementation: str, dtype: torch.dtype, device: torch.device, tokens: int,
                        backward: bool = True) -> bool:
    """True when attention implementation `implementation` runs explicit bmm + softmax on these inputs rather than
    `scaled_dot_product_attention`: always for "eager", where it is faster for "vit_cpu_fast", never for the others.
    `backward`: whether autograd will differentiate the result (training)."""
    if implementation == "eager":
        return True
    if implementation != CPU_FAST_ATTENTION or device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return False
    # A symbolic length (torch.export with dynamic shapes) would be pinned to one value by the comparison.
    limit = EAGER_ATTENTION_MAX_TOKENS if backward else EAGER_INFERENCE_MAX_TOKENS
    return not isinstance(tokens, torch.SymInt) and tokens <= limit


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "eager" kernel: softmax(q k^T * scale) v step by step. The probabilities (B, heads, T, T) it returns are
    the tensor the context is computed from, so a caller can read their gradient (`retain_grad`)."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    # In place: matmul's backward needs its inputs, not its output, so this saves an allocation.
    scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.softmax(dim=-1)
    context = torch.matmul(F.dropout(probs, p=dropout) if dropout > 0 else probs, value)
    return context.transpose(1, 2), probs


class EagerAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v for q, k, v stacked in one contiguous (3, N, T, head_dim) tensor.

    Autograd would do the same bmm and softmax calls; writing the backward by hand lets dq, dk and dv land
    straight in their slices of one gradient tensor (autograd's unbind backward would stack them with a copy)
    and lets the scale be applied in place. Saves the probabilities, like autograd.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, scale: float) -> torch.Tensor:
        query, key, value = qkv.unbind(0)
        probs = torch.bmm(query, key.transpose(1, 2)).mul_(scale).softmax(dim=-1)
        ctx.save_for_backward(qkv, probs)
        ctx.scale = scale
        return torch.bmm(probs, value)

    @staticmethod
    def backward(ctx, grad_context: torch.Tensor) -> tuple[torch.Tensor, None]:
        qkv, probs = ctx.saved_tensors
        query, key, value = qkv.unbind(0)
        grad_context = grad_context.contiguous()
        grad = torch.empty_like(qkv)
        grad_query, grad_key, grad_value = grad.unbind(0)
        torch.bmm(probs.transpose(1, 2), grad_context, out=grad_value)
        grad_scores = torch._softmax_backward_data(
            torch.bmm(grad_context, value.transpose(1, 2)), probs, -1, probs.dtype
        ).mul_(ctx.scale)
        torch.bmm(grad_scores, key, out=grad_query)
        torch.bmm(grad_scores.transpose(1, 2), query, out=grad_key)
        return grad, None


def vit_cpu_fast_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    qkv: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The "vit_cpu_fast" kernel (see the table above). `qkv`: query, key and value as the one
    (3, B, heads, T, head_dim) tensor they are views of, when the caller has it: the backward then writes their
    gradients into one tensor (see EagerAttention) instead of three that autograd would stack."""
    batch, heads, tokens, head_dim = query.shape
    backward = torch.is_grad_enabled() and query.requires_grad
    if attention_mask is not None or not use_eager_attention(CPU_FAST_ATTENTION, query.dtype, query.device, tokens,
                                                             backward):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling)
    scaling = head_dim**-0.5 if scaling is None else scaling
    # One copy makes q, k, v contiguous (B * heads, T, head_dim) blocks of one tensor, for plain bmm (a 4D matmul of
    # the permuted views would copy each of them anyway).
    stacked = qkv if qkv is not None else torch.stack((query, key, value))
    stacked = stacked.contiguous().view(3, batch * heads, tokens, head_dim)
    if torch.is_grad_enabled() and stacked.requires_grad and dropout == 0.0:
        context = EagerAttention.apply(stacked, scaling)
    else:
        query, key, value = stacked.unbind(0)
        probs = torch.bmm(query, key.transpose(1, 2)).mul_(scaling).softmax(dim=-1)
        context = torch.bmm(F.dropout(probs, p=dropout) if dropout > 0 else probs, value)
    return context.view(batch, heads, tokens, head_dim).transpose(1, 2), None


AttentionInterface.register(CPU_FAST_ATTENTION, vit_cpu_fast_attention_forward)


class ViTAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection (one matmul instead of three);
    optionally a LayerNorm per head on queries and keys (`qk_norm`), then the rotary embedding on the patches'."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.is_causal = False  # every token attends to every token (transformers' kernels read this)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        if config.qkv_bias and not config.key_bias:
            # The bias rows of the keys are multiplied by zero: held at zero whatever the optimizer or a checkpoint
            # does. (Without rotary positions a key bias cannot change attention: q.b is the same for every key.)
            self.register_buffer("key_bias_mask", self.make_key_bias_mask(), persistent=False)
        else:
            self.key_bias_mask = None
        self.q_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else None
        self.rotary = config.rotary_embedding
        self.attention_dropout = config.attention_probs_dropout_prob
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def make_key_bias_mask(self) -> torch.Tensor:
        width = self.config.hidden_size
        return torch.cat([torch.ones(width), torch.zeros(width), torch.ones(width)])

    def qkv_bias(self) -> torch.Tensor | None:
        bias = self.qkv.bias
        return bias if bias is None or self.key_bias_mask is None else bias * self.key_bias_mask

    def position_queries_keys(
        self, query: torch.Tensor, key: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """qk_norm, then the rotary embedding (the order of timm's EVA and DINOv3), on (B, heads, T, head_dim)."""
        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)
        if rope is not None:
            query, key = apply_rotary(query, rope, self.rotary), apply_rotary(key, rope, self.rotary)
        return query, key

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, cls_only: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) -> (B, T, D), or (B, 1, D) with `cls_only`: the CLS token's output alone. `rope`: the cos
        and sin of the patches' rotary angles, when the model has them."""
        if cls_only:
            return self.attend_from_cls(hidden_states, rope), None
        batch, tokens, width = hidden_states.shape
        # (B, T, 3D) -> (3, B, heads, T, head_dim)
        qkv = F.linear(hidden_states, self.qkv.weight, self.qkv_bias())
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        if self.q_norm is not None or rope is not None:
            query, key = self.position_queries_keys(query, key, rope)
            qkv = None  # query and key are no longer views of it
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        context, probs = attention(
            self, query, key, value, None, scaling=self.scale,
            dropout=self.attention_dropout if self.training else 0.0, qkv=qkv,
        )
        context = context.reshape(batch, tokens, width)
        return self.proj_dropout(self.proj(context)), (probs if output_attentions else None)

    def attend_from_cls(
        self, hidden_states: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The CLS token's query against every token's key and value: the same output row as `forward`, for
        1/T of the query projection and attention, when nothing reads the other tokens' outputs."""
        batch, tokens, width = hidden_states.shape
        weight, bias = self.qkv.weight, self.qkv_bias()  # rows: query, key, value
        query = F.linear(hidden_states[:, :1], weight[:width], None if bias is None else bias[:width])
        key_value = F.linear(hidden_states, weight[width:], None if bias is None else bias[width:])
        query = query.view(batch, 1, self.num_heads, self.head_dim).transpose(1, 2)
        key, value = key_value.view(batch, tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)
        if rope is not None:  # the CLS query is a prefix token: only the patches' keys turn
            key = apply_rotary(key, rope, self.rotary)
        probs = torch.matmul(query, key.transpose(-1, -2)).mul_(self.scale).softmax(dim=-1)  # (B, heads, 1, T)
        probs = F.dropout(probs, p=self.attention_dropout, training=self.training)
        context = torch.matmul(probs, value).transpose(1, 2).reshape(batch, 1, width)
        return self.proj_dropout(self.proj(context))


# Without autograd (inference), activations and residual sums are written over buffers that are used once.
# Same values; but each saves allocating an activation-sized buffer, and on the CPU a fresh large buffer can be
# fresh pages from the kernel: up to ~100k page faults per ViT-Ti batch of 32 in float32, which cost up to 10% of
# the time (`scripts/benchmark_models.py --modes infer`, column "page faults/step").
INPLACE_ACTIVATIONS = {"gelu": torch.ops.aten.gelu_, "relu": torch.relu_}


class ViTMLP(nn.Module):
    """fc1, activation, fc2; or with `mlp_type="glu"` a gated MLP: fc1 yields the gate and the up projection,
    stacked, and act(gate) * up goes to fc2 (SwiGLU with silu). `plain` builds the ungated MLP whatever the config
    (the attention-pooling head's)."""

    def __init__(self, config: ViTConfig, plain: bool = False):
        super().__init__()
        self.gated = config.mlp_type == "glu" and not plain
        self.fc1 = nn.Linear(config.hidden_size, (2 if self.gated else 1) * config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.act_inplace = INPLACE_ACTIVATIONS.get(config.hidden_act) if isinstance(config.hidden_act, str) else None
        use_norm = config.mlp_norm and not plain
        self.norm = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps) if use_norm else None
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        if self.gated:
            gate, up = hidden_states.chunk(2, dim=-1)
            hidden_states = self.act(gate) * up
        elif self.act_inplace is not None and not torch.is_grad_enabled():
            hidden_states = self.act_inplace(hidden_states)
        else:
            hidden_states = self.act(hidden_states)
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
        return self.dropout(self.fc2(hidden_states))


class LayerScale(nn.Module):
    """Per-channel learned scaling of a residual branch (CaiT / DeiT III), stabilises deeper models."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: during training, drops a whole residual branch for a random subset of samples."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)).bernoulli_(keep)
        return hidden_states * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def add_residual(hidden_states: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """hidden_states + branch. Without autograd the sum is written over the branch, a fresh output of this block
    (never the residual stream, which callers may hold: output_hidden_states); a + b == b + a exactly."""
    if not torch.is_grad_enabled() and branch.dtype == hidden_states.dtype:  # bf16 branch + fp32 stream: fp32 out
        return branch.add_(hidden_states)
    return hidden_states + branch


class ViTLayer(GradientCheckpointingLayer):
    """One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ViTConfig, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ViTAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ViTMLP(config)
        scale = config.layerscale_init
        self.ls1 = LayerScale(config.hidden_size, scale) if scale is not None else nn.Identity()
        self.ls2 = LayerScale(config.hidden_size, scale) if scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, cls_only: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`cls_only`: compute the CLS token's output alone, (B, 1, D) (see ViTModel's `pooled_only`). `rope`: the
        rotary embedding's cos and sin for the patches, shared by every block."""
        attention_output, probs = self.attention(self.norm1(hidden_states), output_attentions, cls_only, rope)
        if cls_only:
            hidden_states = hidden_states[:, :1]
        hidden_states = add_residual(hidden_states, self.drop_path(self.ls1(attention_output)))
        hidden_states = add_residual(hidden_states, self.drop_path(self.ls2(self.mlp(self.norm2(hidden_states)))))
        return hidden_states, probs


# ----------------------------------------------------------------------------------------------------------
# Pooling: the final tokens (B, T, D) -> the features the head reads (B, D), see `ViTConfig.pooling`


class AttentionPooling(nn.Module):
    """Multihead attention pooling (SigLIP's "MAP" head, timm's AttentionPoolLatent): a learned query attends over
    all tokens, then an MLP refines the result with a residual connection."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // config.num_attention_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, hidden))
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.mlp = ViTMLP(config, plain=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, width = tokens.shape
        query = self.q(self.latent.to(tokens.dtype)).expand(batch, -1, -1)
        query = query.view(batch, 1, self.num_heads, self.head_dim).transpose(1, 2)
        key, value = self.kv(tokens).view(batch, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(query, key, value)  # (B, heads, 1, head_dim)
        pooled = self.proj(context.transpose(1, 2).reshape(batch, 1, width))
        pooled = pooled + self.mlp(self.norm(pooled))
        return pooled[:, 0]


def pool(config: ViTConfig, tokens: torch.Tensor, pooler: AttentionPooling | None) -> torch.Tensor:
    """The pooled features of the final tokens [CLS] [registers] [patches]: registers never take part."""
    if config.pooling == "cls":
        return tokens[:, 0]
    if config.pooling == "map":
        return pooler(tokens)
    patch_mean = tokens[:, config.num_prefix_tokens:].mean(dim=1)
    if config.pooling == "mean":
        return patch_mean
    return torch.cat([tokens[:, 0], patch_mean], dim=-1)  # "cls_mean"


# ----------------------------------------------------------------------------------------------------------
# Models


class ViTPreTrainedModel(PreTrainedModel):
    config_class = ViTConfig
    config: ViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # FSDP and device_map keep each of these whole on one device.
    _no_split_modules = ["ViTEmbeddings", "ViTLayer", "AttentionPooling"]
    _supports_sdpa = True

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        # Nothing asked: the CPU-tuned kernel (which is SDPA off the CPU and in float32), not transformers' "sdpa".
        return super().get_correct_attn_implementation(requested_attention or CPU_FAST_ATTENTION, is_init_check)

    def _init_weights(self, module: nn.Module) -> None:
        # timm/DeiT initialisation: truncated normal for weights, zeros for biases, ones for norms.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        elif isinstance(module, ViTEmbeddings):
            for tokens in (module.cls_token, module.register_tokens, module.position_embeddings):
                if tokens is not None:
                    init.trunc_normal_(tokens, mean=0.0, std=std)
        elif isinstance(module, AttentionPooling):
            init.trunc_normal_(module.latent, mean=0.0, std=std)
        elif isinstance(module, ViTAttention) and module.key_bias_mask is not None:
            # A non-persistent buffer: from_pretrained creates it empty (meta device) and relies on this.
            init.copy_(module.key_bias_mask, module.make_key_bias_mask())


class ViTModel(ViTPreTrainedModel):
    """The backbone: embeddings, the stack of blocks and the final LayerNorm, plus pooling (no head)."""

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config)
        depth = config.num_hidden_layers
        # Stochastic depth grows linearly with depth: early blocks are kept more often.
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.rotary = RotaryEmbedding(config) if config.rotary_embedding is not None else None
        self.norm_pre = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_pre else None
        self.layers = nn.ModuleList([ViTLayer(config, rate) for rate in rates])
        # The final LayerNorm, on every token or (fc_norm) on the pooled features only.
        final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm = nn.Identity() if config.fc_norm else final_norm
        self.pooler = AttentionPooling(config) if config.pooling == "map" else None
        self.fc_norm = final_norm if config.fc_norm else None
        self.post_init()

    def get_input_embeddings(self) -> PatchEmbedding:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        pooled_only: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """`output_attentions`, `output_hidden_states`, `return_dict`: None takes the config's value.

        `pooled_only`: the caller reads `pooler_output` alone (a classification head). With CLS pooling the
        last block then computes the CLS token's output only, since no other token's final state reaches the
        pooled output: the same result for about 1/depth less work. `last_hidden_state` then holds the CLS
        token alone, (B, 1, D). Ignored when hidden states or attentions are requested."""
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        cls_only = pooled_only and config.pooling == "cls" and not (output_hidden_states or output_attentions)
        weight = self.embeddings.patch_embeddings.projection
        dtype = next(weight.parameters()).dtype
        hidden_states = self.embeddings(pixel_values.to(dtype), interpolate_pos_encoding)
        if self.norm_pre is not None:
            hidden_states = self.norm_pre(hidden_states)
        grid = (pixel_values.shape[-2] // config.patch_size, pixel_values.shape[-1] // config.patch_size)
        rope = self.rotary(grid, hidden_states.device) if self.rotary is not None else None

        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            hidden_states, probs = layer(hidden_states, output_attentions, cls_only=cls_only and last, rope=rope)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)

        sequence_output = self.layernorm(hidden_states)
        pooled_output = pool(config, sequence_output, self.pooler)
        if self.fc_norm is not None:
            pooled_output = self.fc_norm(pooled_output)

        hidden_states_out = tuple(all_hidden_states) if output_hidden_states else None
        attentions_out = tuple(all_attentions) if output_attentions else None
        if not return_dict:
            return tuple(
                v for v in (sequence_output, pooled_output, hidden_states_out, attentions_out) if v is not None
            )
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=hidden_states_out,
            attentions=attentions_out,
        )


class ViTForImageClassification(ViTPreTrainedModel):
    """ViTModel plus a linear head on the pooled output (see `ViTConfig.pooling`)."""

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTModel(config)
        self.classifier = nn.Linear(config.pooled_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """`labels`: class ids (B,) for single-label classification, or float targets (B, num_labels), which
        are class probabilities (mixup/cutmix) under `problem_type="single_label_classification"` and 0/1
        indicators under `"multi_label_classification"`; float (B,) or (B, num_labels) for regression.
        `output_attentions`, `output_hidden_states`, `return_dict`: None takes the config's value."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.vit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            pooled_only=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = self.compute_loss(logits, labels) if labels is not None else None
        if not return_dict:
            rest = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss by `config.problem_type`, inferred from the labels the first time as transformers does."""
        labels = labels.to(logits.device)
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        return classification_loss(logits, labels, self.config.problem_type)

    # ---- what the model knows about its own parameters (asked by the optimizer builder and the converters) ----

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that take no weight decay: 1-D tensors (norms, biases, LayerScale), the CLS and
        register tokens, the position table and the pooling query. Decaying them only pulls them towards zero (timm,
        BEiT, DeiT)."""
        tokens = ("cls_token", "register_tokens", "position_embeddings", "pooler.latent")
        return {name for name, parameter in self.named_parameters() if parameter.ndim <= 1 or name.endswith(tokens)}

    def num_layer_ids(self) -> int:
        """How many depths `layer_id` tells apart: the embeddings, each block, and the final norm with the head."""
        return self.config.num_hidden_layers + 2

    def layer_id(self, name: str) -> int:
        """The depth of a parameter, for layer-wise learning-rate decay (BEiT): 0 for the embeddings (and the norm
        before the blocks), i + 1 for block i, `num_layer_ids() - 1` for the final norm, the pooling and the head."""
        parts = name.split(".")
        if parts[:2] in (["vit", "embeddings"], ["vit", "norm_pre"]):
            return 0
        if parts[:2] == ["vit", "layers"]:
            return int(parts[2]) + 1
        return self.num_layer_ids() - 1

    def classifier_keys(self) -> set[str]:
        """The state-dict names of the head's weights: what `reset_classifier` replaces (none without a head)."""
        return set(self.classifier.state_dict(prefix="classifier."))

    def reset_classifier(self, id2label: dict[int, str]) -> None:
        """A freshly initialised head for a new label set (and the config's label maps to match); no head for an
        empty one, as `num_labels=0` builds."""
        self.config.id2label = {int(i): str(name) for i, name in id2label.items()}
        self.config.label2id = {name: i for i, name in self.config.id2label.items()}
        self.num_labels = len(id2label)
        if not self.num_labels:
            self.classifier = nn.Identity()
            return
        parameter = next(self.parameters())
        self.classifier = nn.Linear(self.config.pooled_size, self.num_labels).to(parameter.device, parameter.dtype)
        init.trunc_normal_(self.classifier.weight, mean=0.0, std=self.config.initializer_range)
        init.zeros_(self.classifier.bias)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str, *,
                        label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """The loss of every caller (the model's `labels=`, training, evaluation), in float32 whatever the autocast.

    Single-label: `labels` are class ids (B,), or class probabilities (B, num_labels) from mixup/cutmix.
    Multi-label: 0/1 indicators (B, num_labels). Regression: float targets (B,) or (B, num_labels).
    """
    logits = logits.float()
    if problem_type == "regression":
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1), labels.float().view(-1), reduction=reduction)
        return F.mse_loss(logits, labels.float(), reduction=reduction)
    if problem_type == "single_label_classification":
        if labels.dim() == 2 and labels.is_floating_point():  # soft targets (mixup, cutmix)
            return F.cross_entropy(logits, labels.float(), label_smoothing=label_smoothing, reduction=reduction)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), label_smoothing=label_smoothing,
                               reduction=reduction)
    return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction=reduction)


__all__ = ["ViTPreTrainedModel", "ViTModel", "ViTForImageClassification", "classification_loss"]
