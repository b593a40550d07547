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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnbench.config import RunConfig, Seed, _yaml_mapping, convert
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS, METHODS, unknown_choice

SUITE_KEYS = ("name", "datasets", "methods", "seeds", "mode", "arch", "epochs", "batch_size", "image_size",
              "data_dir", "experiment", "overrides")


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

    def configs(self, tracking_uri: str | None = None, wandb: bool = False,
                progress: str = "epochs") -> list[RunConfig]:
        return [RunConfig(method=m, dataset=d, arch=self.arch, mode=self.mode, epochs=self.epochs,
                          batch_size=self.batch_size, image_size=self.image_size, seed=s, data_dir=self.data_dir,
                          tracking_uri=tracking_uri, experiment=self.experiment,
                          method_overrides=dict(self.overrides.get(m, {})), tags={"suite": self.name}, wandb=wandb,
                          progress=progress)
                for d in self.datasets for m in self.methods for s in self.seeds]


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
                 overrides=overrides)


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def cell_state(tracking_uri: str | None, resolved) -> tuple[str, str | None]:
    """What to do with one cell: ("done" | "running" | "resume" | "new", the run id it concerns)."""
    from bnnbench import tracking
    from bnnbench.identity import code_id

    runs = [run for run in tracking.runs_with(tracking_uri, resolved.experiment,
                                              {tracking.CONFIG_ID_TAG: resolved.config_id,
                                               tracking.CODE_ID_TAG: code_id()}, resolved.seed)
            if "tuning.role" not in run["tags"]]  # a tuning trial is no cell of a suite
    finished = [run for run in runs if run["status"] == "FINISHED"]
    if finished:
        return "done", finished[0]["run_id"]
    alive = [run for run in runs if run["status"] == "RUNNING" and tracking.owner_gone(run["tags"]) is None]
    if alive:
        return "running", alive[0]["run_id"]
    interrupted = [run for run in runs if run["status"] in ("KILLED", "RUNNING")]  # RUNNING: its owner is gone
    return ("resume", interrupted[0]["run_id"]) if interrupted else ("new", None)


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
              echo=print, progress: str = "epochs") -> dict[str, int]:
    """Run every cell not yet FINISHED; returns counts of ran / resumed / skipped / failed cells."""
    from bnnbench import runner, tracking
    from bnnbench.config import resolve

    configs = suite.configs(tracking_uri, wandb, progress)
    resolved = [resolve(cfg) for cfg in configs]  # every bad name, key or value is found before any run
    tracking.check_store(tracking_uri)
    if wandb:
        tracking.check_mirror()
    check_data(resolved)
    counts = {"ran": 0, "resumed": 0, "skipped": 0, "failed": 0}
    started = time.perf_counter()
    for index, (cfg, res) in enumerate(zip(configs, resolved, strict=True), start=1):
        label = f"[{index}/{len(configs)}] {cfg.method} on {cfg.dataset} ({res.arch}, {cfg.mode}) seed {cfg.seed}"
        state, run_id = cell_state(tracking_uri, res) if tracking.store_exists(tracking_uri) else ("new", None)
        if state in ("done", "running"):
            counts["skipped"] += 1
            echo(f"{label}: skipped, {'FINISHED' if state == 'done' else 'RUNNING (owner alive)'} run {run_id}")
            continue
        if dry_run:
            counts["ran"] += 1
            echo(f"{label}: would {'resume run ' + run_id if run_id else 'run'} {res.epochs} epochs")
            continue
        try:
            if run_id:
                echo(f"{label}: resuming interrupted run {run_id}")
                result = runner.run(runner.resume_config(run_id, tracking_uri, progress=progress, wandb=wandb),
                                    resume=run_id)
            else:
                result = runner.run(cfg)
        except runner.RunFailed as failure:
            counts["failed"] += 1
            echo(f"{label}: {failure}")
            continue
        counts["resumed" if run_id else "ran"] += 1
        accuracy = result.metrics.get("test/acc", result.metrics["val/acc_best"])
        echo(f"{label}: acc {accuracy:.4f} in {result.metrics['time/wall_s']:.1f} s "
             f"(suite {time.perf_counter() - started:.0f} s)")
    return counts
