"""Gradio demo: classify images with a Vision Transformer and show where it looked.

Run it with `vit-finetune demo MODEL` (a model folder or a Hub id), `python demo/app.py MODEL`,
or as a Hugging Face Space: `vit-finetune push-space` uploads this very file as the Space's
`app.py`. That is why this module is self-contained: it imports only torch, transformers,
gradio, numpy, Pillow and the standard library, never anything from `vit_finetune`.

In a Space the model id comes from the `MODEL_ID` environment variable, or else from a
`model_id.txt` file next to this file.

The page shows the top-k classes (`gr.Label`), an attention map overlaid on the image
(attention rollout across all layers, Abnar & Zuidema 2020, or the last layer's attention)
and the inference time. A second tab classifies several images at once into a gallery.
Bad uploads (not an image, corrupt, huge, transparent, 16-bit) give a readable message in
the page and the app keeps serving. A request may read only files gradio received (its upload
folder) or an inline `data:` URL, both within `--max_file_size`. Models whose code is neither
ours nor transformers' load only with `--trust_remote_code`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import io
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import AutoImageProcessor, AutoModelForImageClassification, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# Requirements of the Space that runs this file as app.py (also in demo/requirements.txt).
SPACE_REQUIREMENTS: list[str] = [
    "torch>=2.13",
    "transformers>=5.24,<6",
    "gradio>=6.31",
    "numpy>=2.0",
    "pillow>=12.0",
    "safetensors>=0.8",
]

# Refuse images above this many pixels before decoding them: a small PNG can expand to
# gigabytes of memory (a "decompression bomb"). 50 MP is more than an 8K photo.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_FILE_SIZE = "20mb"  # gradio rejects larger uploads before they reach our code
# The same in bytes: the limit for an app launched without max_file_size (gradio's "mb" is 2**20 bytes).
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_BATCH_IMAGES = 32  # the gallery tab classifies at most this many files per click
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AttentionMethod = Literal["rollout", "last_layer"]
ATTENTION_METHODS: dict[str, str] = {
    "rollout": "Attention rollout (all layers)",
    "last_layer": "Last layer attention",
}


class ImageInputError(ValueError):
    """An upload we cannot classify; the message is written for the person who uploaded it."""


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


# The one answer for a payload that names a file gradio did not receive from this client: the same
# words whether or not that file exists, and without its name, so nothing leaks about other files.
NOT_UPLOADED = "This file was not uploaded to the app. Please upload the image again."


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
            raise ImageInputError("The upload did not contain a file. Please try again.")
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


def _open_source(source: Any) -> tuple[Image.Image, str]:
    """Open (lazily, header only) a path, bytes, PIL image or gradio file payload (dict with "path")."""
    if isinstance(source, Image.Image):
        return source, "image"
    if isinstance(source, dict):
        if not source.get("path"):
            raise ImageInputError("The upload did not contain a file. Please try again.")
        source = source["path"]
    if isinstance(source, (bytes, bytearray)):
        name, fp = "upload", io.BytesIO(source)
    else:
        name, fp = Path(source).name, source
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 MP; load_image applies its own, stricter limit with a clear message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp), name
    except UnidentifiedImageError:
        raise ImageInputError(
            f"'{name}' is not an image this app can read. "
            "Please upload a PNG, JPEG, WebP, GIF, BMP or TIFF file."
        ) from None
    except Image.DecompressionBombError:
        raise ImageInputError(f"'{name}' has too many pixels to process safely. Please resize it.") from None
    except OSError as error:
        raise ImageInputError(f"Could not read '{name}': {error}") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """Map a 16-bit or 32-bit single-channel image to 8 bits (Pillow's own convert clips at 255)."""
    array = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and array.min() >= 0 and array.max() <= 65535):
        array = array / 257.0  # the full 16-bit range onto 0..255, as image viewers show it
    elif image.mode == "F" and array.min() >= 0.0 and array.max() <= 1.0:
        array = array * 255.0
    else:  # 32-bit data of unknown range: stretch what is there
        low, high = float(array.min()), float(array.max())
        array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


