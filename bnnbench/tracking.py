"""The only module that talks to MLflow (and W&B): stores, experiments, the recorded run and its status.

A training run is recorded by `RecordedRun`, a context manager that owns the MLflow run from creation to
final status: FINISHED only when training and testing completed; FAILED with the reason (tag
`failure_reason`) when they raised; KILLED with reason "interrupted by the user" on Ctrl-C and
"terminated (SIGTERM)" on SIGTERM, whatever the run was doing (training, testing, logging artifacts).
Lightning's `MLFlowLogger` only logs the per-epoch metrics into that run; its `finalize` is disabled,
because Lightning would mark the run FINISHED when `fit` ends (before `test`) and FAILED on Ctrl-C.

Every run records who owns it — tags `bnnbench.host`, `bnnbench.pid` and a heartbeat
`bnnbench.heartbeat` (Unix seconds, refreshed at least every `HEARTBEAT_S` while it trains) — so a run
whose process is gone (killed with SIGKILL, a lost machine) is recognisably interrupted
(`owner_gone`) rather than RUNNING for ever, and can be resumed from its checkpoint.

Stores: MLflow 3 refuses the old `./mlruns` file store, so the default is `sqlite:///mlflow.db` in the
working directory unless `--tracking-uri` or `$MLFLOW_TRACKING_URI` says otherwise. `check_store`
answers within seconds, before any data is loaded, for a malformed, missing, non-database or
unreachable store. With a `sqlite:///DIR/mlflow.db` store, experiments bnnbench creates keep their
artifacts in `DIR/mlartifacts` and checkpoints go to `DIR/checkpoints` (not `./mlruns` of whatever
directory the command ran in); a server URI uses the server's artifact store. Opening a fresh SQLite
store is serialised between processes (MLflow creates its tables on first use, and two processes
doing so at once fail), and an experiment created by two processes at once is created once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bnnbench.errors import BadInput, RunFailed, Terminated

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SQLITE = "sqlite:///"
# MLflow 3's telemetry client sets and unsets an environment variable from its own thread; it raised
# KeyError '_MLFLOW_TELEMETRY_SESSION_ID' inside a worker's log-batch request (once in five runs of
# three workers sharing a suite), losing that run. bnnbench turns it off unless the user chose otherwise.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's UI nests a run under the run with this id
CONFIG_ID_TAG = "config_id"  # what is trained (bnnbench.identity.config_id)
CODE_ID_TAG = "code_id"  # what trained it (bnnbench.identity.code_id)
HOST_TAG, PID_TAG, HEARTBEAT_TAG = "bnnbench.host", "bnnbench.pid", "bnnbench.heartbeat"
CHECKPOINT_TAG = "bnnbench.checkpoint_dir"  # where the run's resumable checkpoints are
TUNED_TAG = "tuning.tuned"  # JSON: the study, trial, budget and tuned values a tuned suite's run comes from
HEARTBEAT_S = 30.0  # a training run refreshes its heartbeat at least this often (seconds)
STALE_S = 300.0  # a run on another host whose heartbeat is older than this is taken as interrupted
MODEL_NAME = "model"  # a FINISHED run's network: `runs:/<run id>/model`
DATA_CONTEXT = "training"  # the context of a run's dataset input

for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.store.sql"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len(SQLITE):].split("?")[0]) if uri.startswith(SQLITE) else None


# -- stores ------------------------------------------------------------------------------------------------
DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy URL schemes of database servers
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'", "MySQLdb": "mysqlclient",
                   "pymysql": "pymysql", "pyodbc": "pyodbc"}  # DB-API module -> what `pip install` needs


def check_driver(url: str, what: str) -> None:
    """One line of BadInput naming the DB-API module a SQLAlchemy URL needs (and its pip package) when it
    is not installed; any other problem with the URL is left to the connection attempt."""
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect().import_dbapi()
    except ModuleNotFoundError as error:
        module = (error.name or "").split(".")[0]
        raise BadInput(f"{what} '{_safe(url)}' needs the database driver '{module}': pip install "
                       f"{DRIVER_PACKAGES.get(module, module)}") from None
    except Exception:
        pass


def check_store(uri: str | None) -> str:
    """The resolved URI, or one line of BadInput for a store that cannot work (within ~5 s)."""
    uri = tracking_uri(uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    path = _sqlite_path(uri)
    if path is not None:
        if not path.name or not path.parent.is_dir():
            raise BadInput(f"tracking URI '{uri}': folder '{path.parent}' does not exist; create it, or give "
                           f"--tracking-uri sqlite:///PATH/mlflow.db in an existing folder")
        if path.is_dir():
            raise BadInput(f"tracking URI '{uri}': '{path}' is a folder, not a SQLite database file")
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise BadInput(f"tracking URI '{uri}': '{path}' is not a SQLite database")
        return uri
    if scheme in ("http", "https"):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read(64)
        except Exception as error:  # URLError, timeouts, HTTP errors, a malformed host
            raise BadInput(f"MLflow tracking server '{uri}' is unreachable: {_first_line(error)}") from None
        return uri
    if scheme in DATABASES:
        import sqlalchemy

        check_driver(uri, "tracking URI")
        try:
            engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 5},
                                              poolclass=sqlalchemy.pool.NullPool)
            with engine.connect():
                pass
        except Exception as error:
            raise BadInput(f"tracking database '{_safe(uri)}' is unreachable: {_first_line(error)}") from None
        return uri
    raise BadInput(f"unsupported tracking URI '{uri}': give sqlite:///PATH/mlflow.db, postgresql://USER@HOST/DB, "
                   f"mysql://USER@HOST/DB or http(s)://HOST:PORT of an MLflow server")


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "reason", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _safe(uri: str) -> str:
    """A database URL without its password, for messages."""
    head, sep, tail = uri.partition("@")
    if not sep or "://" not in head:
        return uri
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{tail}" if ":" in credentials else uri


def store_exists(uri: str | None) -> bool:
    """False only for a `sqlite:///` store whose file is missing (MLflow would create an empty one)."""
    path = _sqlite_path(tracking_uri(uri))
    return path is None or path.exists()


@contextlib.contextmanager
def sqlite_first_use_lock(uri: str):
    """Serialise opening a SQLite database between processes on this machine.

    MLflow and Optuna create their tables on first use; two processes doing that at once on a fresh
    file fail (MLflow: "duplicate column name"). The lock is an flock on the database's directory, so
    no lock file is written anywhere. Other URLs (servers) need no lock.
    """
    path = _sqlite_path(uri)
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
        client = mlflow.MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates the tables now, under the lock
    return client


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store; the server's choice otherwise."""
    path = _sqlite_path(uri)
    return (path.resolve().parent / "mlartifacts").as_uri() if path is not None else None


