"""`run(cfg)`: the one place where a dataset, a method, a trainer and the tracking are wired together.

The CLI, the tuner, the suite runner and the tests all call it. Everything the user got wrong is
found before an MLflow run exists (names, `--set` keys and types, the data directory), so bad input
records nothing. Once the run exists it ends FINISHED only if training and testing completed;
an exception marks it FAILED with the reason, Ctrl-C marks it KILLED.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from bnnbench import tracking
from bnnbench.config import RunConfig, apply_overrides
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS, METHODS, unknown_choice


@dataclass(frozen=True)
class ResolvedRun:
    """A RunConfig with every default filled in: what actually runs, and what MLflow records."""

    cfg: RunConfig
    method_cls: type
    dataset_cls: type
    arch: str
    epochs: int
    batch_size: int
    image_size: int
    method_config: Any

    def params(self) -> dict[str, Any]:
        c = self.cfg
        params = {"method": c.method, "dataset": c.dataset, "arch": self.arch, "mode": c.mode, "seed": c.seed,
                  "epochs": self.epochs, "batch_size": self.batch_size, "image_size": self.image_size,
                  "precision": c.precision, "compile": c.compile}
        params.update(dataclasses.asdict(self.method_config))
        return params

    @property
    def run_name(self) -> str:
        return f"{self.cfg.method}-{self.cfg.dataset}-{self.arch}-{self.cfg.mode}-s{self.cfg.seed}"


class RunFailed(RuntimeError):
    """Training or testing raised; the MLflow run `run_id` is marked FAILED with `reason`."""

    def __init__(self, run_id: str, reason: str):
        super().__init__(f"run {run_id} FAILED: {reason}")
        self.run_id, self.reason = run_id, reason


@dataclass
class RunResult:
    run_id: str
    status: str  # FINISHED, FAILED or KILLED
    metrics: dict[str, float] = field(default_factory=dict)
    experiment: str = ""


def resolve(cfg: RunConfig) -> ResolvedRun:
    """Fill defaults (dataset < method paper recipe < explicit) and validate names and overrides."""
    from bnnbench import archs

    method_cls = METHODS.get(cfg.method)
    dataset_cls = DATASETS.get(cfg.dataset)
    recipe = method_cls.paper_recipe if cfg.mode == "paper" else {}
    arch = cfg.arch or recipe.get("arch") or dataset_cls.default_arch
    if arch not in archs.ARCHS:
        raise unknown_choice("architecture", arch, sorted(archs.ARCHS))
    method_config = apply_overrides(method_cls.default_config(cfg.mode), cfg.method_overrides,
                                    what=f"--set key for method '{cfg.method}'")
    return ResolvedRun(
        cfg=cfg, method_cls=method_cls, dataset_cls=dataset_cls, arch=arch,
        epochs=cfg.epochs or recipe.get("epochs") or dataset_cls.default_epochs,
        batch_size=cfg.batch_size or recipe.get("batch_size") or dataset_cls.default_batch_size,
        image_size=cfg.image_size or recipe.get("image_size") or dataset_cls.image_size,
        method_config=method_config,
    )


def build_method(resolved: ResolvedRun):
    d = resolved.dataset_cls
    return resolved.method_cls(resolved.method_config, arch=resolved.arch, num_classes=d.num_classes,
                               in_channels=d.in_channels, image_size=resolved.image_size, mode=resolved.cfg.mode,
                               epochs=resolved.epochs)


def resolved_dict(resolved: ResolvedRun) -> dict[str, Any]:
    """The resolved config as plain data: run keys at the top, method fields under `set` (a recipe)."""
    c = resolved.cfg
    run = {k: getattr(c, k) for k in ("method", "dataset", "mode", "seed", "data_dir")}
    run.update(arch=resolved.arch, epochs=resolved.epochs, batch_size=resolved.batch_size,
               image_size=resolved.image_size)
    method = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(resolved.method_config).items()}
    return {**run, "set": method}


def config_yaml(resolved: ResolvedRun) -> str:
    import yaml

    return yaml.safe_dump(resolved_dict(resolved), sort_keys=False)


def config_hash(resolved: ResolvedRun) -> str:
    """A short digest of the resolved configuration, without the seed and where the data lives.

    Tagged on every run as `config_hash`, so the seeds of one configuration share it (in the MLflow UI
    too); the suite runner skips a (config_hash, seed) that already has a FINISHED run.
    """
    import hashlib
    import json

    data = resolved_dict(resolved)
    data.pop("data_dir")
    data.pop("seed")
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _device_name(trainer) -> str:
    import torch

    root = trainer.strategy.root_device
    if root.type == "cuda":
        return torch.cuda.get_device_name(root)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(cfg: RunConfig, callbacks: list | None = None) -> RunResult:
    """Train, validate and test one configuration and record it in MLflow; returns the run's metrics."""
    from bnnbench import cost

    resolved = resolve(cfg)
    datamodule = resolved.dataset_cls(data_dir=cfg.data_dir, batch_size=resolved.batch_size,
                                      image_size=resolved.image_size, seed=cfg.seed, mode=cfg.mode)
    datamodule.prepare_data()
    datamodule.setup("fit")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    method = build_method(resolved)
    if cfg.compile:
        import torch

        # Dynamo caches compiled graphs per forward *code*, shared by every network of that class, and
        # falls back to eager, with only a log warning, after 8 of them: in a suite or a tuning study
        # run in one process the later runs would silently train uncompiled. Each run starts afresh.
        torch._dynamo.reset()
        method.model = torch.compile(method.model)
    size = (resolved.dataset_cls.in_channels, resolved.image_size, resolved.image_size)
    costs = cost.count(method.model, size)  # on a copy, before the run exists: a counting gap records nothing

    with tempfile.TemporaryDirectory(prefix="bnnbench-ckpt-") as checkpoint_dir:
        checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, monitor="val/acc", mode="max", save_top_k=1,
                                     save_weights_only=True)
        first_step = FirstStepTimer()
        trainer = pl.Trainer(max_epochs=resolved.epochs, accelerator=cfg.accelerator, devices=1,
                             precision=cfg.precision, callbacks=[checkpoint, first_step, *(callbacks or [])],
                             num_sanity_val_steps=0,
                             enable_progress_bar=cfg.progress_bar, enable_model_summary=False,
                             log_every_n_steps=1, logger=False, default_root_dir=checkpoint_dir)
        params = resolved.params()
        params.update({f"data/{k}_size": v for k, v in datamodule.split_sizes.items()})
        if getattr(datamodule, "skipped_files", None) is not None:
            params["data/skipped_images"] = len(datamodule.skipped_files)
        experiment = cfg.experiment or cfg.dataset
        tags = {**tracking.provenance_tags(_device_name(trainer)), "config_hash": config_hash(resolved), **cfg.tags}
        run_name = tags.pop(tracking.RUN_NAME_TAG, resolved.run_name)  # the tuner names its trials
        logger = tracking.start_run(cfg.tracking_uri, experiment, run_name, params, tags)
        mirror = (tracking.wandb_logger(experiment, run_name, tags.get(tracking.PARENT_TAG), params, tags)
                  if cfg.wandb else None)
        trainer.loggers = [logger] + ([mirror] if mirror else [])
        started = time.perf_counter()
        try:
            tracking.log_metrics(logger, costs.metrics())
            tracking.log_text(logger, costs.csv(), "cost_layers.csv")
            trainer.fit(method, datamodule=datamodule)
            if trainer.interrupted:
                raise KeyboardInterrupt
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            metrics["val/acc_best"] = method.val_acc_best
            metrics.update(costs.metrics())
            if datamodule.has_test:
                trainer.test(method, datamodule=datamodule, ckpt_path="best", verbose=False)
                metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
            wall = time.perf_counter() - started
            metrics["time/wall_s"] = wall
            metrics["time/epoch_s"] = wall / max(trainer.current_epoch, 1)
            metrics["time/first_step_s"] = first_step.seconds  # includes compilation with --compile
            tracking.log_metrics(logger, {"time/wall_s": wall, "time/epoch_s": metrics["time/epoch_s"],
                                          "time/first_step_s": first_step.seconds,
                                          "epochs_completed": trainer.current_epoch}, step=trainer.global_step)
            _log_artifacts(logger, resolved, method, datamodule)
        except (KeyboardInterrupt, SystemExit):
            # Lightning turns Ctrl-C into SystemExit after its own (FAILED) finalize; we say KILLED.
            _finish(cfg.tracking_uri, logger, mirror, "KILLED", "interrupted by the user")
            raise KeyboardInterrupt from None
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            _finish(cfg.tracking_uri, logger, mirror, "FAILED", reason)
            raise RunFailed(logger.run_id, reason) from error
        if mirror:
            mirror.log_metrics({k: v for k, v in metrics.items() if k.startswith(("cost/", "time/", "val/acc_best"))})
        _finish(cfg.tracking_uri, logger, mirror, "FINISHED")
    return RunResult(run_id=logger.run_id, status="FINISHED", metrics=metrics, experiment=experiment)


