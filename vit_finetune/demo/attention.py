"""Where the model looked: attention maps from a ViT's attention weights, and the images the page shows.

`attention_map` turns the per-layer attentions of one forward pass into one (rows, cols) map per image, by
attention rollout across all layers (Abnar & Zuidema 2020) or the last layer's attention; `overlay_attention`
colours it over the image; `display_copy` sizes an image for the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image

AttentionMethod = Literal["rollout", "last_layer"]
ATTENTION_METHODS: dict[str, str] = {
    "rollout": "Attention rollout (all layers)",
    "last_layer": "Last layer attention",
}


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each token draws on each input token.

    `attentions` holds one (B, heads, T, T) tensor per layer. Per layer: average the heads, add
    the identity (the residual connection) and renormalise the rows; then multiply the layers
    from first to last. Returns (B, T, T); row i tells how token i at the output mixes the inputs.
    """
    if not attentions:
        raise ValueError("The model returned no attentions, so no attention map can be drawn.")
    rollout: torch.Tensor | None = None
    for layer in attentions:
        attention = layer.float().mean(dim=1)
        attention = attention + torch.eye(attention.shape[-1], device=attention.device)
        attention = attention / attention.sum(dim=-1, keepdim=True)
        rollout = attention if rollout is None else attention @ rollout
    assert rollout is not None
    return rollout


def patch_grid(num_tokens: int, height: int, width: int, patch_size: int | None) -> tuple[int, int, int]:
    """Return (prefix tokens, grid rows, grid columns) for a sequence of `num_tokens` tokens.

    Prefix tokens (CLS, register tokens, DeiT's distillation token; none in SigLIP) come first; the
    rest are patches in row-major order. Uses the patch size when it explains the token count, else
    assumes one CLS token and a grid with the image's aspect ratio (e.g. a convolutional stem with a
    different stride).
    """
    if patch_size:
        rows, cols = height // patch_size, width // patch_size
        if 0 < rows * cols <= num_tokens:
            return num_tokens - rows * cols, rows, cols
    patches = num_tokens - 1
    rows = max(1, round(math.sqrt(patches * height / width)))
    cols = patches // rows
    if rows * cols != patches:
        raise ValueError(f"Cannot arrange {patches} patch tokens into a grid for a {height}x{width} input.")
    return 1, rows, cols


def attention_map(
    attentions: Sequence[torch.Tensor],
    grid: tuple[int, int, int],
    *,
    method: AttentionMethod = "rollout",
    pooling: str = "cls",
) -> np.ndarray:
    """One (B, rows, cols) map per image in [0, 1]: how much the prediction drew on each patch.

    `grid` comes from `patch_grid`. The prediction reads the CLS token (`pooling="cls"`), the
    patch tokens (`"mean"`, `"map"`) or both (`"cls_mean"`), so we take that token's row, the mean of
    those rows, or both averaged, from the rollout (or from the last layer's head-averaged attention).
    Prefix tokens other than the CLS token (registers) are never drawn.
    """
    prefix, rows, cols = grid
    if method == "rollout":
        mixing = attention_rollout(attentions)
    elif method == "last_layer":
        mixing = attentions[-1].float().mean(dim=1)
    else:
        raise ValueError(f"Unknown attention method {method!r}; use one of {list(ATTENTION_METHODS)}.")
    patch_rows = mixing[:, prefix:, :].mean(dim=1)
    if pooling in ("mean", "map"):  # both read the patch tokens (attention pooling's own query is not a token)
        query = patch_rows
    elif pooling == "cls_mean":  # the CLS token and the patch mean, side by side
        query = (mixing[:, 0, :] + patch_rows) / 2
    else:
        query = mixing[:, 0, :]
    maps = query[:, prefix:].reshape(-1, rows, cols)
    # Stretch each map to [0, 1]: the absolute values are small and similar, the contrast matters.
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    maps = (maps - low) / (high - low).clamp_min(1e-12)
    return maps.cpu().numpy()


# Colour map anchors (dark blue -> cyan -> yellow -> red), interpolated linearly.
_COLOURS = np.array([[0, 0, 130], [0, 90, 255], [0, 230, 230], [255, 230, 0], [230, 20, 0]], np.float64)


def overlay_attention(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5) -> Image.Image:
    """Blend a [0, 1] (rows, cols) heat map, upsampled smoothly, over `image`; returns RGB."""
    base = image.convert("RGB")
    heat = Image.fromarray(np.clip(heatmap * 255.0, 0, 255).astype(np.uint8), mode="L")
    heat = np.asarray(heat.resize(base.size, Image.Resampling.BILINEAR), np.float64) / 255.0
    positions = np.linspace(0.0, 1.0, len(_COLOURS))
    coloured = np.stack([np.interp(heat, positions, _COLOURS[:, c]) for c in range(3)], axis=-1)
    blended = (1.0 - alpha) * np.asarray(base, np.float64) + alpha * coloured
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def display_copy(image: Image.Image, *, shortest: int = 224, longest: int = 512) -> Image.Image:
    """A copy sized for the page: tiny images (28x28) enlarged with sharp pixels, large ones shrunk."""
    image = image.convert("RGB")
    if max(image.size) > longest:
        image = image.copy()
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    elif max(image.size) < shortest:
        scale = max(1, shortest // max(image.size))
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


__all__ = [
    "ATTENTION_METHODS",
    "AttentionMethod",
    "attention_map",
    "attention_rollout",
    "display_copy",
    "overlay_attention",
    "patch_grid",
]
