"""scikit-learn's 8×8 handwritten digits: the embedded real dataset (no download).

1,797 grayscale images of 10 digits (UCI ML hand-written digits, as shipped in scikit-learn), pixel
values 0–16 scaled to 0–255. Seeded stratified split 70/10/20 into train/val/test. No flips or crops:
digits are not mirror-symmetric and 8 pixels leave no room to crop.
"""

from __future__ import annotations

import torch

from bnnbench.data.base import TensorDataModule, stratified_split
from bnnbench.registry import DATASETS


@DATASETS.register("digits")
class DigitsDataModule(TensorDataModule):
    num_classes = 10
    in_channels = 1
    image_size = 8
    mean = (0.3057,)
    std = (0.3764,)
    default_arch = "tiny"
    default_epochs = 30
    default_batch_size = 64
    class_names = tuple(str(d) for d in range(10))

    def data_source(self) -> str:
        return "sklearn digits (sklearn.datasets.load_digits, shipped with scikit-learn)"

    def load_splits(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)
        parts = stratified_split(labels, (0.7, 0.1, 0.2), self.seed)
        return {name: (images[idx], labels[idx]) for name, idx in zip(("train", "val", "test"), parts)}