class FirstStepTimer(pl.Callback):
    """Seconds of the first training step: with `compile` it is mostly compilation, reported once."""

    seconds = float("nan")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 0:
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == 1 and self.seconds != self.seconds:
            self.seconds = time.perf_counter() - self._started


def _finish(uri: str | None, logger, mirror, status: str, reason: str | None = None) -> None:
    tracking.end_run(uri, logger.run_id, status, reason)
    if mirror is not None:
        tracking.finish_wandb(mirror, status)


def _log_artifacts(logger, resolved: ResolvedRun, method, datamodule) -> None:
    """The resolved config as YAML, the confusion matrix and the learning curves as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracking.log_text(logger, config_yaml(resolved), "config.yaml")
    if method.confusion_matrix is not None:
        split = "test" if datamodule.has_test else "val (best epoch)"
        figure = confusion_figure(method.confusion_matrix, datamodule.class_names, f"{resolved.run_name}: {split}")
        tracking.log_figure(logger, figure, "confusion_matrix.png")
        plt.close(figure)
    figure = curves_figure({key: tracking.metric_history(logger, key)
                            for key in ("train/loss", "val/loss", "train/acc", "val/acc")}, resolved.run_name)
    tracking.log_figure(logger, figure, "curves.png")
    plt.close(figure)


def confusion_figure(matrix, class_names, title: str):
    import matplotlib.pyplot as plt

    n = matrix.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    figure, ax = plt.subplots(figsize=(1.5 + 0.45 * n, 1 + 0.45 * n))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(names, rotation=90)
    ax.set_yticklabels(names)
    for (i, j), count in zip(((i, j) for i in range(n) for j in range(n)), matrix.flatten().tolist()):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > matrix.max().item() / 2 else "black")
    return figure


def curves_figure(histories: dict[str, list[tuple[int, float]]], title: str):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, quantity in zip(axes, ("loss", "acc")):
        for split in ("train", "val"):
            points = histories.get(f"{split}/{quantity}", [])
            if points:
                ax.plot(range(1, len(points) + 1), [v for _, v in points], label=split, marker=".")
        ax.set(xlabel="epoch", ylabel=quantity, title=f"{title}: {quantity}")
        ax.legend()
    return figure


__all__ = ["BadInput", "ResolvedRun", "RunFailed", "RunResult", "resolve", "run"]
