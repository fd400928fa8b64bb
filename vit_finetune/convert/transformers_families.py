"""The transformers families this toolkit imports beside the plain ViT, by `model_type` (folders, Hub ids) and by class
(in-memory models), and the image processor each family's authors use.

    dinov2, dinov2_with_registers   transformers_dinov2.py    BitImageProcessor (resize 256/224, centre crop)
    dinov3_vit                      transformers_dinov3.py    DINOv3ViTImageProcessor (resize, no crop)
    siglip(2)_vision_model, siglip(2) transformers_siglip.py  SiglipImageProcessor (resize, mean/std 0.5)
    clip_vision_model, clip         transformers_clip.py      CLIPImageProcessor (resize shortest edge, centre crop)
    deit                            transformers_deit.py      DeiTImageProcessor (resize 256/224, centre crop)
    vit_mae                         transformers_vit_mae.py   ViTImageProcessor (ImageNet statistics)

A folder is loaded with the stock transformers class its config.json names (`architectures`, when that class belongs
to the family; else `AutoModel`), never with remote code, then converted in memory: every on-disk naming
transformers understands is transformers' business.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..modeling_vit import ViTForImageClassification
from . import (
    transformers_clip,
    transformers_deit,
    transformers_dinov2,
    transformers_dinov3,
    transformers_siglip,
    transformers_vit_mae,
)

_MODULES = {
    transformers_dinov2: transformers_dinov2.from_dinov2,
    transformers_dinov3: transformers_dinov3.from_dinov3,
    transformers_siglip: transformers_siglip.from_siglip,
    transformers_clip: transformers_clip.from_clip,
    transformers_deit: transformers_deit.from_deit,
    transformers_vit_mae: transformers_vit_mae.from_vit_mae,
}
# model_type -> the entry point converting an in-memory model of that family.
CONVERTERS: dict[str, Callable[..., ViTForImageClassification]] = {
    model_type: convert for module, convert in _MODULES.items() for model_type in module.MODEL_TYPES
}
# transformers class name -> entry point (the refused classes too: their entry point says why).
_BY_CLASS: dict[str, Callable[..., ViTForImageClassification]] = {
    name: convert for module, convert in _MODULES.items()
    for name in (*module._CLASSES, *getattr(module, "_REFUSED", {}))
}
MODEL_TYPES = tuple(CONVERTERS)


def is_family_model(model: torch.nn.Module) -> bool:
    """True for an in-memory transformers model of one of these families (by class, else by config model_type)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return type(model).__name__ in _BY_CLASS or model_type in CONVERTERS


def from_transformers_family(model: torch.nn.Module, **overrides: Any) -> ViTForImageClassification:
    """Our model from an in-memory transformers model of one of these families, dispatched by its class (a class of
    a known family that cannot be converted gets that family's error naming it)."""
    convert = _BY_CLASS.get(type(model).__name__) or CONVERTERS.get(getattr(model.config, "model_type", None))
    if convert is None:
        raise ValueError(f"cannot convert a {type(model).__name__}: not a model family vit-finetune imports")
    return convert(model, **overrides)


def source_patch_size(raw_config: dict[str, Any]) -> int:
    """The patch size of a family's config.json (a full SigLIP / CLIP checkpoint keeps it in `vision_config`)."""
    vision = raw_config.get("vision_config") if raw_config.get("model_type") in ("siglip", "siglip2", "clip") else None
    patch = (vision or raw_config).get("patch_size", 16)
    return int(patch[0] if isinstance(patch, (list, tuple)) else patch)


def load_source_model(folder: Path, raw_config: dict[str, Any], new_head: bool = False) -> torch.nn.Module:
    """The stock transformers model of a family folder, in float32, from safetensors weights: the class named by
    config.json's `architectures` when it is one of the family's (accepted or refused, so that a refused one gets
    its reason), else `AutoModel`. Never remote code. `new_head`: the caller replaces the head (a new label set), so
    a refused head (DeiT's with-teacher pair) does not matter: its backbone is loaded instead."""
    import transformers

    refused = {name for module in _MODULES for name in getattr(module, "_REFUSED", {})}
    names = [name for name in raw_config.get("architectures") or []
             if name in _BY_CLASS and not (new_head and name in refused)]
    model_class = getattr(transformers, names[0]) if names else transformers.AutoModel
    model = model_class.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True,
                                        trust_remote_code=False)
    return model.eval()