def checkpoint_root(uri: str | None, chosen: str | None = None) -> Path:
    """Where runs keep resumable checkpoints (one folder per run id): `--checkpoint-dir`, else beside a
    SQLite store, else `./checkpoints`."""
    if chosen:
        return Path(chosen).resolve()
    path = _sqlite_path(tracking_uri(uri))
    return (path.resolve().parent if path is not None else Path.cwd()) / "checkpoints"


def experiment_id(uri: str | None, name: str) -> str:
    """The id of experiment `name`, created (with its artifact location) if missing, once across processes."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            with sqlite_first_use_lock(tracking_uri(uri)):
                found = client.get_experiment_by_name(name)
                if found is None:
                    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri(uri)))
        except MlflowException:  # created by another process (on another machine) in between
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise BadInput(f"MLflow experiment '{name}' is deleted; restore it (mlflow experiments restore) or give "
                       f"another --experiment")
    return found.experiment_id


@functools.lru_cache(maxsize=1)
def _source_state() -> tuple[str | None, str | None]:
    """The git commit and `git status` of this checkout, read once per process: the code a process runs
    is the code it imported, whatever happens to the working tree while it trains (like `code_id`)."""
    return _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=no")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# -- provenance and ownership ------------------------------------------------------------------------------
def provenance_tags(device: str) -> dict[str, str]:
    """Git commit and dirty flag, library versions, device, host: what the leaderboard cites."""
    import lightning
    import mlflow
    import torch

    import bnnbench

    commit, status = _source_state()
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


def owner_tags() -> dict[str, str]:
    return {HOST_TAG: platform.node(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: f"{time.time():.0f}"}


def owner_gone(tags: dict[str, str], now: float | None = None) -> str | None:
    """Why the process owning a RUNNING run is gone, or None while it may still be alive.

    On this host the process id decides at once; on another host a heartbeat older than `STALE_S`.
    A run recorded before owners were tagged has neither and counts as gone.
    """
    host, pid, beat = tags.get(HOST_TAG), tags.get(PID_TAG), tags.get(HEARTBEAT_TAG)
    if host is None or pid is None or beat is None:
        return "no owner recorded"
    if host == platform.node():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"process {pid} on {host} has ended"
        except PermissionError:  # alive, owned by another user
            return None
        return None
    age = (now or time.time()) - float(beat)
    return f"no heartbeat from {host} for {age:.0f} s" if age > STALE_S else None


def heartbeat(uri: str | None, run_id: str) -> None:
    set_tags(uri, run_id, {HEARTBEAT_TAG: f"{time.time():.0f}"})


# -- the recorded run --------------------------------------------------------------------------------------
_terminated = threading.Event()  # SIGTERM came; set until the run it stopped has been ended KILLED


def _raise_terminated(signum, frame):
    _terminated.set()
    raise Terminated()


def check_terminated() -> None:
    """Raise `Terminated` if SIGTERM came but its exception was lost: raised inside a finalizer or a weakref
    callback, Python prints "Exception ignored in ..." and goes on, and the run would train to its end.
    Called after every batch (`callbacks.Heartbeat`); `RecordedRun.__exit__` reads the same flag."""
    if _terminated.is_set():
        raise Terminated()


class RecordedRun:
    """The MLflow run of one training run, as a context manager that owns its status and mirrors.

    On entry it creates the run — provenance, identity and owner tags, the params of what trains plus
    the dataset's own, and `config.yaml` (a recipe that reproduces the run, written first so that an
    interrupted run can be resumed from it) — or, given `resume_id`, reopens that run as RUNNING under
    this process. It installs a SIGTERM handler for its duration. On exit it sets the final status;
    an exception becomes `RunFailed`, Ctrl-C a `KeyboardInterrupt`, SIGTERM a `Terminated` (these two
    carry the run id, for the resume hint).
    """

    def __init__(self, resolved, extra_params: dict[str, Any], device: str, resume_id: str | None = None):
        self.resolved, self.extra_params, self.device, self.resume_id = resolved, extra_params, device, resume_id
        self.uri = tracking_uri(resolved.tracking_uri)
        self.run_id: str = resume_id or ""
        self.logger = self.mirror = None
        self._previous_handler = None

    @property
    def resumed(self) -> bool:
        return self.resume_id is not None

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_root(self.uri, self.resolved.checkpoint_dir) / self.run_id

    def __enter__(self) -> RecordedRun:
        from bnnbench.identity import code_id

        r = self.resolved
        if self.resumed:
            _client(self.uri).update_run(self.run_id, status="RUNNING")
            set_tags(self.uri, self.run_id, owner_tags())
        else:
            tags = {**provenance_tags(self.device), CONFIG_ID_TAG: r.config_id, CODE_ID_TAG: code_id(),
                    CHECKPOINT_TAG: str(checkpoint_root(self.uri, r.checkpoint_dir)), **owner_tags(), **r.tags}
            tags["bnnbench.processes"] = str(r.devices * r.num_nodes)
            run = _client(self.uri).create_run(experiment_id(self.uri, r.experiment), run_name=r.run_name, tags=tags)
            self.run_id = run.info.run_id
            log_params(self.uri, self.run_id, {**r.params(), **self.extra_params})
            import yaml

            _client(self.uri).log_text(self.run_id, yaml.safe_dump(r.recipe(), sort_keys=False), "config.yaml")
        from bnnbench import distributed

        distributed.share(self.run_id)  # the other processes of a multi-process run (`FollowerRun`)
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            self.logger = _runner_owned_logger(self.uri, self.run_id)
            self.mirror = _wandb_logger(r, self.run_id, {**r.params(), **self.extra_params}) if r.wandb else None
        except BaseException as error:
            self.__exit__(type(error), error, None)
            raise
        return self

    def __exit__(self, exc_type, error, traceback) -> bool:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
        if _terminated.is_set() and (error is None or isinstance(error, SystemExit)):
            # SIGTERM, whose own exception was lost (or which Lightning's signal connector turned into its
            # SIGTERMException, a SystemExit, at the next batch)
            error = Terminated()
        if isinstance(error, Terminated):
            _terminated.clear()
        if self.logger is not None and error is not None:
            # A run stopped by SIGTERM or Ctrl-C ends KILLED and can be resumed: its held points belong to
            # the work after its last checkpoint, which the resumed run does again. A failed run keeps them.
            if isinstance(error, Terminated | KeyboardInterrupt | SystemExit):
                self.logger.held.clear()
            else:
                with contextlib.suppress(Exception):  # the failure may be the store's own; the run still ends
                    self.logger.flush()
        if error is None:
            self.end("FINISHED")
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)  # only a KILLED run is ever resumed
            return False
        if isinstance(error, Terminated):
            self.end("KILLED", "terminated (SIGTERM)")
            raise Terminated(self.run_id) from None
        if isinstance(error, KeyboardInterrupt | SystemExit):
            # Lightning turns Ctrl-C into SystemExit after its own handling; either way the user stopped it.
            self.end("KILLED", "interrupted by the user")
            raise KeyboardInterrupt(self.run_id) from None
        reason = f"{type(error).__name__}: {error}"
        self.end("FAILED", reason)
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        raise RunFailed(self.run_id, reason) from error

    def end(self, status: str, reason: str | None = None) -> None:
        """Set the final status; a SIGTERM while this runs must not leave the run RUNNING. A signal that
        interrupted a database call can leave that client's connection unusable: then once more with a
        fresh client."""
        with _ignoring_sigterm():
            try:
                end_run(self.uri, self.run_id, status, reason)
            except Exception:
                _client_for.cache_clear()
                end_run(self.uri, self.run_id, status, reason)
            if self.mirror is not None:
                self.mirror.experiment.finish(exit_code=0 if status == "FINISHED" else 1)

    def heartbeat(self) -> None:
        heartbeat(self.uri, self.run_id)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        log_run_metrics(self.uri, self.run_id, metrics, step=step)
        if self.mirror is not None:
            self.mirror.log_metrics(metrics)

    def log_text(self, text: str, artifact_file: str) -> None:
        _client(self.uri).log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        _client(self.uri).log_figure(self.run_id, figure, artifact_file)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in _client(self.uri).get_metric_history(self.run_id, key)]

    def metrics(self) -> dict[str, float]:
        """The latest value of every metric the run recorded: what the UI and the leaderboard read."""
        return dict(_client(self.uri).get_run(self.run_id).data.metrics)

    def log_dataset(self, description: dict[str, Any]) -> None:
        """The run's data as an MLflow dataset input (`TensorDataModule.describe()`): see `dataset_input`."""
        _client(self.uri).log_inputs(self.run_id, datasets=[dataset_input(description)])

    def log_model(self, model, input_example) -> str:
        """Log `model` (a torch module in evaluation form) as this run's MLflow PyTorch model; its model id.

        MLflow 3 keeps a model as a LoggedModel entity of the run's experiment, linked to the run as one
        of its outputs; `runs:/<run id>/model` finds it by name and source run. The module is pickled
        (MLflow's pickle format, not its `pt2` graph format), so `mlflow.pytorch.load_model` returns the
        bnnbench modules themselves — binary layers with their quantizers — and loading needs bnnbench
        importable. `input_example` (a few normalised images) gives the signature: float32
        (-1, C, H, W) images in, (-1, classes) logits out. An earlier model of this run (one left by an
        attempt killed while logging) is deleted first, so the run has one model.
        """
        import bnnbench

        client = _client(self.uri)
        run = client.get_run(self.run_id)
        for earlier in _logged_models(self.uri, self.run_id, run.info.experiment_id):
            client.delete_logged_model(earlier.model_id)
        tags = {k: run.data.tags[k] for k in (CONFIG_ID_TAG, CODE_ID_TAG) if k in run.data.tags}
        logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=self.run_id,
                                            params=dict(run.data.params), tags=tags, model_type="bnnbench")
        try:
            _log_pytorch_model(self.uri, self.run_id, logged.model_id, model, input_example,
                               metadata={"bnnbench_version": bnnbench.__version__,
                                         "loading": "needs the bnnbench package: the modules are pickled"})
        except BaseException:
            from mlflow.entities import LoggedModelStatus

            with contextlib.suppress(Exception):
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        return logged.model_id


