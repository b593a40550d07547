"""`run(cfg)`: the one place where a dataset, a method, a trainer and the tracking are wired together.

The CLI, the tuner, the suite runner and the tests all call it, as a short sequence: resolve the run
(`config.resolve`), check the store, load the data and build the network (everything the user can get
wrong fails here, before an MLflow run exists, so bad input records nothing), then inside a
`tracking.RecordedRun` (which owns the MLflow status, SIGTERM and the W&B mirror) fit and test, with
cost, timing, artifacts, the heartbeat and resumable state as Lightning callbacks.
A method config with `distill` on gets its teacher first (`teacher_run_id`): given, reused or trained.

Checkpoints are complete (model, optimizers, LR schedulers, loops, callbacks, random generators) and
written every epoch to `<checkpoint root>/<run id>/` (beside a SQLite store by default), atomically.
`run(cfg, resume=RUN_ID)` continues an interrupted run into the same MLflow run from its last
checkpoint: on the CPU its final metrics equal an uninterrupted run's with the same seed.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import warnings
from dataclasses import dataclass, field

import lightning.pytorch as pl

from bnnbench import callbacks as cb
from bnnbench import distributed, tracking
from bnnbench.config import ResolvedRun, RunConfig, resolve
from bnnbench.errors import BadInput, RunFailed, Terminated

log = logging.getLogger("bnnbench")


@dataclass
class RunResult:
    """A FINISHED run (anything else raises): its id, experiment and the latest value of every metric."""

    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    experiment: str = ""


def build_method(resolved: ResolvedRun):
    d = resolved.dataset_cls
    return resolved.method_cls(resolved.method_config, arch=resolved.arch, num_classes=d.num_classes,
                               in_channels=d.in_channels, image_size=resolved.image_size, mode=resolved.mode,
                               epochs=resolved.epochs)


def build_datamodule(resolved: ResolvedRun):
    return resolved.dataset_cls(data_dir=resolved.data_dir, batch_size=resolved.batch_size,
                                image_size=resolved.image_size, seed=resolved.seed, mode=resolved.mode)


def uses_cuda(accelerator: str) -> bool:
    import torch

    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def device_name(accelerator: str) -> str:
    import platform

    import torch

    if uses_cuda(accelerator):
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(cfg: RunConfig, callbacks: list | None = None, resume: str | None = None) -> RunResult:
    """Train, validate and test one configuration, recorded in MLflow; `resume` continues that run."""
    from bnnbench import cost

    resolved = resolve(cfg)
    tracking.check_store(resolved.tracking_uri)
    if resolved.wandb:
        tracking.check_mirror()
    teacher = teacher_run_id(resolved)  # a distilling method's teacher, trained first if none is given
    if teacher is not None:
        resolved = dataclasses.replace(resolved, tags={**resolved.tags, TEACHER_TAG: teacher})
    datamodule = build_datamodule(resolved)
    datamodule.prepare_data()
    datamodule.setup("fit")

    pl.seed_everything(resolved.seed, workers=True, verbose=False)
    method = build_method(resolved)
    if teacher is not None:
        method.load_teacher(resolved.tracking_uri, teacher)  # a bad run id fails here, before the run exists
    size = (resolved.dataset_cls.in_channels, resolved.image_size, resolved.image_size)
    costs = cost.count(method.model, size)  # on a copy, before the run exists: a counting gap records nothing
    main = distributed.is_main()  # with several processes, rank 0 records; the others follow it
    if main:
        warn_if_heavy(resolved, method.model, costs, datamodule.split_sizes["train"])
    if resolved.compile:
        import torch

        # Dynamo caches compiled graphs per forward *code*, shared by every network of that class, and
        # falls back to eager, with only a log warning, after 8 of them: in a suite or a tuning study
        # run in one process the later runs would silently train uncompiled. Each run starts afresh.
        torch._dynamo.reset()
        method.model = torch.compile(method.model)

    recorded = tracking.RecordedRun if main else tracking.FollowerRun
    with recorded(resolved, datamodule.extra_params(), device_name(resolved.accelerator), resume_id=resume) as record:
        if not record.resumed:  # the MLflow dataset input: name, digest, source, split sizes (logged once)
            record.log_dataset(datamodule.describe())
        trainer, best = build_trainer(resolved, record, datamodule, costs, callbacks or [])
        last = record.checkpoint_dir / cb.LatestCheckpoint.FILENAME
        with warnings.catch_warnings():
            # Resuming into the run's own checkpoint folder is the point, not a hazard to warn about.
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            trainer.fit(method, datamodule=datamodule, ckpt_path=last if record.resumed and last.is_file() else None)
        if datamodule.has_test:
            trainer.test(method, datamodule=datamodule, ckpt_path=best.best_model_path, verbose=False)
        if main:
            from bnnbench import export  # the best epoch's network as evaluated (tested), as the run's MLflow model

            network = export.evaluation_network(method, None if datamodule.has_test else best.best_model_path)
            record.log_model(network, export.example_images(datamodule))
        metrics = record.metrics()
    return RunResult(run_id=record.run_id, metrics=metrics, experiment=resolved.experiment)


TEACHER_TAG = "bnnbench.teacher_run_id"  # the tag that names a distilled run's teacher run


def teacher_run_id(resolved: ResolvedRun) -> str | None:
    """The teacher of a method config with `distill` on (ReActNet): its `teacher_run_id`, or else an `fp` run
    on the same dataset, arch, mode, epochs, batch, image size and seed, recorded as an ordinary run: a
    FINISHED one of that configuration and code identity (as a suite finds a done cell), or one trained now.
    None when the method does not distill."""
    config = resolved.method_config
    if not getattr(config, "distill", False):
        return None
    if getattr(config, "teacher_run_id", None) is not None:
        return config.teacher_run_id
    teacher = RunConfig(method="fp", dataset=resolved.dataset, arch=resolved.arch, mode=resolved.mode,
                        epochs=resolved.epochs, batch_size=resolved.batch_size, image_size=resolved.image_size,
                        seed=resolved.seed, precision=resolved.precision, compile=resolved.compile,
                        data_dir=resolved.data_dir, experiment=resolved.experiment,
                        tracking_uri=resolved.tracking_uri, checkpoint_dir=resolved.checkpoint_dir,
                        accelerator=resolved.accelerator, devices=resolved.devices, num_nodes=resolved.num_nodes,
                        strategy=resolved.strategy, progress=resolved.progress, wandb=resolved.wandb)
    state, found = tracking.recorded_state(resolved.tracking_uri, resolve(teacher))
    if state == "done":
        return found["run_id"]
    log.info(f"training the full-precision teacher of {resolved.run_name} first")
    return run(teacher).run_id


def build_trainer(resolved: ResolvedRun, record: tracking.RecordedRun, datamodule, costs, callbacks: list):
    """The run's Lightning trainer and its best-epoch checkpoint callback (what `test` evaluates)."""
    checkpoints = record.checkpoint_dir
    # The best epoch (tested at the end) and the latest one (resumed from).
    best = pl.callbacks.ModelCheckpoint(dirpath=checkpoints, filename="best-{epoch}", monitor="val/acc",
                                        mode="max", save_top_k=1)
    shown = resolved.progress if distributed.is_main() else "none"
    bar = shown == "bar" and sys.stderr.isatty()
    lines = shown != "none" and not bar
    progress = [cb.StderrProgressBar()] if bar else [cb.EpochLines(resolved.run_name)] if lines else []
    processes = resolved.devices * resolved.num_nodes
    strategy = "ddp" if resolved.strategy == "auto" and processes > 1 else resolved.strategy
    loggers = [logger for logger in (record.logger, record.mirror) if logger is not None]
    trainer = pl.Trainer(
        max_epochs=resolved.epochs, accelerator=resolved.accelerator, devices=resolved.devices,
        num_nodes=resolved.num_nodes, strategy=strategy, precision=resolved.precision,
        # Each process takes its share of every batch itself (`data.base.ProcessShare`); BatchNorm
        # statistics over the whole batch need CUDA (SyncBatchNorm refuses CPU modules).
        use_distributed_sampler=False, sync_batchnorm=processes > 1 and uses_cuda(resolved.accelerator),
        callbacks=[best, cb.LatestCheckpoint(record, checkpoints), cb.RandomState(),
                   cb.Timing(record, datamodule.has_test), cb.Heartbeat(record),
                   cb.CostMetrics(costs, record),
                   cb.Artifacts(record, resolved.run_name, datamodule.has_test, datamodule.class_names),
                   *progress, *callbacks],
        plugins=[cb.AtomicCheckpointIO()], logger=loggers or False,
        num_sanity_val_steps=0, enable_progress_bar=bar, enable_model_summary=False,
        log_every_n_steps=1, default_root_dir=checkpoints)
    return trainer, best


