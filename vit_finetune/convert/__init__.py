"""Import official ViT weights (transformers' `google/vit-*` checkpoints, timm's ViTs) into our model.

Each source family gets its own module with two small functions, one mapping its config onto a `ViTConfig` and
one renaming its state dict onto our parameter names, plus the entry point for an in-memory model:

    transformers_vit.py  config_from_transformers, state_dict_from_transformers, from_transformers
    timm_vit.py          config_from_timm(_state_dict), state_dict_from_timm, from_timm (VisionTransformer and
                         Eva, dispatched by class)
    timm_eva.py          timm's Eva: EVA-02 and the DINOv3 ViTs
    timm_folder.py       timm folders (save_for_hf) and the image processor of a timm model
    build.py             build_model: the converted weights into our model (position table, new head)
    pretrained.py        load_pretrained_vit (by folder, Hub id or timm/<name>), ModelLoadError, the processor
    command.py           `vit-finetune convert SOURCE OUTPUT_DIR`
    transformers_dinov2.py, transformers_dinov3.py, transformers_siglip.py, transformers_clip.py,
    transformers_deit.py, transformers_vit_mae.py
                         the other transformers families (config + in-memory state-dict mapping, from_<family>),
                         dispatched by model_type and class in transformers_families.py
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
from .timm_folder import timm_image_processor
from .timm_vit import config_from_timm, config_from_timm_state_dict, from_timm, state_dict_from_timm
from .transformers_clip import from_clip
from .transformers_deit import from_deit
from .transformers_dinov2 import from_dinov2
from .transformers_dinov3 import from_dinov3
from .transformers_families import from_transformers_family
from .transformers_siglip import from_siglip
from .transformers_vit import config_from_transformers, from_transformers, state_dict_from_transformers
from .transformers_vit_mae import from_vit_mae

__all__ = [
    "LABEL_FIELDS", "ModelLoadError", "build_model", "check_weights", "config_from_timm", "config_from_timm_state_dict",
    "config_from_transformers", "from_timm", "from_transformers", "hub_fetch_error", "load_pretrained_vit",
    "looks_like_local_path", "main", "merge_overrides", "resolve_model_folder", "source_image_processor",
    "split_labels", "state_dict_from_timm", "state_dict_from_transformers", "timm_image_processor",
    "from_clip", "from_deit", "from_dinov2", "from_dinov3", "from_siglip", "from_transformers_family", "from_vit_mae",
]