class FollowerRun:
    """The recorded run as the other processes of a multi-process run see it: the run id rank 0's
    `RecordedRun` shares (`distributed.share`), hence the same checkpoint folder, and no MLflow at all.
    The callbacks write through it as through a `RecordedRun`; here that writes nothing."""

    logger = mirror = None
    resumed = RecordedRun.resumed
    checkpoint_dir = RecordedRun.checkpoint_dir

    def __init__(self, resolved, extra_params: dict[str, Any], device: str, resume_id: str | None = None):
        self.resolved, self.resume_id = resolved, resume_id
        self.uri = tracking_uri(resolved.tracking_uri)
        self.run_id = ""

    def __enter__(self) -> FollowerRun:
        from bnnbench import distributed

        self.run_id = distributed.share()
        return self

    def __exit__(self, exc_type, error, traceback) -> bool:
        return False

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return []

    def metrics(self) -> dict[str, float]:
        return {}

    def heartbeat(self, *args, **kwargs) -> None:
        pass

    log_metrics = log_text = log_figure = log_dataset = log_model = heartbeat


@contextlib.contextmanager
def _ignoring_sigterm():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _runner_owned_logger(uri: str, run_id: str):
    """Lightning's `MLFlowLogger` bound to an existing run, whose `finalize` leaves the status alone and
    which holds metrics back until a checkpoint covers them.

    While a training epoch runs (`holding`), logged metrics wait in `held` until
    `callbacks.LatestCheckpoint` has written a checkpoint that holds them too, and go to MLflow then
    (`flush`): a run killed and resumed logs each point once. Lightning calls `finalize("failed")` on
    any exception; what is held then waits for `RecordedRun.__exit__`, which knows whether the run can
    be resumed.

    Built on first use so that importing this module does not import lightning (seconds); built under
    the first-use lock because it makes its own MLflow client.
    """
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities import rank_zero_only

    class RunnerOwnedMLFlowLogger(MLFlowLogger):
        held: list
        holding = False

        @rank_zero_only
        def log_metrics(self, metrics, step=None) -> None:
            if self.holding:
                self.held.append((dict(metrics), step))
            else:
                super().log_metrics(metrics, step)

        def flush(self) -> None:
            held, self.held = self.held, []
            for metrics, step in held:
                super().log_metrics(metrics, step)

        def finalize(self, status: str = "success") -> None:
            if status == "success":
                self.flush()

    with sqlite_first_use_lock(uri):
        logger = RunnerOwnedMLFlowLogger(tracking_uri=uri, run_id=run_id)
        logger.held = []
        _ = logger.experiment
    return logger


