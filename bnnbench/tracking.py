"""The only module that talks to MLflow: the run's logger, params, tags, artifacts and final status.

Lightning's `MLFlowLogger` logs the per-epoch metrics. The runner, not Lightning, decides a run's
final status: Lightning marks a run FINISHED when `fit` ends (before `test`) and FAILED on Ctrl-C,
so the runner's `MLFlowLogger` subclass leaves the status alone and `end_run` sets FINISHED only
for a completed run, FAILED (with the reason as tag `failure_reason`) or KILLED otherwise.
MLflow 3 refuses the old `./mlruns` file store; the default here is MLflow's own default,
`sqlite:///mlflow.db` in the working directory, unless `--tracking-uri` or `$MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.store.sql"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _runner_owned_logger(**kwargs):
    """An `MLFlowLogger` whose `finalize` does not set the run's status (the runner does).

    Built on first use so that importing this module does not import lightning (seconds).
    """
    from lightning.pytorch.loggers import MLFlowLogger

    class RunnerOwnedMLFlowLogger(MLFlowLogger):
        def finalize(self, status: str = "success") -> None:
            pass

    return RunnerOwnedMLFlowLogger(**kwargs)


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
              tags: dict[str, str]):
    """Create the MLflow run (status RUNNING) with its params and tags, and a Lightning logger for it."""
    logger = _runner_owned_logger(experiment_name=experiment, run_name=run_name, tracking_uri=tracking_uri(uri),
                                     tags=tags)
    logger.log_hyperparams(params)
    return logger


def log_text(logger, text: str, artifact_file: str) -> None:
    logger.experiment.log_text(logger.run_id, text, artifact_file)


def log_figure(logger, figure, artifact_file: str) -> None:
    logger.experiment.log_figure(logger.run_id, figure, artifact_file)


def log_metrics(logger, metrics: dict[str, float], step: int | None = None) -> None:
    for key, value in metrics.items():
        logger.experiment.log_metric(logger.run_id, key, float(value), step=step or 0)


def metric_history(logger, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in logger.experiment.get_metric_history(logger.run_id, key)]


# -- runs not driven by Lightning: the tuner's parent run, and tags on finished runs ---------------------
RUN_NAME_TAG = "mlflow.runName"  # in RunConfig.tags, the runner uses it as the run's name
PARENT_TAG = "mlflow.parentRunId"  # MLflow's UI nests a run under the run with this id


@contextlib.contextmanager
def sqlite_first_use_lock(uri: str):
    """Serialise opening a SQLite database between processes on this machine.

    MLflow and Optuna create their tables on first use; two processes doing that at once on a fresh
    file fail (MLflow: alembic "expected to match one row"). The lock is an flock on the database's
    directory, so no lock file is written anywhere. Other URLs (servers) need no lock.
    """
    path = Path(uri[len("sqlite:///"):].split("?")[0]) if uri.startswith("sqlite:///") else None
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        path = None
    if path is None or not path.resolve().parent.is_dir():
        yield
        return
    directory = os.open(path.resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)  # releases the lock


def _client(uri: str | None):
    return _client_for(tracking_uri(uri))  # resolved first: $MLFLOW_TRACKING_URI may change


@functools.lru_cache(maxsize=8)
def _client_for(uri: str):
    import mlflow

    with sqlite_first_use_lock(uri):
        client = mlflow.MlflowClient(uri)  # MLflow caches the store (and its tables) per process
    return client


def start_parent_run(uri: str | None, experiment: str, run_name: str, params: dict[str, Any],
                     tags: dict[str, str]) -> str:
    """Create a RUNNING run that child runs point to (tag `mlflow.parentRunId`); returns its id."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(experiment)
        except MlflowException:  # another process created it in between
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    else:
        experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def log_params(uri: str | None, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        _client(uri).log_batch(run_id, params=items[start:start + 100])


def log_run_metrics(uri: str | None, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _client(uri).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def set_tags(uri: str | None, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    _client(uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def end_run(uri: str | None, run_id: str, status: str, reason: str | None = None) -> None:
    """Set a run's final status: FINISHED, FAILED (with the tag `failure_reason`) or KILLED."""
    if reason:
        set_tags(uri, run_id, {"failure_reason": reason[:5000]})
    _client(uri).set_terminated(run_id, status)


# -- Weights & Biases: an optional mirror of the MLflow run, for teams that live in W&B ---------------------
def wandb_logger(project: str, run_name: str, group: str | None, params: dict[str, Any], tags: dict[str, str]):
    """Lightning's `WandbLogger` with the MLflow run's names: project = experiment, group = parent run.

    Without an account set `WANDB_MODE=offline` (the run is written under `./wandb/`) or `disabled`.
    """
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project=project, name=run_name, group=group,
                         tags=[f"{k}={v}" for k, v in tags.items() if k in ("git_commit", "device")][:20])
    logger.log_hyperparams(params)
    return logger


def finish_wandb(logger, status: str) -> None:
    """Close the W&B run so its files are complete; a non-FINISHED MLflow status is a non-zero exit code."""
    logger.experiment.finish(exit_code=0 if status == "FINISHED" else 1)


def finished_run_ids(uri: str | None, experiment: str, tags: dict[str, str], params: dict[str, str]) -> list[str]:
    """Ids of FINISHED runs in `experiment` with these tag and param values (none if no such experiment)."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    conditions = [f"tags.{k} = '{v}'" for k, v in tags.items()] + [f"params.{k} = '{v}'" for k, v in params.items()]
    runs = client.search_runs([found.experiment_id],
                              filter_string=" and ".join([*conditions, "attributes.status = 'FINISHED'"]))
    return [r.info.run_id for r in runs]


def store_exists(uri: str | None) -> bool:
    """False only for a `sqlite:///` store whose file is missing (MLflow would create an empty one)."""
    resolved = tracking_uri(uri)
    return not resolved.startswith("sqlite:///") or Path(resolved[len("sqlite:///"):]).exists()


def finished_runs(uri: str | None) -> list[dict[str, Any]]:
    """Every FINISHED run of every active experiment, as plain data for the leaderboard.

    Each item has run_id, status, experiment, run_name, start_time (ms), params, metrics (latest value
    of each key) and tags. A missing SQLite store is an error rather than a new empty database.
    """
    from mlflow.entities import ViewType

    from bnnbench.errors import BadInput

    if not store_exists(uri):
        raise BadInput(f"no MLflow store at '{tracking_uri(uri)}': give --tracking-uri of the store the runs are in")
    client = _client(uri)
    experiments, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        experiments += list(page)
        token = page.token
        if not token:
            break
    out = []
    for experiment in experiments:
        token = None
        while True:
            page = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                      max_results=1000, page_token=token)
            out += [{"run_id": r.info.run_id, "status": r.info.status, "experiment": experiment.name,
                     "run_name": r.info.run_name or "", "start_time": r.info.start_time, "params": dict(r.data.params),
                     "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in page]
            token = page.token
            if not token:
                break
    return out
