"""Publishing: `vit-finetune push` (a model folder to a Hub model repo) and `vit-finetune push-space` (the
Gradio demo to a Hub Space).

A push is one commit made with `huggingface_hub`: create the repo if needed, (re)write the model card, upload
the folder. The folder carries `configuration_vit.py` and `modeling_vit.py` with an `auto_map` in its
config, so anyone loads it with `trust_remote_code=True` without installing vit-finetune; we check that
before uploading anything.

What stays local (`--dry_run` lists it, with the reason): checkpoints, logs, `eval_*/` output, trainer state,
and anything a symbolic link leads to outside the folder. The JSON records (training_args.json, metrics.json,
data_report.json) and the generated card go up with their absolute local paths rewritten (relative to the
folder, or `<local>/name`); the files the model loads from go up byte for byte.

Every failure a user can cause or fix (no token, no network, a rejected token, a repo that belongs to someone
else, a folder that is not a model) ends as one line on stderr saying what to do, never a bare traceback.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath, PureWindowsPath

from .model_card import GENERATED_MARKER, build_model_card, is_generated_card

DEFAULT_BRANCH = "main"
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
# What a Space needs besides gradio (the Space image installs gradio itself, at `sdk_version`).
SPACE_REQUIREMENTS = ["torch>=2.13", "transformers>=5.24,<6", "numpy>=2.0", "pillow>=12.0"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_IMPORTS_OUR_PACKAGE = re.compile(r"^\s*(from|import)\s+vit_finetune\b", re.MULTILINE)


class PushError(Exception):
    """A problem the user can fix; its message is one line that says how."""


@dataclass
class UploadFile:
    path_in_repo: str
    size: int
    source: Path | bytes  # a local file, or content made for the upload (the model card)
    note: str = ""


# --------------------------------------------------------------------------------------- checks
def check_repo_id(repo_id: str, flag: str = "--repo_id") -> str:
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise PushError(f"{flag} must look like 'user-or-org/name' (letters, digits, '-', '_', '.'), "
                        f"got {repo_id!r}")
    return repo_id


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

    from .model_card import DEFAULT_TAGS

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


# --------------------------------------------------------------------------------------- local paths
LOCAL = "<local>"
# An absolute path inside a longer string ("image folders train=/home/me/data/train, validation=..."). Not
# matched: URLs (in "https://host/a" each slash follows ':', '/' or a host name), relative paths ("a/b",
# "./a", "~/a") and what was already redacted ("<local>/a").
_PATH_IN_TEXT = re.compile(r"""
      file://(?:localhost)?(?P<file>/[^\s"'<>]*)             # file:///home/me/x
    | (?<![\w.~/\\%<>-])(?P<posix>/[^\s/"'<>][^\s"'<>]*)     # /home/me/x
    | (?<![\w\\/])(?P<windows>[A-Za-z]:[\\/][^\s"'<>]*)      # C:\Users\me\x
    | (?<![\w\\])(?P<unc>\\\\[^\s\\/"'<>]+[\\/][^\s"'<>]*)    # \\server\share\x
""", re.VERBOSE)
_TRAILING_PUNCTUATION = ".,;:!?)]}"  # ends the sentence around a path, not the path
_WINDOWS_ABSOLUTE = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")  # C:\..., C:/..., \\server\...: either separator
_HOME_PARENTS = ("home", "users")  # /home/<user>, /Users/<user>, C:\Users\<user>


class _PathRedactor:
    """Rewrites the absolute local paths in strings and JSON values for upload, counting them.

    A path inside the model folder becomes relative to it ("logs", "." for the folder itself); any other
    becomes `<local>/` and its last part ("<local>/train"), or just `<local>` when that part would be a user
    name (a home folder). Hub ids, URLs and relative paths are left alone.
    """

    def __init__(self, folder: Path, keep: set[str]):
        self.roots = {os.path.normpath(folder.absolute()), os.path.normpath(folder.resolve())}
        try:
            self.homes = {os.path.normpath(Path.home()), os.path.normpath(Path.home().resolve())}
        except (RuntimeError, KeyError, OSError):  # no home folder: nothing more to hide
            self.homes = set()
        self.keep = keep  # public strings that look like paths (class names such as "/m/0abc" from config.json)
        self.count = 0

    def text(self, value: str) -> str:
        if value in self.keep:
            return value
        if "\n" not in value and _is_absolute(value) and _exists(value):  # a whole path, spaces and all
            self.count += 1
            return self._render(value)
        return _PATH_IN_TEXT.sub(self._replace, value)

    def json(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {self.text(key): self.json(item) for key, item in value.items()}
        return value

    def _replace(self, match: re.Match) -> str:
        path = match.group(match.lastgroup)
        stripped = path.rstrip(_TRAILING_PUNCTUATION)
        if len(stripped) < 2 or stripped in self.keep:
            return match.group(0)
        self.count += 1
        return self._render(stripped) + path[len(stripped):]

    def _render(self, path: str) -> str:
        normal = os.path.normpath(path)
        for root in self.roots:
            if normal == root or normal.startswith(root.rstrip(os.sep) + os.sep):
                return Path(os.path.relpath(normal, root)).as_posix()
        pure = PureWindowsPath(path) if _WINDOWS_ABSOLUTE.match(path) else PurePosixPath(path)
        parts = pure.parts[1:]  # without the root
        if not parts or normal in self.homes or (len(parts) >= 2 and parts[-2].lower() in _HOME_PARENTS):
            return LOCAL
        return f"{LOCAL}/{parts[-1]}"


def _is_absolute(value: str) -> bool:
    return os.path.isabs(value) or bool(_WINDOWS_ABSOLUTE.match(value))


def _exists(value: str) -> bool:
    try:
        return os.path.exists(value)
    except (ValueError, OSError):  # a NUL byte, a name too long: not a path of this machine
        return False


def _is_model_file(relative: str) -> bool:
    """Files the model is loaded from: uploaded byte for byte, since rewriting them could break loading."""
    return "/" not in relative and (relative in WEIGHT_FILES or relative.endswith("config.json"))


def _redacted_json(file: Path, redactor: _PathRedactor) -> tuple[bytes, int] | None:
    """The upload content of a JSON record (training_args.json, metrics.json, data_report.json, ...) with its
    local paths rewritten, and how many; None when there is nothing to rewrite (the file goes as it is)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    before = redactor.count
    try:
        redacted = json.dumps(redactor.json(json.loads(text)), indent=2, ensure_ascii=False)
    except ValueError:  # not valid JSON: rewrite the paths in its text
        redacted = redactor.text(text)
    count = redactor.count - before
    return (redacted.encode("utf-8"), count) if count else None


def _redaction_note(count: int) -> str:
    return f"{count} local path{'' if count == 1 else 's'} redacted"


def plan_upload(output_dir: str | Path, repo_id: str, *, ignore: list[str] | None = None
                ) -> tuple[list[UploadFile], list[LeftOut]]:
    """The files a push of `output_dir` to `repo_id` uploads, and what it leaves out (with the reasons).

    README.md is (re)generated for `repo_id` when it is absent or still vit-finetune's own card; a card the
    user edited (marker line removed) is uploaded as it is. Absolute local paths in the JSON records and the
    generated card are rewritten in the upload (see `_PathRedactor`); the local files stay as they are.
    """
    folder = Path(output_dir)
    config = check_model_folder(folder)
    rules = [(pattern, f"{reason}, stays local") for pattern, reason in LOCAL_ONLY]
    rules += [(pattern, f"--exclude {pattern}") for pattern in ignore or []]
    found, left_out = _walk(folder, rules)
    redactor = _PathRedactor(folder, keep={str(label) for label in (config.get("id2label") or {}).values()})
    files: list[UploadFile] = []
    readme: Path | None = None
    for relative, source in found:
        if relative == "README.md":
            readme = source
            continue
        redacted = None
        if relative.endswith(".json") and not _is_model_file(relative):
            redacted = _redacted_json(source, redactor)
        if redacted:
            content, count = redacted
            files.append(UploadFile(relative, len(content), content, _redaction_note(count)))
        else:
            files.append(UploadFile(relative, source.stat().st_size, source))
    if readme is not None and not is_generated_card(readme):
        files.append(UploadFile("README.md", readme.stat().st_size, readme, "your edited model card, as is"))
    else:
        kept = _card_metadata(readme) if readme is not None else {}
        before = redactor.count
        card = redactor.text(str(build_model_card(folder, repo_id=repo_id, **kept))).encode("utf-8")
        count = redactor.count - before
        note = f"model card, generated for {repo_id}" + (f"; {_redaction_note(count)}" if count else "")
        files.append(UploadFile("README.md", len(card), card, note))
    return sorted(files, key=lambda f: f.path_in_repo), sorted(left_out, key=lambda item: item.path)


# --------------------------------------------------------------------------------------- errors
def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token found: run `hf auth login` or set HF_TOKEN to a token with write "
                        "access (https://huggingface.co/settings/tokens)")
    return token


def _explain(error: Exception, *, repo_id: str, repo_kind: str, endpoint: str, existed: bool) -> PushError:
    """Turn a huggingface_hub / network exception into one actionable line."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return PushError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it and retry")
    if isinstance(error, (httpx2.TransportError, ConnectionError, TimeoutError)):
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return PushError(f"cannot reach the Hugging Face Hub at {endpoint} ({reason}): check your internet "
                         "connection, proxy or HF_ENDPOINT, then retry")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        server = (error.server_message or "").strip().splitlines()[0] if error.server_message else ""
        if status == 401:
            return PushError("the Hub rejected your token (401: invalid or expired): run `hf auth login` or set "
                             "HF_TOKEN to a valid token with write access")
        if status == 403 and existed:
            return PushError(f"the {repo_kind} {repo_id} already exists and your token cannot write to it "
                             "(403): pick another name, or ask its owner to give you write access")
        if status == 403:
            namespace = repo_id.split("/")[0]
            return PushError(f"your token may not create or write {repo_kind}s under '{namespace}' (403"
                             + (f": {server}" if server else "") + "): use your own user name or an "
                             "organisation you can write to, and a token with write access")
        if status == 402:
            return PushError(f"the Hub refused to create the {repo_kind} {repo_id} on this account (402 payment "
                             "required): create it in the web UI or pick hardware/an account that allows it, "
                             "then retry")
        if status == 409:
            return PushError(f"the name {repo_id} conflicts with an existing {repo_kind} (409"
                             + (f": {server}" if server else "") + "): pick another name")
        if status == 404:
            return PushError(f"the Hub cannot find the {repo_kind} {repo_id} (404): check the name, and that your "
                             "token can see it")
        detail = server or str(error).strip().splitlines()[0]
        return PushError(f"the Hub answered {status} while pushing {repo_id}: {detail}")
    if isinstance(error, ValueError):  # e.g. huggingface_hub's own validation of ids and README metadata
        return PushError(f"{repo_id}: {str(error).strip().splitlines()[0]}")
    raise error  # a bug, not a user problem: let the traceback through


def _create_repo(api, repo_id: str, *, repo_type: str, private: bool, **kwargs) -> bool:
    """Create the repo; return True if it already existed (then `private` is left as the owner set it)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=False, **kwargs)
        return False
    except HfHubHTTPError as error:
        if error.response is None or error.response.status_code != 409:
            raise
    # 409: the name is taken. Usually by our own repo, from an earlier push: then it is just an update. If it
    # is someone else's, the commit below gets a 403, which `_explain` reports as a name conflict.
    if private:
        info = api.repo_info(repo_id, repo_type=repo_type)
        if not getattr(info, "private", False):
            print(f"note: {repo_id} already exists and is public; --private only applies to new repos "
                  "(change its visibility in the repo settings)", file=sys.stderr)
    return True


# --------------------------------------------------------------------------------------- push
def _content(file: UploadFile) -> str | bytes:
    return file.source if isinstance(file.source, bytes) else str(file.source)


def push_to_hub(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    ignore: list[str] | None = None,
) -> str:
    """Upload a model folder to the Hub model repo `repo_id` in one commit; return the commit URL.

    Creates the repo (and the branch `revision`) if needed and regenerates the model card for `repo_id`
    unless it was edited by hand. Raises `PushError` with a one-line, actionable message on user errors.
    The endpoint, proxy and token settings are huggingface_hub's (HF_ENDPOINT, HF_TOKEN, `hf auth login`).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    check_repo_id(repo_id)
    files, _ = plan_upload(output_dir, repo_id, ignore=ignore)
    token = _token(token)
    api = HfApi(token=token)
    branch = revision or DEFAULT_BRANCH
    existed = False
    try:
        existed = _create_repo(api, repo_id, repo_type="model", private=private)
        if branch != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=_content(f)) for f in files]
        commit = api.create_commit(
            repo_id, operations, revision=branch,
            commit_message=commit_message or f"Upload {Path(output_dir).resolve().name} with vit-finetune",
        )
    except Exception as error:
        raise _explain(error, repo_id=repo_id, repo_kind="model repo", endpoint=api.endpoint,
                       existed=existed) from error
    # Keep the local card identical to the published one (the repo id is now in its snippets).
    card = next(f for f in files if f.path_in_repo == "README.md")
    local_card = Path(output_dir) / "README.md"
    if isinstance(card.source, bytes) and not local_card.is_symlink():  # never write through a link
        try:
            local_card.write_bytes(card.source)
        except OSError as error:  # a read-only folder: the push itself succeeded
            print(f"note: could not update {output_dir}/README.md ({error.strerror})", file=sys.stderr)
    return str(commit.commit_url)


def _human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _print_plan(files: list[UploadFile], skipped: list[LeftOut], target: str) -> None:
    total = sum(f.size for f in files)
    print(f"Dry run: would upload {len(files)} files ({_human_size(total)}) to {target} in one commit:")
    width = max(len(f.path_in_repo) for f in files)
    for f in files:
        print(f"  {f.path_in_repo:<{width}}  {_human_size(f.size):>9}" + (f"  ({f.note})" if f.note else ""))
    if skipped:
        print("Left out: " + ", ".join(item.path for item in skipped))
        for item in skipped:
            print(f"  {item}")


def push_main(argv: list[str]) -> int:
    """`vit-finetune push OUTPUT_DIR --repo_id user/name [--private] [--revision B] [--commit_message M]`."""
    parser = argparse.ArgumentParser(
        prog="vit-finetune push",
        description="Upload a trained model folder to the Hugging Face Hub in one commit, with its model card.",
        epilog="The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub.")
    parser.add_argument("output_dir", help="the model folder (output of `vit-finetune train` or `convert`)")
    parser.add_argument("--repo_id", required=True, help="target model repo, 'user-or-org/name'")
    parser.add_argument("--private", action="store_true", help="create the repo private (new repos only)")
    parser.add_argument("--revision", help=f"branch to push to, created if needed (default {DEFAULT_BRANCH})")
    parser.add_argument("--commit_message", help="commit message (default: 'Upload <folder> with vit-finetune')")
    parser.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="also leave out files or folders matching this glob (repeatable)")
    parser.add_argument("--dry_run", action="store_true", help="print what would be uploaded, upload nothing")
    args = parser.parse_args(argv)
    try:
        check_repo_id(args.repo_id)
        if args.dry_run:
            files, skipped = plan_upload(args.output_dir, args.repo_id, ignore=args.exclude)
            _print_plan(files, skipped, f"model repo {args.repo_id} (branch {args.revision or DEFAULT_BRANCH}"
                        + (", private if new" if args.private else "") + ")")
            return 0
        url = push_to_hub(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message, ignore=args.exclude)
    except PushError as error:
        print(f"vit-finetune push: error: {error}", file=sys.stderr)
        return 1
    print(f"Pushed {args.output_dir} to {url}")
    print(f'Load it with AutoModelForImageClassification.from_pretrained("{args.repo_id}", '
          "trust_remote_code=True)")
    return 0


# --------------------------------------------------------------------------------------- push-space
def default_app_file() -> Path:
    return Path(__file__).resolve().with_name("demo.py")


def space_files(model_id: str, app_file: Path) -> list[UploadFile]:
    """app.py (the demo), requirements.txt, model_id.txt and the Space's README.md with its metadata."""
    from huggingface_hub import SpaceCard, SpaceCardData

    try:
        app = app_file.read_bytes()
    except OSError:
        raise PushError(f"the demo app {app_file} is missing: reinstall vit-finetune or pass --app_file") from None
    if _IMPORTS_OUR_PACKAGE.search(app.decode("utf-8", errors="replace")):
        raise PushError(f"{app_file} imports vit_finetune, which a Space does not have: the demo app must be "
                        "self-contained (torch, transformers, gradio, numpy, Pillow)")
    try:  # run the Space on the gradio we test with; without gradio here, the Hub picks its latest
        gradio_version: str | None = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        gradio_version = None
    data = SpaceCardData(
        title=f"{model_id.split('/')[-1]} demo"[:60], sdk="gradio", sdk_version=gradio_version, app_file="app.py",
        license="apache-2.0", models=[model_id], tags=["vit-finetune", "image-classification"],
        emoji="🖼️", colorFrom="blue", colorTo="indigo", pinned=False,
        short_description=f"Classify images with {model_id}"[:60],
    )
    readme = (f"---\n{data.to_yaml()}\n---\n\n# {model_id.split('/')[-1]} demo\n\n"
              f"Upload an image and the Vision Transformer [{model_id}](https://huggingface.co/{model_id}) "
              "gives its top classes and shows where it looked (attention map).\n\n"
              "The model is set by the `MODEL_ID` variable of this Space (Settings → Variables) and, as a "
              "fallback, by `model_id.txt`; change it there to serve another model. If the model repo is "
              "private, add an `HF_TOKEN` secret that can read it.\n\n"
              "Made with vit-finetune (`vit-finetune push-space`).\n")
    SpaceCard(readme)  # parses the metadata back: a malformed header fails here, not on the Hub
    requirements = "\n".join(SPACE_REQUIREMENTS) + "\n"
    return [
        UploadFile("app.py", len(app), app, f"from {app_file}"),
        UploadFile("requirements.txt", len(requirements), requirements.encode()),
        UploadFile("model_id.txt", len(model_id) + 1, (model_id + "\n").encode(), "read by app.py"),
        UploadFile("README.md", len(readme.encode()), readme.encode(), "Space metadata: sdk gradio, app.py"),
    ]


def push_space(
    model_id: str,
    space_id: str,
    *,
    app_file: str | Path | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Create or update the Gradio Space `space_id` serving the model repo `model_id`; return the commit URL.

    The Space gets the demo as app.py, a requirements.txt, README metadata (`sdk: gradio`, `app_file: app.py`,
    `models: [model_id]`), `model_id.txt` and a `MODEL_ID` Space variable, both naming the model.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    check_repo_id(model_id, "--model_id")
    check_repo_id(space_id, "--space_id")
    files = space_files(model_id, Path(app_file) if app_file else default_app_file())
    token = _token(token)
    api = HfApi(token=token)
    existed = False
    try:
        try:  # the Space would only show an error page if the model is not there
            model_private = bool(api.model_info(model_id).private)
        except RepositoryNotFoundError:
            raise PushError(f"the model repo {model_id} does not exist or your token cannot see it: push it first "
                            f"with `vit-finetune push OUTPUT_DIR --repo_id {model_id}`") from None
        variable = {"key": "MODEL_ID", "value": model_id, "description": "Hub id of the model the demo serves"}
        existed = _create_repo(api, space_id, repo_type="space", private=private, space_sdk="gradio",
                               space_variables=[variable])
        if existed:  # variables passed to create_repo only apply to new Spaces
            api.add_space_variable(space_id, **variable)
        commit = api.create_commit(
            space_id, [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=_content(f)) for f in files],
            repo_type="space", commit_message=commit_message or f"Demo of {model_id} (vit-finetune push-space)",
        )
    except PushError:
        raise
    except Exception as error:
        raise _explain(error, repo_id=space_id, repo_kind="Space", endpoint=api.endpoint,
                       existed=existed) from error
    if model_private:
        print(f"note: {model_id} is private: add an HF_TOKEN secret that can read it in the Space settings",
              file=sys.stderr)
    return str(commit.commit_url)


def push_space_main(argv: list[str]) -> int:
    """`vit-finetune push-space --model_id user/name --space_id user/name-demo [--private] [--app_file F]`."""
    parser = argparse.ArgumentParser(
        prog="vit-finetune push-space",
        description="Upload the Gradio demo as a Hugging Face Space that serves a model repo.",
        epilog="The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub.")
    parser.add_argument("--model_id", required=True, help="the model repo the demo serves, 'user/name'")
    parser.add_argument("--space_id", required=True, help="the Space to create or update, 'user/name-demo'")
    parser.add_argument("--private", action="store_true", help="create the Space private (new Spaces only)")
    parser.add_argument("--app_file", help=f"the Gradio app to upload as app.py (default {default_app_file()})")
    parser.add_argument("--commit_message", help="commit message")
    parser.add_argument("--dry_run", action="store_true", help="print what would be uploaded, upload nothing")
    args = parser.parse_args(argv)
    try:
        if args.dry_run:
            check_repo_id(args.model_id, "--model_id")
            check_repo_id(args.space_id, "--space_id")
            app_file = Path(args.app_file) if args.app_file else default_app_file()
            _print_plan(space_files(args.model_id, app_file), [],
                        f"Space {args.space_id} (MODEL_ID={args.model_id})")
            return 0
        url = push_space(args.model_id, args.space_id, app_file=args.app_file, private=args.private,
                         commit_message=args.commit_message)
    except PushError as error:
        print(f"vit-finetune push-space: error: {error}", file=sys.stderr)
        return 1
    print(f"Pushed the demo of {args.model_id} to {url}")
    return 0


__all__ = ["PushError", "UploadFile", "LeftOut", "check_model_folder", "plan_upload", "push_to_hub", "push_main",
           "space_files", "push_space", "push_space_main", "GENERATED_MARKER"]