def load_image(
    source: Any, *, num_channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, list[str]]:
    """Decode an upload into the mode the model expects ("RGB", or "L" for 1-channel models).

    `source` is a file path, bytes, a PIL image or a gradio file payload (dict with "path").
    Returns the image and a list of warnings for the user (transparency removed, 16-bit scaled,
    only the first frame used). Raises `ImageInputError` with a readable message when the file is
    not an image, is corrupt or truncated, or has more than `max_pixels` pixels.
    """
    image, name = _open_source(source)
    notes: list[str] = []
    width, height = image.size
    if width * height > max_pixels:  # checked on the header, before decoding
        raise ImageInputError(
            f"'{name}' is {width}x{height} pixels ({width * height / 1e6:.0f} MP); this app accepts "
            f"at most {max_pixels / 1e6:.0f} MP. Please resize it and try again."
        )
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        notes.append(f"'{name}' has {image.n_frames} frames; only the first one was classified.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd metadata; we only want the pixels
            image.load()
            image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    except Exception as error:  # Pillow raises OSError, SyntaxError or ValueError for broken files
        raise ImageInputError(
            f"'{name}' looks like an image but could not be decoded; it may be corrupt or "
            f"truncated ({error})."
        ) from None

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit(image)
        notes.append(f"'{name}' is a 16/32-bit image; it was scaled to 8 bits.")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            # The model never saw transparency: show transparent parts on white, like a browser.
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
            notes.append(f"'{name}' has transparent parts; they were placed on a white background.")
        else:
            image = rgba
    target = "L" if num_channels == 1 else "RGB"
    return image.convert(target), notes


# --------------------------------------------------------------------------------------------
# Attention maps
# --------------------------------------------------------------------------------------------


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each token draws on each input token.

    `attentions` holds one (B, heads, T, T) tensor per layer. Per layer: average the heads, add
    the identity (the residual connection) and renormalise the rows; then multiply the layers
    from first to last. Returns (B, T, T); row i tells how token i at the output mixes the inputs.
    """
    if not attentions:
        raise ValueError("The model returned no attentions, so no attention map can be drawn.")
    rollout: torch.Tensor | None = None
    for layer in attentions:
        attention = layer.float().mean(dim=1)
        attention = attention + torch.eye(attention.shape[-1], device=attention.device)
        attention = attention / attention.sum(dim=-1, keepdim=True)
        rollout = attention if rollout is None else attention @ rollout
    assert rollout is not None
    return rollout


def patch_grid(num_tokens: int, height: int, width: int, patch_size: int | None) -> tuple[int, int, int]:
    """Return (prefix tokens, grid rows, grid columns) for a sequence of `num_tokens` tokens.

    Prefix tokens (CLS, DeiT's distillation token) come first; the rest are patches in row-major
    order. Uses the patch size when it explains the token count, else assumes one CLS token and a
    grid with the image's aspect ratio (e.g. a convolutional stem with a different stride).
    """
    if patch_size:
        rows, cols = height // patch_size, width // patch_size
        if 0 < rows * cols < num_tokens:
            return num_tokens - rows * cols, rows, cols
    patches = num_tokens - 1
    rows = max(1, round(math.sqrt(patches * height / width)))
    cols = patches // rows
    if rows * cols != patches:
        raise ValueError(f"Cannot arrange {patches} patch tokens into a grid for a {height}x{width} input.")
    return 1, rows, cols


def attention_map(
    attentions: Sequence[torch.Tensor],
    grid: tuple[int, int, int],
    *,
    method: AttentionMethod = "rollout",
    pooling: str = "cls",
) -> np.ndarray:
    """One (B, rows, cols) map per image in [0, 1]: how much the prediction drew on each patch.

    `grid` comes from `patch_grid`. The prediction reads the CLS token (`pooling="cls"`) or the
    mean of the patch tokens (`pooling="mean"`), so we take that token's row, or the mean of those
    rows, from the rollout (or from the last layer's head-averaged attention).
    """
    prefix, rows, cols = grid
    if method == "rollout":
        mixing = attention_rollout(attentions)
    elif method == "last_layer":
        mixing = attentions[-1].float().mean(dim=1)
    else:
        raise ValueError(f"Unknown attention method {method!r}; use one of {list(ATTENTION_METHODS)}.")
    query = mixing[:, prefix:, :].mean(dim=1) if pooling == "mean" else mixing[:, 0, :]
    maps = query[:, prefix:].reshape(-1, rows, cols)
    # Stretch each map to [0, 1]: the absolute values are small and similar, the contrast matters.
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    maps = (maps - low) / (high - low).clamp_min(1e-12)
    return maps.cpu().numpy()


# Colour map anchors (dark blue -> cyan -> yellow -> red), interpolated linearly.
_COLOURS = np.array([[0, 0, 130], [0, 90, 255], [0, 230, 230], [255, 230, 0], [230, 20, 0]], np.float64)


def overlay_attention(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5) -> Image.Image:
    """Blend a [0, 1] (rows, cols) heat map, upsampled smoothly, over `image`; returns RGB."""
    base = image.convert("RGB")
    heat = Image.fromarray(np.clip(heatmap * 255.0, 0, 255).astype(np.uint8), mode="L")
    heat = np.asarray(heat.resize(base.size, Image.Resampling.BILINEAR), np.float64) / 255.0
    positions = np.linspace(0.0, 1.0, len(_COLOURS))
    coloured = np.stack([np.interp(heat, positions, _COLOURS[:, c]) for c in range(3)], axis=-1)
    blended = (1.0 - alpha) * np.asarray(base, np.float64) + alpha * coloured
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def display_copy(image: Image.Image, *, shortest: int = 224, longest: int = 512) -> Image.Image:
    """A copy sized for the page: tiny images (28x28) enlarged with sharp pixels, large ones shrunk."""
    image = image.convert("RGB")
    if max(image.size) > longest:
        image = image.copy()
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    elif max(image.size) < shortest:
        scale = max(1, shortest // max(image.size))
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


# --------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """The result for one image."""

    probabilities: dict[str, float]  # top-k label -> probability, most likely first
    heatmap: np.ndarray  # (rows, cols) in [0, 1]
    seconds: float  # preprocessing + forward pass for the whole batch it was part of


# The model type of vit-finetune's own ViT (its configuration's `model_type`).
OUR_MODEL_TYPE = "vit_finetune"


class ModelLoadError(Exception):
    """A model the demo cannot load; the message (one line) says why and what to do."""


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _our_package_is_installed() -> bool:
    """Import vit_finetune if it is there: importing it registers our classes with transformers'
    Auto classes, so our models load with the installed code. A Space has no package."""
    try:
        importlib.import_module("vit_finetune")  # not a plain import: this file must run without it
    except ImportError:
        return False
    return True


def _read_config(model_id: str, revision: str | None) -> dict[str, Any]:
    """The raw config.json of a model folder or Hub repo (no model code runs to read it), after
    checking that a folder exists and holds the files the demo needs."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        for name, how in [
            ("config.json", "save the model with model.save_pretrained(folder)"),
            # The processor's resize and normalisation must be those of training: guessing them would give
            # quietly wrong predictions, so we ask for the file rather than build a default one.
            ("preprocessor_config.json",
             "save the image processor used in training next to it: processor.save_pretrained(folder)"),
        ]:
            if not (folder / name).is_file():
                raise ModelLoadError(f"the model folder '{model_id}' has no {name}; {how}")
    elif folder.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1:
        raise ModelLoadError(f"no model folder '{model_id}': it does not exist")  # cannot be a Hub id
    try:
        config, _ = PretrainedConfig.get_config_dict(model_id, revision=revision)
    except OSError as error:
        raise ModelLoadError(
            f"'{model_id}' is not a model folder here, and loading it from the Hugging Face Hub failed: "
            f"{_first_line(error)}"
        ) from None
    return config


def _remote_code_allowed(model_id: str, config: dict[str, Any], trust_remote_code: bool) -> bool:
    """Whether transformers may import the Python files that come with the model.

    Only with the user's `trust_remote_code`, or for our own model type when our package is not
    installed (a Space runs the code shipped with its model). Stock transformers types load with
    transformers' code; any other type that brings its own code is refused without the flag.
    """
    model_type = config.get("model_type")
    if trust_remote_code:
        return True
    if model_type == OUR_MODEL_TYPE:
        return not _our_package_is_installed()
    if "auto_map" in config and model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"'{model_id}' has model type {model_type!r}, whose code is neither in transformers nor in "
            "vit-finetune: loading it runs the Python files that come with the model. If you trust that code, "
            "pass --trust_remote_code (trust_remote_code=True in Python)"
        )
    return False


def load_model(
    model_id: str, *, device: str | None = None, revision: str | None = None, trust_remote_code: bool = False
) -> Classifier:
    """Load a model folder or Hub id: our ViT, a transformers image classifier, or, with
    `trust_remote_code=True`, a model that brings its own code. Raises `ModelLoadError`."""
    config = _read_config(model_id, revision)
    remote_code = _remote_code_allowed(model_id, config, trust_remote_code)
    try:
        processor = AutoImageProcessor.from_pretrained(
            model_id, revision=revision, trust_remote_code=trust_remote_code
        )
        # Eager attention: the fused (sdpa) kernels do not return attention weights.
        model = AutoModelForImageClassification.from_pretrained(
            model_id, trust_remote_code=remote_code, attn_implementation="eager", revision=revision
        )
    except (OSError, ValueError) as error:  # missing files, unknown model types, refused remote code
        raise ModelLoadError(f"could not load '{model_id}': {_first_line(error)}") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Classifier(model.to(device).eval(), processor, device=device)


class Classifier:
    """A model plus its image processor, answering top-k classes and attention maps."""

    def __init__(self, model: torch.nn.Module, processor: Any, *, device: str = "cpu") -> None:
        self.model = model
        self.processor = processor
        self.device = device
        config = model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.num_channels = int(getattr(config, "num_channels", 3))
        patch_size = getattr(config, "patch_size", None)
        self.patch_size = int(patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size or 0)
        self.pooling = str(getattr(config, "pooling", "cls"))  # transformers' ViT reads the CLS token

    @torch.inference_mode()
    def predict(
        self, images: Sequence[Image.Image], *, top_k: int = 5, method: AttentionMethod = "rollout"
    ) -> list[Prediction]:
        """Classify a batch of images already in the model's mode (see `load_image`)."""
        start = time.perf_counter()
        pixel_values = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        # The model's dtype: a checkpoint saved in bfloat16 loads as bfloat16 ("auto" dtype).
        pixel_values = pixel_values.to(self.device, dtype=next(self.model.parameters()).dtype)
        outputs = self.model(pixel_values=pixel_values, output_attentions=True)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if not outputs.attentions:
            raise RuntimeError("The model returned no attentions; load it with attn_implementation='eager'.")
        height, width = pixel_values.shape[-2:]
        grid = patch_grid(outputs.attentions[-1].shape[-1], height, width, self.patch_size)
        maps = attention_map(outputs.attentions, grid, method=method, pooling=self.pooling)
        probabilities = outputs.logits.float().softmax(dim=-1).cpu()
        k = max(1, min(int(top_k), len(self.labels)))
        results = []
        for row, heatmap in zip(probabilities, maps, strict=True):
            values, indices = row.topk(k)
            top = {self.labels[i]: float(v) for v, i in zip(values.tolist(), indices.tolist(), strict=True)}
            results.append(Prediction(top, heatmap, seconds))
        return results


# --------------------------------------------------------------------------------------------
# The Gradio app
# --------------------------------------------------------------------------------------------


def find_examples(model_id: str, labels: Sequence[str], app_dir: Path | None = None) -> list[str]:
    """Example images: `examples/` in the model folder (written by training) or next to the app
    (a Space), else `examples/<label>.png` fetched from the model's Hub repo. At most 10."""
    folders = [Path(model_id) / "examples"] if Path(model_id).is_dir() else []
    if app_dir is not None:
        folders.append(app_dir / "examples")
    for folder in folders:
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)
        if files:
            return [str(p) for p in files[:10]]
    if Path(model_id).is_dir():
        return []
    from transformers.utils import cached_file  # only for Hub ids

    found = []
    for label in labels[:10]:
        try:
            path = cached_file(
                model_id, f"examples/{label}.png",
                _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
            )
        except OSError:  # examples are optional: a missing or private file is not an error
            path = None
        if path:
            found.append(path)
    return found


