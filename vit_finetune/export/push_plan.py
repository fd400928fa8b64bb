"""`vit-finetune push MODEL --export transformers`: the stock export of a model folder, written to a temporary
folder, and the plan of its upload (the files `hub.push_to_hub` sends when given `plan=plan_export_upload`).

`hub.upload_plan.plan_upload` is for our own folders (it insists on the remote code and regenerates our card,
which tells users to load with remote code); an export folder holds only what `export_model` wrote, so
its plan is every file, the JSON records with local paths rewritten as a normal push does, and the export's own
card regenerated for the repo id.
"""

from __future__ import annotations

import fnmatch
import json
import tempfile
from pathlib import Path

from ..hub.api import PushError
from ..hub.redact import PathRedactor, redacted_json, redaction_note
from ..hub.upload_plan import LeftOut, UploadFile
from .card import build_card
from .command import RECORD, export_model
from .stock import ExportError

# Read by the loaders, uploaded byte for byte.
MODEL_FILES = ("config.json", "preprocessor_config.json")


def make_export(output_dir: str | Path, format: str) -> tuple[tempfile.TemporaryDirectory, Path]:
    """(the temporary folder, which is removed when this object is, the export inside it). PushError when the
    model cannot be exported (an option with no stock counterpart, named)."""
    from ..convert import ModelLoadError

    temporary = tempfile.TemporaryDirectory(prefix="vit-finetune-export-")
    folder = Path(temporary.name) / (Path(output_dir).resolve().name or "model")
    try:
        export_model(str(output_dir), folder, format)
    except (ExportError, ModelLoadError) as error:
        temporary.cleanup()
        raise PushError(f"--export {format}: {error}") from error
    return temporary, folder


def plan_export_upload(output_dir: str | Path, repo_id: str, *, ignore: list[str] | None = None
                       ) -> tuple[list[UploadFile], list[LeftOut]]:
    """The files of an export folder to upload to `repo_id`, and those `ignore` (--exclude globs) leaves out."""
    folder = Path(output_dir)
    record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    redactor = PathRedactor(folder, keep=set(record["id2label"].values()))
    files: list[UploadFile] = []
    left_out: list[LeftOut] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        name = path.name
        excluded = next((pattern for pattern in ignore or [] if fnmatch.fnmatch(name, pattern)), None)
        if excluded and name != "README.md":
            left_out.append(LeftOut(name, f"--exclude {excluded}"))
            continue
        if name == "README.md":
            card = redactor.text(build_card(record, metrics, repo_id)).encode("utf-8")
            files.append(UploadFile(name, len(card), card, f"export model card, generated for {repo_id}"))
            continue
        redacted = redacted_json(path, redactor) if name.endswith(".json") and name not in MODEL_FILES else None
        if redacted:
            content, count = redacted
            files.append(UploadFile(name, len(content), content, redaction_note(count)))
        else:
            files.append(UploadFile(name, path.stat().st_size, path))
    return files, left_out
