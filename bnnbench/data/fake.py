"""Tiny random data for tests and smoke runs: 3×8×8 images, 4 classes, 64/32/32 train/val/test.

The label is a function of the image (which quadrant is brightest), so a model can learn it and a
test can tell training from noise; generated from the seed, no files.
"""

from __future__ import annotations

import torch

from bnnbench.data.base import TensorDataModule
from bnnbench.registry import DATASETS


@DATASETS.register("fake")
class FakeDataModule(TensorDataModule):
    num_classes = 4
    in_channels = 3
    image_size = 8
    mean = (0.5, 0.5, 0.5)
    std = (0.29, 0.29, 0.29)
    default_arch = "tiny"
    default_epochs = 2
    default_batch_size = 16
    sizes = {"train": 64, "val": 32, "test": 32}

    def data_source(self) -> str:
        return f"generated from seed {self.seed} (bnnbench.data.fake)"

    def load_splits(self):
        generator = torch.Generator().manual_seed(self.seed)
        out = {}
        for split, n in self.sizes.items():
            images = torch.randint(0, 256, (n, self.in_channels, self.image_size, self.image_size),
                                   generator=generator, dtype=torch.uint8)
            half = self.image_size // 2
            quadrants = images.float().unfold(2, half, half).unfold(3, half, half).mean(dim=(1, 4, 5))
            out[split] = (images, quadrants.flatten(1).argmax(dim=1))
        return out
