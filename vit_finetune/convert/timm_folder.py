"""timm models by name or folder, and their image processor.

A timm folder is what `timm.models.save_for_hf` / `push_to_hf_hub` write (and what a timm Hub repository holds):
`config.json` with the "architecture" and its "pretrained_cfg" (the preprocessing), the reconstruction arguments
("model_args"), and the weights. timm builds it itself (`timm.create_model("local-dir:<folder>", pretrained=True)`),
then `from_timm` imports it. Weights are read from `model.safetensors` only: a folder with pickled weights alone
is refused.

The image processor follows timm's evaluation transform (`timm.data.resolve_data_config`: mean, std, crop_pct,
crop_mode, interpolation) at the converted model's resolution, as a stock transformers `BitImageProcessor`:
the shortest edge resized to `image_size / crop_pct` and a centre crop of `image_size` (crop_mode "center"), or
both edges resized to it before the crop (crop_mode "squash": a plain resize when crop_pct is 1).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from torch import nn

from ..configuration_vit import ViTConfig

logger = logging.getLogger(__name__)

TIMM_PREFIXES = ("timm/", "hf-hub:timm/", "hf_hub:timm/")


def is_timm_config(raw_config: dict[str, Any]) -> bool:
    """True for a timm config.json (an "architecture" and no transformers "model_type")."""
    return isinstance(raw_config.get("architecture"), str) and "model_type" not in raw_config


def timm_folder(name_or_path: str) -> Path | None:
    """The folder of `name_or_path` when it is a timm folder (local, or a Hub snapshot in timm's format), else
    None. A name that cannot be resolved is not one (the caller's own path then says why)."""
    if name_or_path.startswith(TIMM_PREFIXES):
        return None
    from .pretrained import ModelLoadError, resolve_model_folder

    try:
        folder = resolve_model_folder(name_or_path)
        raw_config = json.loads((folder / "config.json").read_text())
    except (ModelLoadError, OSError, ValueError):
        return None
    return folder if isinstance(raw_config, dict) and is_timm_config(raw_config) else None


def load_timm_folder(folder: Path, name: str) -> nn.Module:
    """The timm model of a timm folder, built by timm with its saved arguments and weights (from safetensors)."""
    import timm

    from .pretrained import ModelLoadError

    raw_config = json.loads((folder / "config.json").read_text())
    architecture = raw_config["architecture"]
    if not timm.is_model(architecture):
        raise ModelLoadError(f"{name}: timm {timm.__version__} has no model {architecture!r} (a newer timm?)")
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(f"{name}: a timm folder without model.safetensors (pickled weights are not read: "
                             "save it with timm.models.save_for_hf(model, folder, safe_serialization=True))")
    try:
        return timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True)
    except (RuntimeError, KeyError, TypeError, AssertionError) as error:  # arguments or weights that do not fit
        raise ModelLoadError(f"{name}: timm cannot build its {architecture!r} ({type(error).__name__}: "
                             f"{error})") from error


def timm_data_config(name_or_path: str) -> dict[str, Any]:
    """timm's resolved evaluation data config (input_size, mean, std, crop_pct, crop_mode, interpolation) of a
    `timm/<name>` id or a timm folder, read from the pretrained config without building the model."""
    import timm
    from timm.models import get_pretrained_cfg

    if name_or_path.startswith(TIMM_PREFIXES):
        timm_name = name_or_path.split("timm/", 1)[1]
        pretrained_cfg = get_pretrained_cfg(timm_name, allow_unregistered=True)
        if pretrained_cfg is None:
            model = timm.create_model(timm_name, pretrained=False)
            return timm.data.resolve_model_data_config(model)
        return timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
    from timm.models._hub import load_model_config_from_path

    folder = timm_folder(name_or_path)
    if folder is None:
        raise ValueError(f"{name_or_path}: not a timm model name or folder")
    pretrained_cfg, _, _ = load_model_config_from_path(folder)
    return timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg)


def image_processor_from_timm_data_config(data_config: dict[str, Any], config: ViTConfig):
    """A transformers `BitImageProcessor` doing timm's evaluation transform at `config.image_size` (see the module
    docstring)."""
    from transformers import BitImageProcessor
    from transformers.image_utils import PILImageResampling

    size = config.image_size
    crop_pct = float(data_config.get("crop_pct") or 0.875)  # timm's DEFAULT_CROP_PCT
    crop_mode = data_config.get("crop_mode") or "center"
    scale = math.floor(size / crop_pct)
    interpolation = str(data_config.get("interpolation") or "bicubic")
    resample = getattr(PILImageResampling, interpolation.upper(), None)
    if resample is None:
        logger.warning("timm interpolation %r has no PIL equivalent: resizing with bicubic", interpolation)
        resample = PILImageResampling.BICUBIC
    if crop_mode == "border":
        logger.warning("timm crop_mode 'border' (resize the longest edge, then pad) has no transformers "
                       "processor: the processor resizes the shortest edge and centre-crops instead")
    mean, std = list(data_config["mean"]), list(data_config["std"])
    if len(mean) == 1:  # a grayscale model: the pipeline sends RGB, which our model folds to luma
        mean, std = mean * 3, std * 3
    if crop_mode == "squash":
        resize = {"height": scale, "width": scale}
    else:
        resize = {"shortest_edge": scale}
    return BitImageProcessor(
        do_resize=True, size=resize, resample=resample,
        do_center_crop=crop_mode != "squash" or scale != size, crop_size={"height": size, "width": size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=mean, image_std=std,
        do_convert_rgb=True,
    )


def timm_image_processor(name_or_path: str, config: ViTConfig):
    """The image processor of a `timm/<name>` id or a timm folder, for the converted model `config`."""
    return image_processor_from_timm_data_config(timm_data_config(name_or_path), config)
