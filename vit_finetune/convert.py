"""Import official ViT weights (transformers' `google/vit-*` checkpoints, timm's ViTs) into our model.

Each source gets two small functions: one maps its config onto a `ViTConfig`, one renames its state dict
onto our parameter names. `load_pretrained_vit` picks the right pair for whatever the user points at, and
`vit-finetune convert SOURCE OUTPUT_DIR` writes the result as a folder of ours.

Our layout (fused qkv, as timm) differs from transformers' (separate q, k, v), so transformers weights are
concatenated; transformers 5 names the same weights differently in memory (`vit.layers.N.attention.q_proj`)
and on disk (`vit.encoder.layer.N.attention.attention.query`), and both are accepted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch

from .configuration_vit import ViTConfig
from .modeling_vit import ViTForImageClassification, resize_position_table

logger = logging.getLogger(__name__)

# Names of the per-layer weights of a transformers ViT, in memory (v5) and on disk (v4 and v5 checkpoints),
# mapped to ours. Attention q/k/v are listed separately and fused afterwards.
_TRANSFORMERS_LAYER_NAMES = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    # transformers 5, in memory
    "attention.q_proj": "attention.q",
    "attention.k_proj": "attention.k",
    "attention.v_proj": "attention.v",
    "attention.o_proj": "attention.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    # checkpoints on disk
    "attention.attention.query": "attention.q",
    "attention.attention.key": "attention.k",
    "attention.attention.value": "attention.v",
    "attention.output.dense": "attention.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_TRANSFORMERS_LAYER = re.compile(r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")


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


# ----------------------------------------------------------------------------------------------------------
# transformers' ViT


def config_from_transformers(source: dict[str, Any] | Any, **overrides: Any) -> ViTConfig:
    """A `ViTConfig` from a transformers `ViTConfig` (object or its config.json dict)."""
    hf = source if isinstance(source, dict) else source.to_dict()
    if hf.get("model_type") not in (None, "vit"):
        raise ValueError(f"expected a transformers ViT config (model_type 'vit'), got {hf.get('model_type')!r}")
    fields = dict(
        image_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 16),
        num_channels=hf.get("num_channels", 3),
        hidden_size=hf.get("hidden_size", 768),
        num_hidden_layers=hf.get("num_hidden_layers", 12),
        num_attention_heads=hf.get("num_attention_heads", 12),
        intermediate_size=hf.get("intermediate_size", 3072),
        hidden_act=hf.get("hidden_act", "gelu"),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        qkv_bias=hf.get("qkv_bias", True),
        initializer_range=hf.get("initializer_range", 0.02),
        position_embedding="learned",
        pooling="cls",
        patch_embedding="patch",
    )
    if "id2label" in hf:
        fields["id2label"] = {int(k): v for k, v in hf["id2label"].items()}
    return ViTConfig(**merge_overrides(fields, overrides))


def state_dict_from_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a transformers ViT state dict (either naming, with or without `vit.`) onto ours."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        match = _TRANSFORMERS_LAYER.match(key)
        if match:
            index, name, kind = int(match.group(1)), match.group(2), match.group(3)
            if name not in _TRANSFORMERS_LAYER_NAMES:
                raise ValueError(f"unexpected transformers ViT weight {key!r}")
            ours = _TRANSFORMERS_LAYER_NAMES[name]
            if ours in ("attention.q", "attention.k", "attention.v"):
                qkv.setdefault((index, kind), {})[ours[-1]] = tensor
            else:
                out[f"vit.layers.{index}.{ours}.{kind}"] = tensor
            continue
        bare = key.removeprefix("vit.")
        if bare.startswith("embeddings.") or bare.startswith("layernorm."):
            if "mask_token" in bare:
                continue  # only used for masked image modeling
            out[f"vit.{bare}"] = tensor
        elif bare.startswith("classifier."):
            out[bare] = tensor
        elif bare.startswith("pooler."):
            continue  # ViTModel's tanh pooler; image classification never uses it
        else:
            raise ValueError(f"unexpected transformers ViT weight {key!r}")
    for (index, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {index} lacks one of query/key/value {kind}")
        out[f"vit.layers.{index}.attention.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


# ----------------------------------------------------------------------------------------------------------
# timm's VisionTransformer


def config_from_timm(model: torch.nn.Module, **overrides: Any) -> ViTConfig:
    """A `ViTConfig` from a timm `VisionTransformer` instance (vit_*_patch*_* with a class token)."""
    if type(model).__name__ != "VisionTransformer":
        raise ValueError(f"expected a timm VisionTransformer, got {type(model).__name__}")
    unsupported = {
        "no class token": getattr(model, "cls_token", None) is None,
        "register tokens": getattr(model, "num_reg_tokens", 0) > 0,
        "position embedding without the class token (no_embed_class)": getattr(model, "no_embed_class", False),
        "a norm before the blocks (norm_pre)": not isinstance(getattr(model, "norm_pre", torch.nn.Identity()),
                                                               torch.nn.Identity),
        "a norm after pooling (fc_norm)": not isinstance(getattr(model, "fc_norm", torch.nn.Identity()),
                                                         torch.nn.Identity),
        f"global_pool={getattr(model, 'global_pool', None)!r}": getattr(model, "global_pool", "token") != "token",
        "qk_norm": not isinstance(getattr(model.blocks[0].attn, "q_norm", torch.nn.Identity()), torch.nn.Identity),
    }
    problems = [name for name, present in unsupported.items() if present]
    if problems:
        raise ValueError(f"this timm ViT uses {', '.join(problems)}, which vit-finetune's ViT does not have")
    patch = model.patch_embed.proj
    block = model.blocks[0]
    layerscale = getattr(block, "ls1", None)
    fields = dict(
        image_size=model.patch_embed.img_size[0],
        patch_size=patch.kernel_size[0],
        num_channels=patch.in_channels,
        hidden_size=model.embed_dim,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=block.attn.num_heads,
        intermediate_size=block.mlp.fc1.out_features,
        hidden_act="gelu",
        layer_norm_eps=block.norm1.eps,
        qkv_bias=block.attn.qkv.bias is not None,
        position_embedding="learned",
        pooling="cls",
        patch_embedding="patch",
        layerscale_init=float(layerscale.gamma.detach().mean()) if hasattr(layerscale, "gamma") else None,
    )
    num_classes = getattr(model, "num_classes", 0)
    if num_classes:
        fields["num_labels"] = num_classes
    return ViTConfig(**merge_overrides(fields, overrides))


def config_from_timm_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None, **overrides: Any
) -> ViTConfig:
    """A `ViTConfig` read off the shapes of a timm ViT state dict (e.g. a downloaded `model.safetensors`).

    The head count is not visible in the shapes: pass it, or the ViT convention (64 channels per head,
    16 heads for ViT-Huge) is assumed.
    """
    hidden = state_dict["cls_token"].shape[-1]
    proj = state_dict["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    grid = int(math.sqrt(state_dict["pos_embed"].shape[1] - 1))
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
    )
    if "head.weight" in state_dict:
        fields["num_labels"] = state_dict["head.weight"].shape[0]
    return ViTConfig(**merge_overrides(fields, overrides))


def state_dict_from_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a timm VisionTransformer state dict onto ours (timm's qkv is already fused)."""
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


