"""Hyperparameter search with Optuna: every trial is an ordinary `runner.run`.

Each method module defines `search_space(trial) -> dict` of method config overrides next to the fields
it tunes. A trial's values are applied last (defaults < recipe < `--set` < trial) to the same frozen
config a `bnnbench run` builds, so a trial is trained, validated, tested and recorded exactly like a run.

- Objective: `val/acc_best`, maximized. Never the test accuracy: choosing hyperparameters on the test
  split would leak it into the reported number.
- Pruning: optuna-integration's `PyTorchLightningPruningCallback` reports `val/acc` after every epoch
  (step = epoch index, from 0) and raises `TrialPruned` when the pruner says so. Intermediate values are
  reported with every pruner, `none` included, so the epochs each trial ran are in the study.
- Storage: any SQLAlchemy URL (Optuna's RDB storage); default a SQLite file `optuna.db` beside the
  MLflow SQLite database. Several `bnnbench tune` processes, on several machines, share a study through
  one storage; running the same command again resumes the study and adds trials. Every running trial
  records Optuna's heartbeat; a trial whose worker died (`kill -9`, a lost machine) is failed after the
  grace period and retried, with the same parameters, by the next worker. A study remembers what
  it tunes (method, dataset, arch, mode, epochs, batch size, image size, `--set` values) and refuses
  to mix in trials of another budget.
- Seeding: the sampler is re-created for every trial from (seed, trial number). One process is
  reproducible; two processes with the same seed still draw different random configurations, because
  the storage gives their trials different numbers. The training run of every trial uses the seed too.
- MLflow: one parent run per `tune` invocation (tag `tuning.role=parent`); each trial is a child run
  (tags `mlflow.parentRunId`, `tuning.study`, `tuning.trial`, `tuning.role=trial`, `tuning.state`).
  A pruned trial's run ends KILLED with tags `tuning.pruned=true` and `tuning.pruned_after_epochs`: it never
  ends FINISHED, so nothing reads it as a completed run. A failed trial's run ends FAILED (the runner's
  `failure_reason`) and the study goes on. The parent ends FINISHED with the study's best value
  (`study/best_value`) and parameters (params `best/<name>`), KILLED on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from bnnbench import distributed, runner, tracking
from bnnbench.config import ResolvedRun, RunConfig, resolve
from bnnbench.errors import BadInput, Terminated
from bnnbench.registry import unknown_choice

OBJECTIVE = "val/acc_best"  # what a trial returns (maximized)
PRUNE_MONITOR = "val/acc"  # what the pruner sees after every epoch
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
STORAGE_FILE = "optuna.db"
CONFIG_ATTR = "bnnbench.config"  # trial user attr: the trial's full run config, as a recipe
STUDY_ATTR = "bnnbench.study"  # study user attr: what every trial of the study shares
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr


@dataclass
class TuneResult:
    study_name: str
    storage: str
    parent_run_id: str
    states: Counter = field(default_factory=Counter)  # this invocation's trials: COMPLETE, PRUNED, FAIL
    trial_epochs: int = 0  # epochs trained by this invocation's trials
    best_value: float | None = None  # of the whole study (all processes, all invocations)
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)


# -- names and defaults ---------------------------------------------------------------------------------
def default_storage(tracking_uri: str | None = None) -> str:
    """`optuna.db` in the directory of the MLflow SQLite database; `sqlite:///optuna.db` otherwise."""
    uri = tracking.tracking_uri(tracking_uri)
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix):].split("?")[0])
        return prefix + str(path.parent / STORAGE_FILE) if str(path.parent) != "." else prefix + STORAGE_FILE
    return prefix + STORAGE_FILE


def default_study_name(resolved: ResolvedRun) -> str:
    return f"{resolved.method}-{resolved.dataset}-{resolved.arch}-{resolved.mode}"


def display_url(url: str) -> str:
    """The storage URL with any password masked (it goes to the terminal and to MLflow)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


GRACE_S = 300  # a trial (or a shared suite's cell) whose worker is silent this long is failed and retried