def run_info(uri: str | None, run_id: str) -> dict[str, Any]:
    """Status, experiment, tags and the recorded recipe (`config.yaml`) of one run; BadInput if unknown."""
    import yaml
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise BadInput(f"no run '{run_id}' in the MLflow store '{tracking_uri(uri)}'") from None
    try:
        recipe = yaml.safe_load(open(client.download_artifacts(run_id, "config.yaml")))
    except (MlflowException, OSError):
        recipe = None
    experiment = client.get_experiment(run.info.experiment_id).name
    return {"run_id": run_id, "status": run.info.status, "experiment": experiment, "tags": dict(run.data.tags),
            "recipe": recipe}


def runs_with(uri: str | None, experiment: str, tags: dict[str, str], seed: int) -> list[dict[str, Any]]:
    """Runs of `experiment` with these tag values and this seed, newest first (none if no experiment):
    id, status, tags and latest metrics of each."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    conditions = [f"tags.`{k}` = '{v}'" for k, v in tags.items()] + [f"params.seed = '{seed}'"]
    runs = client.search_runs([found.experiment_id], filter_string=" and ".join(conditions),
                              order_by=["attributes.start_time DESC"])
    return [{"run_id": r.info.run_id, "status": r.info.status, "tags": dict(r.data.tags),
             "metrics": dict(r.data.metrics)} for r in runs]


def recorded_state(tracking_uri: str | None, resolved) -> tuple[str, dict | None]:
    """What the store holds of one resolved run description with this code (a suite's cell, a distillation's
    teacher): ("done" | "running" | "resume" | "new", the run it concerns, as `runs_with` describes it)."""
    from bnnbench.identity import code_id

    if not store_exists(tracking_uri):
        return "new", None
    tags = {CONFIG_ID_TAG: resolved.config_id, CODE_ID_TAG: code_id()}
    runs = [run for run in runs_with(tracking_uri, resolved.experiment, tags, resolved.seed)
            if "tuning.role" not in run["tags"]]  # a tuning trial is no suite cell or teacher
    finished = [run for run in runs if run["status"] == "FINISHED"]
    if finished:
        return "done", finished[0]
    alive = [run for run in runs if run["status"] == "RUNNING" and owner_gone(run["tags"]) is None]
    if alive:
        return "running", alive[0]
    interrupted = [run for run in runs if run["status"] in ("KILLED", "RUNNING")]  # RUNNING: its owner is gone
    return ("resume", interrupted[0]) if interrupted else ("new", None)


# -- datasets and models of runs ---------------------------------------------------------------------------

def dataset_input(description: dict[str, Any]):
    """An MLflow `DatasetInput` (context "training") from `TensorDataModule.describe()`; no data is uploaded.

    Built with `mlflow.data`: a `MetaDataset` (metadata only) named after the dataset, with the digest of
    the tensors the run used, a source — a local folder (`LocalArtifactDatasetSource`) or, for data that
    no file holds, a code source naming what generates it — a tensor schema (uint8 images, int64
    labels) and a profile with the split sizes, classes, mode, seed and the full SHA-1. It is what the
    runs table of the MLflow UI shows in its Dataset column.
    """
    import json

    import numpy as np
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types.schema import Schema, TensorSpec
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    d = description
    profile = {"splits": d["sizes"], "num_classes": d["num_classes"], "image_shape": d["image_shape"],
               "mode": d["mode"], "seed": d["seed"], "sha1": d["sha1"]}

    class Described(MetaDataset):
        @property
        def profile(self):
            return profile

        def to_dict(self):
            return {**super().to_dict(), "profile": json.dumps(profile)}

    source_text = str(d["source"])
    if Path(source_text).is_absolute() and Path(source_text).exists():
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # MLflow registers its local source twice and says so
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(source_text)  # a LocalArtifactDatasetSource
    else:
        source = CodeDatasetSource(tags={"source": source_text})
    schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, *d["image_shape"]), "images"),
                     TensorSpec(np.dtype(np.int64), (-1,), "labels")])
    dataset = Described(source, name=d["name"], digest=d["digest"], schema=schema)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, DATA_CONTEXT)])


@contextlib.contextmanager
def _fluent_tracking_uri(uri: str):
    """MLflow's model functions use the process-wide tracking URI; this sets it for one block only."""
    import mlflow

    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # a later MLflow: set it, as its public API allows
        mlflow.set_tracking_uri(uri)
        yield
        return
    with _use_tracking_uri(uri):
        yield