HEAVY = 10  # a configuration this many times the MACs of its dataset's default network gets a warning


def warn_if_heavy(resolved: ResolvedRun, model, costs, train_images: int) -> None:
    """One warning line when a run is far heavier than its dataset's default (paper mode on digits builds
    a 224-px network), with its MACs per image and an epoch time estimated from one timed forward pass
    (a training step ≈ 3 forward passes)."""
    import time

    import torch

    from bnnbench import archs, cost

    d = resolved.dataset_cls
    if (resolved.arch, resolved.image_size) == (d.default_arch, d.image_size):
        return
    macs = costs.fp_macs + costs.bwn_macs + costs.bops
    default_size = (d.in_channels, d.image_size, d.image_size)
    default = cost.count(archs.build(d.default_arch, d.num_classes, d.in_channels, d.image_size), default_size)
    ratio = macs / max(default.fp_macs + default.bwn_macs + default.bops, 1)
    if ratio < HEAVY:
        return
    was_training = model.training
    model.eval()
    with torch.no_grad():
        started = time.perf_counter()
        model(torch.zeros(1, d.in_channels, resolved.image_size, resolved.image_size))
        forward_s = time.perf_counter() - started
    model.train(was_training)
    minutes = 3 * forward_s * train_images / 60
    log.warning(f"{resolved.arch} at {resolved.image_size} px is {macs / 1e9:.3g} G MACs per image, {ratio:,.0f}× "
                f"the default of {resolved.dataset} ({d.default_arch} at {d.image_size} px); an epoch of "
                f"{train_images:,} images takes about {minutes:,.0f} min here (from one timed forward pass)")


