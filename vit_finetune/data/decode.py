"""Reading one image (a file, bytes, a dataset row, a PIL image or an array) into the mode the model takes.

This is the one image decoder: training, `vit-finetune eval`, `predict` and the demo all go through
`open_image` + `decode_image`, so they all see the same pixels. It imports only the standard library, numpy
and Pillow because a Hugging Face Space runs it as a plain file beside the demo's app.py.

What every image becomes ("RGB" for 3-channel models, "L" for 1-channel ones):
- EXIF orientation is applied (phone photos store their rotation there); animations give their first frame.
- Transparent pixels are composited onto white: the colours under alpha 0 are arbitrary, and most cut-out
  images (products, icons, logos) are meant to be seen on white. Palette and colour-key transparency count.
- CMYK, YCbCr, LAB, palette, 1-bit ... become RGB; RGB becomes L with ITU-R 601-2 luma (PIL's, ImageNet tools').
- High bit depths become 8 bits by the range the data is in (Pillow's own convert() clips at 255, which turns
  most 16-bit photos white):
  * "I;16" (16-bit) is divided by 257, so 0..65535 maps onto 0..255;
  * "I" (32-bit integer) and "F" (32-bit float) do not say their range, so the values do: "F" up to 1.0 is
    a 0..1 float image (x 255); values up to 255 are 8-bit data in a wide container (kept as they are);
    up to 65535 they are 16-bit data (/ 257, as "I;16"); larger ones are scaled so the maximum is 255.
    Negative values become 0. Results are rounded to the nearest integer.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

TRANSPARENCY_BACKGROUND = (255, 255, 255)


class BadImageError(ValueError):
    """An image that cannot be used: `reason` says why, `path` which file (or row) it was.

    `kind` sorts the reasons for callers that word their own messages (the demo): "missing", "empty",
    "no_image" (a row or value holding no image), "not_image", "too_many_pixels", "unreadable", "corrupt".
    """

    def __init__(self, path: str, reason: str, kind: str = "corrupt"):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.kind = kind


def check_num_channels(num_channels: int) -> None:
    """Images decode to RGB or L only: anything else is a configuration error, not a bad image."""
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}")


def resolve_path(path: str, base_dir: str | None) -> str:
    if base_dir and not os.path.isabs(path):
        return os.path.normpath(os.path.join(base_dir, path))
    return path


def describe_source(source: Any, base_dir: str | None = None) -> str:
    """The file an image comes from, or "<image bytes>" / "<PIL image>" / "<type>" when it has none."""
    if isinstance(source, dict):
        if source.get("path"):
            return resolve_path(source["path"], base_dir)
        return "<image bytes>"
    if isinstance(source, (str, os.PathLike)):
        return resolve_path(os.fspath(source), base_dir)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return f"<{type(source).__name__}>"


def _array_to_image(source: Any, where: str) -> Image.Image:
    # .cpu(): a torch tensor (this module must not import torch) may live on a GPU.
    array = np.asarray(source.cpu() if hasattr(source, "cpu") else source)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels-first (e.g. a pixel_values column) -> HWC for PIL
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = np.clip(array * 255 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
    try:
        return Image.fromarray(array)
    except (TypeError, ValueError) as error:
        raise BadImageError(where, f"array of shape {array.shape} is not an image: {error}", "no_image") from error


def open_image(source: Any, base_dir: str | None = None) -> Image.Image:
    """Open, reading the header only, whatever a dataset row or a user hands us: a path (relative ones against
    `base_dir`), bytes, a datasets image dict {"bytes", "path"} (or gradio's {"path"}), a PIL image or an array.
    Raises BadImageError for files that are missing, empty or not images."""
    where = describe_source(source, base_dir)
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
        if source is None:
            raise BadImageError(where, "empty row: no image bytes and no path", "no_image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadImageError(where, "empty file (0 bytes)", "empty")
        fp: Any = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        fp = resolve_path(os.fspath(source), base_dir)
        if not os.path.isfile(fp):
            raise BadImageError(where, "file not found", "missing")
        if os.path.getsize(fp) == 0:
            raise BadImageError(where, "empty file (0 bytes)", "empty")
    elif isinstance(source, (np.ndarray, list)) or hasattr(source, "__array__"):
        return _array_to_image(source, where)
    else:
        raise BadImageError(where, f"unsupported image value of type {type(source).__name__}", "no_image")
    try:
        # Image.open keeps PIL's decompression-bomb guard (MAX_IMAGE_PIXELS): huge images raise, we report them.
        return Image.open(fp)
    except Image.DecompressionBombError as error:
        raise BadImageError(where, f"decompression bomb guard: {error}", "too_many_pixels") from error
    except UnidentifiedImageError as error:
        raise BadImageError(where, "not an image (PIL cannot identify the file)", "not_image") from error
    except OSError as error:
        raise BadImageError(where, f"unreadable: {error}", "unreadable") from error


def decode_image(
    image: Image.Image, num_channels: int, *, where: str | None = None, draft_size: int | None = None
) -> tuple[Image.Image, list[str]]:
    """Decode an image from `open_image` into "RGB" (`num_channels=3`) or "L" (`num_channels=1`), by the rules
    at the top of this module. Returns the image and notes for a person ("has 2 frames; only the first one is
    used"). `draft_size`: let libjpeg decode a big JPEG at 1/2, 1/4 or 1/8 scale, keeping both sides at least
    `draft_size` (several times faster; the final resize still antialiases). Raises BadImageError (named after
    `where`) for corrupt or truncated data."""
    check_num_channels(num_channels)
    where = where or describe_source(image)
    notes: list[str] = []
    try:
        if draft_size and image.format == "JPEG":
            image.draft(None, (draft_size, draft_size))
        if getattr(image, "is_animated", False):
            notes.append(f"has {image.n_frames} frames; only the first one is used")
            image.seek(0)
        image.load()  # full decode now, so truncated / corrupt data raises here and not later
        image = ImageOps.exif_transpose(image)
        return _to_model_mode(image, num_channels, notes), notes
    except Image.DecompressionBombError as error:
        raise BadImageError(where, f"decompression bomb guard: {error}", "too_many_pixels") from error
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, struct.error) as error:
        # PIL reports truncation as OSError("image file is truncated ..."), bad headers as SyntaxError etc.
        raise BadImageError(where, f"corrupt or truncated image: {type(error).__name__}: {error}") from error


def load_image(
    image: str | os.PathLike | bytes | Image.Image, num_channels: int = 3, *, base_dir: str | None = None,
    draft_size: int | None = None,
) -> Image.Image:
    """`open_image` + `decode_image`: one image in the model's mode. Raises `BadImageError` (a ValueError naming
    the file and the reason) for missing, empty, corrupt, truncated or non-image files."""
    check_num_channels(num_channels)  # before opening: a wrong setting is not a bad file
    opened = open_image(image, base_dir)
    return decode_image(opened, num_channels, where=describe_source(image, base_dir), draft_size=draft_size)[0]


def _to_model_mode(image: Image.Image, num_channels: int, notes: list[str]) -> Image.Image:
    """Any PIL mode -> "RGB" (3 channels) or "L" (1 channel)."""
    target = "L" if num_channels == 1 else "RGB"
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        image, scaled = _high_bit_depth_to_8bit(image)
        if scaled:
            notes.append("is a 16/32-bit image; it was scaled to 8 bits")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        # Palette transparency must go through RGBA, otherwise PIL drops it (and warns).
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    elif mode in ("L", "RGB") and "transparency" in image.info:  # a tRNS colour key
        image = image.convert("RGBA")
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        image = _drop_alpha(image, notes)
    if image.mode != target:
        if image.mode not in ("RGB", "L"):  # CMYK, YCbCr, HSV, LAB ... go through RGB
            image = image.convert("RGB")
        image = image.convert(target)
    return image


def _drop_alpha(image: Image.Image, notes: list[str]) -> Image.Image:
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] < 255:
        background = Image.new("RGBA", rgba.size, (*TRANSPARENCY_BACKGROUND, 255))
        rgba = Image.alpha_composite(background, rgba)
        notes.append("has transparent parts; they were placed on a white background")
    return rgba.convert("RGB")


def _high_bit_depth_to_8bit(image: Image.Image) -> tuple[Image.Image, bool]:
    """16-bit / 32-bit integer and float grayscale -> 8-bit L by the rule at the top of this module; also says
    whether the values were scaled (8-bit data in an "I" or "F" image is only converted)."""
    values = np.asarray(image).astype(np.float32)
    peak = float(values.max()) if values.size else 0.0
    scaled = True
    if image.mode.startswith("I;16") or 255.0 < peak <= 65535.0:
        values /= 257.0  # 65535 -> 255
    elif image.mode == "F" and peak <= 1.0:
        values *= 255.0
    elif peak > 65535.0:
        values *= 255.0 / peak
    else:
        scaled = False
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)), scaled


__all__ = [
    "TRANSPARENCY_BACKGROUND",
    "BadImageError",
    "check_num_channels",
    "decode_image",
    "describe_source",
    "load_image",
    "open_image",
    "resolve_path",
]