def build_demo(
    classifier: Classifier,
    *,
    model_name: str = "",
    examples: Sequence[str] = (),
    top_k: int = 5,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch_images: int = DEFAULT_MAX_BATCH_IMAGES,
) -> gr.Blocks:
    """Build the page. Endpoints: `/classify` (one image) and `/classify_many` (several)."""
    num_labels = len(classifier.labels)
    # Where gradio saves uploads (and the examples): the only folder a request may read from.
    upload_folder = gr.utils.get_upload_folder()

    def read(payload: Any) -> Image.Image:
        """Decode one upload, showing its warnings as toasts; raises ImageInputError."""
        # The limit gradio enforces on /upload (--max_file_size), applied to inline data: URLs too.
        max_file_size = getattr(demo, "max_file_size", None) or DEFAULT_MAX_FILE_BYTES
        source = upload_source(payload, upload_folder=upload_folder, max_file_size=max_file_size)
        image, notes = load_image(source, num_channels=classifier.num_channels, max_pixels=max_pixels)
        for note in notes:
            gr.Warning(note)
        return image

    def classify(image: Any, top_k: float, method: str) -> tuple[Any, Any, str]:
        if image is None:  # the image was cleared
            return None, None, ""
        payload = image
        try:
            image = read(payload)
        except ImageInputError as error:
            raise gr.Error(str(error)) from None
        finally:
            # Gradio keeps each session's last input, this very dict, for as long as the session lives,
            # and every /call request is a session of its own: drop an inline image once it has been read,
            # or each such request would leave its whole data: URL in memory.
            if isinstance(payload, dict) and str(payload.get("url") or "").startswith("data:"):
                payload["url"] = None
        prediction = classifier.predict([image], top_k=int(top_k), method=method)[0]  # type: ignore[arg-type]
        overlay = overlay_attention(display_copy(image), prediction.heatmap)
        timing = (
            f"Inference time: **{prediction.seconds * 1000:.1f} ms** "
            f"(preprocessing + forward pass on {classifier.device})"
        )
        return prediction.probabilities, overlay, timing

    def classify_many(files: list[str] | None, method: str) -> tuple[list[tuple[Image.Image, str]], str]:
        if not files:
            raise gr.Error("Please add one or more images first.")
        if len(files) > max_batch_images:
            gr.Warning(f"Only the first {max_batch_images} of {len(files)} images were classified.")
        images, names = [], []
        for path in files[:max_batch_images]:
            try:  # a bad file is skipped with a warning; the others are still classified
                images.append(read(path))
                names.append(Path(path).name)
            except ImageInputError as error:
                gr.Warning(f"Skipped: {error}")
        if not images:
            raise gr.Error("None of the files could be read as an image.")
        predictions = classifier.predict(images, top_k=1, method=method)  # type: ignore[arg-type]
        gallery = []
        for image, name, prediction in zip(images, names, predictions, strict=True):
            label, probability = next(iter(prediction.probabilities.items()))
            overlay = overlay_attention(display_copy(image), prediction.heatmap)
            gallery.append((overlay, f"{name}: {label} ({probability:.0%})"))
        milliseconds = predictions[0].seconds * 1000
        summary = (
            f"{len(images)} image(s) in **{milliseconds:.1f} ms** "
            f"({milliseconds / len(images):.1f} ms per image on {classifier.device})"
        )
        return gallery, summary

    method_choices = [(title, key) for key, title in ATTENTION_METHODS.items()]
    with gr.Blocks(title=f"ViT demo: {model_name}" if model_name else "ViT demo", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# Where does the Vision Transformer look?\n"
            f"Model **{model_name or 'local'}**, {num_labels} classes: {', '.join(classifier.labels[:20])}"
            f"{', ...' if num_labels > 20 else ''}.\n\n"
            "Upload, paste or take a photo. The overlay shows which image patches the prediction drew "
            "on (red = most)."
        )
        with gr.Tab("One image"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        label="Image", sources=["upload", "webcam", "clipboard"], type="filepath", image_mode=None,
                        elem_id="input-image",
                    )
                    k_slider = gr.Slider(
                        1, max(num_labels, 2), value=min(top_k, num_labels), step=1, label="Top-k classes"
                    )
                    method = gr.Radio(method_choices, value="rollout", label="Attention map")
                    button = gr.Button("Classify", variant="primary")
                with gr.Column():
                    # elem_ids give tests and custom CSS stable handles (gradio's class names are hashed).
                    label = gr.Label(label="Prediction", elem_id="prediction")
                    overlay = gr.Image(
                        label="Attention map", type="pil", format="png", interactive=False, elem_id="attention-map"
                    )
                    timing = gr.Markdown(label="Inference time", elem_id="inference-time")
            if examples:
                gr.Examples(
                    examples=[[path] for path in examples], inputs=[image],
                    example_labels=[Path(path).stem for path in examples], label="Examples",
                )
        with gr.Tab("Several images"):
            with gr.Row():
                with gr.Column():
                    files = gr.File(label="Images", file_count="multiple", file_types=["image"])
                    batch_method = gr.Radio(method_choices, value="rollout", label="Attention map")
                    batch_button = gr.Button("Classify all", variant="primary")
                with gr.Column():
                    gallery = gr.Gallery(
                        label="Top-1 class and attention map", columns=3, format="png", elem_id="gallery"
                    )
                    batch_timing = gr.Markdown(label="Inference time")

        # preprocess=False: we decode the upload ourselves, so a broken file becomes a readable
        # message (gr.Error) rather than gradio's generic "Error". Gradio vets only payloads marked as
        # its FileData (with "meta"); with or without preprocessing (gradio 6.31) a plain {"path": ...}
        # reaches the image code, and gradio decodes data: URLs with no size limit. `read` checks both.
        gr.on(
            [image.change, button.click, method.change], classify, inputs=[image, k_slider, method],
            outputs=[label, overlay, timing], api_name="classify", preprocess=False,
        )
        batch_button.click(
            classify_many, inputs=[files, batch_method], outputs=[gallery, batch_timing], api_name="classify_many"
        )
    return demo


