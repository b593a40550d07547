"""A run killed with SIGKILL at one instant: `python -m tests.killed_run MOMENT URI`.

MOMENT is a Lightning callback hook (`on_train_batch_end`, …), where the process dies the first time
the hook runs in epoch 1, or `checkpoint_written`: the instant the first `last.ckpt` (epoch 0's) has
been renamed into place, before anything after it — where a point is most easily lost or doubled.
"""

from __future__ import annotations

import os
import signal
import sys

import lightning.pytorch as pl

from bnnbench import callbacks
from bnnbench.config import RunConfig
from bnnbench.runner import run

MOMENTS = ["checkpoint_written", "on_train_epoch_start", "on_train_batch_end", "on_validation_end",
           "on_train_epoch_end"]


def config(uri: str, experiment: str = "killed") -> RunConfig:
    """The run the tests kill, resume and compare with an uninterrupted one (every epoch logs training
    aggregates, validation metrics and a flip rate)."""
    return RunConfig(method="pc", dataset="fake", epochs=3, seed=1, tracking_uri=uri, progress="none",
                     experiment=experiment)


def die(*_) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(pl.Callback):
    def __init__(self, hook: str):
        setattr(self, hook, self._maybe_die)

    def _maybe_die(self, trainer, *args):
        if trainer.current_epoch == 1:
            die()


def main(moment: str, uri: str) -> None:
    if moment == "checkpoint_written":
        save = callbacks.AtomicCheckpointIO.save_checkpoint

        def save_then_die(self, checkpoint, path, storage_options=None):
            save(self, checkpoint, path, storage_options)
            if os.path.basename(path) == callbacks.LatestCheckpoint.FILENAME:
                die()

        callbacks.AtomicCheckpointIO.save_checkpoint = save_then_die
        run(config(uri))
    else:
        run(config(uri), callbacks=[KillAt(moment)])


if __name__ == "__main__":
    main(*sys.argv[1:])
