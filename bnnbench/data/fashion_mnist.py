"""Fashion-MNIST: 70,000 28×28 grayscale photos of Zalando articles, 10 classes (Xiao et al. 2017).

Xiao, Rasul & Vollgraf, arXiv:1708.07747, made it as a drop-in replacement for MNIST (same file format,
image size and 60,000/10,000 split) that is harder, so that training methods still differ on it.

Files: the four IDX files Zalando Research publishes (https://github.com/zalandoresearch/fashion-mnist,
folder data/fashion), gzipped or already uncompressed, searched in this order: `data_dir`, then
`data_dir/FashionMNIST/raw` (where torchvision's `FashionMNIST` downloads them), then
/usr/share/datasets/fashion-mnist, where Debian's `dataset-fashion-mnist` package installs the same
four .gz files. bnnbench never downloads them. The IDX format is parsed here with numpy (a big-endian
magic number, 2051 for images and 2049 for labels, one big-endian uint32 per dimension, then the raw
uint8 payload), because torchvision's reader (`read_sn3_pascalvincent_tensor`) reports a wrong or
truncated file as a bare `AssertionError` that does not name the file.

Checks, each a one-line `BadInput` naming the file: the magic number, 28×28 images, a payload exactly
as long as the header promises (a truncated or padded file), labels below 10, as many labels as images,
and finally the official counts, 60,000 training and 10,000 test images (`counts`): the benchmark
compares runs on the real dataset only, so a subset is refused too. Tests that write small files
patch `counts`.

Splits: the 60,000 training images are split 55,000/5,000 into train/val, stratified and seeded
(`val_fraction` = 1/12, which rounds to exactly 5,000); the official 10,000 test images are the test
split. The normalisation is the mean and std of all pixels of the 60,000 training images.

Augmentation: a random crop after 2-pixel zero padding (a shift of up to 2 px; most articles fill
the frame from top to bottom), on whole batches, and no horizontal flip. A mirrored garment or bag is
the same article, but the shoes of the three shoe classes almost all point left, so a flipped shoe is a
pose the test set does not show; and at a short budget the flip bought nothing: `fp` on
`fmnist_cnn`, 5 epochs, seed 0, reached 91.1 % test accuracy without it and 90.9 % with it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bnnbench.data.base import Split, TensorDataModule, random_crop_flip, stratified_split
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS

SOURCE = "https://github.com/zalandoresearch/fashion-mnist"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX: 0x08 (unsigned byte) and the number of dimensions, 3 or 1
SIDE = 28


@DATASETS.register("fashion_mnist")
class FashionMnistDataModule(TensorDataModule):
    num_classes = 10
    in_channels = 1
    image_size = SIDE
    mean = (0.2860,)  # of the 60,000 training images scaled to [0, 1]
    std = (0.3530,)
    default_arch = "fmnist_cnn"
    default_epochs = 4  # what benchmarks/fashion_mnist.yaml affords on 2 CPU cores (its header has the arithmetic)
    default_batch_size = 128
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")

    files: ClassVar[dict[str, tuple[str, str]]] = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    counts: ClassVar[dict[str, int]] = {"train": 60_000, "test": 10_000}  # images in the official files
    val_fraction: ClassVar[float] = 1 / 12  # 5,000 of the 60,000 training images
    system_dir: ClassVar[Path] = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

    @property
    def search_dirs(self) -> tuple[Path, ...]:
        return self.data_dir, self.data_dir / "FashionMNIST" / "raw", self.system_dir

    def how_to_get(self) -> str:
        return (f"on Debian/Ubuntu run `apt-get install dataset-fashion-mnist` (it installs them in "
                f"{self.system_dir}), or download the four .gz files from {SOURCE} (folder data/fashion) "
                f"into {self.data_dir}")

    def data_source(self) -> str:
        return str(next(iter(self.locate().values())).resolve().parent)  # the one folder all four are in

    def locate(self) -> dict[str, Path]:
        """Name -> path of the four files, from the first search directory that holds any of them."""
        names = [name for pair in self.files.values() for name in pair]
        for folder in self.search_dirs:
            found = {name: next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
                     for name in names}
            missing = [name for name, path in found.items() if path is None]
            if not missing:
                return found
            if len(missing) < len(names):
                raise BadInput(f"Fashion-MNIST incomplete: {folder} lacks {', '.join(missing)} (.gz or "
                               f"uncompressed); {self.how_to_get()}")
        raise BadInput(f"Fashion-MNIST not found: none of {', '.join(map(str, self.search_dirs))} holds "
                       f"{', '.join(f'{n}.gz' for n in names)} (or the uncompressed files); {self.how_to_get()}")

    def bad_file(self, path: Path, what: str) -> BadInput:
        return BadInput(f"bad Fashion-MNIST file {path}: {what}; get the original files again: {self.how_to_get()}")

    def read_idx(self, path: Path, magic: int) -> np.ndarray:
        """The uint8 array of one IDX file, N×28×28 for images (magic 2051) or N for labels (2049)."""
        try:
            with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
                data = f.read()
        except (OSError, EOFError, zlib.error) as err:  # a truncated .gz ends in EOFError
            raise self.bad_file(path, f"cannot be read ({type(err).__name__}: {err})") from None
        ndim = 3 if magic == IMAGES_MAGIC else 1
        header = 4 + 4 * ndim
        if len(data) < header:
            raise self.bad_file(path, f"{len(data)} bytes, shorter than its {header}-byte IDX header")
        found = int.from_bytes(data[:4], "big")
        if found != magic:
            kind = "images" if magic == IMAGES_MAGIC else "labels"
            raise self.bad_file(path, f"magic number {found}, expected {magic} (IDX {kind})")
        dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
        if dims[1:] != (SIDE, SIDE)[:ndim - 1]:
            raise self.bad_file(path, f"images of {' × '.join(map(str, dims[1:]))} pixels, expected {SIDE} × {SIDE}")
        payload = int(np.prod(dims))
        if len(data) - header != payload:
            raise self.bad_file(path, f"its header promises {' × '.join(map(str, dims))} = {payload:,} bytes "
                                      f"but {len(data) - header:,} follow it (truncated or padded)")
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)

    def read_split(self, split: str, paths: dict[str, Path]) -> Split:
        images_path, labels_path = (paths[name] for name in self.files[split])
        images = self.read_idx(images_path, IMAGES_MAGIC)
        labels = self.read_idx(labels_path, LABELS_MAGIC)
        if len(images) != len(labels):
            raise self.bad_file(labels_path, f"{len(labels):,} labels for the {len(images):,} images of {images_path}")
        if len(labels) and int(labels.max()) >= self.num_classes:
            raise self.bad_file(labels_path, f"label {int(labels.max())}, expected 0 to {self.num_classes - 1}")
        if len(images) != self.counts[split]:
            raise self.bad_file(images_path, f"{len(images):,} images, the official file has {self.counts[split]:,}")
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    def load_splits(self) -> dict[str, Split]:
        paths = self.locate()
        images, labels = self.read_split("train", paths)
        train, val = stratified_split(labels, (1 - self.val_fraction, self.val_fraction), self.seed)
        return {"train": (images[train], labels[train]), "val": (images[val], labels[val]),
                "test": self.read_split("test", paths)}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return random_crop_flip(x, padding=2, flip=False)