# ---- image processors: the family's own, at the converted model's resolution ----

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def stock_image_processor(model_type: str, image_size: int):
    """The image processor the family's authors publish (their Hub checkpoints' preprocessor_config.json), built
    from the stock transformers class, at `image_size`: resize-then-crop families keep their resize/crop ratio."""
    import transformers
    from transformers.image_utils import PILImageResampling

    crop = {"height": image_size, "width": image_size}
    scaled = round(image_size * 256 / 224)  # DINOv2 and DeiT resize to 256 and crop 224
    if model_type in ("dinov2", "dinov2_with_registers"):  # facebook/dinov2-*
        return transformers.BitImageProcessor(
            size={"shortest_edge": scaled}, crop_size=crop, do_center_crop=True, resample=PILImageResampling.BICUBIC,
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_convert_rgb=True,
        )
    if model_type == "dinov3_vit":  # facebook/dinov3-vit*: resize to the square, no crop
        return transformers.DINOv3ViTImageProcessor(
            size=crop, resample=PILImageResampling.BILINEAR, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
        )
    if model_type in ("siglip", "siglip_vision_model"):  # google/siglip-*: bicubic resize, mean/std 0.5
        return transformers.SiglipImageProcessor(size=crop, resample=PILImageResampling.BICUBIC)
    if model_type in ("siglip2", "siglip2_vision_model"):  # google/siglip2-* fixed resolution: bilinear
        return transformers.SiglipImageProcessor(size=crop, resample=PILImageResampling.BILINEAR)
    if model_type in ("clip", "clip_vision_model"):  # openai/clip-*: shortest edge, centre crop, OpenAI statistics
        return transformers.CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=crop)
    if model_type == "deit":  # facebook/deit-*: resize 256, crop 224, ImageNet statistics
        return transformers.DeiTImageProcessor(
            size={"height": scaled, "width": scaled}, crop_size=crop, do_center_crop=True,
            resample=PILImageResampling.BICUBIC, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
        )
    if model_type == "vit_mae":  # facebook/vit-mae-*: ImageNet statistics
        return transformers.ViTImageProcessor(size=crop, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    raise ValueError(f"no stock image processor for model_type {model_type!r}")


def _size_field(size: Any, name: str) -> Any:
    if size is None:
        return None
    return size.get(name) if isinstance(size, dict) else getattr(size, name, None)


def fit_image_processor(processor: Any, image_size: int):
    """A source's own image processor set to the converted model's resolution: a resize-then-crop processor keeps
    its ratio (resize 256 / crop 224 stays 8/7), a plain resize goes to the square. SigLIP 2's NaFlex processor
    (aspect-preserving patch sequences) becomes the fixed-resolution SigLIP processor with its statistics and
    resampling, since our model takes images."""
    import transformers

    crop = {"height": image_size, "width": image_size}
    if type(processor).__name__.startswith("Siglip2ImageProcessor"):
        return transformers.SiglipImageProcessor(size=crop, resample=processor.resample,
                                                 image_mean=list(processor.image_mean),
                                                 image_std=list(processor.image_std))
    crop_size = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and _size_field(crop_size, "height"):
        ratio = image_size / _size_field(crop_size, "height")
        size = processor.size
        if _size_field(size, "shortest_edge"):
            processor.size = {"shortest_edge": round(_size_field(size, "shortest_edge") * ratio)}
        elif _size_field(size, "height"):
            processor.size = {"height": round(_size_field(size, "height") * ratio),
                              "width": round(_size_field(size, "width") * ratio)}
        else:
            processor.size = crop
        processor.crop_size = crop
        return processor
    processor.size = crop
    return processor


def family_image_processor(model_type: str, folder: Path | None, image_size: int):
    """The image processor of a family source: the folder's own preprocessor_config.json when it has one, else the
    family's stock processor; at `image_size` either way."""
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor

        return fit_image_processor(AutoImageProcessor.from_pretrained(str(folder)), image_size)
    return stock_image_processor(model_type, image_size)


__all__ = ["CONVERTERS", "MODEL_TYPES", "family_image_processor", "fit_image_processor", "from_transformers_family",
           "is_family_model", "load_source_model", "source_patch_size", "stock_image_processor"]
