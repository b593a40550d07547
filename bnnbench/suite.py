"""Benchmark suites: a YAML matrix of methods × datasets × seeds, run through `runner.run`.

A suite names its datasets, methods (`all` = every registered one), seeds, and the shared budget
(mode, arch, epochs, batch size, image size), plus per-method config overrides. Each cell is resolved
exactly as `bnnbench run` would resolve it, and every cell's names, values and data are checked before
the first one trains. A cell is identified by its configuration, the code that would train it and its
seed (`bnnbench.identity`):

- a FINISHED run with all three is kept (the cell is skipped); after a change of the training code or
  of torch/Lightning, no old run matches and the cell trains again;
- an interrupted run (KILLED, or RUNNING with its process gone) is resumed from its checkpoint into the
  same MLflow run; one RUNNING with a live owner is left to that owner;
- otherwise (nothing yet, or only FAILED runs) a new run trains. One failing run does not stop the suite.

With an Optuna storage (`bench --storage URL`) the cells are shared by any number of processes on any
machines, through Optuna's queued trials and heartbeat (`SharedSuite`).

A suite with a `tune:` block (`TuneBudget`) first gives every (method, dataset) the same Optuna budget
(`SuiteTuning`: one study of exactly that many trials each, objective `val/acc_best`), then its cells are
the best configuration of each study with each seed, tagged with the study and trial (`tracking.TUNED_TAG`).
The studies live in the suite's storage, so a tuned suite resumes and is shared like any other.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnbench.config import RunConfig, Seed, _yaml_mapping, convert
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS, METHODS, unknown_choice

SUITE_KEYS = ("name", "datasets", "methods", "seeds", "mode", "arch", "epochs", "batch_size", "image_size",
              "data_dir", "experiment", "overrides", "tune")
TUNE_KEYS = ("trials", "epochs", "pruner", "sampler", "seed")


@dataclass(frozen=True)
class TuneBudget:
    """A suite's `tune:` block: the tuning budget every (method, dataset) of the suite gets alike."""

    trials: int  # Optuna trials per (method, dataset), pruned and failed ones included
    epochs: int  # epochs of each trial (the suite's own `epochs` train the best configuration)
    pruner: str = "median"
    sampler: str = "tpe"
    seed: int = 0  # of the sampler and of every trial's training run


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    mode: str = "fair"
    arch: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    data_dir: str = "data"
    experiment: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: TuneBudget | None = None

    def configs(self, tracking_uri: str | None = None, wandb: bool = False, progress: str = "epochs",
                **execution) -> list[RunConfig]:
        """The cells' configs; `execution`: how they run (devices, num_nodes, strategy), not what trains."""
        return [RunConfig(method=m, dataset=d, arch=self.arch, mode=self.mode, epochs=self.epochs,
                          batch_size=self.batch_size, image_size=self.image_size, seed=s, data_dir=self.data_dir,
                          tracking_uri=tracking_uri, experiment=self.experiment,
                          method_overrides=dict(self.overrides.get(m, {})), tags={"suite": self.name}, wandb=wandb,
                          progress=progress, **execution)
                for d in self.datasets for m in self.methods for s in self.seeds]

    def trial_configs(self, tracking_uri: str | None = None, progress: str = "epochs",
                      **execution) -> list[RunConfig]:
        """One config per (method, dataset) for its tuning trials: a cell's, with the budget's epochs and seed."""
        import dataclasses

        first = [cfg for cfg in self.configs(tracking_uri, False, progress, **execution) if cfg.seed == self.seeds[0]]
        return [dataclasses.replace(cfg, epochs=self.tune.epochs, seed=self.tune.seed) for cfg in first]

    def study_name(self, cfg: RunConfig) -> str:
        """The tuning study of `cfg`'s (method, dataset); new training code tunes afresh, as cells retrain."""
        from bnnbench.identity import code_id

        return f"tune-{self.name}-{cfg.method}-{cfg.dataset}-{code_id()}"


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    data = _yaml_mapping(path, "suite")
    for key in data:
        if key not in SUITE_KEYS:
            raise unknown_choice(f"suite key in '{path}'", key, list(SUITE_KEYS))
    methods = data.get("methods", "all")
    methods = METHODS.names() if methods == "all" else [METHODS.check(m) for m in _as_list(methods)]
    datasets = [DATASETS.check(d) for d in _as_list(data.get("datasets", []))]
    if not datasets:
        raise BadInput(f"suite '{path}' names no datasets")
    overrides = data.get("overrides") or {}
    for method in overrides:
        if method not in methods:
            raise unknown_choice(f"method in the overrides of '{path}'", method, methods)
    seeds = []
    for seed in _as_list(data.get("seeds", [0])):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BadInput(f"suite '{path}': seed {seed!r} is not an integer; give seeds: [0, 1, 2]")
        seeds.append(convert("seeds", seed, Seed))
    return Suite(name=data.get("name", path.stem), datasets=tuple(datasets), methods=tuple(methods),
                 seeds=tuple(seeds),
                 **{k: data[k] for k in ("mode", "arch", "epochs", "batch_size", "image_size", "data_dir",
                                         "experiment") if data.get(k) is not None},
                 overrides=overrides, tune=_tune_budget(path, data["tune"]) if "tune" in data else None)


