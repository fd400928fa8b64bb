"""Our model from a converted config and state dict: the weights loaded whole, the position table resized to the
new resolution, and a new head (the model's `reset_classifier`) when the label set changes."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..configuration_vit import ViTConfig
from ..modeling_vit import ViTForImageClassification, resize_position_table

logger = logging.getLogger(__name__)

LABEL_FIELDS = ("id2label", "label2id", "num_labels")


def merge_overrides(fields: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Config fields with the user's overrides on top; a new label set replaces the old one entirely."""
    merged = dict(fields)
    if set(LABEL_FIELDS) & set(overrides):
        for key in LABEL_FIELDS:
            merged.pop(key, None)
    merged.update(overrides)
    return merged


def split_labels(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[int, str] | None]:
    """(the overrides without the label fields, the label set they ask for or None). A label set is not a config
    field to build the model with: the source's weights are loaded with their own head, then `build_model` gives
    the model a new one."""
    rest = {key: value for key, value in overrides.items() if key not in LABEL_FIELDS}
    if "id2label" in overrides:
        labels = overrides["id2label"]
    elif "label2id" in overrides:
        labels = {index: name for name, index in overrides["label2id"].items()}
    elif "num_labels" in overrides:
        labels = {i: f"LABEL_{i}" for i in range(overrides["num_labels"])}
    else:
        return rest, None
    return rest, {int(i): str(name) for i, name in labels.items()}



def build_model(
    config: ViTConfig, state_dict: dict[str, torch.Tensor], *, source: str = "source",
    id2label: dict[int, str] | None = None,
) -> ViTForImageClassification:
    """Our model from `config` (the weights' own, labels included) and `state_dict` (in our names), loaded whole.

    The head is then replaced by a freshly initialised one (the model's `reset_classifier`) for `id2label` when
    that is another label set than the weights', or for the config's labels when the weights have no head.
    The learned position table is resized when `config.image_size` differs from the checkpoint's.
    """
    model = ViTForImageClassification(config)
    state_dict = dict(state_dict)
    key = "vit.embeddings.position_embeddings"
    embeddings = model.vit.embeddings
    if key in state_dict and embeddings.position_embeddings is not None:
        grid = embeddings.grid
        if state_dict[key].shape != embeddings.position_embeddings.shape:
            logger.info("resizing position embeddings of %s to a %dx%d patch grid (%s)", source, *grid,
                        config.position_interpolation)
            state_dict[key] = resize_position_table(state_dict[key], grid, prefix_rows=embeddings.prefix_rows,
                                                    mode=config.position_interpolation)
    # A head for features of another width (pooling "cls_mean" vs the others) cannot be kept: it starts fresh.
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    state_dict = {name: value for name, value in state_dict.items()
                  if not (name in model.classifier_keys() and value.shape != shapes[name])}
    # A pooling other than the weights' (`pooling` is overridable): a new attention-pooling head starts fresh, and
    # one the model no longer has is left out.
    pooler = {name for name in model.state_dict() if name.startswith("vit.pooler.")}
    source_pooler = {name for name in state_dict if name.startswith("vit.pooler.")}
    if pooler and not source_pooler:
        logger.warning("%s has no attention-pooling head: it is newly initialised and must be trained", source)
    elif source_pooler and not pooler:
        state_dict = {name: value for name, value in state_dict.items() if name not in source_pooler}
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shapes that differ: say it as for names that do
        raise ValueError(f"weights of {source} do not fit the model: {error}") from error
    head = model.classifier_keys()
    without_head = sorted(set(missing) - head - (pooler if not source_pooler else set()))
    if without_head or unexpected:
        raise ValueError(f"weights of {source} do not fit the model: missing {without_head}, unexpected {unexpected}")
    has_head = bool(head) and not head & set(missing)
    labels = {int(i): str(name) for i, name in model.config.id2label.items()}
    if id2label is None and head and not has_head:
        id2label = labels
    if id2label is not None and (id2label != labels or not has_head):
        if id2label:
            logger.warning(
                "%s has no classification head for %d labels: the head is newly initialised and must be trained",
                source, len(id2label),
            )
        model.reset_classifier(id2label)
    return model
