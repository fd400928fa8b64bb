"""What `vit-finetune push` uploads from a model folder, and what it leaves out (with the reason `--dry_run`
prints): checkpoints, logs, `eval_*/` output, trainer state, hidden files, and anything a symbolic link leads to
outside the folder. The files the model loads from go up byte for byte."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from .api import PushError
from .model_card import DEFAULT_TAGS, build_model_card, is_generated_card
from .redact import PathRedactor, redacted_json, redaction_note

# What a training run may leave in the folder that does not belong on the Hub, with the reason `--dry_run`
# prints: resumable checkpoints, evaluation output (docs/CONTRACTS.md: it stays local), TensorBoard logs,
# pickled trainer state (unsafe to load from strangers), caches and editor/OS droppings. A pattern matches a
# file name or any folder on its path, like a .gitignore line without a slash; one ending in "/" only folders.
LOCAL_ONLY = [
    ("checkpoint-*", "resumable state"), ("checkpoints", "resumable state"),
    ("eval_*/", "evaluation output"),
    ("runs", "training logs"), ("logs", "training logs"), ("wandb", "training logs"),
    ("optimizer.pt", "trainer state"), ("scheduler.pt", "trainer state"), ("rng_state*.pth", "trainer state"),
    ("training_args.bin", "pickled trainer state"),
    ("__pycache__", "Python cache"), ("*.pyc", "Python cache"),
    (".*", "hidden file"), ("*.tmp", "temporary file"), ("*.lock", "lock file"),
]
DEFAULT_IGNORE = [pattern for pattern, _ in LOCAL_ONLY]
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

@dataclass
class UploadFile:
    path_in_repo: str
    size: int
    source: Path | bytes  # a local file, or content made for the upload (the model card)
    note: str = ""



def check_model_folder(folder: Path) -> dict:
    """Refuse folders that are not loadable by people without vit-finetune; return the config."""
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder: pass the output folder of `vit-finetune train` or `convert`")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise PushError(f"{folder} has no readable config.json: pass the output folder of `vit-finetune train` "
                        "or `convert`") from None
    auto_map = config.get("auto_map") or {}
    needed = ("AutoConfig", "AutoModelForImageClassification")
    if any(key not in auto_map for key in needed):
        raise PushError(f"{folder}/config.json has no auto_map for {' and '.join(needed)}, so it would not load "
                        "without vit-finetune: re-save the model after `import vit_finetune` "
                        "(model.save_pretrained) or re-run `vit-finetune convert`")
    for key in needed:
        module = str(auto_map[key]).split("--")[-1].rsplit(".", 1)[0]
        if not (folder / f"{module}.py").is_file():
            raise PushError(f"{folder} lacks {module}.py, the model code its config.json points to: re-save the "
                            "model after `import vit_finetune` (model.save_pretrained) to write it")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise PushError(f"{folder} holds no weights ({' or '.join(WEIGHT_FILES[:3])}): train or convert a model "
                        "into it first")
    return config


def _card_metadata(readme: Path) -> dict:
    """license/datasets/base_model/tags of an existing card, so regenerating it keeps what training chose."""
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(readme, ignore_metadata_errors=True).data
    except Exception:  # an unreadable card is simply regenerated with the defaults
        return {}
    kept = {key: getattr(data, key, None) for key in ("license", "datasets", "base_model")}
    kept["tags"] = [tag for tag in (getattr(data, "tags", None) or []) if tag not in DEFAULT_TAGS]
    return {key: value for key, value in kept.items() if value}


@dataclass
class LeftOut:
    path: str  # relative to the folder; a folder ends with "/"
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def _local_only(name: str, is_dir: bool, rules: list[tuple[str, str]]) -> str | None:
    """Why the file or folder `name` stays local, or None if no rule says so."""
    for pattern, reason in rules:
        if pattern.endswith("/") and not is_dir:
            continue
        if fnmatch.fnmatch(name, pattern.rstrip("/")):
            return reason
    return None


def _link_problem(link: Path, root: Path, is_dir: bool) -> str | None:
    """Why the link is not uploaded, or None when it leads to a file inside the folder `root`."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        return "a broken link"
    if not target.is_relative_to(root):
        return "a link to outside the folder"
    if is_dir:  # even one inside: following it could loop or upload the same files twice
        return "a link to a folder"
    return None


def _walk(folder: Path, rules: list[tuple[str, str]]) -> tuple[list[tuple[str, Path]], list[LeftOut]]:
    """The files under `folder` to upload, as (path in repo, file to read), and what is left out, with why.

    Links are never followed out of the folder. The Hub has no links, so a link to a file inside the folder
    is uploaded as a copy of that file; a link to anything outside it, to a folder or to nothing is left out.
    Only the link's own name is matched against `rules`, so a `model.safetensors` that links to the best
    checkpoint's weights is uploaded.
    """
    root = folder.resolve()
    found: list[tuple[str, Path]] = []
    left_out: list[LeftOut] = []

    def visit(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            relative = entry.relative_to(folder).as_posix()
            is_dir = entry.is_dir()  # follows a link: a link to a folder is shown as a folder
            # The model card is always part of the upload (see plan_upload), whatever the patterns say.
            reason = None if relative == "README.md" else _local_only(entry.name, is_dir, rules)
            if reason is None and entry.is_symlink():
                reason = _link_problem(entry, root, is_dir)
            if reason is None and is_dir:
                visit(entry)
            elif reason is None and entry.is_file():
                found.append((relative, entry.resolve()))  # for a link: the file inside that it leads to
            else:
                left_out.append(LeftOut(relative + "/" if is_dir else relative,
                                        reason or "not a regular file"))  # or a socket, a pipe, a device

    visit(folder)
    return found, left_out



def _is_model_file(relative: str) -> bool:
    """Files the model is loaded from: uploaded byte for byte, since rewriting them could break loading."""
    return "/" not in relative and (relative in WEIGHT_FILES or relative.endswith("config.json"))


def plan_upload(output_dir: str | Path, repo_id: str, *, ignore: list[str] | None = None
                ) -> tuple[list[UploadFile], list[LeftOut]]:
    """The files a push of `output_dir` to `repo_id` uploads, and what it leaves out (with the reasons).

    README.md is (re)generated for `repo_id` when it is absent or still vit-finetune's own card; a card the
    user edited (marker line removed) is uploaded as it is. Absolute local paths in the JSON records and the
    generated card are rewritten in the upload (see `PathRedactor`); the local files stay as they are.
    """
    folder = Path(output_dir)
    config = check_model_folder(folder)
    rules = [(pattern, f"{reason}, stays local") for pattern, reason in LOCAL_ONLY]
    rules += [(pattern, f"--exclude {pattern}") for pattern in ignore or []]
    found, left_out = _walk(folder, rules)
    redactor = PathRedactor(folder, keep={str(label) for label in (config.get("id2label") or {}).values()})
    files: list[UploadFile] = []
    readme: Path | None = None
    for relative, source in found:
        if relative == "README.md":
            readme = source
            continue
        redacted = None
        if relative.endswith(".json") and not _is_model_file(relative):
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
        before = redactor.count
        card = redactor.text(str(build_model_card(folder, repo_id=repo_id, **kept))).encode("utf-8")
        count = redactor.count - before
        note = f"model card, generated for {repo_id}" + (f"; {redaction_note(count)}" if count else "")
        files.append(UploadFile("README.md", len(card), card, note))
    return sorted(files, key=lambda f: f.path_in_repo), sorted(left_out, key=lambda item: item.path)
