"""transformers' own common model tests, fetched at test time and run against our classes.

The transformers sdist on PyPI ships `tests/test_modeling_common.py` (ModelTesterMixin) and
`tests/test_configuration_common.py` (ConfigTester), but not the folders they import from (`tests/exporters/`,
`tests/generation/`, `tests/utils/`). `load()` downloads the sdist of the installed transformers version once
(with pip, into a cache folder), extracts its top-level test files into a temporary package named
`transformers_tests`, lays the small stand-ins of this folder where the missing modules would be, and imports it.
Nothing of transformers' test code is kept in this repository.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

PACKAGE = "transformers_tests"  # not "tests": that name would clash with this repository's own tests folder
HERE = Path(__file__).parent
# Module of the extracted package -> the stand-in file of this folder that takes its place.
STANDINS = {
    "exporters/test_export.py": "exporters.py",
    "generation/test_utils.py": "generation.py",
    "utils/test_configuration_utils.py": "configuration_utils.py",
}


class Unavailable(Exception):
    """The common tests cannot be had here (no network, no such sdist); the message says why, in one line."""


def cache_dir() -> Path:
    """Where downloaded sdists are kept between runs: $VIT_FINETUNE_CACHE, else ~/.cache/vit-finetune."""
    return Path(os.environ.get("VIT_FINETUNE_CACHE", Path.home() / ".cache" / "vit-finetune")).expanduser()


def sdist(version: str) -> Path:
    """The transformers `version` sdist, downloaded with pip on the first call."""
    archive = cache_dir() / f"transformers-{version}.tar.gz"
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   f"transformers=={version}", "-d", download]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as error:
            raise Unavailable(f"pip download of the transformers {version} sdist timed out") from error
        downloaded = Path(download) / archive.name
        if result.returncode != 0 or not downloaded.is_file():
            last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise Unavailable(f"cannot download the transformers {version} sdist: {last_line}")
        os.replace(downloaded, archive)  # atomic: a concurrent run sees the whole file or none
    return archive


def extract(archive: Path, version: str, destination: Path) -> Path:
    """The sdist's top-level tests/*.py as the package `destination/PACKAGE`, the stand-ins laid into it."""
    package = destination / PACKAGE
    package.mkdir()
    prefix = f"transformers-{version}/tests/"
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix(prefix)
            if member.isfile() and member.name.startswith(prefix) and "/" not in name and name.endswith(".py"):
                (package / name).write_bytes(tar.extractfile(member).read())
    if not (package / "test_modeling_common.py").is_file():
        raise Unavailable(f"the transformers {version} sdist has no tests/test_modeling_common.py")
    for folder in {package} | {(package / module).parent for module in STANDINS}:
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").touch()
    for module, standin in STANDINS.items():
        shutil.copyfile(HERE / standin, package / module)
    return package


_loaded: dict[str, ModuleType] = {}


def load() -> tuple[ModuleType, ModuleType]:
    """(test_modeling_common, test_configuration_common) of the installed transformers; raises Unavailable."""
    if not _loaded:
        version = transformers.__version__
        destination = Path(tempfile.mkdtemp(prefix="transformers-tests-"))
        atexit.register(shutil.rmtree, destination, ignore_errors=True)
        extract(sdist(version), version, destination)
        sys.path.insert(0, str(destination))
        try:
            for name in ("test_modeling_common", "test_configuration_common"):
                _loaded[name] = importlib.import_module(f"{PACKAGE}.{name}")
        except ImportError as error:  # e.g. `parameterized`, a test-only dependency of transformers' tests
            raise Unavailable(f"transformers' common tests cannot be imported: {error}") from error
    return _loaded["test_modeling_common"], _loaded["test_configuration_common"]