def open_storage(url: str, must_exist: bool = False, grace_period: int = GRACE_S):
    """Optuna RDB storage for `url`, or a one-line BadInput saying why it cannot be opened.

    Optuna's heartbeat is on: every running trial records one every `heartbeat_interval(grace_period)`
    seconds (`trial_heartbeat`), and `optuna.storages.fail_stale_trials` fails a trial silent for
    `grace_period` seconds (a worker killed with SIGKILL, a lost machine), whereupon Optuna's
    `RetryHeartbeatStaleTrialCallback` queues a copy of it (same parameters and user attributes) for
    the next worker.
    """
    if must_exist and url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):].split("?")[0])
        if not path.is_file():
            raise BadInput(f"no Optuna storage at '{url}': file '{path}' does not exist "
                           f"(give the URL 'bnnbench tune' used with --storage)")
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    # SQLite locks the whole file per write; several processes sharing it wait instead of failing.
    # A database server that does not answer is an error within seconds, not a hang.
    connect_args = {"timeout": 60} if scheme == "sqlite" else {"connect_timeout": 5} if scheme in tracking.DATABASES \
        else {}
    tracking.check_driver(url, "Optuna storage")
    for attempt in range(1, 4):
        try:
            with tracking.sqlite_first_use_lock(url), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"connect_args": connect_args},
                    heartbeat_interval=heartbeat_interval(grace_period), grace_period=grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
        except Exception as error:
            # Optuna creates its tables on first use; workers on a fresh database server race to
            # create them and the losers see "already exists". The tables are there now: again.
            if attempt < 3 and "already exists" in str(error):
                time.sleep(attempt)
                continue
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BadInput(f"cannot open Optuna storage '{display_url(url)}': {reason}") from None


