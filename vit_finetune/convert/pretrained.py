"""`load_pretrained_vit`: our model from whatever a user names (one of our folders, a transformers folder or Hub
id, `timm/<name>`), and the one-line `ModelLoadError` when it cannot be had (no such folder, not a model, the Hub
out of reach, overrides the weights do not allow). Weights are read from safetensors (or tensor-only pickles with
`weights_only=True`)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..configuration_vit import ViTConfig
from ..modeling_vit import ViTForImageClassification
from .build import LABEL_FIELDS, build_model, merge_overrides, split_labels
from .timm_folder import TIMM_PREFIXES, is_timm_config, load_timm_folder, timm_folder, timm_image_processor
from .timm_vit import from_timm
from .transformers_families import (
    CONVERTERS,
    family_image_processor,
    from_transformers_family,
    is_family_model,
    load_source_model,
    source_patch_size,
)
from .transformers_vit import config_from_transformers, from_transformers, state_dict_from_transformers

logger = logging.getLogger(__name__)


def _read_safetensors_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state_dict: dict[str, torch.Tensor] = {}
        for shard in shards:
            state_dict.update(load_file(folder / shard))
        return state_dict
    single = folder / "model.safetensors"
    if single.exists():
        return load_file(single)
    legacy = folder / "pytorch_model.bin"
    if legacy.exists():
        # weights_only refuses arbitrary pickled objects: tensors and plain containers only.
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} holds no model.safetensors (or pytorch_model.bin)")


class ModelLoadError(ValueError):
    """A model that cannot be loaded, said in one line naming it: no such folder, a folder that holds no model,
    a Hub id that cannot be fetched (offline, unknown, gated), or overrides the model's weights do not allow."""


# A Hub id is `name` or `org/name` of letters, digits and - _ . (huggingface_hub's rule, roughly).
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def looks_like_local_path(name: str) -> bool:
    """True for what can only be a path on this machine (./x, ../x, ~/x, /abs, a/b/c, x\\y, x/), never a Hub id."""
    return (
        name.startswith((".", "~", "/")) or name.endswith("/") or not _HUB_ID.match(name) or "--" in name
        or ".." in name
    )


def _check_config(folder: Path, name: str) -> Path:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{name}: not a model folder (it holds no config.json)")
    return folder


def check_weights(folder: Path, name: str) -> None:
    """Raises ModelLoadError unless `folder` holds model weights (checked after its config says what it is)."""
    if not any((folder / weights).is_file() for weights in _WEIGHT_FILES):
        raise ModelLoadError(f"{name}: not a model folder (it holds no weights: no model.safetensors or "
                             "pytorch_model.bin)")


def hub_fetch_error(name: str, error: BaseException, *, local_folder_checked: bool = True) -> ModelLoadError:
    """The one-line reason why `name` could not be fetched from the Hub, from what huggingface_hub raised."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, HFValidationError):
        reason = f"it is not a valid Hub id either ({error})"
    elif isinstance(error, GatedRepoError):
        reason = "the repository is gated: accept its conditions on the Hub and log in (`hf auth login`)"
    elif isinstance(error, RevisionNotFoundError):
        reason = "the Hub has no such revision of it"
    elif isinstance(error, RepositoryNotFoundError):
        reason = "the Hub has no such model (or it is private: log in with `hf auth login`)"
    elif constants.HF_HUB_OFFLINE:
        reason = "this machine is offline (HF_HUB_OFFLINE=1) and the model is not in the local Hugging Face cache"
    else:
        reason = (f"the Hugging Face Hub cannot be reached ({constants.ENDPOINT}; offline?) and the model is not in "
                  f"the local cache ({type(error).__name__})")
    # A missing local folder also ends up here when its name has the form of a Hub id ("outputs/run1"): say so.
    local = " is not a local folder and" if local_folder_checked else ""
    return ModelLoadError(f"model {name!r}{local} could not be fetched from the Hugging Face Hub: {reason}")


def resolve_model_folder(name_or_path: str, revision: str | None = None) -> Path:
    """The folder of a model: a local folder as is, a Hub id downloaded (config, weights, image processor) into
    the HF cache. Raises ModelLoadError naming the model: no such folder, a folder without config.json, or a Hub
    id that cannot be fetched (offline, no such repository...). Weights are checked by `check_weights`."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _check_config(path, name_or_path)
    if path.exists():
        raise ModelLoadError(f"{name_or_path}: not a model folder (it is a file)")
    if looks_like_local_path(name_or_path):
        # Asking the Hub about something that can only be a path would just add a confusing network error.
        raise ModelLoadError(f"{name_or_path}: no such folder")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            name_or_path,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.py", "*.txt", "*.md"],
        )
    except Exception as error:  # noqa: BLE001 - network errors come as OSError, httpx, hub errors...: name them all
        raise hub_fetch_error(name_or_path, error) from error
    return _check_config(Path(folder), name_or_path)