def resume_config(run_id: str, tracking_uri: str | None, owner_known_gone: bool = False, **where) -> RunConfig:
    """The RunConfig of an interrupted run, from the recipe it recorded; BadInput if it cannot resume.

    A run can resume when it is KILLED, or RUNNING with its owner gone (`tracking.owner_gone`, or
    `owner_known_gone`: a shared suite's worker holds the cell because Optuna's heartbeat declared the
    previous holder dead). `where` (checkpoint_dir, progress, accelerator, wandb) sets how it runs now,
    not what it trains.
    """
    tracking.check_store(tracking_uri)
    info = tracking.run_info(tracking_uri, run_id)
    status, tags = info["status"], info["tags"]
    if status == "FINISHED":
        raise BadInput(f"run {run_id} is FINISHED: there is nothing to resume")
    if status == "FAILED":
        raise BadInput(f"run {run_id} FAILED ({tags.get('failure_reason', 'no reason recorded')}); start a new run "
                       f"instead of resuming it")
    if status == "RUNNING" and not owner_known_gone and tracking.owner_gone(tags) is None:
        raise BadInput(f"run {run_id} is still running (process {tags.get(tracking.PID_TAG)} on "
                       f"{tags.get(tracking.HOST_TAG)}); resume it only once that process is gone")
    if not info["recipe"]:
        raise BadInput(f"run {run_id} has no config.yaml artifact: it was not recorded by this bnnbench")
    recipe = dict(info["recipe"])
    overrides = recipe.pop("set", None) or {}
    keep = {k: v for k, v in tags.items() if k in ("suite", tracking.PARENT_TAG) or k.startswith("tuning.")}
    checkpoint_dir = where.pop("checkpoint_dir", None) or tags.get(tracking.CHECKPOINT_TAG)
    return RunConfig(**recipe, method_overrides=overrides, tracking_uri=tracking_uri, tags=keep,
                     run_name=tags.get(tracking.RUN_NAME_TAG), checkpoint_dir=checkpoint_dir, **where)


__all__ = ["BadInput", "ResolvedRun", "RunFailed", "RunResult", "Terminated", "resolve", "resume_config", "run"]
