"""CIFAR-10: 60,000 32×32 colour images of 10 classes (Krizhevsky 2009), the standard BNN benchmark.

`prepare_data()` downloads the official python archive and checks its MD5 with torchvision's
`download_and_extract_archive`, which does the whole job (an archive already in `data_dir` with the
right checksum is extracted without touching the network). Offline, the error says which file to put
where. `load_splits()` reads the extracted pickle batches straight into uint8 tensors instead of using
torchvision's `CIFAR10` class, because that class MD5-checks every batch file and so rejects the tiny
files the tests write in the same format. The batches are pickles, as published: only load files you
downloaded from the official address.

Splits: the 50,000 training images are split 90/10 (45,000/5,000) into train/val, stratified and
seeded; the official 10,000 test images are the test split. Training augmentation is the usual random
crop after 4-pixel zero padding plus horizontal flip, done on whole batches.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bnnbench.data.base import Split, TensorDataModule, random_crop_flip, stratified_split
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS


@DATASETS.register("cifar10")
class Cifar10DataModule(TensorDataModule):
    num_classes = 10
    in_channels = 3
    image_size = 32
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)  # per-pixel std over the training set (not the often-copied 0.2023, ...)
    default_arch = "resnet18"
    default_epochs = 200
    default_batch_size = 128
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    # Where the files come from and what the archive extracts to; CIFAR-100 overrides these.
    title: ClassVar[str] = "CIFAR-10"
    archive_url: ClassVar[str] = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    archive_md5: ClassVar[str] = "c58f30108f718f92721af3b95e74349a"
    folder: ClassVar[str] = "cifar-10-batches-py"
    train_files: ClassVar[tuple[str, ...]] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files: ClassVar[tuple[str, ...]] = ("test_batch",)
    label_key: ClassVar[bytes] = b"labels"

    @property
    def archive_path(self) -> Path:
        return self.data_dir / self.archive_url.rsplit("/", 1)[-1]

    def missing_files(self) -> list[str]:
        folder = self.data_dir / self.folder
        return [name for name in self.train_files + self.test_files if not (folder / name).is_file()]

    def require_files(self, reason: str = "") -> None:
        """Raise one line that says which file to put where, if any extracted batch file is missing."""
        missing = self.missing_files()
        if not missing:
            return
        why = f"; {' '.join(reason.split())}" if reason else ""  # one line, whatever the error said
        folder = self.data_dir / self.folder
        raise BadInput(f"{self.title} not found: {folder} lacks {', '.join(missing)}{why}; "
                       f"download {self.archive_url} and put it at {self.archive_path} (it is checked and "
                       f"extracted on the next run), or extract it there so that "
                       f"{folder / self.train_files[0]} exists")

    def prepare_data(self) -> None:
        if not self.missing_files():
            return
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(self.archive_url, download_root=str(self.data_dir),
                                         md5=self.archive_md5)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad checksum is a RuntimeError
            self.require_files(reason=f"downloading it failed ({type(err).__name__}: {err})")
        self.require_files(reason=f"{self.archive_path} did not contain them")

    def read_batches(self, names: tuple[str, ...]) -> Split:
        """Concatenate pickled batches (rows of 3072 bytes: 1024 red, 1024 green, 1024 blue, row-major)."""
        images, labels = [], []
        for name in names:
            with open(self.data_dir / self.folder / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[self.label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

    def load_splits(self) -> dict[str, Split]:
        self.require_files()
        images, labels = self.read_batches(self.train_files)
        train, val = stratified_split(labels, (0.9, 0.1), self.seed)
        return {"train": (images[train], labels[train]), "val": (images[val], labels[val]),
                "test": self.read_batches(self.test_files)}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return random_crop_flip(x, padding=4, flip=True)
