"""The Gradio demo: classify images with a Vision Transformer and show where it looked.

For newcomers, one file per concern:
- `app.py`: the page (`build_demo`) and `main()`, what `vit-finetune demo` and a Space run;
- `uploads.py`: what a request may read (gradio's upload folder, bounded `data:` URLs) and reading it;
- `classifier.py`: loading a model under the trust rules, and `Classifier.predict`;
- `attention.py`: attention rollout, the map per image and its overlay;
- `../data/decode.py`: the image decoder training uses, so the demo sees the pixels training saw.

`vit-finetune push-space` uploads these files flat into a Space, where our package is not installed: that is
why each imports only torch, transformers, gradio, numpy, Pillow, the standard library and its siblings (with a
fallback for the flat layout). This `__init__.py` is not uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent

# The Space's files: name in the Space -> source in this package. push-space uploads exactly these.
SPACE_FILES: dict[str, Path] = {
    "app.py": _HERE / "app.py",
    "attention.py": _HERE / "attention.py",
    "classifier.py": _HERE / "classifier.py",
    "uploads.py": _HERE / "uploads.py",
    "decode.py": _HERE.parent / "data" / "decode.py",
    "requirements.txt": _HERE / "requirements.txt",
}


def __getattr__(name: str) -> Any:
    # `vit-finetune demo` calls vit_finetune.demo.main; it is imported on first use so that reading SPACE_FILES
    # (push-space) does not need gradio.
    if name == "main":
        from .app import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SPACE_FILES", "main"]