def _logged_models(uri: str | None, run_id: str, experiment_id: str) -> list:
    """The LoggedModels named `MODEL_NAME` that `run_id` produced (what `runs:/<run id>/model` resolves)."""
    client = _client(uri)
    found, token = [], None
    while True:
        page = client.search_logged_models(experiment_ids=[experiment_id], filter_string=f"name = '{MODEL_NAME}'",
                                           page_token=token)
        found += [m for m in page if m.source_run_id == run_id]
        token = page.token
        if not token:
            return found


def _log_pytorch_model(uri: str, run_id: str, model_id: str, model, input_example, metadata: dict) -> None:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    example = input_example.detach().cpu().float()
    with torch.no_grad():
        output = model(example)
    signature = infer_signature(example.numpy(), output.detach().cpu().numpy())
    pickle_warning = logging.getLogger("mlflow.pytorch")  # "pickle can execute code": yes, bnnbench's own
    level = pickle_warning.level
    pickle_warning.setLevel(logging.ERROR)
    try:
        with _fluent_tracking_uri(uri):
            mlflow.pytorch.log_model(model, name=MODEL_NAME, run_id=run_id, model_id=model_id, signature=signature,
                                     input_example=example.numpy(), serialization_format="pickle",
                                     pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                                     metadata=metadata)
    finally:
        pickle_warning.setLevel(level)


