"""`vit-finetune push-space`: the Gradio demo as a Hugging Face Space serving a model repo."""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from .api import PushError, check_repo_id, create_repo, explain, resolve_token
from .push import content, print_plan
from .upload_plan import UploadFile

_IMPORTS_OUR_PACKAGE = re.compile(r"^\s*(from|import)\s+vit_finetune\b", re.MULTILINE)


def default_app_file() -> Path:
    from ..demo import SPACE_FILES

    return SPACE_FILES["app.py"]


def demo_files(app_file: Path) -> list[UploadFile]:
    """The demo's files as they lie in the Space (`vit_finetune.demo.SPACE_FILES`), app.py from `app_file`."""
    from ..demo import SPACE_FILES

    sources = {**SPACE_FILES, "app.py": app_file}
    files = []
    for name, source in sources.items():
        try:
            data = source.read_bytes()
        except OSError:
            raise PushError(f"the demo file {source} is missing: reinstall vit-finetune"
                            + (" or pass another --app_file" if name == "app.py" else "")) from None
        if name.endswith(".py") and _IMPORTS_OUR_PACKAGE.search(data.decode("utf-8", errors="replace")):
            raise PushError(f"{source} imports vit_finetune, which a Space does not have: the demo's files must "
                            "import only torch, transformers, gradio, numpy, Pillow and each other")
        files.append(UploadFile(name, len(data), data, f"from {source}"))
    return files


def space_files(model_id: str, app_file: Path) -> list[UploadFile]:
    """The demo's files, model_id.txt and the Space's README.md with its metadata."""
    from huggingface_hub import SpaceCard, SpaceCardData

    demo = demo_files(app_file)
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
    return [
        *demo,
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
    token = resolve_token(token)
    api = HfApi(token=token)
    existed = False
    try:
        try:  # the Space would only show an error page if the model is not there
            model_private = bool(api.model_info(model_id).private)
        except RepositoryNotFoundError:
            raise PushError(f"the model repo {model_id} does not exist or your token cannot see it: push it first "
                            f"with `vit-finetune push OUTPUT_DIR --repo_id {model_id}`") from None
        variable = {"key": "MODEL_ID", "value": model_id, "description": "Hub id of the model the demo serves"}
        existed = create_repo(api, space_id, repo_type="space", private=private, space_sdk="gradio",
                               space_variables=[variable])
        if existed:  # variables passed to create_repo only apply to new Spaces
            api.add_space_variable(space_id, **variable)
        commit = api.create_commit(
            space_id, [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=content(f)) for f in files],
            repo_type="space", commit_message=commit_message or f"Demo of {model_id} (vit-finetune push-space)",
        )
    except PushError:
        raise
    except Exception as error:
        raise explain(error, repo_id=space_id, repo_kind="Space", endpoint=api.endpoint,
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
            print_plan(space_files(args.model_id, app_file), [],
                        f"Space {args.space_id} (MODEL_ID={args.model_id})")
            return 0
        url = push_space(args.model_id, args.space_id, app_file=args.app_file, private=args.private,
                         commit_message=args.commit_message)
    except PushError as error:
        print(f"vit-finetune push-space: error: {error}", file=sys.stderr)
        return 1
    print(f"Pushed the demo of {args.model_id} to {url}")
    return 0