def heartbeat_interval(grace_period: int) -> int:
    """Seconds between heartbeats: 30, or a fifth of a shorter grace period (at least 1)."""
    return max(1, min(30, grace_period // 5))


@contextlib.contextmanager
def trial_heartbeat(storage, trial_id: int):
    """Record Optuna's heartbeat of a trial from a thread while the body runs (what `Study.optimize`
    does for its own trials; a trial run by ask-and-tell, or a suite's cell, needs it too)."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; the grace period absorbs it
                storage.record_heartbeat(trial_id)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study) -> list:
    """Fail the trials whose worker stopped beating (Optuna queues a retry of each); the failed ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in before]


def search_space_of(method: str) -> Callable:
    module = importlib.import_module(f"bnnbench.methods.{method}")
    space = getattr(module, "search_space", None)
    if not callable(space):
        raise BadInput(f"method '{method}' has no search_space(trial) in bnnbench/methods/{method}.py")
    return space


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler re-created from (seed, trial number) before every trial; delegates everything else.

    One fixed-seed sampler per process would make two workers with the same `--seed` propose the same
    random configurations; the trial number is unique in the study, so seeding by it keeps one process
    reproducible and keeps workers apart.
    """

    def __init__(self, name: str, seed: int):
        if name not in SAMPLERS:
            raise unknown_choice("sampler", name, list(SAMPLERS))
        self.name, self.seed = name, seed
        self.inner = self._make([seed])

    def _make(self, entropy: list[int]) -> optuna.samplers.BaseSampler:
        import numpy as np

        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        if self.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study, trial):
        self.inner = self._make([self.seed, trial.number])
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()


def make_sampler(name: str, seed: int) -> TrialSeededSampler:
    return TrialSeededSampler(name, seed)


def make_pruner(name: str, epochs: int):
    """median: after 4 finished trials, from the epoch index epochs//5 on, stop a trial whose `val/acc`
    is below the median of earlier trials at the same epoch. hyperband: successive halving brackets from
    1 epoch to `epochs`, ratio 3. none: never prune."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=epochs // 5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise unknown_choice("pruner", name, list(PRUNERS))


# -- what a study and a trial remember --------------------------------------------------------------------
def trial_recipe(resolved: ResolvedRun) -> dict[str, Any]:
    """The trial's complete configuration as a recipe: `run --from-study` trains exactly this."""
    recipe = resolved.recipe()
    recipe.pop("data_dir")  # where the data lives is the retraining machine's business
    return recipe


def study_identity(resolved: ResolvedRun) -> dict[str, Any]:
    """What all trials of one study share: the configuration before any trial's values, without the
    seed (which may differ between invocations); `config_id` digests it."""
    params = {k: str(v) for k, v in resolved.params().items() if k != "seed"}
    return {"config_id": resolved.config_id, "params": params}


def _check_identity(study, identity: dict[str, Any], storage: str) -> None:
    recorded = study.user_attrs.get(STUDY_ATTR)
    if recorded is None:
        study.set_user_attr(STUDY_ATTR, identity)
        return
    if recorded.get("config_id") != identity["config_id"]:
        was, now = recorded.get("params", {}), identity["params"]
        keys = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        differences = ", ".join(f"{k}: study {was.get(k, '-')}, now {now.get(k, '-')}" for k in keys[:4])
        raise BadInput(f"study '{study.study_name}' in '{display_url(storage)}' tunes another configuration "
                       f"({differences}); use the same flags to add trials, or --study-name for a new study")


# -- tune -------------------------------------------------------------------------------------------------
def tune(cfg: RunConfig, *, trials: int = 20, timeout: float | None = None, storage: str | None = None,
         study_name: str | None = None, sampler: str = "tpe", pruner: Any = "median", grace_period: int = GRACE_S,
         echo: Callable[[str], None] = print) -> TuneResult:
    """Run `trials` more trials (or until `timeout` seconds have passed) of the study for `cfg`.

    `pruner` is a name from PRUNERS or an `optuna.pruners.BasePruner`. A trial whose worker has been
    silent for `grace_period` seconds is failed and retried by the next worker (`open_storage`); its
    MLflow run ends KILLED. Returns this invocation's counts and the study's best; bad input raises
    BadInput before anything is recorded.
    """
    resolved = resolve(cfg)
    tracking.check_store(cfg.tracking_uri)
    space = search_space_of(cfg.method)
    storage = storage or default_storage(cfg.tracking_uri)
    if trials <= 0:
        raise BadInput(f"bad trials {trials!r}: must be a positive integer")
    if timeout is not None and not timeout > 0:
        raise BadInput(f"bad timeout {timeout!r}: must be a positive number of seconds")
    pruner_name = pruner if isinstance(pruner, str) else type(pruner).__name__
    pruner = make_pruner(pruner, resolved.epochs) if isinstance(pruner, str) else pruner
    name = study_name or default_study_name(resolved)
    rdb = open_storage(storage, grace_period=grace_period)
    study = optuna.create_study(storage=rdb, sampler=make_sampler(sampler, cfg.seed),
                                pruner=pruner, study_name=name, direction="maximize", load_if_exists=True)
    _check_identity(study, study_identity(resolved), storage)
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE])  # what optuna-dashboard shows instead of "Objective 0"

    parent = _start_parent(cfg, resolved, name, storage, {"trials": trials, "timeout_s": timeout, "sampler": sampler,
                                                          "pruner": pruner_name})
    result = TuneResult(study_name=name, storage=storage, parent_run_id=parent)
    echo(f"study '{name}' in {display_url(storage)}: {len(study.trials)} trials so far; "
         f"{trials} more, {resolved.epochs} epochs each, sampler {sampler}, pruner {pruner_name}; "
         f"MLflow parent run {parent}")

    started = time.monotonic()
    trial = None
    try:
        while sum(result.states.values()) < trials and (timeout is None or time.monotonic() - started < timeout):
            for lost in fail_stale_trials(study):  # a dead worker's trial: Optuna queues its retry
                _end_lost_run(cfg.tracking_uri, lost, grace_period)
            trial = ask(study)
            trial_started = time.monotonic()
            with trial_heartbeat(rdb, trial_id(rdb, study, trial.number)):
                frozen, note = _run_trial(study, trial, cfg, space, parent, name)
            trial = None
            _record_trial(cfg, study, result, frozen, note, time.monotonic() - trial_started, echo)
    except BaseException as error:
        if trial is not None:  # interrupted inside a trial (Ctrl-C, or a bug): the trial failed
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        _end_parent(cfg, parent, error)
        raise

    distributed.share(None)  # the other processes of multi-process trials: no more trials
    _finish_parent(cfg, study, result, time.monotonic() - started)
    return result


def _start_parent(cfg: RunConfig, resolved: ResolvedRun, name: str, storage: str, budget: dict[str, Any]) -> str:
    """The MLflow parent run of one process's trials of study `name` (tag `tuning.role=parent`)."""
    params = {**resolved.params(), **budget, "objective": OBJECTIVE, "study": name, "storage": display_url(storage)}
    provenance = tracking.provenance_tags("see the trial runs")
    return tracking.start_parent_run(cfg.tracking_uri, resolved.experiment, f"tune-{name}", params,
                                     {**provenance, **cfg.tags, "tuning.role": "parent", "tuning.study": name})


