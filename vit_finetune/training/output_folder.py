"""The output folder of a training run: one owner at a time, a fresh or resumed start, and a model folder that is
always one run's, complete.

    output_dir/
        .vit-finetune.lock     the live run's owner (pid, host); a second run into the folder is refused
        checkpoints/           resumable state, plus this run's training_args.json and data_report.json
        .incomplete-model/     the model folder being written at the end of a run (never read back)
        config.json, model.safetensors, ...   the finished model (docs/CONTRACTS.md lists the files)

A run claims the folder (`claimed`: the lock, and no folder left behind by a run refused before any work), then
decides where it starts (`resume_point`: a checkpoint, or afresh only where nothing would be lost silently).

Why staged: a run that fails (or is killed) while exporting, or a failed `--overwrite_output_dir` run, must not
leave one run's files beside another's. The new model folder is written whole into `.incomplete-model/`, then
swapped in: `config.json` leaves first and arrives last, so at no moment does the folder look like a model made
of two runs' files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..arguments import ConfigError
from . import checkpointing

logger = logging.getLogger(__name__)

LOCK_FILE = ".vit-finetune.lock"
STAGING_DIR = ".incomplete-model"
_PREVIOUS_DIR = ".previous-model"
# What a finished model folder holds besides the names the new one brings (files of an older layout, sharded
# weights, evaluations of that model): all of it describes the old model, so it leaves with it.
_MODEL_FILES = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "configuration_vit.py", "modeling_vit.py",
    "preprocessor_config.json", "README.md", "training_args.json", "metrics.json", "training_curves.png",
    "confusion_matrix.png", "data_report.json", "examples",
    "adapter", "adapter_config.json", "adapter_model.safetensors", "base_model_overrides.json",  # LoRA
)
_OLD_MODEL_PATTERNS = ("model-*-of-*.safetensors", "eval_*")


class OutputFolderError(ValueError):
    """The output folder cannot be used for this run; the message says why and what to do."""


def holds_finished_model(output_dir: Path) -> bool:
    """A model folder, or the adapter folder of a LoRA run written with --no_merge_lora."""
    return (output_dir / "config.json").is_file() or (output_dir / "adapter_config.json").is_file()


# ------------------------------------------------------------------------------------------------ the lock
def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class OutputLock:
    """An exclusive claim on an output folder: a lock file naming the owner's pid and host.

    Created with O_EXCL, so two runs starting at once cannot both win. A lock whose process is gone (same host)
    is stale and taken over; a lock from another host cannot be checked, so it is refused with its path.
    """

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        # Written whole beside, then linked into place: link() fails if the lock exists, so two runs starting at
        # once cannot both win, and no run ever reads a lock file that is still being written.
        written = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        written.write_text(json.dumps(owner))
        try:
            for _ in range(2):  # a second try after removing a stale lock
                try:
                    os.link(written, self.path)
                except FileExistsError:
                    self._check_stale()
                    continue
                self.held = True
                return
        finally:
            written.unlink(missing_ok=True)
        raise OutputFolderError(f"{self.path.parent}: could not take the lock {self.path}")

    def _check_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            # Not a lock this code wrote (lock files are written whole before they appear): nobody owns it.
            logger.warning("removing an unreadable lock file %s", self.path)
            self.path.unlink(missing_ok=True)
            return
        if host == socket.gethostname() and not _process_alive(pid):
            logger.warning("removing a stale lock of process %d, which is gone: %s", pid, self.path)
            self.path.unlink(missing_ok=True)
            return
        where = "" if host == socket.gethostname() else f" on host {host} (if that run is dead, delete {self.path})"
        raise OutputFolderError(
            f"{self.path.parent} is in use by another training run (process {pid}{where}, started "
            f"{owner.get('started', '?')}): wait for it, or choose another --output_dir"
        )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


# ------------------------------------------------------------------------------------------ a run's claim
def check_output_dir(output_dir: Path, model_name_or_path: str | None) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file, not a folder")
    source = model_name_or_path
    if source and Path(source).is_dir() and output_dir.is_dir() and output_dir.samefile(source):
        raise ConfigError(f"output_dir {output_dir} is the model_name_or_path folder: training would overwrite "
                          "the weights it starts from; choose another output_dir")


@contextlib.contextmanager
def claimed(output_dir: Path, model_name_or_path: str | None) -> Iterator[None]:
    """The main process holds the folder's lock for the whole run. A run refused before any work (a ConfigError)
    removes the output folder if it made it, so a typo leaves nothing behind."""
    check_output_dir(output_dir, model_name_or_path)
    main_process = int(os.environ.get("RANK", "0")) == 0  # Accelerate's own rule, before it is set up
    lock, created = OutputLock(output_dir), False
    if main_process:
        created = not output_dir.exists()
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
        except OutputFolderError as error:
            raise ConfigError(str(error)) from None
    try:
        yield
    except ConfigError:
        if created:
            lock.release()
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


def resume_point(output_dir: Path, args: Any, main_process: bool) -> Path | None:
    """The checkpoint this run continues from, or None for a fresh start.

    A folder that already holds checkpoints or a finished model starts afresh only with --overwrite_output_dir
    (the old checkpoints go now; the old model stays until the new one is complete).
    """
    try:
        resume_from = checkpointing.resolve_resume_path(output_dir, args.resume_from_checkpoint)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    if args.resume_from_checkpoint == "latest" and resume_from is None:
        logger.info("resume_from_checkpoint=latest: %s has no checkpoint yet, starting from the beginning",
                    output_dir)
    existing = checkpointing.list_checkpoints(output_dir)
    if resume_from is None and (existing or holds_finished_model(output_dir)):
        if not args.overwrite_output_dir:
            what = f"checkpoints ({existing[-1].name})" if existing else "a finished model"
            raise ConfigError(
                f"{output_dir} already holds {what}: pass --resume_from_checkpoint latest to continue, or "
                "--overwrite_output_dir to start again (the old model stays until the new one is complete)"
            )
        if main_process and existing:
            shutil.rmtree(checkpointing.checkpoints_root(output_dir))
    return resume_from


def start_run_records(output_dir: Path, arguments: dict[str, Any], main_process: bool) -> Path:
    """The folder of this run's own records (beside its checkpoints until the model folder is published), with
    its training_args.json written; what interrupted saves left is removed."""
    run_dir = checkpointing.checkpoints_root(output_dir)
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpointing.remove_incomplete(output_dir)
        (run_dir / "training_args.json").write_text(json.dumps(arguments, indent=2, default=str))
    return run_dir


# ------------------------------------------------------------------------------------------ the swap
def staging_dir(output_dir: Path) -> Path:
    """An empty folder to write the new model folder into (what an earlier crash left there is removed)."""
    staging = output_dir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(output_dir / _PREVIOUS_DIR, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def publish_model_folder(staging: Path, output_dir: Path) -> None:
    """Replace the model in `output_dir` by the complete one in `staging`; checkpoints/ and user files stay."""
    _fsync_files(staging)
    new = sorted(p.name for p in staging.iterdir())
    old_names = set(new) | set(_MODEL_FILES)
    old = [p for p in output_dir.iterdir() if p.name in old_names
           or any(p.match(pattern) for pattern in _OLD_MODEL_PATTERNS)]
    previous = output_dir / _PREVIOUS_DIR
    previous.mkdir()
    # config.json (an adapter's: adapter_config.json) out first and in last: in between, the folder is not a
    # loadable model of either run.
    markers = ("config.json", "adapter_config.json")
    for path in sorted(old, key=lambda p: p.name not in markers):
        os.replace(path, previous / path.name)
    for name in sorted(new, key=lambda n: n in markers):
        os.replace(staging / name, output_dir / name)
    _fsync_dir(output_dir)
    if any(p.match("eval_*") for p in old):
        logger.info("removed the evaluations of the previous model (eval_*/) from %s", output_dir)
    shutil.rmtree(previous)
    staging.rmdir()
