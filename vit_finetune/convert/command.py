"""`vit-finetune convert SOURCE OUTPUT_DIR`: a transformers or timm ViT written as a folder of ours."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .pretrained import load_pretrained_vit, source_image_processor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vit-finetune convert",
        description="Import a transformers or timm ViT (folder, Hub id, or timm/<name>) into a vit-finetune folder, "
                    "with its family's image processor. transformers model types: vit, dinov2, dinov2_with_registers, "
                    "dinov3_vit, siglip(2)_vision_model, siglip(2) (vision tower), clip_vision_model, clip (vision "
                    "tower), deit, vit_mae (encoder).",
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