def resolve_model_id(model: str | None, app_dir: Path) -> str:
    """The model to serve: the command line, else $MODEL_ID, else `model_id.txt` beside the app."""
    if model:
        return model
    if os.environ.get("MODEL_ID", "").strip():
        return os.environ["MODEL_ID"].strip()
    id_file = app_dir / "model_id.txt"
    if id_file.is_file() and id_file.read_text().strip():
        return id_file.read_text().strip()
    raise SystemExit(
        "No model given. Pass a model folder or Hub id (vit-finetune demo MODEL), set the MODEL_ID "
        f"environment variable, or write the id into {id_file}."
    )


def main(argv: list[str] | None = None) -> int:
    """`vit-finetune demo MODEL [--share] [--server_name HOST] [--server_port PORT] ...`."""
    parser = argparse.ArgumentParser(prog="vit-finetune demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="model folder or Hub id (default: $MODEL_ID or model_id.txt)")
    parser.add_argument("--revision", help="Hub branch, tag or commit of the model")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    parser.add_argument("--server_name", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--server_port", type=int, help="port (default 7860 or the next free one)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--top_k", type=int, default=5, help="classes shown by default (default 5)")
    parser.add_argument("--max_file_size", default=DEFAULT_MAX_FILE_SIZE, help="largest upload (default 20mb)")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image in pixels")
    parser.add_argument("--concurrency_limit", type=int, default=2, help="requests computed at once (default 2)")
    parser.add_argument("--max_queue", type=int, default=32, help="requests waiting at most (default 32)")
    parser.add_argument(
        "--trust_remote_code", action="store_true",
        help="allow a model that is neither vit-finetune's nor a transformers model to run the Python code "
             "that comes with it (only for models you trust)",
    )
    args = parser.parse_args(argv)

    app_dir = Path(__file__).resolve().parent
    model_id = resolve_model_id(args.model, app_dir)
    try:
        classifier = load_model(
            model_id, device=args.device, revision=args.revision, trust_remote_code=args.trust_remote_code
        )
    except ModelLoadError as error:  # something the user can fix: say what, in one line, as argparse does
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    demo = build_demo(
        classifier, model_name=model_id, top_k=args.top_k, max_pixels=args.max_pixels,
        examples=find_examples(model_id, classifier.labels, app_dir),
    )
    # The queue runs at most `concurrency_limit` predictions at once and refuses requests
    # beyond `max_queue` waiting, so a burst of users cannot exhaust memory.
    demo.queue(default_concurrency_limit=args.concurrency_limit, max_size=args.max_queue)
    # server_name/port None: gradio reads GRADIO_SERVER_NAME/PORT (a Space sets 0.0.0.0:7860).
    demo.launch(
        share=args.share, server_name=args.server_name, server_port=args.server_port,
        max_file_size=args.max_file_size, show_error=True,
    )
    return 0


if __name__ == "__main__":  # a Space runs `python app.py`
    sys.exit(main(sys.argv[1:]))
