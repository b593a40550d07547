"""Lightning callbacks the runner gives every run: cost, timing, artifacts, heartbeat, resumable state.

Each one writes through the run's `tracking.RecordedRun` (the only MLflow client), so a callback never
opens a store of its own. Those whose numbers must survive a resume keep them in their `state_dict`,
which Lightning writes into every checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bnnbench import tracking


class CostMetrics(pl.Callback):
    """Logs the network's cost (`cost/…`) and its per-layer table once, when the run starts training."""

    def __init__(self, costs, record: tracking.RecordedRun):
        self.costs, self.record = costs, record

    def on_fit_start(self, trainer, module):
        if not self.record.resumed:  # a resumed run has them already: nothing is counted twice
            self.record.log_metrics(self.costs.metrics())
            self.record.log_text(self.costs.csv(), "cost_layers.csv")


class ResumedFitState(pl.Callback):
    """A callback whose checkpointed state is restored by a resumed fit only.

    Lightning restores every callback's `state_dict` whenever it loads a checkpoint, also when `test`
    loads the best epoch's: that would set the wall clock back to the best epoch's time and the random
    generators back to its state. So the state waits until `on_fit_start` (which a resumed fit calls
    after the restore, and `test` never calls) and goes to `restore` then.
    """

    _restored = None

    def load_state_dict(self, state):
        self._restored = state

    def on_fit_start(self, trainer, module):
        state, self._restored = self._restored, None
        if state is not None:
            self.restore(state)

    def restore(self, state) -> None:
        raise NotImplementedError


class Timing(ResumedFitState):
    """`time/wall_s` (training and testing, summed over resumes), `time/epoch_s`, `time/first_step_s`
    (with `--compile` mostly compilation) and `epochs_completed`."""

    def __init__(self, record: tracking.RecordedRun, has_test: bool):
        self.record, self.has_test = record, has_test
        self.seconds_before = 0.0  # of earlier processes of a resumed run
        self.first_step_s = math.nan
        self._started = time.perf_counter()
        self._step_started = None

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self._started

    def state_dict(self):
        return {"seconds": self.seconds(), "first_step_s": self.first_step_s}

    def restore(self, state):
        self.seconds_before, self.first_step_s = state["seconds"], state["first_step_s"]
        self._started = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 0:
            self._step_started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self._step_started is not None and math.isnan(self.first_step_s):
            self.first_step_s = time.perf_counter() - self._step_started

    def on_fit_end(self, trainer, module):
        seconds = self.seconds()
        metrics = {"time/epoch_s": seconds / max(trainer.current_epoch, 1), "time/first_step_s": self.first_step_s,
                   "epochs_completed": trainer.current_epoch}
        self.record.log_metrics(metrics if self.has_test else {**metrics, "time/wall_s": seconds},
                                step=trainer.global_step)

    def on_test_end(self, trainer, module):
        self.record.log_metrics({"time/wall_s": self.seconds()}, step=trainer.global_step)


class Heartbeat(pl.Callback):
    """Refreshes the run's heartbeat tag at most every `tracking.HEARTBEAT_S` seconds while it works, and
    stops the run after any batch once SIGTERM has come (`tracking.check_terminated`)."""

    def __init__(self, record: tracking.RecordedRun):
        self.record = record
        self._last = time.monotonic()

    def _beat(self) -> None:
        tracking.check_terminated()  # a SIGTERM whose exception was swallowed stops the run here
        if time.monotonic() - self._last >= tracking.HEARTBEAT_S:
            self.record.heartbeat()
            self._last = time.monotonic()

    def on_train_batch_end(self, *args):
        self._beat()

    def on_validation_batch_end(self, *args):
        self._beat()

    def on_test_batch_end(self, *args):
        self._beat()


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar on stderr (stdout keeps only the results a script may parse), without the
    logger's `v_num`, which says nothing about the run."""

    def get_metrics(self, trainer, module):
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        return metrics

    # Lightning makes each bar with `file=sys.stdout`, read when the bar is made: make them under stderr.
    def init_sanity_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_test_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_test_tqdm()


