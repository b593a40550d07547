"""Garbage classification: about 15,000 photos of household waste in 12 classes (Kaggle, Mostafa Abla).

The dataset of the DRA-BNN paper (docs/methods.md, `dra`). It is not downloadable without a Kaggle account,
so it is never fetched: run `kaggle datasets download -d mostafaabla/garbage-classification` and unzip
it into `data_dir` (or leave `archive.zip` there; it is extracted on first use). Accepted layouts:
`data_dir/garbage_classification/<class>/*.jpg`, or `data_dir` being the class root itself.

The photos come in many sizes; decoding, resizing (bilinear, as the released DRA code's
`Resize((224, 224))` does), caching and skipping unreadable files are the image-folder base's
(`bnnbench.data.base.ImageFolderDataModule`). At 224 pixels the whole set is about 2.3 GB of uint8.

Splits (stratified, seeded): fair mode 70/10/20 train/val/test; paper mode 80/20 train/val with no
test split, as the paper did (it reports the best validation accuracy).

Augmentation: fair mode uses the shared batched random crop (zero padding size/8) and horizontal flip.
Paper mode follows the released code: RandomRotation(15), RandomHorizontalFlip, ColorJitter(0.2, 0.2,
0.2, 0.1), RandomAffine(translate 0.1), with torchvision's v2 transforms applied per sample on the float
tensors. The loop over the batch is on purpose: v2 draws one set of random parameters per call, so a
batched call would rotate and jitter every image alike; paper mode trains with batch 8, so the loop is
cheap next to the 27 GMAC forward pass. Deviation: the released code augments PIL images after
resizing, here the resize happens once at caching time and rotation/affine interpolate float tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from bnnbench.data.base import ImageFolderDataModule, extract_zip
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS

CLASSES = ("battery", "biological", "brown-glass", "cardboard", "clothes", "green-glass", "metal", "paper",
           "plastic", "shoes", "trash", "white-glass")


@DATASETS.register("garbage")
class GarbageDataModule(ImageFolderDataModule):
    num_classes = 12
    in_channels = 3
    image_size = 224
    mean = (0.485, 0.456, 0.406)  # ImageNet statistics, as the released DRA code normalises
    std = (0.229, 0.224, 0.225)
    default_arch = "resnet18"
    default_epochs = 100
    default_batch_size = 64
    class_names = CLASSES

    title = "Garbage"
    split_fractions = {"fair": (0.7, 0.1, 0.2), "paper": (0.8, 0.2)}
    folder: ClassVar[str] = "garbage_classification"
    archive_name: ClassVar[str] = "archive.zip"

    def __init__(self, data_dir: str | Path = "data", batch_size: int | None = None,
                 image_size: int | None = None, seed: int = 0, mode: str = "fair"):
        super().__init__(data_dir=data_dir, batch_size=batch_size, image_size=image_size, seed=seed,
                         mode=mode)
        self._paper_transform = None

    # -- finding the files --------------------------------------------------------------------------
    def how_to_get(self) -> str:
        return (f"run `kaggle datasets download -d mostafaabla/garbage-classification` and unzip it into "
                f"{self.data_dir}, or put the downloaded {self.archive_name} there")

    def _find_class_root(self) -> Path | None:
        for candidate in (self.data_dir / self.folder, self.data_dir):
            if any((candidate / name).is_dir() for name in CLASSES):
                return candidate
        return None

    def image_root(self) -> Path:
        """The folder holding the 12 class folders; extracts `archive.zip` first if that is all there is."""
        if not self.data_dir.is_dir():
            state = "is not a folder" if self.data_dir.exists() else "does not exist"
            raise BadInput(f"Garbage dataset folder {self.data_dir} {state}; {self.how_to_get()}")
        root = self._find_class_root()
        archive = self.data_dir / self.archive_name
        if root is None and archive.is_file():
            extract_zip(archive, self.data_dir)
            root = self._find_class_root()
        if root is None:
            if not any(not p.name.startswith(".") for p in self.data_dir.iterdir()):
                raise BadInput(f"Garbage dataset folder {self.data_dir} is empty; {self.how_to_get()}")
            raise BadInput(f"no Garbage class folders in {self.data_dir}: expected "
                           f"{self.data_dir / self.folder}/<class>/*.jpg for the classes "
                           f"{', '.join(CLASSES)}; {self.how_to_get()}")
        missing = [name for name in CLASSES if not (root / name).is_dir()]
        if missing:
            raise BadInput(f"{root} lacks the class folders {', '.join(missing)}; expected "
                           f"{root}/<class>/*.jpg for each of {', '.join(CLASSES)}")
        return root

    def class_folders(self, root: Path) -> list[Path]:
        return [root / name for name in CLASSES]

    # -- augmentation -------------------------------------------------------------------------------
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fair":
            return super().augment(x)
        if self._paper_transform is None:
            from torchvision.transforms import v2

            self._paper_transform = v2.Compose([
                v2.RandomRotation(15),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
                v2.RandomAffine(degrees=0, translate=(0.1, 0.1)),
            ])
        return torch.stack([self._paper_transform(sample) for sample in x])
