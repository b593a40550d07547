"""Seconds per Fashion-MNIST epoch of each method on the dataset's default backbone, on 2 CPU threads.

What sized `fmnist_cnn` (a binary training epoch under 30 s) and the epochs of
benchmarks/fashion_mnist.yaml. Each timed training step is what an epoch repeats: a batch of 128 indexed
out of the uint8 training tensor, the DataModule's own transfer hook (float, crop and flip, normalise),
forward, backward, the optimizer step and the method's `after_optimizer_step`. Methods are timed
round-robin, one step each in turn (as `bnnbench.speed` does), so a busy machine slows all alike; warm-up
steps are excluded. A training epoch is the median step × 430 (55,000 / 128, rounded up); the
validation pass (5,000 images, eval mode, no gradient; median of 3) is timed per method and added, and the
test pass is twice the validation pass. `min` shows the fastest step, nearer to an idle machine.

Methods are built from their classes (no runner, no MLflow) and fed synthetic pixels of the real shape,
so no files are needed; the pixel values do not change the time.

    python benchmarks/fashion_epoch.py                        # fp, ste (BWN), bnn (W1A1); about a minute
    python benchmarks/fashion_epoch.py --methods all --steps 20
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from types import SimpleNamespace

import torch

from bnnbench import memory
from bnnbench.registry import DATASETS, METHODS

DATASET = "fashion_mnist"
TRAIN_IMAGES, VAL_IMAGES = 55_000, 5_000


class Stepper:
    """One method's model and optimizer, and a training-mode DataModule that feeds it."""

    def __init__(self, method: str, batch_size: int, epochs: int):
        data = DATASETS.get(DATASET)
        cls = METHODS.get(method)
        torch.manual_seed(0)
        self.name = method
        self.module = cls(cls.default_config(), arch=data.default_arch, num_classes=data.num_classes,
                          in_channels=data.in_channels, image_size=data.image_size, epochs=epochs).train()
        optimizers = self.module.configure_optimizers()
        self.optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
        self.data = data(batch_size=batch_size)
        shape = (TRAIN_IMAGES, data.in_channels, data.image_size, data.image_size)
        self.data.splits = {"train": (torch.randint(0, 256, shape, dtype=torch.uint8),
                                      torch.randint(0, data.num_classes, (TRAIN_IMAGES,)))}
        self.data.trainer = SimpleNamespace(training=True)  # the transfer hook then augments, as in training
        self.batches = iter(self.data.train_dataloader())

    def step(self) -> None:
        x, y = self.data.on_after_batch_transfer(next(self.batches), 0)
        self.optimizer.zero_grad(set_to_none=True)
        self.module.loss(self.module(x), y).backward()
        self.optimizer.step()
        self.module.after_optimizer_step()

    @torch.no_grad()
    def validation_s(self, batch_size: int, repeats: int = 3) -> float:
        """Seconds for the eval-mode forward pass over the validation images (median of `repeats`)."""
        self.module.eval()
        x = torch.randn(batch_size, self.data.in_channels, self.data.image_size, self.data.image_size)
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(math.ceil(VAL_IMAGES / batch_size)):
                self.module(x)
            seconds.append(time.perf_counter() - started)
        self.module.train()
        return statistics.median(seconds)


def main() -> None:
    memory.keep_freed_memory()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="fp,ste,bnn", help="comma-separated, or 'all'")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=DATASETS.get(DATASET).default_batch_size)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = METHODS.names() if args.methods == "all" else args.methods.split(",")
    steps_per_epoch = math.ceil(TRAIN_IMAGES / args.batch_size)

    steppers = [Stepper(m, args.batch_size, epochs=1) for m in methods]
    for stepper in steppers:
        for _ in range(args.warmup):
            stepper.step()
    times: dict[str, list[float]] = {s.name: [] for s in steppers}
    for _ in range(args.steps):
        for stepper in steppers:
            started = time.perf_counter()
            stepper.step()
            times[stepper.name].append((time.perf_counter() - started) * 1000)

    print(f"{args.threads} threads, batch {args.batch_size}, {steps_per_epoch} steps per epoch, "
          f"{args.steps} timed steps per method")
    print(f"{'method':<9} {'ms/step':>8} {'min ms':>7} {'train s':>8} {'val s':>6} {'epoch s':>8} {'test s':>7}")
    for stepper in steppers:
        median = statistics.median(times[stepper.name])
        train_s = median * steps_per_epoch / 1000
        val_s = stepper.validation_s(args.batch_size)
        print(f"{stepper.name:<9} {median:>8.1f} {min(times[stepper.name]):>7.1f} {train_s:>8.1f} {val_s:>6.1f} "
              f"{train_s + val_s:>8.1f} {2 * val_s:>7.1f}")


if __name__ == "__main__":
    main()
