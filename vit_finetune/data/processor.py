"""Normalisation, the one in training, evaluation and predict, and the transformers image processor that
reproduces it beside every saved model (so `transformers.pipeline` sees what our evaluation sees)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def channel_stats(values: Sequence[float] | float, num_channels: int, what: str) -> list[float]:
    """Per-channel mean or std for `num_channels` channels: one value is repeated, and a grayscale model may
    keep the 3 equal values its processor was saved with."""
    values = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(values) == num_channels:
        return values
    if len(values) == 1:
        return values * num_channels
    if num_channels == 1 and len(set(values)) == 1:  # e.g. (0.5, 0.5, 0.5) saved for a grayscale model
        return values[:1]
    raise ValueError(f"{what} has {len(values)} values but the images have {num_channels} channel(s)")


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (C, H, W) or (B, C, H, W) -> float32 `(images / 255 - mean) / std`, on the images' device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {images.dtype}")
    return standardize(images.float().div_(255.0), mean, std)


def standardize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Float images in [0, 1], (C, H, W) or (B, C, H, W) -> `(images - mean) / std` per channel. Training calls it
    between its augmentations (which work on [0, 1] images) and the ones that follow normalisation."""
    channels = images.shape[-3]
    mean_t = torch.tensor(channel_stats(mean, channels, "mean"), dtype=torch.float32, device=images.device)
    std_t = torch.tensor(channel_stats(std, channels, "std"), dtype=torch.float32, device=images.device)
    return (images - mean_t.view(-1, 1, 1)) / std_t.view(-1, 1, 1)


def build_image_processor(image_size: int, num_channels: int, mean: Sequence[float], std: Sequence[float]):
    """A `transformers.ViTImageProcessor` that reproduces our evaluation preprocessing: bilinear resize straight to
    `image_size` squared (no crop), rescale by 1/255, normalise with `mean` / `std`.

    Grayscale models: `transformers.pipeline` always converts inputs to RGB (transformers.image_utils.load_image),
    and ViTImageProcessor has no grayscale option, so for `num_channels=1` the processor is saved with the single
    mean/std repeated for 3 channels and hands the model 3 identical-normalisation channels; the model folds them to
    one channel with the same ITU-R 601 luma weights PIL uses for "L" (mean/std being equal per channel, the fold
    commutes with normalisation).
    """
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    mean_values = channel_stats(mean, num_channels, "mean")
    std_values = channel_stats(std, num_channels, "std")
    if num_channels == 1:
        mean_values, std_values = mean_values * 3, std_values * 3
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=mean_values,
        image_std=std_values,
        do_convert_rgb=True,
    )


__all__ = ["build_image_processor", "channel_stats", "normalize", "standardize"]
