"""Shared fixtures: every test runs offline, on the CPU, and writes only under tmp_path."""

from __future__ import annotations

import os

import lightning.pytorch  # noqa: F401  (imported once, before any test captures stderr: its log handler keeps it)
import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

pytest_plugins = ["tests.servers"]  # the PostgreSQL cluster and MLflow server fixtures


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped, saying why, on a machine without CUDA (CI never has one)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads wait on each other
    (measured 20-30× slower under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    """A fresh SQLite MLflow store per test (MLflow 3 refuses the old ./mlruns file store)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Nothing a test does (mlflow.db, data/, checkpoints) lands in the repository."""
    import tempfile

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the runner's checkpoint directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