def _record_trial(cfg: RunConfig, study, result: TuneResult, frozen, note: str | None, seconds: float, echo) -> None:
    """Count a finished trial in `result`, print its line, and log the study's best on the parent run."""
    epochs = len(frozen.intermediate_values)
    result.states[frozen.state.name] += 1
    result.trial_epochs += epochs
    echo(_progress_line(study, frozen, note, epochs, seconds))
    best = _best_trial(study)
    if best is not None:
        tracking.log_run_metrics(cfg.tracking_uri, result.parent_run_id, {"study/best_value": best.value},
                                 step=frozen.number)


def _end_parent(cfg: RunConfig, parent: str, error: BaseException) -> None:
    """The parent run of trials stopped by `error`: KILLED on Ctrl-C or SIGTERM, FAILED otherwise."""
    if isinstance(error, KeyboardInterrupt | Terminated):
        reason = "terminated (SIGTERM)" if isinstance(error, Terminated) else "interrupted by the user"
        tracking.end_run(cfg.tracking_uri, parent, "KILLED", reason)
    else:
        tracking.end_run(cfg.tracking_uri, parent, "FAILED", f"{type(error).__name__}: {error}")


def _finish_parent(cfg: RunConfig, study, result: TuneResult, seconds: float) -> None:
    """The parent run ends FINISHED with this process's trial counts and the study's best."""
    parent = result.parent_run_id
    best = _best_trial(study)
    summary = {"study/trials_complete": result.states["COMPLETE"], "study/trials_pruned": result.states["PRUNED"],
               "study/trials_failed": result.states["FAIL"], "study/trial_epochs": result.trial_epochs,
               "study/wall_s": seconds}
    if best is not None:
        result.best_value, result.best_trial, result.best_params = best.value, best.number, dict(best.params)
        summary["study/best_value"] = best.value
        tracking.log_params(cfg.tracking_uri, parent, {f"best/{k}": v for k, v in best.params.items()})
        tracking.set_tags(cfg.tracking_uri, parent, {"tuning.best_trial": best.number,
                                                     "tuning.best_run_id": best.user_attrs.get(RUN_ID_ATTR, "")})
    tracking.log_run_metrics(cfg.tracking_uri, parent, summary, step=len(study.trials))
    tracking.end_run(cfg.tracking_uri, parent, "FINISHED")


def _run_trial(study, trial, base: RunConfig, space: Callable, parent: str, name: str):
    """Train one trial; returns (the finished FrozenTrial, a note for the progress line)."""
    overrides = {**base.method_overrides, **space(trial)}
    tags = {**base.tags, tracking.PARENT_TAG: parent, "tuning.role": "trial", "tuning.study": name,
            "tuning.trial": str(trial.number)}
    cfg = dataclasses.replace(base, method_overrides=overrides, tags=tags, run_name=f"{name}-t{trial.number}")
    trial.set_user_attr(CONFIG_ATTR, trial_recipe(resolve(cfg)))
    try:
        distributed.share((cfg, None, [SharedPruning(None)]))  # the other processes of a multi-process trial
        result = runner.run(cfg, callbacks=[SharedPruning(trial), _TrialRunId(trial)])
    except runner.RunFailed as failure:
        trial.set_user_attr(RUN_ID_ATTR, failure.run_id)
        if isinstance(failure.__cause__, optuna.TrialPruned):
            frozen = study.tell(trial, state=TrialState.PRUNED)
            epochs = len(frozen.intermediate_values)
            tracking.set_tags(base.tracking_uri, failure.run_id, {"tuning.state": "PRUNED", "tuning.pruned": "true",
                                                                  "tuning.pruned_after_epochs": epochs})
            tracking.end_run(base.tracking_uri, failure.run_id, "KILLED")
            return frozen, f"pruned after {epochs} epochs"
        trial.set_user_attr("failure_reason", failure.reason[:2000])
        tracking.set_tags(base.tracking_uri, failure.run_id, {"tuning.state": "FAIL"})
        return study.tell(trial, state=TrialState.FAIL), failure.reason
    trial.set_user_attr(RUN_ID_ATTR, result.run_id)
    value = result.metrics.get(OBJECTIVE, float("nan"))
    if not math.isfinite(value):
        tracking.set_tags(base.tracking_uri, result.run_id, {"tuning.state": "FAIL"})
        return study.tell(trial, state=TrialState.FAIL), f"{OBJECTIVE} is {value}"
    tracking.set_tags(base.tracking_uri, result.run_id, {"tuning.state": "COMPLETE"})
    return study.tell(trial, value), None


