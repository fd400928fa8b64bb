"""Absolute local paths out of what a push uploads: the JSON records and the generated model card go up with
each path rewritten (relative to the model folder, or `<local>/name`); the local files stay as they are."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

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


class PathRedactor:
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


def redacted_json(file: Path, redactor: PathRedactor) -> tuple[bytes, int] | None:
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


def redaction_note(count: int) -> str:
    return f"{count} local path{'' if count == 1 else 's'} redacted"
