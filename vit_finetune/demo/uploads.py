"""What a request may read, and reading it into an image for the model.

An image reaches the model only as a file inside gradio's upload folder (what a browser upload or an example
becomes) or as a base64 `data:` URL, each within the app's file size limit (`upload_source`); any other server
path gets one answer that does not say whether the file exists. `load_image` then decodes it with the decoder
training used (decode.py), after refusing images with too many pixels on their header, and words every problem
for the person who uploaded the file (`ImageInputError`).
"""

from __future__ import annotations

import base64
import binascii
import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

if __package__:  # inside vit_finetune.demo: the decoder of the data pipeline
    from ..data.decode import BadImageError, decode_image, open_image
else:  # a Space: decode.py lies beside app.py
    from decode import BadImageError, decode_image, open_image

# Refuse images above this many pixels before decoding them: a small PNG can expand to
# gigabytes of memory (a "decompression bomb"). 50 MP is more than an 8K photo.
DEFAULT_MAX_PIXELS = 50_000_000
# The largest upload; gradio rejects larger ones before they reach our code, and `upload_source` applies the
# same limit to data: URLs. Gradio's "mb" is a mebibyte.
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_FILE_SIZE = f"{DEFAULT_MAX_FILE_BYTES // 2**20}mb"  # as gradio's max_file_size takes it

# The one answer for a payload that names a file gradio did not receive from this client: the same
# words whether or not that file exists, and without its name, so nothing leaks about other files.
NOT_UPLOADED = "This file was not uploaded to the app. Please upload the image again."
NO_FILE = "The upload did not contain a file. Please try again."

# What the person sees for each kind of BadImageError (decode.py); {name} is the file's name, {detail} the cause.
_BAD_IMAGE_MESSAGES = {
    "no_image": NO_FILE,
    "empty": "'{name}' is an empty file (0 bytes). Please upload the image again.",
    "not_image": "'{name}' is not an image this app can read. Please upload a PNG, JPEG, WebP, GIF, BMP or TIFF file.",
    "too_many_pixels": "'{name}' has too many pixels to process safely. Please resize it.",
    "corrupt": "'{name}' looks like an image but could not be decoded; it may be corrupt or truncated ({detail}).",
}
_UNREADABLE_MESSAGE = "Could not read '{name}': {detail}"


class ImageInputError(ValueError):
    """An upload we cannot classify; the message is written for the person who uploaded it."""


def _size_error(what: str, size: int, limit: int) -> ImageInputError:
    mib = 1024 * 1024  # gradio's "mb" (--max_file_size) is a mebibyte
    return ImageInputError(
        f"{what} is {size / mib:.2f} MB; this app accepts at most {limit / mib:.2f} MB. Please use a smaller file."
    )


def _decode_data_url(url: str, max_file_size: int) -> bytes:
    """The bytes of a base64 `data:` URL, refused before decoding when they would exceed `max_file_size`."""
    header, _, encoded = url.partition(",")
    if not header.endswith(";base64"):
        raise ImageInputError("The image in the request is not base64-encoded. Please upload it as a file.")
    size = len(encoded) * 3 // 4  # 4 base64 characters carry 3 bytes
    if size > max_file_size:
        raise _size_error("The image in the request", size, max_file_size)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ImageInputError("The image in the request is not valid base64. Please upload it as a file.") from None


def upload_source(payload: Any, *, upload_folder: str | Path, max_file_size: int) -> str | bytes:
    """What the app may read for a client's image: a path in gradio's upload folder, or inline bytes.

    `payload` is what an event receives: a gradio FileData dict (preprocess=False) or a file path
    (gr.File). Clients may put anything in it, so only two kinds are accepted, each at most
    `max_file_size` bytes: a file in `upload_folder` (where gradio saves uploads and the examples),
    and a base64 `data:` URL. A payload naming any other server path gets `NOT_UPLOADED`.
    """
    if isinstance(payload, dict):
        if payload.get("path"):
            payload = payload["path"]
        elif str(payload.get("url") or "").startswith("data:"):
            return _decode_data_url(str(payload["url"]), max_file_size)
        else:
            raise ImageInputError(NO_FILE)
    if not isinstance(payload, (str, os.PathLike)):
        raise ImageInputError(NOT_UPLOADED)
    try:
        path = Path(payload).resolve()  # resolves "..", and links that point elsewhere, before the check
        uploaded = path.is_relative_to(Path(upload_folder).resolve())
    except (OSError, ValueError, RuntimeError):  # a NUL byte in the name, a link loop
        uploaded = False
    if not uploaded:
        raise ImageInputError(NOT_UPLOADED)
    if path.is_file() and path.stat().st_size > max_file_size:
        raise _size_error(f"'{path.name}'", path.stat().st_size, max_file_size)
    return str(path)


def _display_name(source: Any) -> str:
    """How messages name an upload: its file name only (never a server path), else "upload" / "image"."""
    if isinstance(source, dict):
        source = source.get("path") or b""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return "image" if isinstance(source, Image.Image) else "upload"


def _input_error(name: str, error: BadImageError) -> ImageInputError:
    template = _BAD_IMAGE_MESSAGES.get(error.kind, _UNREADABLE_MESSAGE)
    detail = error.__cause__ or error.reason  # Pillow's own words, without our prefix
    return ImageInputError(template.format(name=name, detail=detail))


def load_image(
    source: Any, *, num_channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, list[str]]:
    """Decode an upload into the mode the model expects ("RGB", or "L" for 1-channel models), as training does.

    `source` is a file path, bytes, a PIL image or a gradio file payload (dict with "path").
    Returns the image and a list of warnings for the user (transparency removed, 16-bit scaled,
    only the first frame used). Raises `ImageInputError` with a readable message when the file is
    not an image, is corrupt or truncated, or has more than `max_pixels` pixels.
    """
    name = _display_name(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 MP; the max_pixels check below is stricter and says so clearly.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = open_image(source)
    except BadImageError as error:
        raise _input_error(name, error) from None
    width, height = image.size
    if width * height > max_pixels:  # checked on the header, before decoding
        raise ImageInputError(
            f"'{name}' is {width}x{height} pixels ({width * height / 1e6:.0f} MP); this app accepts "
            f"at most {max_pixels / 1e6:.0f} MP. Please resize it and try again."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd metadata; we only want the pixels
            image, notes = decode_image(image, num_channels, where=name)
    except BadImageError as error:
        raise _input_error(name, error) from None
    except Exception as error:  # noqa: BLE001 - whatever else a broken file makes Pillow raise, the app keeps serving
        raise _input_error(name, BadImageError(name, str(error))) from None
    return image, [f"'{name}' {note}." for note in notes]


__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_MAX_PIXELS",
    "NOT_UPLOADED",
    "ImageInputError",
    "load_image",
    "upload_source",
]