# ----------------------------------------------------------------------------------------------------------
# Building our model from a converted state dict


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
    if key in state_dict and model.vit.embeddings.position_embeddings is not None:
        grid = model.vit.embeddings.grid
        if state_dict[key].shape != model.vit.embeddings.position_embeddings.shape:
            logger.info("resizing position embeddings of %s to a %dx%d patch grid", source, *grid)
            state_dict[key] = resize_position_table(state_dict[key], grid)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shapes that differ: say it as for names that do
        raise ValueError(f"weights of {source} do not fit the model: {error}") from error
    head = model.classifier_keys()
    without_head = sorted(set(missing) - head)
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


def from_transformers(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory transformers `ViTModel` or `ViTForImageClassification`."""
    overrides, id2label = split_labels(overrides)
    config = config_from_transformers(model.config, **overrides)
    return build_model(config, state_dict_from_transformers(model.state_dict()), source=type(model).__name__,
                       id2label=id2label)


def from_timm(
    model_or_state_dict: torch.nn.Module | dict[str, torch.Tensor], **overrides: Any
) -> ViTForImageClassification:
    """Our model from a timm `VisionTransformer`, or from its state dict (see `config_from_timm_state_dict`)."""
    overrides, id2label = split_labels(overrides)
    if isinstance(model_or_state_dict, dict):
        config = config_from_timm_state_dict(model_or_state_dict, **overrides)
        return build_model(config, state_dict_from_timm(model_or_state_dict), source="timm state dict",
                           id2label=id2label)
    config = config_from_timm(model_or_state_dict, **overrides)
    return build_model(config, state_dict_from_timm(model_or_state_dict.state_dict()), source="timm model",
                       id2label=id2label)


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
    - `timm/<name>` (e.g. `timm/vit_small_patch16_224.augreg_in21k`), created with timm and downloaded by it,
    - an in-memory transformers or timm model.

    `config_overrides` change the config on the way in, e.g. `image_size=384` (position embeddings are
    resized), `id2label={...}` (a new label set: the head is re-initialised) or `drop_path_rate=0.1`.
    """
    if isinstance(name_or_path, torch.nn.Module):
        if type(name_or_path).__module__.startswith("timm."):
            return from_timm(name_or_path, **config_overrides)
        if isinstance(name_or_path, ViTForImageClassification):
            return _with_overrides(name_or_path, config_overrides, source="model")
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
    model_type = raw_config.get("model_type")
    if model_type not in (ViTConfig.model_type, "vit"):
        raise ModelLoadError(
            f"{name}: model_type {model_type!r} is not a ViT this toolkit can import "
            f"(expected {ViTConfig.model_type!r} or 'vit')"
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


# ----------------------------------------------------------------------------------------------------------
# `vit-finetune convert SOURCE OUTPUT_DIR`


def source_image_processor(name_or_path: str, config: ViTConfig):
    """The source's own image processor when it has one, else a ViTImageProcessor with the source's statistics."""
    from transformers import AutoImageProcessor, ViTImageProcessor

    size = {"height": config.image_size, "width": config.image_size}
    if name_or_path.startswith(("timm/", "hf-hub:timm/", "hf_hub:timm/")):
        import timm

        data_config = timm.data.resolve_data_config({}, model=timm.create_model(name_or_path.split("timm/", 1)[1]))
        return ViTImageProcessor(size=size, image_mean=list(data_config["mean"]), image_std=list(data_config["std"]))
    try:
        processor = AutoImageProcessor.from_pretrained(resolve_model_folder(name_or_path))
        processor.size = size
        return processor
    except (OSError, ValueError):
        return ViTImageProcessor(size=size, image_mean=[0.5] * config.num_channels, image_std=[0.5] * config.num_channels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vit-finetune convert",
        description="Import a transformers or timm ViT (folder, Hub id, or timm/<name>) into a vit-finetune folder.",
    )
    parser.add_argument("source", help="folder, Hub id (google/vit-base-patch16-224), or timm/<model name>")
    parser.add_argument("output_dir", help="where to write the converted model")
    parser.add_argument("--image_size", type=int, help="resize position embeddings to this resolution")
    parser.add_argument("--labels", help="comma-separated class names for a new head (re-initialised)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    overrides: dict[str, Any] = {}
    if args.image_size:
        overrides["image_size"] = args.image_size
    if args.labels:
        names = [n.strip() for n in args.labels.split(",") if n.strip()]
        overrides["id2label"] = dict(enumerate(names))
        overrides["label2id"] = {n: i for i, n in enumerate(names)}
    try:
        model = load_pretrained_vit(args.source, revision=args.revision, **overrides)
    except (ValueError, OSError) as error:  # ModelLoadError and friends: the message names the source
        print(f"vit-finetune convert: error: {error}", file=sys.stderr)
        return 2
    model.save_pretrained(args.output_dir)
    source_image_processor(args.source, model.config).save_pretrained(args.output_dir)
    print(f"wrote {args.output_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
