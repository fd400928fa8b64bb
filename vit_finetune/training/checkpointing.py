"""Training checkpoints: written atomically, rotated, and found again for `--resume_from_checkpoint`.

Layout inside the output folder:

    checkpoints/
        checkpoint-200/            a complete checkpoint (Accelerate's save_state + trainer_state.json)
        checkpoint-400/
        .incomplete-checkpoint-600/   a save in progress (or one a crash interrupted): never resumed from

Why atomic: a job killed while writing a checkpoint must not leave a folder that looks complete, or the
next `--resume_from_checkpoint latest` would load half-written weights. Every process writes into a
hidden `.incomplete-*` folder; only when all of them are done does the main process write
`trainer_state.json` last, flush everything to disk and rename the folder (a rename is atomic on POSIX).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
_INCOMPLETE_PREFIX = ".incomplete-"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (by step)."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume_path(output_dir: str | Path, value: str | None) -> Path | None:
    """`--resume_from_checkpoint`: "latest" (None if the run has none yet), or a checkpoint folder."""
    if value is None:
        return None
    if value == "latest":
        return latest_checkpoint(output_dir)
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such folder")
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: no {STATE_FILE} in it, so it is not a complete checkpoint"
        )
    return path


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def read_legacy_scheduler_state(checkpoint: str | Path) -> dict[str, Any]:
    """The LR schedule of a checkpoint written before it moved into trainer_state.json.

    Those kept it as Accelerate's custom state, a pickle that Accelerate unpickles in full. A
    schedule's state is plain numbers, so weights_only=True reads a genuine one and refuses anything else.
    """
    import pickle

    import torch

    path = Path(checkpoint) / "custom_checkpoint_0.pkl"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, pickle.UnpicklingError, RuntimeError) as error:
        raise FileNotFoundError(f"{checkpoint}: no readable learning-rate schedule (neither in {STATE_FILE} nor "
                                f"a plain {path.name}): {str(error).splitlines()[0]}") from None


def load_state_without_pickles(accelerator: Accelerator, checkpoint: str | Path) -> None:
    """Accelerate's load_state (model: safetensors; optimizer, scaler, RNG: weights_only loads), with no object
    registered for checkpointing, so nothing is unpickled in full.

    A `custom_checkpoint_*.pkl` in the folder (an older checkpoint's schedule, read by
    `read_legacy_scheduler_state`, or a planted file) makes Accelerate raise a count mismatch after it has
    loaded everything else; that one error is expected here and the file is left unread.
    """
    custom = sorted(p.name for p in Path(checkpoint).glob("custom_checkpoint_*.pkl"))
    try:
        accelerator.load_state(str(checkpoint))
    except RuntimeError as error:
        if not (custom and str(error).startswith("Number of custom checkpoints")):
            raise
        logger.info("left unread in %s: %s (vit-finetune never unpickles checkpoint files)", checkpoint,
                    ", ".join(custom))


class DiskFullError(RuntimeError):
    """The disk filled up while writing; the message names the folder and what was kept."""


def raise_if_disk_full(error: BaseException, folder: Path, what: str, kept: str = "") -> None:
    """Re-raises a write failure caused by a full disk as DiskFullError with a message a user can act on.

    torch's zip writer reports ENOSPC as "RuntimeError: [enforce fail at inline_container.cc] ... file write
    failed" with no errno, so the free space decides when the error itself does not say.
    """
    text = str(error)
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text
    if not full and ("file write failed" in text or "StorageFull" in text):
        full = shutil.disk_usage(folder).free < 64 * 1024 * 1024
    if full:
        free = shutil.disk_usage(folder).free / 1e6
        raise DiskFullError(f"no space left on device while writing {what} into {folder} ({free:.1f} MB free). "
                            f"{kept}Free some space, then resume with --resume_from_checkpoint latest") from None


def remove_incomplete(output_dir: str | Path) -> None:
    """Deletes what interrupted saves left behind (call on the main process, before training)."""
    root = checkpoints_root(output_dir)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(_INCOMPLETE_PREFIX):
                logger.info("removing an interrupted checkpoint save: %s", path)
                shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flushes every file of `folder` and the folder entries to disk, so the rename publishes durable data."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for directory in [folder, folder.parent]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | Path,
    trainer_state: dict[str, Any],
    *,
    save_total_limit: int | None,
    keep_steps: set[int] | frozenset[int] = frozenset(),
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Saves model, optimizer, scheduler, scaler and RNG states of every process, atomically.

    Must be called on all processes. `write_extra(folder)` (the main process, before trainer_state.json) adds
    the files of other state, e.g. the weight EMA. Keeps the newest `save_total_limit` checkpoints plus those
    whose step is in `keep_steps` (the best one); returns the final folder.
    """
    step = int(trainer_state["global_step"])
    root = checkpoints_root(output_dir)
    final = root / f"checkpoint-{step}"
    incomplete = root / f"{_INCOMPLETE_PREFIX}checkpoint-{step}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(incomplete, ignore_errors=True)
            incomplete.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(incomplete))  # every process writes its own RNG state file
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if write_extra is not None:
                write_extra(incomplete)
            # The state file is written last: its presence marks a checkpoint as complete.
            (incomplete / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
            _fsync_tree(incomplete)
    except Exception as error:  # noqa: BLE001 - safetensors' write error is neither OSError nor RuntimeError
        shutil.rmtree(incomplete, ignore_errors=True)  # gives back the space the partial save took
        previous = latest_checkpoint(output_dir)
        kept = f"The previous checkpoint is kept: {previous}. " if previous else ""
        raise_if_disk_full(error, root, f"checkpoint-{step}", kept)
        raise

    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (e.g. a resumed run ending where it was killed)
            shutil.rmtree(final)
        os.replace(incomplete, final)
        _rotate(output_dir, save_total_limit, keep_steps)
    accelerator.wait_for_everyone()
    return final


def _rotate(output_dir: str | Path, save_total_limit: int | None, keep_steps: set[int] | frozenset[int]) -> None:
    if not save_total_limit or save_total_limit <= 0:
        return
    checkpoints = list_checkpoints(output_dir)
    newest = set(checkpoints[-save_total_limit:])
    for path in checkpoints:
        step = int(_NAME.match(path.name).group(1))
        if path not in newest and step not in keep_steps:
            logger.info("deleting old checkpoint %s (save_total_limit=%d)", path, save_total_limit)
            shutil.rmtree(path, ignore_errors=True)
