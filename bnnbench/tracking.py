"""The only module that talks to MLflow: the run's logger, params, tags, artifacts and final status.

Lightning's `MLFlowLogger` logs the per-epoch metrics. The runner, not Lightning, decides a run's
final status: Lightning marks a run FINISHED when `fit` ends (before `test`) and FAILED on Ctrl-C,
so `RunnerOwnedMLFlowLogger.finalize` leaves the status alone and `finish_run` sets FINISHED only
for a completed run, FAILED (with the reason as tag `failure_reason`) or KILLED otherwise.
MLflow 3 refuses the old `./mlruns` file store; the default here is MLflow's own default,
`sqlite:///mlflow.db` in the working directory, unless `--tracking-uri` or `$MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.store.sql"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class RunnerOwnedMLFlowLogger(MLFlowLogger):
    """An `MLFlowLogger` whose `finalize` does not set the run's status (the runner does)."""

    def finalize(self, status: str = "success") -> None:
        pass


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance_tags(device: str) -> dict[str, str]:
    """Git commit and dirty flag, library versions, device: what the leaderboard cites."""
    import lightning
    import mlflow
    import torch

    import bnnbench

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "mlflow.source.git.commit": commit or "unknown",
        "git_commit": commit or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "version.bnnbench": bnnbench.__version__,
        "version.torch": torch.__version__,
        "version.lightning": lightning.__version__,
        "version.mlflow": mlflow.__version__,
        "version.python": platform.python_version(),
        "device": device,
        "hostname": platform.node(),
    }


def start_run(uri: str | None, experiment: str, run_name: str, params: dict[str, Any],
              tags: dict[str, str]) -> RunnerOwnedMLFlowLogger:
    """Create the MLflow run (status RUNNING) with its params and tags, and a Lightning logger for it."""
    logger = RunnerOwnedMLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=tracking_uri(uri),
                                     tags=tags)
    logger.log_hyperparams(params)
    return logger


def log_text(logger: MLFlowLogger, text: str, artifact_file: str) -> None:
    logger.experiment.log_text(logger.run_id, text, artifact_file)


def log_figure(logger: MLFlowLogger, figure, artifact_file: str) -> None:
    logger.experiment.log_figure(logger.run_id, figure, artifact_file)


def log_metrics(logger: MLFlowLogger, metrics: dict[str, float], step: int | None = None) -> None:
    for key, value in metrics.items():
        logger.experiment.log_metric(logger.run_id, key, float(value), step=step or 0)


def metric_history(logger: MLFlowLogger, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in logger.experiment.get_metric_history(logger.run_id, key)]


def finish_run(logger: MLFlowLogger, status: str, reason: str | None = None) -> None:
    """Set the final status: FINISHED, FAILED (with `failure_reason`) or KILLED."""
    if reason:
        logger.experiment.set_tag(logger.run_id, "failure_reason", reason[:5000])
    logger.experiment.set_terminated(logger.run_id, status)


def figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()
