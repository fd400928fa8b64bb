"""`data_report.json`: what a data pass read, kept and skipped (and why), written beside the model.

Both passes, `prepare_datasets` (training) and `prepare_image_folder` (`vit-finetune eval`), build their report
with `build_report` and write it with `publish_report`, so the file has one structure and one writer.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Any

logger = logging.getLogger(__name__)

REPORT_FILENAME = "data_report.json"


def build_report(
    *,
    source: str,
    image_column: str,
    label_column: str,
    image_size: int,
    num_channels: int,
    classes: list[str],
    splits: dict[str, dict[str, Any]],
    skipped: list[dict[str, str]],
    validation: str | None = None,
) -> dict[str, Any]:
    """The report. `splits`: per split {rows, kept, skipped, class_counts}; `skipped`: one {split, path, reason}
    per unreadable image; `validation`: where the validation split came from (training only)."""
    report: dict[str, Any] = {
        "source": source,
        "image_column": image_column,  # of the training split
        "label_column": label_column,
        "image_size": image_size,
        "num_channels": num_channels,
        "classes": classes,
    }
    if validation is not None:
        report["validation"] = validation
    report.update({"splits": splits, "num_skipped": len(skipped), "skipped": skipped})
    return report


def publish_report(report: dict[str, Any], output_dir: str) -> str:
    """Write `output_dir/data_report.json`, log a summary (counts, skipped files) and return the file's path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, REPORT_FILENAME)
    # Write-then-rename: every process of a multi-GPU run may write the same report, never a half-written one.
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
    os.replace(temporary, path)
    _log_summary(report, path)
    return path


def _log_summary(report: dict[str, Any], report_path: str) -> None:
    for split, info in report["splits"].items():
        logger.info("%s: %d images kept of %d", split, info["kept"], info["rows"])
    skipped = report["skipped"]
    if skipped:
        reasons = Counter(item["reason"].split(":")[0] for item in skipped)
        examples = "; ".join(f"{item['path']} ({item['reason']})" for item in skipped[:3])
        logger.warning(
            "Skipped %d unreadable image(s) (%s), e.g. %s. Full list in %s",
            len(skipped), ", ".join(f"{count} {reason}" for reason, count in reasons.items()), examples, report_path,
        )


__all__ = ["REPORT_FILENAME", "build_report", "publish_report"]
