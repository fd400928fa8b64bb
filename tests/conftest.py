"""Fixtures shared by several test modules (pytest caches a session fixture only when it is defined here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_fixtures import tiny_args, write_dataset


@pytest.fixture(scope="session")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny finished training run (model folder, image folders), shared by the eval and predict tests."""
    from vit_finetune.train import main as train_main

    data = write_dataset(tmp_path_factory.mktemp("images"))
    output = tmp_path_factory.mktemp("run") / "model"
    assert train_main(tiny_args(data, output)) == 0
    return output, data
