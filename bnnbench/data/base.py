"""What every dataset shares: seeded stratified splits, tensor-resident loaders, batched augmentation.

Datasets that fit in memory are held as uint8 tensors (N, C, H, W) and a batch is one fancy-index
into them, so there is no per-sample Python or PIL work in the training loop. Conversion to float,
augmentation and normalisation run on whole batches in `on_after_batch_transfer`, i.e. on the same
device as the model. Splits use scikit-learn's stratified `train_test_split` with the run's seed.
DataModules know nothing of methods, MLflow or the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from bnnbench.errors import BadInput

Split = tuple[torch.Tensor, torch.Tensor]  # (uint8 images N×C×H×W, int64 labels N)


def stratified_split(labels: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Indices for each fraction (they sum to 1), stratified by label and reproducible from `seed`.

    Split sizes are rounded from the total once, as integers, so that 70/10/20 of 360 is 252/36/72
    (float shares of what is left would floor 251.99999 to 251).
    """
    import math

    from sklearn.model_selection import train_test_split

    total = len(labels)
    remaining = torch.arange(total)
    parts = []
    for fraction in fractions[:-1]:
        try:
            taken, remaining = train_test_split(remaining.numpy(), train_size=round(fraction * total),
                                                random_state=seed, stratify=labels[remaining].numpy())
        except ValueError as err:
            counts = torch.bincount(labels, minlength=1)
            smallest = int(counts[counts > 0].min()) if total else 0
            need = max(2, math.ceil(1 / min(fractions) - 1e-9))
            shares = "/".join(f"{f:.0%}" for f in fractions)
            raise BadInput(f"too few images for a {shares} stratified split: {total} images in "
                           f"{int((counts > 0).sum())} classes (the smallest has {smallest}); "
                           f"every split needs each class, so give each class at least about {need} images "
                           f"(scikit-learn: {err})") from None
        parts.append(torch.as_tensor(taken))
        remaining = torch.as_tensor(remaining)
    parts.append(remaining)
    return parts


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to size×size (bilinear, antialiased), once, before training."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Per-sample random crop after zero padding, and per-sample horizontal flip, for a whole batch."""
    n, c, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mask = torch.rand(n, device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


class _IndexedTensors(Dataset):
    """A dataset whose `__getitem__` takes a list of indices and returns the whole batch at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        return self.images[indices], self.labels[indices]


class TensorDataModule(pl.LightningDataModule):
    """Base for a registered dataset: subclasses set the class attributes and implement `load_splits`."""

    name: ClassVar[str]
    num_classes: ClassVar[int]
    in_channels: ClassVar[int]
    image_size: ClassVar[int]  # default input side in pixels
    mean: ClassVar[tuple[float, ...]]  # per-channel mean of images scaled to [0, 1]
    std: ClassVar[tuple[float, ...]]
    default_arch: ClassVar[str]
    default_epochs: ClassVar[int]
    default_batch_size: ClassVar[int]
    class_names: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, data_dir: str | Path = "data", batch_size: int | None = None, image_size: int | None = None,
                 seed: int = 0, mode: str = "fair"):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size or self.default_batch_size
        self.size = image_size or type(self).image_size
        self.seed = seed
        self.mode = mode
        self.splits: dict[str, Split] = {}
        self._mean = torch.tensor(self.mean).view(1, -1, 1, 1)  # broadcast over (N, C, H, W) batches
        self._std = torch.tensor(self.std).view(1, -1, 1, 1)

    # -- what a subclass provides -------------------------------------------------------------------
    def load_splits(self) -> dict[str, Split]:
        """Return {"train": ..., "val": ..., optionally "test": ...} as uint8 tensors at `self.size`."""
        raise NotImplementedError

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training augmentation of a float batch in [0, 1]; default: none."""
        return x

    # -- Lightning hooks ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            splits = self.load_splits()
            self.splits = {k: (resize_uint8(x, self.size), y) for k, (x, y) in splits.items()}

    @property
    def has_test(self) -> bool:
        self.setup()
        return "test" in self.splits

    @property
    def split_sizes(self) -> dict[str, int]:
        self.setup()
        return {k: len(y) for k, (_, y) in self.splits.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = _IndexedTensors(*self.splits[split])
        if shuffle:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
        else:
            sampler = SequentialSampler(dataset)
        return DataLoader(dataset, sampler=BatchSampler(sampler, self.batch_size, drop_last=False), batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            raise BadInput(f"dataset '{self.name}' has no test split in {self.mode} mode")
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        x = x.float().div_(255)
        if self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        return x, y
