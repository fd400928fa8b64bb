"""`vit-finetune predict`: the top-k labels of images, folders or globs, printed or written as CSV.

    vit-finetune predict outputs/fashion_mnist shoe.png photos/ "more/**/*.jpg" --top_k 3
    vit-finetune predict outputs/fashion_mnist photos/ --output_csv predictions.csv

Images are decoded and resized exactly as the evaluation split was during training (`data.preprocess_image`:
EXIF orientation, any PIL mode to RGB or L, bilinear resize), then normalised with the model folder's image
processor statistics, so a prediction here matches what `vit-finetune eval` scored.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Prediction:
    path: str
    labels: list[str]
    scores: list[float]
    error: str | None = None


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given, folders searched recursively for images, glob patterns expanded (sorted, de-duplicated)."""
    paths: list[str] = []
    for item in inputs:
        if any(ch in item for ch in "*?["):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"{item}: the pattern matches no file")
            paths += matches
        elif os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise FileNotFoundError(f"{item}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return list(dict.fromkeys(paths))


def load_model_and_stats(model_name_or_path: str, device: str | torch.device) -> tuple[torch.nn.Module, list, list]:
    """A trained classifier and its normalisation. Raises `convert.ModelLoadError` (one line naming the model) for
    a missing folder, a folder that holds no model or no image processor, or a Hub id that cannot be fetched."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import vit_finetune  # noqa: F401  (registers our model with the Auto classes)

    from .convert import ModelLoadError, check_weights, resolve_model_folder

    folder = resolve_model_folder(model_name_or_path)
    check_weights(folder, model_name_or_path)
    if not (folder / "preprocessor_config.json").is_file():
        raise ModelLoadError(f"{model_name_or_path}: no preprocessor_config.json (the image processor that says how "
                             "to normalise images); is it a folder written by `vit-finetune train`?")
    try:
        model = AutoModelForImageClassification.from_pretrained(folder).to(device).eval()
    except (OSError, ValueError, KeyError) as error:  # e.g. a config.json of a model that is no image classifier
        raise ModelLoadError(f"{model_name_or_path}: cannot load an image classifier from it: {error}") from error
    processor = AutoImageProcessor.from_pretrained(folder)
    return model, list(processor.image_mean), list(processor.image_std)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    paths: Sequence[str],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    top_k: int = 5,
    batch_size: int = 32,
) -> Iterator[Prediction]:
    """Yields one Prediction per path, in order; unreadable images yield a Prediction with `error` set."""
    from .data import BadImageError, normalize, preprocess_image

    config = model.config
    device = next(model.parameters()).device
    k = min(top_k, config.num_labels)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        tensors, ok, failures = [], [], {}
        for path in chunk:
            try:
                tensors.append(preprocess_image(path, image_size=config.image_size, num_channels=config.num_channels))
                ok.append(path)
            except BadImageError as error:
                failures[path] = error.reason
        results: dict[str, Prediction] = {}
        if tensors:
            images = normalize(torch.stack(tensors).to(device), mean, std)
            probabilities = model(pixel_values=images).logits.float().softmax(dim=-1)
            scores, indices = probabilities.topk(k, dim=-1)
            for path, row_scores, row_indices in zip(ok, scores.tolist(), indices.tolist(), strict=True):
                results[path] = Prediction(path, [config.id2label[i] for i in row_indices], row_scores)
        for path in chunk:
            yield results.get(path) or Prediction(path, [], [], error=failures[path])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vit-finetune predict",
        description="Top-k labels for images, folders (searched recursively) or glob patterns.",
    )
    parser.add_argument("model", help="a model folder written by `vit-finetune train` (or a Hub id of one)")
    parser.add_argument("inputs", nargs="+", help="image files, folders, or quoted glob patterns ('imgs/**/*.jpg')")
    parser.add_argument("--top_k", type=int, default=5, help="how many labels per image (default 5)")
    parser.add_argument("--output_csv", help="write path,label_1,score_1,...,error rows here instead of stdout")
    parser.add_argument("--batch_size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top_k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")

    from .convert import ModelLoadError

    try:
        paths = expand_inputs(args.inputs)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, mean, std = load_model_and_stats(args.model, device)
    except (FileNotFoundError, ModelLoadError) as error:
        print(f"vit-finetune predict: error: {error}", file=sys.stderr)
        return 2
    k = min(args.top_k, model.config.num_labels)

    failed = 0
    handle = open(args.output_csv, "w", newline="") if args.output_csv else None
    try:
        writer = csv.writer(handle) if handle else None
        if writer:
            header = ["path"] + [f"{what}_{i}" for i in range(1, k + 1) for what in ("label", "score")] + ["error"]
            writer.writerow(header)
        for prediction in predict(model, paths, mean=mean, std=std, top_k=k, batch_size=args.batch_size):
            failed += prediction.error is not None
            if writer:
                pairs = zip(prediction.labels, prediction.scores, strict=True)
                cells = [cell for label, score in pairs for cell in (label, f"{score:.6f}")]
                cells += [""] * (2 * k - len(cells))
                writer.writerow([prediction.path, *cells, prediction.error or ""])
            elif prediction.error:
                print(f"{prediction.path}\tERROR: {prediction.error}")
            else:
                pairs = zip(prediction.labels, prediction.scores, strict=True)
                print(f"{prediction.path}\t" + ", ".join(f"{label} {score:.4f}" for label, score in pairs))
    finally:
        if handle:
            handle.close()
    if args.output_csv:
        print(f"wrote {len(paths)} predictions to {args.output_csv}", file=sys.stderr)
    if failed:
        print(f"vit-finetune predict: {failed} of {len(paths)} image(s) could not be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