def _tune_budget(path: Path, block) -> TuneBudget:
    """The `tune:` block, or one BadInput naming the bad key or value."""
    if not isinstance(block, dict):
        raise BadInput(f"suite '{path}': tune: must be a mapping like {{trials: 8, epochs: 2, pruner: median}}, "
                       f"not {block!r}")
    for key in block:
        if key not in TUNE_KEYS:
            raise unknown_choice(f"tune key in '{path}'", key, list(TUNE_KEYS))
    if "trials" not in block or "epochs" not in block:
        raise BadInput(f"suite '{path}': tune: needs trials and epochs, e.g. {{trials: 8, epochs: 2}}")
    for key in ("trials", "epochs"):
        value = block[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BadInput(f"suite '{path}': tune {key} {value!r} must be a positive integer")
    seed = block.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadInput(f"suite '{path}': tune seed {seed!r} is not an integer")
    from bnnbench.tuning import PRUNERS, SAMPLERS

    pruner, sampler = block.get("pruner", "median"), block.get("sampler", "tpe")
    if pruner not in PRUNERS:
        raise unknown_choice(f"pruner in the tune block of '{path}'", pruner, list(PRUNERS))
    if sampler not in SAMPLERS:
        raise unknown_choice(f"sampler in the tune block of '{path}'", sampler, list(SAMPLERS))
    return TuneBudget(trials=block["trials"], epochs=block["epochs"], pruner=pruner, sampler=sampler,
                      seed=convert("tune seed", seed, Seed))


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def check_data(resolved: list) -> None:
    """Every distinct dataset of the suite is found and loads, before any cell trains."""
    from bnnbench.runner import build_datamodule

    seen = set()
    for res in resolved:
        key = (res.dataset, res.data_dir, res.mode, res.image_size)
        if key not in seen:
            seen.add(key)
            datamodule = build_datamodule(res)
            datamodule.prepare_data()
            datamodule.setup("fit")


def run_suite(suite: Suite, tracking_uri: str | None = None, dry_run: bool = False, wandb: bool = False,
              echo=print, progress: str = "epochs", storage: str | None = None,
              grace_period: int | None = None, execution: dict | None = None) -> dict[str, int]:
    """Run every cell not yet FINISHED; returns counts of ran / resumed / skipped / failed cells.

    With `storage` (an Optuna RDB URL) the cells are shared by every process running the same suite on
    that storage (`SharedSuite`): this process trains the cells it takes and returns once no cell is
    waiting or running anywhere.
    """
    from bnnbench import distributed, tracking
    from bnnbench.config import resolve

    if storage and dry_run:
        raise BadInput("--dry-run shows one process's plan; with --storage, --status shows every cell's state")
    configs = suite.configs(tracking_uri, wandb, progress, **(execution or {}))
    resolved = [resolve(cfg) for cfg in configs]  # every bad name, key or value is found before any run
    tuning = SuiteTuning(suite, tracking_uri, progress, execution or {}, storage, grace_period) if suite.tune else None
    tracking.check_store(tracking_uri)
    if wandb:
        tracking.check_mirror()
    if tuning:
        tuning.open(create=not dry_run)  # opens the storage; a study of another budget is refused here
    shared = SharedSuite(suite, resolved, storage, grace_period) if storage and not tuning else None
    check_data(resolved)
    counts = {"ran": 0, "resumed": 0, "skipped": 0, "failed": 0}
    if tuning and dry_run:
        tuning.plan(echo)
        counts["ran"] = len(configs)
        return counts
    if tuning:
        tuning.create()
        tuning.run(echo)
        configs, untuned = tuning.tuned(configs)
        for label, reason in untuned:
            echo(f"{label}: not trained, {reason}")
            counts["failed"] += 1
        resolved = [resolve(cfg) for cfg in configs]
        shared = SharedSuite(suite, resolved, storage, grace_period) if storage else None
    if shared:
        shared.join()
    started = time.perf_counter()

    def cell(index: int) -> CellOutcome:
        label = f"[{index + 1}/{len(configs)}] {cell_label(resolved[index])}"
        outcome = _run_cell(configs[index], resolved[index], label, dry_run, echo, started,
                            takeover=shared is not None)
        counts[outcome.kind] += 1
        return outcome

    if shared is None:
        for index in range(len(configs)):
            cell(index)
    else:
        while (index := shared.take(echo)) is not None:
            with shared.holding():
                shared.finish(cell(index))
    distributed.share(None)  # the other processes of multi-process runs: no more runs
    return counts


def cell_label(res) -> str:
    return f"{study_label(res)} seed {res.seed}"


def study_label(res) -> str:
    return f"{res.method} on {res.dataset} ({res.arch}, {res.mode})"


class SuiteTuning:
    """The first part of a tuned suite: one `tuning.BudgetStudy` per (method, dataset), every one with the
    suite's budget, in one Optuna storage (`--storage`, else `optuna.db` beside the MLflow database). Every
    process that runs the suite works on every study with queued trials, then waits for trials running
    elsewhere; the cells (the best configuration of each study, with each seed) train once no trial is
    left anywhere."""

    def __init__(self, suite: Suite, tracking_uri: str | None, progress: str, execution: dict,
                 storage: str | None, grace_period: int | None):
        from bnnbench import tuning
        from bnnbench.config import resolve

        self.suite, self.url = suite, storage or tuning.default_storage(tracking_uri)
        self.grace_period = grace_period or tuning.GRACE_S
        self.configs = suite.trial_configs(tracking_uri, progress, **execution)
        self.labels = [study_label(resolve(cfg)) for cfg in self.configs]
        for cfg in self.configs:
            tuning.search_space_of(cfg.method)  # a method without a search space is refused here
        self.studies: list = []

    def open(self, create: bool = True) -> None:
        """Open the storage and load (and check) the suite's existing studies; `create=False`: a SQLite
        file that does not exist yet is not created either (a dry run, `--status`)."""
        from bnnbench import tuning

        prefix = "sqlite:///"
        if not create and self.url.startswith(prefix) and not Path(self.url[len(prefix):].split("?")[0]).is_file():
            return
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # bnnbench prints a line per trial itself
        rdb = tuning.open_storage(self.url, grace_period=self.grace_period)
        self.studies = [tuning.BudgetStudy(cfg, self.suite.study_name(cfg), self.suite.tune, self.url, rdb)
                        for cfg in self.configs]
        for study in self.studies:
            study.check()

    def create(self) -> None:
        """Create the studies that do not exist yet, each with its trials queued (after the data is checked)."""
        for study in self.studies:
            study.create()

    def plan(self, echo) -> None:
        budget = self.suite.tune
        for index, label in enumerate(self.labels):
            counts = self.studies[index].counts() if self.studies else {}
            done = sum(counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL"))
            echo(f"would tune {label}: {budget.trials} trials × {budget.epochs} epochs ({done} done), "
                 f"pruner {budget.pruner}; then train its best with seeds {', '.join(map(str, self.suite.seeds))}")

    def run(self, echo) -> None:
        """Train queued trials of every study until none waits or runs anywhere."""
        said = False
        while True:
            for label, study in zip(self.labels, self.studies):
                while (trial := study.take()) is not None:
                    study.run(trial, lambda line, label=label: echo(f"tune {label}: {line}"))
            left = sum(study.counts()[state] for study in self.studies for state in ("RUNNING", "WAITING"))
            if not left:
                break
            if not said:
                echo(f"{left} tuning trials run elsewhere; waiting for them (a dead worker's trial is queued again "
                     f"{self.grace_period} s after its last heartbeat)")
                said = True
            time.sleep(self.studies[0].rdb.get_heartbeat_interval())
        for study in self.studies:
            study.close()

    def status(self) -> list[str]:
        """One line per study: how many of its trials have finished, which run, its best."""
        budget, lines = self.suite.tune, []
        for label, study in zip(self.labels, self.studies or [None] * len(self.labels)):
            counts = study.counts() if study else {}
            finished = sum(counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL"))
            best = study.best() if study and counts.get("COMPLETE") else None
            detail = ", ".join(f"{counts[state]} {state.lower()}" for state in ("COMPLETE", "PRUNED", "FAIL",
                                                                                 "RUNNING", "WAITING")
                               if counts.get(state))
            lines.append(f"tuning {label}: {finished} of {budget.trials} trials finished"
                         + (f" ({detail})" if detail else " (not started)")
                         + (f", best val/acc_best {best.value:.4f} (trial {best.number})" if best else ""))
        return lines

    def finished(self) -> bool:
        """Every study exists and has no trial waiting or running."""
        return bool(self.studies) and all(s.study is not None and not (s.counts()["RUNNING"] + s.counts()["WAITING"])
                                          for s in self.studies)

    def tuned(self, configs: list[RunConfig]) -> tuple[list[RunConfig], list[tuple[str, str]]]:
        """The cells with their study's best values, and (label, reason) of those that cannot train."""
        from bnnbench.config import resolve

        studies = {(cfg.method, cfg.dataset): study for cfg, study in zip(self.configs, self.studies)}
        tuned, untuned = [], []
        for cfg in configs:
            study = studies[cfg.method, cfg.dataset]
            cell = study.tuned_config(cfg)
            if cell is None:
                counts = study.counts()
                untuned.append((cell_label(resolve(cfg)), f"study '{study.name}' has no completed trial "
                                f"({counts['FAIL']} failed, {counts['PRUNED']} pruned)"))
            else:
                tuned.append(cell)
        return tuned, untuned


@dataclass
class CellOutcome:
    kind: str  # ran | resumed | skipped | failed
    run_id: str | None = None
    value: float | None = None  # val/acc_best of the cell's FINISHED run
    reason: str | None = None  # why it failed


def _run_cell(cfg: RunConfig, res, label: str, dry_run: bool, echo, started: float, takeover: bool) -> CellOutcome:
    """One cell: skip it (FINISHED, or running elsewhere), resume its interrupted run, or train it.

    `takeover`: this process holds the cell's trial of a shared suite, so a RUNNING run of the cell is a
    dead worker's (Optuna's heartbeat said so), whatever its own heartbeat tag still says.
    """
    from bnnbench import distributed, runner, tracking

    state, run = tracking.recorded_state(res.tracking_uri, res)
    run_id = run["run_id"] if run else None
    if state == "running" and takeover:
        state = "resume"
    if state == "done":
        echo(f"{label}: skipped, FINISHED run {run_id}")
        return CellOutcome("skipped", run_id, run["metrics"].get("val/acc_best"))
    if state == "running":
        echo(f"{label}: skipped, RUNNING (owner alive) run {run_id}")
        return CellOutcome("skipped", run_id)
    if dry_run:
        echo(f"{label}: would {'resume run ' + run_id if run_id else 'run'} {res.epochs} epochs")
        return CellOutcome("resumed" if run_id else "ran")
    if run_id:
        echo(f"{label}: resuming interrupted run {run_id}")
        execution = {k: getattr(cfg, k) for k in ("progress", "wandb", "devices", "num_nodes", "strategy")}
        cfg = runner.resume_config(run_id, res.tracking_uri, owner_known_gone=takeover, **execution)
    distributed.share((cfg, run_id, []))  # what the other processes of a multi-process run train with rank 0
    try:
        result = runner.run(cfg, resume=run_id)
    except runner.RunFailed as failure:
        echo(f"{label}: {failure}")
        return CellOutcome("failed", failure.run_id, reason=failure.reason)
    accuracy = result.metrics.get("test/acc", result.metrics["val/acc_best"])
    echo(f"{label}: acc {accuracy:.4f} in {result.metrics['time/wall_s']:.1f} s "
         f"(suite {time.perf_counter() - started:.0f} s)")
    return CellOutcome("resumed" if run_id else "ran", result.run_id, result.metrics["val/acc_best"])


# -- a suite shared through Optuna's RDB storage -------------------------------------------------------------
CELLS_ATTR = "bnnbench.suite"  # study user attr: the suite's cells, written once every cell is queued
CELL_ATTR = "bnnbench.cell"  # trial user attr: which cell the trial trains (its index in the suite)
WORKER_ATTR = "bnnbench.worker"  # trial user attr: host and process id of the worker that took it
REASON_ATTR = "failure_reason"  # trial user attr of a FAIL trial


class SharedSuite:
    """The cells of a suite as the queued trials of one Optuna study in an RDB storage.

    Optuna does the work-sharing: the first process creates the study (`create_study` is atomic: the
    others get `DuplicatedStudyError` and load it) and queues one trial per cell (`enqueue_trial`);
    every process takes queued trials one at a time (a WAITING → RUNNING transition the database grants
    to one process only), records Optuna's heartbeat while it trains the cell
    (`tuning.trial_heartbeat`) and tells the trial COMPLETE (value: `val/acc_best`) or FAIL. A worker
    that dies stops beating; the next `fail_stale_trials` of any worker fails its trial after the grace
    period, and Optuna's `RetryHeartbeatStaleTrialCallback` queues a copy, whose taker resumes the cell's
    MLflow run from its checkpoint (which must be where that worker can read it: `--checkpoint-dir` on
    a shared file system). A worker stopped by Ctrl-C or SIGTERM queues the copy itself, at once. A
    failed cell stays failed in this study, with its reason in `--status`.

    The study is named after the suite and the code identity (`suite-NAME-CODEID`): new training code
    trains the suite afresh, as it does without a storage. The study's user attribute `bnnbench.suite`
    records every cell's configuration; a process whose suite file differs is refused, naming the
    difference.
    """

    def __init__(self, suite: Suite, resolved: list, storage: str, grace_period: int | None = None,
                 must_exist: bool = False):
        """Opens the storage (a bad URL or a missing driver fails here); `join` takes part in the suite."""
        import optuna

        from bnnbench import tuning
        from bnnbench.identity import code_id

        self.url, self.suite_name = storage, suite.name
        self.grace_period = grace_period or tuning.GRACE_S
        self.storage = tuning.open_storage(storage, must_exist=must_exist, grace_period=self.grace_period)
        self.name = f"suite-{suite.name}-{code_id()}"
        self.cells_now = [{"label": cell_label(r), "config_id": r.config_id, "seed": r.seed,
                           "params": {k: str(v) for k, v in r.params().items() if k != "seed"}} for r in resolved]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.trial = None  # the trial this process holds

    def join(self, create: bool = True) -> None:
        """Create the study and queue the cells, or load it (`create=False`: it must exist); refuse a
        suite whose cells differ from the recorded ones."""
        import optuna

        if not create and self.name not in (names := optuna.get_all_study_names(self.storage)):
            other = [n for n in names if n.startswith(f"suite-{self.suite_name}-")]
            raise BadInput(f"no shared suite '{self.suite_name}' of this code ('{self.name}') in '{self.display_url}'"
                           + (f" (it holds {', '.join(other)}: other training code)" if other else "")
                           + "; start workers with 'bnnbench bench SUITE --storage URL'")
        try:
            self.study = optuna.create_study(storage=self.storage, study_name=self.name, direction="maximize")
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=self.name, storage=self.storage)
        else:
            for index, cell in enumerate(self.cells_now):
                self.study.enqueue_trial({}, user_attrs={CELL_ATTR: index, "label": cell["label"]})
            self.study.set_user_attr(CELLS_ATTR, self.cells_now)
        from bnnbench.tuning import created_attr

        self._check_cells(created_attr(self.study, CELLS_ATTR, "cells", self.url))

    @property
    def display_url(self) -> str:
        from bnnbench.tuning import display_url

        return display_url(self.url)

    def _check_cells(self, recorded: list) -> None:
        if [(c["config_id"], c["seed"]) for c in recorded] == [(c["config_id"], c["seed"]) for c in self.cells_now]:
            return
        was, now = {c["label"]: c for c in recorded}, {c["label"]: c for c in self.cells_now}
        changed = [label for label in now if label in was and was[label]["config_id"] != now[label]["config_id"]]
        parts = []
        if changed:
            a, b = was[changed[0]]["params"], now[changed[0]]["params"]
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            parts.append(f"{changed[0]}: " + ", ".join(f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in keys[:4]))
        for where, labels in (("the storage", [x for x in now if x not in was]),
                              ("the file", [x for x in was if x not in now])):
            if labels:
                parts.append(f"not in {where}: {', '.join(labels[:3])}{' …' if len(labels) > 3 else ''}")
        raise BadInput(f"the suite in '{self.display_url}' (study '{self.name}') differs from this file "
                       f"({'; '.join(parts) or 'its cells are in another order'}); give the file it was started "
                       f"with, or another storage or suite name")

    def take(self, echo) -> int | None:
        """The index of a cell this process now holds; waits while cells run elsewhere (one of them may
        be a dead worker's, queued again after the grace period); None once no cell waits or runs."""
        import os
        import platform

        from optuna.trial import TrialState

        from bnnbench import tuning

        said = False
        while True:
            tuning.fail_stale_trials(self.study)
            trial_id = tuning.take_waiting(self.study, self.storage)
            if trial_id is not None:
                trial = self.storage.get_trial(trial_id)
                self.trial = (trial, trial_id)
                self.storage.set_trial_user_attr(trial_id, WORKER_ATTR, f"{platform.node()}:{os.getpid()}")
                return trial.user_attrs[CELL_ATTR]
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return None
            if not said:
                echo(f"no cell waiting, {len(running)} running elsewhere; waiting for them (a dead worker's cell "
                     f"is taken over {self.grace_period} s after its last heartbeat)")
                said = True
            time.sleep(self.storage.get_heartbeat_interval())

    @contextlib.contextmanager
    def holding(self):
        """Optuna's heartbeat of the held trial while the body trains its cell; an exception (Ctrl-C,
        SIGTERM, a bug) fails the trial and queues a copy for another worker at once."""

        from bnnbench import tuning

        trial, trial_id = self.trial
        try:
            with tuning.trial_heartbeat(self.storage, trial_id):
                yield
        except BaseException as error:
            self.storage.set_trial_user_attr(trial_id, REASON_ATTR, f"worker stopped: {type(error).__name__}")
            tuning.requeue(self.study, trial.number)
            raise
        finally:
            self.trial = None

    def finish(self, outcome: CellOutcome) -> None:
        from optuna.trial import TrialState

        from bnnbench.tuning import RUN_ID_ATTR

        trial, trial_id = self.trial
        if outcome.run_id:
            self.storage.set_trial_user_attr(trial_id, RUN_ID_ATTR, outcome.run_id)
        if outcome.value is None:
            self.storage.set_trial_user_attr(trial_id, REASON_ATTR, (outcome.reason or "no val/acc_best")[:2000])
            self.study.tell(trial.number, state=TrialState.FAIL)
        else:
            self.study.tell(trial.number, outcome.value)

    def status(self) -> list[dict[str, Any]]:
        """Each cell's latest trial: state (waiting, running, done, failed), run id, worker, value, reason,
        and how many trials the cell has had (a dead or stopped worker's cell has a retry)."""
        from bnnbench.tuning import RUN_ID_ATTR

        trials: dict[int, list] = {}
        for trial in self.study.get_trials(deepcopy=False):
            trials.setdefault(trial.user_attrs.get(CELL_ATTR), []).append(trial)
        words = {"WAITING": "waiting", "RUNNING": "running", "COMPLETE": "done", "FAIL": "failed"}
        rows = []
        for index, cell in enumerate(self.cells_now):
            latest = max(trials[index], key=lambda t: t.number)
            attrs = latest.user_attrs
            rows.append({"cell": index + 1, "label": cell["label"], "state": words[latest.state.name],
                         "attempts": len(trials[index]), "run_id": attrs.get(RUN_ID_ATTR), "value": latest.value,
                         "worker": attrs.get(WORKER_ATTR), "reason": attrs.get(REASON_ATTR)})
        return rows