def run_summary(uri: str | None, run_id: str) -> dict[str, Any]:
    """Status, experiment id, params, metrics and tags of one run; BadInput if the store has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        run = _client(uri).get_run(run_id)
    except MlflowException:
        raise BadInput(f"no run '{run_id}' in the MLflow store '{tracking_uri(uri)}'") from None
    return {"run_id": run_id, "status": run.info.status, "experiment_id": run.info.experiment_id,
            "params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags)}


def load_model(uri: str | None, run_id: str):
    """The run's MLflow PyTorch model (`RecordedRun.log_model`) on the CPU; BadInput if it has none."""
    import mlflow.pytorch

    summary = run_summary(uri, run_id)
    models = [m for m in _logged_models(uri, run_id, summary["experiment_id"]) if m.status == "READY"]
    if not models:
        raise BadInput(f"run {run_id} has no MLflow model '{MODEL_NAME}' (runs record one since bnnbench logs "
                       f"models; a tuning parent or an older run has none): train it again to export it")
    with _fluent_tracking_uri(tracking_uri(uri)):
        return mlflow.pytorch.load_model(f"models:/{models[0].model_id}", map_location="cpu")


# -- runs not driven by Lightning: the tuner's parent run, and tags on finished runs ---------------------
def start_parent_run(uri: str | None, experiment: str, run_name: str, params: dict[str, Any],
                     tags: dict[str, str]) -> str:
    """Create a RUNNING run that child runs point to (tag `mlflow.parentRunId`); returns its id."""
    run = _client(uri).create_run(experiment_id(uri, experiment), run_name=run_name, tags=tags)
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def log_params(uri: str | None, run_id: str, params: dict[str, Any]) -> None:
    """Params as `str(value)`: the form `bnnbench.identity.config_id` digests on both sides."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        _client(uri).log_batch(run_id, params=items[start:start + 100])


def log_run_metrics(uri: str | None, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _client(uri).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def set_tags(uri: str | None, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    _client(uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def end_run(uri: str | None, run_id: str, status: str, reason: str | None = None) -> None:
    """Set a run's final status: FINISHED, FAILED or KILLED (the reason as tag `failure_reason`)."""
    if reason:
        set_tags(uri, run_id, {"failure_reason": reason[:5000]})
    _client(uri).set_terminated(run_id, status)


