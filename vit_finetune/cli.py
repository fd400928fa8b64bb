"""The `vit-finetune` command: one sub-command per job, each living in its own module.

Sub-commands are imported only when used, so `vit-finetune --help` stays fast and a missing
optional dependency (gradio for `demo`) only matters to the command that needs it.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, function, one-line help). Each function takes the remaining argv list.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("vit_finetune.train", "main", "fine-tune or train a ViT from a YAML config and/or flags"),
    "eval": ("vit_finetune.evaluate", "main", "evaluate a model folder on a dataset"),
    "predict": ("vit_finetune.predict", "main", "top-k labels for images, folders or globs"),
    "convert": ("vit_finetune.convert", "main", "import a transformers or timm ViT into a vit-finetune folder"),
    "export": ("vit_finetune.export", "main", "export a model: stock transformers folder, ONNX (int8), torch.export"),
    "push": ("vit_finetune.hub", "push_main", "upload a trained model folder to the Hugging Face Hub"),
    "push-space": ("vit_finetune.hub", "push_space_main", "upload the Gradio demo as a Hugging Face Space"),
    "demo": ("vit_finetune.demo", "main", "run the Gradio demo for a model folder or Hub id"),
}


def usage() -> str:
    lines = ["usage: vit-finetune COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `vit-finetune COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vit-finetune: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