class SharedPruning(PyTorchLightningPruningCallback):
    """optuna-integration's `PyTorchLightningPruningCallback`, also for a trial trained by several
    processes: rank 0 (which holds the trial) reports and asks the pruner as in one process, and the
    others (`trial=None`) learn its decision through Lightning's `strategy.broadcast`, so all of them
    stop with `TrialPruned` together. (The library's own multi-process path expects every process to
    hold the trial, as with `ddp_spawn`, and a `check_pruned()` call after `fit`.) The last epoch is
    reported but never pruned: a trial that ran all its epochs has spent its whole budget and completes."""

    def __init__(self, trial):
        super().__init__(trial, monitor=PRUNE_MONITOR)

    def on_fit_start(self, trainer, module):
        pass  # the one-process path of the library, on rank 0 only (below)

    def on_validation_end(self, trainer, module):
        pruned = None
        if trainer.is_global_zero:
            try:
                super().on_validation_end(trainer, module)
            except optuna.TrialPruned as stop:
                last = trainer.max_epochs is not None and module.current_epoch + 1 >= trainer.max_epochs
                pruned = None if last else str(stop)
        if trainer.world_size > 1:
            pruned = trainer.strategy.broadcast(pruned)
        if pruned:
            raise optuna.TrialPruned(pruned)


class _TrialRunId(pl.Callback):
    """The trial names its MLflow run as soon as the run exists, so a retry can end a dead worker's run."""

    def __init__(self, trial):
        self.trial = trial

    def on_fit_start(self, trainer, module):
        self.trial.set_user_attr(RUN_ID_ATTR, trainer.logger.run_id)


def _end_lost_run(tracking_uri: str | None, lost, grace_period: int) -> None:
    run_id = lost.user_attrs.get(RUN_ID_ATTR)
    if run_id and tracking.run_info(tracking_uri, run_id)["status"] == "RUNNING":
        tracking.set_tags(tracking_uri, run_id, {"tuning.state": "FAIL"})
        tracking.end_run(tracking_uri, run_id, "KILLED", f"its worker stopped (no Optuna heartbeat for "
                                                         f"{grace_period} s); trial {lost.number} is retried")


def ask(study):
    """`study.ask()`, which takes a queued trial (a retry) first; its heartbeat is `trial_heartbeat`'s."""
    with warnings.catch_warnings():  # "Heartbeat of storage is supposed to be used with Study.optimize"
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


