"""Import official ViT weights (transformers' `google/vit-*` checkpoints, timm's ViTs) into our model.

Each source family gets its own module with two small functions, one mapping its config onto a `ViTConfig` and
one renaming its state dict onto our parameter names, plus the entry point for an in-memory model:

    transformers_vit.py  config_from_transformers, state_dict_from_transformers, from_transformers
    timm_vit.py          config_from_timm(_state_dict), state_dict_from_timm, from_timm
    build.py             build_model: the converted weights into our model (position table, new head)
    pretrained.py        load_pretrained_vit (by folder, Hub id or timm/<name>), ModelLoadError, the processor
    command.py           `vit-finetune convert SOURCE OUTPUT_DIR`
"""

from .build import LABEL_FIELDS, build_model, merge_overrides, split_labels
from .command import main
from .pretrained import (
    ModelLoadError,
    check_weights,
    hub_fetch_error,
    load_pretrained_vit,
    looks_like_local_path,
    resolve_model_folder,
    source_image_processor,
)
from .timm_vit import config_from_timm, config_from_timm_state_dict, from_timm, state_dict_from_timm
from .transformers_vit import config_from_transformers, from_transformers, state_dict_from_transformers

__all__ = [
    "LABEL_FIELDS", "ModelLoadError", "build_model", "check_weights", "config_from_timm", "config_from_timm_state_dict",
    "config_from_transformers", "from_timm", "from_transformers", "hub_fetch_error", "load_pretrained_vit",
    "looks_like_local_path", "main", "merge_overrides", "resolve_model_folder", "source_image_processor",
    "split_labels", "state_dict_from_timm", "state_dict_from_transformers",
]
