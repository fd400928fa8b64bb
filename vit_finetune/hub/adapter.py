"""What `vit-finetune push --adapter` uploads: a LoRA run's adapter alone (`adapter/` of a merged model folder, or
a folder written with --no_merge_lora), with a model card that says how to load it with PEFT.

The same rules as a model push (`upload_plan`): checkpoints, logs and hidden files stay local, local paths in the
JSON records and the card are rewritten, a card edited by hand goes up as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from .api import PushError
from .model_card import build_adapter_card, is_generated_card
from .redact import PathRedactor, redacted_json, redaction_note
from .upload_plan import LOCAL_ONLY, LeftOut, UploadFile, _card_metadata, _walk

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# The adapter's own files go up byte for byte (peft reads them); the other records are redacted.
_VERBATIM = {*ADAPTER_FILES, "preprocessor_config.json"}


def adapter_folder(output_dir: str | Path) -> Path:
    """The adapter folder of a training output: the folder itself if it holds an adapter, else its adapter/."""
    folder = Path(output_dir)
    for candidate in (folder, folder / "adapter"):
        if all((candidate / name).is_file() for name in ADAPTER_FILES):
            return candidate
    raise PushError(f"{folder} holds no LoRA adapter ({' and '.join(ADAPTER_FILES)}, in it or in adapter/): "
                    "--adapter pushes the output of `vit-finetune train --finetune lora`")


def plan_adapter_upload(output_dir: str | Path, repo_id: str, *, ignore: list[str] | None = None
                        ) -> tuple[list[UploadFile], list[LeftOut]]:
    """The files a push of the adapter of `output_dir` to `repo_id` uploads, and what it leaves out."""
    folder = adapter_folder(output_dir)
    record = json.loads((folder / "base_model_overrides.json").read_text()) if (
        folder / "base_model_overrides.json").is_file() else {}
    labels = ((record.get("overrides") or {}).get("id2label") or {}).values()
    rules = [(pattern, f"{reason}, stays local") for pattern, reason in LOCAL_ONLY]
    rules += [(pattern, f"--exclude {pattern}") for pattern in ignore or []]
    found, left_out = _walk(folder, rules)
    redactor = PathRedactor(folder, keep={str(label) for label in labels})
    files: list[UploadFile] = []
    readme: Path | None = None
    for relative, source in found:
        if relative == "README.md":
            readme = source
            continue
        redacted = None
        if relative.endswith(".json") and relative not in _VERBATIM:
            redacted = redacted_json(source, redactor)
        if redacted:
            content, count = redacted
            files.append(UploadFile(relative, len(content), content, redaction_note(count)))
        else:
            files.append(UploadFile(relative, source.stat().st_size, source))
    if readme is not None and not is_generated_card(readme):
        files.append(UploadFile("README.md", readme.stat().st_size, readme, "your edited model card, as is"))
    else:
        kept = _card_metadata(readme) if readme is not None else {}
        kept["tags"] = [tag for tag in kept.get("tags", []) if tag not in ("lora", "peft")]
        card = redactor.text(str(build_adapter_card(folder, repo_id=repo_id, **kept))).encode("utf-8")
        files.append(UploadFile("README.md", len(card), card, f"adapter card, generated for {repo_id}"))
    return sorted(files, key=lambda f: f.path_in_repo), sorted(left_out, key=lambda item: item.path)
