"""Gradio demo: classify images with a Vision Transformer and show where it looked.

Run it with `vit-finetune demo MODEL` (a model folder or a Hub id), `python demo/app.py MODEL`,
or as a Hugging Face Space: `vit-finetune push-space` uploads this file as the Space's app.py,
beside its siblings (see SPACE_FILES in __init__.py). That is why these files import only torch,
transformers, gradio, numpy, Pillow, the standard library and each other, never the rest of
`vit_finetune`.

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
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

if __package__:  # inside vit_finetune.demo
    from .attention import ATTENTION_METHODS, display_copy, overlay_attention
    from .classifier import Classifier, ModelLoadError, load_model
    from .uploads import (
        DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS, ImageInputError, load_image, upload_source,
    )
else:  # a Space: the demo's files lie flat beside this one
    from attention import ATTENTION_METHODS, display_copy, overlay_attention
    from classifier import Classifier, ModelLoadError, load_model
    from uploads import (
        DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS, ImageInputError, load_image, upload_source,
    )

DEFAULT_MAX_BATCH_IMAGES = 32  # the gallery tab classifies at most this many files per click
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


class _Endpoints:
    """What the page's two endpoints do: `/classify` (one image) and `/classify_many` (several)."""

    def __init__(self, classifier: Classifier, *, max_pixels: int, max_batch_images: int) -> None:
        self.classifier = classifier
        self.max_pixels = max_pixels
        self.max_batch_images = max_batch_images
        # Where gradio saves uploads (and the examples): the only folder a request may read from.
        self.upload_folder = gr.utils.get_upload_folder()
        self.blocks: gr.Blocks | None = None  # the page, whose max_file_size launch() sets

    def read(self, payload: Any) -> Image.Image:
        """Decode one upload, showing its warnings as toasts; raises ImageInputError."""
        # The limit gradio enforces on /upload (--max_file_size), applied to inline data: URLs too.
        max_file_size = getattr(self.blocks, "max_file_size", None) or DEFAULT_MAX_FILE_BYTES
        source = upload_source(payload, upload_folder=self.upload_folder, max_file_size=max_file_size)
        image, notes = load_image(source, num_channels=self.classifier.num_channels, max_pixels=self.max_pixels)
        for note in notes:
            gr.Warning(note)
        return image

    def classify(self, image: Any, top_k: float, method: str) -> tuple[Any, Any, str]:
        if image is None:  # the image was cleared
            return None, None, ""
        payload = image
        try:
            image = self.read(payload)
        except ImageInputError as error:
            raise gr.Error(str(error)) from None
        finally:
            # Gradio keeps each session's last input, this very dict, for as long as the session lives,
            # and every /call request is a session of its own: drop an inline image once it has been read,
            # or each such request would leave its whole data: URL in memory.
            if isinstance(payload, dict) and str(payload.get("url") or "").startswith("data:"):
                payload["url"] = None
        prediction = self.classifier.predict([image], top_k=int(top_k), method=method)[0]  # type: ignore[arg-type]
        overlay = overlay_attention(display_copy(image), prediction.heatmap)
        timing = (
            f"Inference time: **{prediction.seconds * 1000:.1f} ms** "
            f"(preprocessing + forward pass on {self.classifier.device})"
        )
        return prediction.probabilities, overlay, timing

    def classify_many(self, files: list[str] | None, method: str) -> tuple[list[tuple[Image.Image, str]], str]:
        if not files:
            raise gr.Error("Please add one or more images first.")
        if len(files) > self.max_batch_images:
            gr.Warning(f"Only the first {self.max_batch_images} of {len(files)} images were classified.")
        images, names = [], []
        for path in files[:self.max_batch_images]:
            try:  # a bad file is skipped with a warning; the others are still classified
                images.append(self.read(path))
                names.append(Path(path).name)
            except ImageInputError as error:
                gr.Warning(f"Skipped: {error}")
        if not images:
            raise gr.Error("None of the files could be read as an image.")
        predictions = self.classifier.predict(images, top_k=1, method=method)  # type: ignore[arg-type]
        gallery = []
        for image, name, prediction in zip(images, names, predictions, strict=True):
            label, probability = next(iter(prediction.probabilities.items()))
            overlay = overlay_attention(display_copy(image), prediction.heatmap)
            gallery.append((overlay, f"{name}: {label} ({probability:.0%})"))
        milliseconds = predictions[0].seconds * 1000
        summary = (
            f"{len(images)} image(s) in **{milliseconds:.1f} ms** "
            f"({milliseconds / len(images):.1f} ms per image on {self.classifier.device})"
        )
        return gallery, summary


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
    endpoints = _Endpoints(classifier, max_pixels=max_pixels, max_batch_images=max_batch_images)
    num_labels = len(classifier.labels)
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
            [image.change, button.click, method.change], endpoints.classify, inputs=[image, k_slider, method],
            outputs=[label, overlay, timing], api_name="classify", preprocess=False,
        )
        batch_button.click(
            endpoints.classify_many, inputs=[files, batch_method], outputs=[gallery, batch_timing],
            api_name="classify_many",
        )
    endpoints.blocks = demo
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
    parser.add_argument("--max_file_size", default=DEFAULT_MAX_FILE_SIZE,
                        help=f"largest upload (default {DEFAULT_MAX_FILE_SIZE})")
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
