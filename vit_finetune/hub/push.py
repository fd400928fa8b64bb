"""`vit-finetune push`: a model folder to a Hub model repo, in one commit.

Create the repo if needed, (re)write the model card, upload the folder (see `upload_plan`). The folder carries
`configuration_vit.py` and `modeling_vit.py` with an `auto_map` in its config, so anyone loads it with
`trust_remote_code=True` without installing vit-finetune; `check_model_folder` makes sure before uploading.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .api import PushError, check_repo_id, create_repo, explain, resolve_token
from .upload_plan import LeftOut, UploadFile, plan_upload

DEFAULT_BRANCH = "main"


def content(file: UploadFile) -> str | bytes:
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
    plan=None,
) -> str:
    """Upload a model folder to the Hub model repo `repo_id` in one commit; return the commit URL.

    `plan(output_dir, repo_id, ignore=...)` says what goes up: `plan_upload` by default; `vit-finetune push --export`
    passes the export folder's own (`vit_finetune.export.push_plan.plan_export_upload`).

    Creates the repo (and the branch `revision`) if needed and regenerates the model card for `repo_id`
    unless it was edited by hand. Raises `PushError` with a one-line, actionable message on user errors.
    The endpoint, proxy and token settings are huggingface_hub's (HF_ENDPOINT, HF_TOKEN, `hf auth login`).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    check_repo_id(repo_id)
    files, _ = (plan or plan_upload)(output_dir, repo_id, ignore=ignore)
    token = resolve_token(token)
    api = HfApi(token=token)
    branch = revision or DEFAULT_BRANCH
    existed = False
    try:
        existed = create_repo(api, repo_id, repo_type="model", private=private)
        if branch != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=content(f)) for f in files]
        commit = api.create_commit(
            repo_id, operations, revision=branch,
            commit_message=commit_message or f"Upload {Path(output_dir).resolve().name} with vit-finetune",
        )
    except Exception as error:
        raise explain(error, repo_id=repo_id, repo_kind="model repo", endpoint=api.endpoint,
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


def print_plan(files: list[UploadFile], skipped: list[LeftOut], target: str) -> None:
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
    parser.add_argument("--adapter", action="store_true",
                        help="push the LoRA adapter alone (adapter/ of a --finetune lora run, or a --no_merge_lora "
                             "output folder), with a card saying how to load it with PEFT")
    parser.add_argument("--export", choices=["transformers"],
                        help="push the folder's stock transformers export instead (`vit-finetune export`: loads "
                             "without trust_remote_code or vit-finetune); refused, naming the option, if it has none")
    args = parser.parse_args(argv)
    folder, plan = args.output_dir, plan_upload
    try:
        check_repo_id(args.repo_id)
        if args.adapter:
            from .adapter import adapter_folder, plan_adapter_upload

            folder, plan = adapter_folder(args.output_dir), plan_adapter_upload
        if args.export:
            from ..export.push_plan import make_export, plan_export_upload

            # The export is made in a temporary folder, removed when `temporary` is (at return).
            temporary, folder = make_export(args.output_dir, args.export)
            plan = plan_export_upload
        if args.dry_run:
            files, skipped = plan(folder, args.repo_id, ignore=args.exclude)
            print_plan(files, skipped, f"model repo {args.repo_id} (branch {args.revision or DEFAULT_BRANCH}"
                        + (", private if new" if args.private else "") + ")")
            return 0
        url = push_to_hub(folder, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message, ignore=args.exclude, plan=plan)
    except PushError as error:
        print(f"vit-finetune push: error: {error}", file=sys.stderr)
        return 1
    print(f"Pushed {args.output_dir} to {url}")
    print(f'Load it with AutoModelForImageClassification.from_pretrained("{args.repo_id}"'
          + (")" if args.export else ", trust_remote_code=True)"))
    return 0