def trial_id(storage, study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _progress_line(study, frozen, note: str | None, epochs: int, seconds: float) -> str:
    state = frozen.state.name
    if state == "COMPLETE":
        outcome = f"{OBJECTIVE} {frozen.value:.4f}"
    elif state == "PRUNED":
        last = frozen.intermediate_values.get(max(frozen.intermediate_values, default=-1))
        outcome = f"{PRUNE_MONITOR} {last:.4f}, {note}" if last is not None else note or "pruned"
    else:
        outcome = (note or "failed").splitlines()[0][:120]
    best = _best_trial(study)
    best_text = f"best {best.value:.4f} (trial {best.number})" if best is not None else "best -"
    return (f"trial {frozen.number:>3}  {state:<8}  {outcome}  |  {best_text}  |  {epochs} epochs, {seconds:.1f} s  "
            f"{_format_params(frozen.params)}")


# -- the best configuration of a study, as a recipe for `bnnbench run --from-study` ------------------------
def study_recipe(study_name: str, storage: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """The best trial's complete configuration, as recipe values (RunConfig keys and `set`)."""
    storage = storage or default_storage(tracking_uri)
    rdb = open_storage(storage, must_exist=True)
    names = optuna.get_all_study_names(rdb)
    if study_name not in names:
        if not names:
            raise BadInput(f"unknown study '{study_name}': storage '{display_url(storage)}' has no studies")
        raise unknown_choice(f"study in '{display_url(storage)}'", study_name, sorted(names))
    study = optuna.load_study(study_name=study_name, storage=rdb)
    best = _best_trial(study)
    if best is None:
        raise BadInput(f"study '{study_name}' has no completed trial yet ({len(study.trials)} trials, "
                       f"none COMPLETE)")
    recipe = best.user_attrs.get(CONFIG_ATTR)
    if recipe is None:
        raise BadInput(f"study '{study_name}' was not made by 'bnnbench tune': its best trial has no "
                       f"'{CONFIG_ATTR}' attribute")
    recipe = dict(recipe)
    recipe["tags"] = {"tuning.from_study": study_name, "tuning.from_trial": str(best.number),
                      "tuning.from_run_id": best.user_attrs.get(RUN_ID_ATTR, "")}
    return recipe


# -- a study of a fixed budget: a tuned suite's (method, dataset) ------------------------------------------------
BUDGET_ATTR = "bnnbench.budget"  # study user attr: a suite's tuning budget, written once its trials are queued
READY_WAIT_S = 60  # how long a worker waits for the process that created a study to queue its trials


def created_attr(study, key: str, what: str, url: str):
    """The study user attribute `key`, which the process that created `study` writes once it has queued the
    study's trials; waits up to READY_WAIT_S for it (another worker may be queueing them right now)."""
    waited = time.monotonic()
    while (value := study.user_attrs.get(key)) is None:
        if time.monotonic() - waited > READY_WAIT_S:
            raise BadInput(f"study '{study.study_name}' in '{display_url(url)}' has no {what} after {READY_WAIT_S} "
                           f"s: the process that created it stopped before queueing them; delete it (optuna "
                           f"delete-study --study-name {study.study_name} --storage URL) and start again")
        time.sleep(1)
    return value


def take_waiting(study, storage) -> int | None:
    """The id of a WAITING trial of `study` that this process now holds (the storage grants the WAITING →
    RUNNING transition to one process only), or None when none waits."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id_ = trial_id(storage, study, trial.number)
        try:
            if storage.set_trial_state_values(trial_id_, state=TrialState.RUNNING):
                return trial_id_
        except Exception:  # UpdateFinishedTrialError, or a lock another worker won: the next one
            continue
    return None


def requeue(study, number: int) -> None:
    """Fail a trial this process holds and queue a copy of it (its parameters and user attributes) for the
    next worker, as Optuna's `RetryHeartbeatStaleTrialCallback` does for a trial whose worker went silent."""
    frozen = study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)


def budget_units(study) -> list:
    """The latest attempt of each of the study's trials: a retry (system attr `failed_trial`, set by
    `RetryHeartbeatStaleTrialCallback`) replaces the attempt whose worker stopped."""
    latest = {}
    for trial in study.get_trials(deepcopy=False):
        latest[trial.system_attrs.get("failed_trial", trial.number)] = trial
    return list(latest.values())


class BudgetStudy:
    """The Optuna study of one (method, dataset) of a tuned suite: exactly `trials` trials of `epochs`
    epochs, however many processes share it and however often it is interrupted.

    The process that creates the study (`create_study` is atomic) queues all of its trials at once
    (`enqueue_trial` with no parameters: the sampler chooses them when a trial starts); every process
    then takes queued trials one at a time (`take_waiting`) until none waits. A failed or pruned trial
    has used its share of the budget, so a method cannot buy extra trials by failing; a trial whose
    worker stopped (Ctrl-C or SIGTERM here, or no heartbeat for the grace period) is queued again with
    its parameters and runs in its place. Each trial is an ordinary tuning trial (`_run_trial`: a child
    run of this process's parent run, objective `val/acc_best`).
    """

    def __init__(self, cfg: RunConfig, name: str, budget, storage: str, rdb):
        self.cfg, self.name, self.budget, self.url, self.rdb = cfg, name, budget, storage, rdb
        self.resolved = resolve(cfg)
        self.space = search_space_of(cfg.method)
        self.study, self.held = None, None  # the study, and the id of the trial this process holds
        self.result = TuneResult(study_name=name, storage=storage, parent_run_id="")
        self.started = time.monotonic()

    @property
    def recorded_budget(self) -> dict[str, Any]:
        return {"trials": self.budget.trials, "epochs": self.budget.epochs, "pruner": self.budget.pruner,
                "sampler": self.budget.sampler, "seed": self.budget.seed}

    def _load(self):
        return optuna.load_study(study_name=self.name, storage=self.rdb,
                                 sampler=make_sampler(self.budget.sampler, self.budget.seed),
                                 pruner=make_pruner(self.budget.pruner, self.budget.epochs))

    def check(self) -> bool:
        """Load the study if it exists and refuse one of another budget or configuration; whether it exists."""
        if self.name not in optuna.get_all_study_names(self.rdb):
            return False
        self.study = self._load()
        recorded = created_attr(self.study, BUDGET_ATTR, "budget", self.url)
        now = self.recorded_budget
        changed = [f"{k}: study {recorded.get(k)}, suite {now[k]}" for k in now if recorded.get(k) != now[k]]
        if changed:
            raise BadInput(f"study '{self.name}' in '{display_url(self.url)}' was tuned with another budget "
                           f"({', '.join(changed)}); give the budget it was started with, or another suite name")
        _check_identity(self.study, study_identity(self.resolved), self.url)
        return True

    def create(self) -> None:
        """Create the study with its trials queued, or load it when another process was first."""
        if self.study is not None:
            return
        try:
            self.study = optuna.create_study(storage=self.rdb, study_name=self.name, direction="maximize",
                                             sampler=make_sampler(self.budget.sampler, self.budget.seed),
                                             pruner=make_pruner(self.budget.pruner, self.budget.epochs))
        except optuna.exceptions.DuplicatedStudyError:
            self.check()
            return
        _check_identity(self.study, study_identity(self.resolved), self.url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names([OBJECTIVE])
        for _ in range(self.budget.trials):
            self.study.enqueue_trial({})
        self.study.set_user_attr(BUDGET_ATTR, self.recorded_budget)

    def counts(self) -> Counter:
        """The state of each budgeted trial's latest attempt: COMPLETE, PRUNED, FAIL, RUNNING, WAITING."""
        return Counter(t.state.name for t in budget_units(self.study)) if self.study else Counter()

    def take(self):
        """A queued trial this process now holds (after failing the trials of silent workers), or None."""
        for lost in fail_stale_trials(self.study):
            _end_lost_run(self.cfg.tracking_uri, lost, self.rdb.grace_period)
        self.held = take_waiting(self.study, self.rdb)
        return None if self.held is None else optuna.Trial(self.study, self.held)  # what `Study.ask` builds

    def run(self, trial, echo: Callable[[str], None]) -> None:
        """Train one trial; a stop inside it (Ctrl-C, SIGTERM, a bug) queues it again and ends the parent run."""
        if not self.result.parent_run_id:
            self.result.parent_run_id = _start_parent(
                self.cfg, self.resolved, self.name, self.url,
                {k: v for k, v in self.recorded_budget.items() if k not in ("epochs", "seed")})
        started = time.monotonic()
        try:
            with trial_heartbeat(self.rdb, self.held):
                frozen, note = _run_trial(self.study, trial, self.cfg, self.space, self.result.parent_run_id,
                                          self.name)
        except BaseException as error:
            requeue(self.study, trial.number)
            _end_parent(self.cfg, self.result.parent_run_id, error)
            raise
        _record_trial(self.cfg, self.study, self.result, frozen, note, time.monotonic() - started, echo)

    def close(self) -> None:
        """End this process's parent run (if it trained a trial) with the study's best."""
        if self.result.parent_run_id:
            _finish_parent(self.cfg, self.study, self.result, time.monotonic() - self.started)

    def best(self):
        return _best_trial(self.study)

    def tuned_config(self, cell: RunConfig) -> RunConfig | None:
        """`cell` (a suite cell of the defaults) with the best trial's values, tagged with where they came
        from (`tracking.TUNED_TAG`: study, trial, budget, the tuned values and the defaults' configuration
        identity); None while the study has no completed trial."""
        best = self.best()
        if best is None:
            return None
        values = self.space(best)  # a FrozenTrial answers each suggestion with the value the trial used
        tuned = {"study": self.name, "trial": best.number, **self.recorded_budget,
                 "params": {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
                 "defaults_config_id": resolve(cell).config_id}
        tags = {**cell.tags, "tuning.from_study": self.name, "tuning.from_trial": str(best.number),
                "tuning.from_run_id": best.user_attrs.get(RUN_ID_ATTR, ""),
                tracking.TUNED_TAG: json.dumps(tuned, sort_keys=True)}
        return dataclasses.replace(cell, method_overrides={**cell.method_overrides, **values}, tags=tags,
                                   run_name=f"{cell.method}-{cell.dataset}-tuned-s{cell.seed}")