# -- Weights & Biases: an optional mirror of the MLflow run, for teams that live in W&B ---------------------
def check_mirror() -> None:
    """`--wandb` needs the package and either an account (key) or an offline/disabled mode."""
    import importlib.util
    import netrc

    if importlib.util.find_spec("wandb") is None:
        raise BadInput("--wandb needs the wandb package: pip install 'bnnbench[wandb]'")
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    try:
        logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    if not logged_in:
        raise BadInput("--wandb needs a W&B account or an offline mode: run 'wandb login', set WANDB_API_KEY, "
                       "or set WANDB_MODE=offline (runs are written under ./wandb)")


def _wandb_logger(resolved, run_id: str, params: dict[str, Any]):
    """Lightning's `WandbLogger` with the MLflow run's names: project = experiment, group = parent run."""
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project=resolved.experiment, name=resolved.run_name,
                         group=resolved.tags.get(PARENT_TAG), tags=[f"mlflow_run_id={run_id}"])
    logger.log_hyperparams(params)
    return logger


# -- reading runs back -------------------------------------------------------------------------------------
def finished_runs(uri: str | None) -> list[dict[str, Any]]:
    """Every FINISHED run of every active experiment, as plain data for the leaderboard.

    Each item has run_id, status, experiment, run_name, start_time (ms), params, metrics (latest value
    of each key) and tags. A missing SQLite store is an error rather than a new empty database.
    """
    from mlflow.entities import ViewType

    if not store_exists(uri):
        raise BadInput(f"no MLflow store at '{tracking_uri(uri)}': give --tracking-uri of the store the runs are in")
    check_store(uri)
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
