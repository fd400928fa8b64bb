"""The model to train: built from a config (from scratch), or loaded from one of our folders or a transformers /
timm ViT, then given the dataset's labels, its normalisation and (for a linear probe) a frozen backbone; then the
memory and speed switches (gradient checkpointing; torch.compile is Accelerate's, in devices.py)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..arguments import ConfigError

logger = logging.getLogger(__name__)


def load_model(model_args: Any) -> tuple[Any, list[float] | None, list[float] | None]:
    """The model to train, and the normalisation of its source (None: not known, use 0.5).

    The one place that knows where models come from: `vit_finetune.convert` imports transformers and timm ViTs.
    """
    from ..configuration_vit import ViTConfig
    from ..modeling_vit import ViTForImageClassification

    overrides = model_args.architecture_overrides()
    if not model_args.model_name_or_path:
        return ViTForImageClassification(ViTConfig(**overrides)), None, None

    from ..convert import ModelLoadError, load_pretrained_vit, source_image_processor

    name = model_args.model_name_or_path
    try:
        model = load_pretrained_vit(name, revision=model_args.model_revision, **overrides)
    except ModelLoadError as error:  # no such folder, not a model, Hub unreachable, image_size vs patch_size
        raise ConfigError(str(error)) from None
    try:
        processor = source_image_processor(name, model.config)
        mean, std = list(processor.image_mean), list(processor.image_std)
        if model.config.num_channels == 1 and len(set(mean)) == 1 and len(set(std)) == 1:
            # Our grayscale folders save RGB-repeated statistics (the pipeline sends RGB): one channel's worth.
            mean, std = mean[:1], std[:1]
    except Exception as error:  # noqa: BLE001 - a source without a processor still trains, with a clear note
        logger.warning("no image processor found for %s (%s): normalising with mean 0.5, std 0.5", name, error)
        mean = std = None
    return model, mean, std


def set_labels(model: Any, id2label: dict[int, str], *, announce: bool) -> None:
    """Gives the model the dataset's label set; a different set gets a freshly initialised head."""
    id2label = {int(i): str(name) for i, name in id2label.items()}
    current = {int(i): str(name) for i, name in model.config.id2label.items()}
    if current == id2label and isinstance(model.classifier, torch.nn.Linear):
        return
    if announce:
        logger.info("new label set (%d classes, was %d): the classification head is re-initialised",
                    len(id2label), len(current))
    model.reset_classifier(id2label)


def prepare_model(model: Any, model_args: Any, id2label: dict[int, str], source_mean: list[float] | None,
                  source_std: list[float] | None) -> tuple[list[float], list[float]]:
    """Labels, problem type and frozen parameters set in place; returns the normalisation (mean, std) to train with."""
    config = model.config
    set_labels(model, id2label, announce=bool(model_args.model_name_or_path))
    # The loss is computed by the loop, but the saved config must say what the head is for.
    config.problem_type = "single_label_classification"
    mean = model_args.image_mean or source_mean or [0.5] * config.num_channels
    std = model_args.image_std or source_std or [0.5] * config.num_channels
    if len(mean) != config.num_channels or len(std) != config.num_channels:
        raise ConfigError(f"image_mean/image_std need {config.num_channels} values (one per channel), "
                          f"got {mean} / {std}")
    if model_args.finetune == "linear_probe":
        for parameter in model.vit.parameters():
            parameter.requires_grad_(False)
        logger.info("finetune linear_probe: training the classification head only")
    num_parameters = sum(p.numel() for p in model.parameters())
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %.2f M parameters (%.2f M trainable), %d classes, %dx%d px, %d channel(s)",
                num_parameters / 1e6, num_trainable / 1e6, len(id2label), config.image_size, config.image_size,
                config.num_channels)
    return mean, std


def enable_gradient_checkpointing(model: Any) -> None:
    """Each block's activations are recomputed in the backward pass instead of kept (transformers' switch, called
    gradient checkpointing before v5; the
    blocks are `GradientCheckpointingLayer`s). Non-reentrant: it works when no input needs a gradient (a frozen
    backbone, LoRA) and keeps the RNG state, so dropout draws the same masks in the recomputation."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    logger.info("gradient checkpointing: activations of each block are recomputed in the backward pass")