class EpochLines(pl.Callback):
    """One line per epoch on stderr — losses, accuracies, seconds per epoch and the run's ETA — for suites,
    tuning and logs, where a bar would write thousands of `\r` frames."""

    KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")

    def __init__(self, label: str):
        self.label = label
        self._started = time.perf_counter()
        self._first_epoch = None

    def on_train_epoch_start(self, trainer, module):
        if self._first_epoch is None:  # a resumed run starts counting where it resumed
            self._first_epoch, self._started = trainer.current_epoch, time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        done = trainer.current_epoch + 1
        per_epoch = (time.perf_counter() - self._started) / max(done - self._first_epoch, 1)
        metrics = trainer.callback_metrics
        values = "  ".join(f"{k} {float(metrics[k]):.4f}" for k in self.KEYS if k in metrics)
        eta = per_epoch * (trainer.max_epochs - done)
        print(f"  {self.label} epoch {done}/{trainer.max_epochs}  {values}  {per_epoch:.1f} s/epoch, "
              f"ETA {format_seconds(eta)}", file=sys.stderr, flush=True)


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LatestCheckpoint(pl.callbacks.ModelCheckpoint):
    """`last.ckpt`, rewritten at the end of every training epoch: what a resumed run continues from.

    (Lightning's `save_last` refreshes `last.ckpt` only in epochs that improve the monitored metric.)
    No point may be lost or sent twice by a process killed at any instant. An epoch's step and
    validation metrics are logged before this checkpoint is written: sent at once, a process killed
    in between would log them again after resuming from the previous checkpoint. So the run's logger
    holds them (`tracking._runner_owned_logger`) and this callback sends them right after the file is
    written. The epoch's training aggregates (`train/loss`, `train/acc`, every `on_epoch` value of a
    training hook) Lightning logs only after this hook, and a fit resumed from this file does not
    compute them again. So the file holds both: the held points and the aggregates about to be logged
    (`epoch_end_points`), and a resumed fit sends those MLflow lacks (`on_fit_start`).
    """

    FILENAME = "last.ckpt"

    def __init__(self, record: tracking.RecordedRun, dirpath):
        super().__init__(dirpath=dirpath, filename=self.FILENAME.removesuffix(".ckpt"), save_top_k=1,
                         save_on_train_epoch_end=True, enable_version_counter=False)
        self.record = record
        self._restored = None
        self._epoch_end = []  # while this epoch's checkpoint is written: the points Lightning logs after it

    def on_train_epoch_start(self, trainer, module):
        if self.record.logger is not None:  # None: another process than rank 0, which records nothing
            self.record.logger.holding = True

    def on_train_epoch_end(self, trainer, module):
        self._epoch_end = epoch_end_points(trainer)  # on every process: computing them may sync them
        super().on_train_epoch_end(trainer, module)  # writes the file
        self._epoch_end = []
        if self.record.logger is not None:
            self.record.logger.holding = False
            self.record.logger.flush()

    def state_dict(self):
        held = self.record.logger.held if self.record.logger is not None else []
        return {**super().state_dict(), "held": [(dict(metrics), step) for metrics, step in held + self._epoch_end]}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._restored = state.get("held")

    def on_fit_start(self, trainer, module):
        """A resumed fit (the only one with restored state; `test` calls no `on_fit_start`) sends the
        checkpoint's held metrics that MLflow lacks, counted as (key, step, value): Lightning logs some
        keys (`epoch`) twice at one step."""
        from collections import Counter

        held, self._restored = self._restored or [], None
        wanted = Counter((key, step or 0, value) for metrics, step in held for key, value in metrics.items())
        sent = Counter()
        for key in {key for key, _, _ in wanted}:
            sent.update((key, step, value) for step, value in self.record.metric_history(key))
        for (key, step, value), count in wanted.items():
            for _ in range(count - sent[key, step, value]):
                self.record.log_metrics({key: value}, step=step)


def epoch_end_points(trainer) -> list[tuple[dict[str, float], int]]:
    """What Lightning logs right after the `on_train_epoch_end` hooks, as `(metrics, step)`: its logger
    connector's `update_train_epoch_metrics` sends the epoch-level values of the training results with
    `epoch` added, at the step before the current one (its fit loop steps `_batches_that_stepped` back
    for that call). Lightning keeps no public handle on these values; `test_records`' kill at the
    instant the checkpoint is in place shows that they are what it then logs."""
    from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars

    metrics = convert_tensors_to_scalars(trainer._logger_connector.metrics["log"])
    if not metrics:
        return []
    step = metrics.pop("step", None)
    if step is not None:
        return [(metrics, int(step))]
    return [({**metrics, "epoch": trainer.current_epoch}, trainer.fit_loop.epoch_loop._batches_that_stepped - 1)]


class RandomState(ResumedFitState):
    """The global random generators (torch, CUDA, numpy, Python) in every checkpoint.

    Lightning's checkpoints hold the model, optimizers, schedulers and loops but not these; batched
    augmentation and the data loaders draw from them, so without them a resumed run would diverge
    from an uninterrupted one. The batch order itself depends on (seed, epoch) only
    (`data.base.EpochShuffledBatches`).
    """

    def state_dict(self):
        # Tensors, tuples and numbers only: Lightning loads checkpoints with torch's weights-only unpickler.
        name, keys, position, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position,
                                                          has_gauss, gauss), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, state):
        torch.set_rng_state(state["torch"])
        name, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its final name, flushes it to disk, then renames it into place: a
    process killed mid-write leaves the previous checkpoint whole, never a truncated one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        partial = f"{path}.partial"
        super().save_checkpoint(checkpoint, partial, storage_options)
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)


class Artifacts(pl.Callback):
    """The confusion matrix (test split, else the best validation epoch) and the learning curves as
    PNGs, once the run's last stage ends."""

    def __init__(self, record: tracking.RecordedRun, run_name: str, has_test: bool, class_names):
        self.record, self.run_name, self.has_test, self.class_names = record, run_name, has_test, class_names

    def on_fit_end(self, trainer, module):
        if not self.has_test:
            self._log(module, "val (best epoch)")

    def on_test_end(self, trainer, module):
        self._log(module, "test")

    def _log(self, module, split: str) -> None:
        if not module.trainer.is_global_zero:  # the others of a multi-process run record nothing
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if module.confusion_matrix is not None:
            figure = confusion_figure(module.confusion_matrix, self.class_names, f"{self.run_name}: {split}")
            self.record.log_figure(figure, "confusion_matrix.png")
            plt.close(figure)
        histories = {key: self.record.metric_history(key) for key in ("train/loss", "val/loss", "train/acc", "val/acc")}
        figure = curves_figure(histories, self.run_name)
        self.record.log_figure(figure, "curves.png")
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
