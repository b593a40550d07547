"""Benchmark suites: a YAML matrix of methods × datasets × seeds, run through `runner.run`.

A suite names its datasets, methods (`all` = every registered one), seeds, and the shared budget
(mode, arch, epochs, batch size, image size), plus per-method config overrides. Each combination
is resolved exactly as `bnnbench run` would resolve it, and skipped when its experiment already holds
a FINISHED run with the same `config_hash` tag and seed: an interrupted suite resumes where it stopped, and a
failed run is retried. One failing run does not stop the suite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnbench.config import RunConfig
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

    def configs(self, tracking_uri: str | None = None, wandb: bool = False) -> list[RunConfig]:
        return [RunConfig(method=m, dataset=d, arch=self.arch, mode=self.mode, epochs=self.epochs,
                          batch_size=self.batch_size, image_size=self.image_size, seed=s, data_dir=self.data_dir,
                          tracking_uri=tracking_uri, experiment=self.experiment,
                          method_overrides=dict(self.overrides.get(m, {})), tags={"suite": self.name}, wandb=wandb,
                          progress_bar=False)  # one line per run instead
                for d in self.datasets for m in self.methods for s in self.seeds]


def load_suite(path: str | Path) -> Suite:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"suite file '{path}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise BadInput(f"suite '{path}' must be a mapping of keys to values")
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
    return Suite(name=data.get("name", path.stem), datasets=tuple(datasets), methods=tuple(methods),
                 seeds=tuple(int(s) for s in _as_list(data.get("seeds", [0]))),
                 **{k: data[k] for k in ("mode", "arch", "epochs", "batch_size", "image_size", "data_dir",
                                         "experiment") if data.get(k) is not None},
                 overrides=overrides)


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def run_suite(suite: Suite, tracking_uri: str | None = None, dry_run: bool = False, wandb: bool = False,
              echo=print) -> dict[str, int]:
    """Run every combination not yet FINISHED; returns counts of ran / skipped / failed runs."""
    from bnnbench import runner, tracking

    configs = suite.configs(tracking_uri, wandb)
    resolved = [runner.resolve(cfg) for cfg in configs]  # every bad name or key is found before any run
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    started = time.perf_counter()
    for index, (cfg, res) in enumerate(zip(configs, resolved, strict=True), start=1):
        label = f"[{index}/{len(configs)}] {cfg.method} on {cfg.dataset} ({res.arch}, {cfg.mode}) seed {cfg.seed}"
        done = tracking.finished_run_ids(tracking_uri, cfg.experiment or cfg.dataset,
                                         tags={"config_hash": runner.config_hash(res)}, params={"seed": str(cfg.seed)})
        if done:
            counts["skipped"] += 1
            echo(f"{label}: skipped, FINISHED run {done[0]} exists")
            continue
        if dry_run:
            counts["ran"] += 1
            echo(f"{label}: would run {res.epochs} epochs")
            continue
        try:
            result = runner.run(cfg)
        except runner.RunFailed as failure:
            counts["failed"] += 1
            echo(f"{label}: {failure}")
            continue
        counts["ran"] += 1
        accuracy = result.metrics.get("test/acc", result.metrics["val/acc_best"])
        echo(f"{label}: acc {accuracy:.4f} in {result.metrics['time/wall_s']:.1f} s "
             f"(suite {time.perf_counter() - started:.0f} s)")
    return counts