def _check_image_size(name: str, overrides: dict[str, Any], patch_size: int) -> None:
    """A new image_size must be a whole number of the pretrained patches (the patch embedding is fixed)."""
    image_size = overrides.get("image_size")
    if image_size is not None and patch_size and image_size % patch_size:
        below = max(patch_size, image_size // patch_size * patch_size)
        raise ModelLoadError(
            f"image_size {image_size} is not divisible by the patch_size {patch_size} of {name}: "
            f"use a multiple of {patch_size}, e.g. {below} or {below + patch_size}"
        )


def load_pretrained_vit(
    name_or_path: str | torch.nn.Module,
    *,
    revision: str | None = None,
    **config_overrides: Any,
) -> ViTForImageClassification:
    """Our model from anything a user calls "a pretrained ViT".

    - a folder or Hub id of ours (config.json `model_type: vit_finetune`),
    - a transformers ViT folder or Hub id (e.g. `google/vit-base-patch16-224-in21k`),
    - a folder or Hub id of another transformers family (`transformers_families.py`: DINOv2 with or without
      registers, DINOv3, SigLIP / SigLIP 2, CLIP, DeiT, ViT-MAE), loaded with its stock class and converted in memory,
    - `timm/<name>` (e.g. `timm/vit_small_patch16_224.augreg_in21k`), created with timm and downloaded by it,
    - a timm folder (config.json with "architecture" and "pretrained_cfg", model.safetensors: timm's save_for_hf),
    - an in-memory transformers or timm model.

    `config_overrides` change the config on the way in, e.g. `image_size=384` (position embeddings are
    resized), `id2label={...}` (a new label set: the head is re-initialised) or `drop_path_rate=0.1`.
    """
    if isinstance(name_or_path, torch.nn.Module):
        if type(name_or_path).__module__.startswith("timm."):
            return from_timm(name_or_path, **config_overrides)
        if isinstance(name_or_path, ViTForImageClassification):
            return _with_overrides(name_or_path, config_overrides, source="model")
        if is_family_model(name_or_path):  # DINOv2/v3, SigLIP (2), CLIP, DeiT, ViT-MAE: by class
            return from_transformers_family(name_or_path, **config_overrides)
        return from_transformers(name_or_path, **config_overrides)

    name = str(name_or_path)
    try:
        return _load_named_vit(name, revision, config_overrides)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as error:  # weights that do not fit, a config value the model refuses...
        raise ModelLoadError(f"{name}: {error}") from error


def _load_named_vit(name: str, revision: str | None, config_overrides: dict[str, Any]) -> ViTForImageClassification:
    if name.startswith(("timm/", "hf-hub:timm/", "hf_hub:timm/")):
        import timm

        timm_name = name.split("timm/", 1)[1]
        if not timm.list_models(timm_name.split(".")[0]):
            raise ModelLoadError(f"{name}: timm has no model {timm_name.split('.')[0]!r}")
        try:
            model = timm.create_model(timm_name, pretrained=True)
        except Exception as error:  # noqa: BLE001 - timm downloads through huggingface_hub: offline etc.
            raise hub_fetch_error(name, error, local_folder_checked=False) from error
        _check_image_size(name, config_overrides, model.patch_embed.patch_size[0])
        return from_timm(model, **config_overrides)

    folder = resolve_model_folder(name, revision)
    raw_config = json.loads((folder / "config.json").read_text())
    if is_timm_config(raw_config):  # a timm folder (save_for_hf, push_to_hf_hub, a timm Hub repo): timm builds it
        model = load_timm_folder(folder, name)
        _check_image_size(name, config_overrides, model.patch_embed.patch_size[0])
        return from_timm(model, **config_overrides)
    model_type = raw_config.get("model_type")
    if model_type in CONVERTERS:
        # A transformers family: loaded with its stock class (never remote code), then converted in memory.
        check_weights(folder, name)
        _check_image_size(name, config_overrides, source_patch_size(raw_config))
        new_head = bool(set(LABEL_FIELDS) & set(config_overrides))
        return from_transformers_family(load_source_model(folder, raw_config, new_head), **config_overrides)
    if model_type not in (ViTConfig.model_type, "vit"):
        raise ModelLoadError(
            f"{name}: model_type {model_type!r} is not a ViT this toolkit can import "
            f"(expected {ViTConfig.model_type!r}, 'vit' or one of {', '.join(CONVERTERS)})"
        )
    check_weights(folder, name)
    # Checked before any weights are read, with the source's own patch size (transformers' default is 16).
    _check_image_size(name, config_overrides, int(raw_config.get("patch_size", 16)))
    if model_type == ViTConfig.model_type:
        model = ViTForImageClassification.from_pretrained(folder)
        return _with_overrides(model, config_overrides, source=name)
    overrides, id2label = split_labels(config_overrides)
    config = config_from_transformers(raw_config, **overrides)
    return build_model(config, state_dict_from_transformers(_read_safetensors_checkpoint(folder)), source=name,
                       id2label=id2label)


def _with_overrides(
    model: ViTForImageClassification, overrides: dict[str, Any], *, source: str
) -> ViTForImageClassification:
    """Applies config overrides to one of our models by rebuilding it around its own weights."""
    if not overrides:
        return model
    overrides, id2label = split_labels(overrides)
    fields = model.config.to_dict()
    for key in ("auto_map", "architectures", "transformers_version", "model_type"):
        fields.pop(key, None)
    return build_model(ViTConfig(**merge_overrides(fields, overrides)), model.state_dict(), source=source,
                       id2label=id2label)


def source_image_processor(name_or_path: str, config: ViTConfig):
    """The source's own image processor when it has one, else a ViTImageProcessor with the source's statistics."""
    from transformers import AutoImageProcessor, ViTImageProcessor

    size = {"height": config.image_size, "width": config.image_size}
    if name_or_path.startswith(TIMM_PREFIXES) or timm_folder(name_or_path) is not None:
        # timm's evaluation transform (mean, std, crop_pct, crop_mode, interpolation) at our resolution
        return timm_image_processor(name_or_path, config)
    family = _family_folder(name_or_path)
    if family is not None:  # a transformers family: its own processor, else its authors' stock one
        folder, model_type = family
        return family_image_processor(model_type, folder, config.image_size)
    try:
        processor = AutoImageProcessor.from_pretrained(resolve_model_folder(name_or_path))
        processor.size = size
        return processor
    except (OSError, ValueError):
        return ViTImageProcessor(size=size, image_mean=[0.5] * config.num_channels, image_std=[0.5] * config.num_channels)


def _family_folder(name_or_path: str) -> tuple[Path, str] | None:
    """(folder, model_type) when `name_or_path` is a folder or Hub id of a transformers family (`CONVERTERS`)."""
    try:
        folder = resolve_model_folder(name_or_path)
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    return (folder, model_type) if model_type in CONVERTERS else None
