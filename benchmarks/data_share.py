"""Share of a training epoch spent waiting for data, for tensor-resident datasets.

For each dataset shape, times (a) fetching a batch from the DataModule's loader and running its
`on_after_batch_transfer` hook with training augmentation, and (b) one training step of `ste` on the
dataset's default architecture (bnnbench.speed), and reports data / (data + step). Synthetic uint8
tensors of the real shapes stand in for CIFAR and the cached Garbage tensors (no files needed); digits
is the real embedded dataset.

    python benchmarks/data_share.py            # CPU, a few minutes on 2 cores
"""

from __future__ import annotations

import statistics
import time

import torch

from bnnbench import memory
from bnnbench.registry import DATASETS
from bnnbench.speed import bench_step


def fetch_ms(dataset: str, n_images: int, batches: int) -> float:
    cls = DATASETS.get(dataset)
    module = cls(batch_size=cls.default_batch_size, mode="fair")
    if dataset != "digits":  # the real shape, synthetic pixels: what the cached tensors look like in memory
        size = cls.image_size
        images = torch.randint(0, 256, (n_images, cls.in_channels, size, size), dtype=torch.uint8)
        module.splits = {"train": (images, torch.randint(0, cls.num_classes, (n_images,)))}
    module.setup()
    times, loader = [], iter(module.train_dataloader())
    for _ in range(batches):
        started = time.perf_counter()
        x, y = module.on_after_batch_transfer(next(loader), 0)
        module.augment(x)  # outside a Trainer the hook does not augment; time the augmentation too
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    memory.keep_freed_memory()  # as the CLI does
    print(f"{'dataset':<10} {'batch':>5} {'data ms':>9} {'step ms':>9} {'data share':>10}")
    for dataset, n_images, steps in (("digits", 0, 20), ("cifar10", 50_000, 3), ("garbage", 2_000, 2)):
        cls = DATASETS.get(dataset)
        data = fetch_ms(dataset, n_images, batches=10)
        step = bench_step(["ste"], dataset=dataset, batch_size=cls.default_batch_size, steps=steps,
                          warmup=1)[0].median_ms
        print(f"{dataset:<10} {cls.default_batch_size:>5} {data:>9.2f} {step:>9.1f} {data / (data + step):>10.2%}")


if __name__ == "__main__":
    main()
