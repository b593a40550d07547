"""What every dataset shares: seeded stratified splits, tensor-resident loaders, batched augmentation.

Datasets that fit in memory are held as uint8 tensors (N, C, H, W) and a batch is one fancy-index
into them, so there is no per-sample Python or PIL work in the training loop. Conversion to float,
augmentation and normalisation run on whole batches in `on_after_batch_transfer`, i.e. on the same
device as the model. Splits use scikit-learn's stratified `train_test_split` with the run's seed.
DataModules know nothing of methods, MLflow or the CLI.

`ImageFolderDataModule` is the shared base of datasets that come as class folders of image files
(Garbage, Tiny ImageNet): every readable image is decoded once with PIL, converted to RGB, resized to
size×size (bilinear) and the uint8 stack is cached under `data_dir/.bnnbench-cache/`, keyed by the size
and by every file's name, label, byte size and modification time, so later epochs and runs never decode
a JPEG again and adding, removing, replacing or touching a file makes a new cache. Unreadable files are
skipped with a warning naming each one; a class without any readable image is refused, since it would
otherwise vanish from the splits (or break stratification) without a word.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from bnnbench.errors import BadInput

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]  # (uint8 images N×C×H×W, int64 labels N)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space, for a one-line error."""
    return " ".join(str(text).split())


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


class EpochShuffledBatches(BatchSampler):
    """Shuffled batches whose order is a function of (seed, epoch) alone.

    Lightning calls `set_epoch` before every training epoch, so a run resumed from a checkpoint at
    epoch k draws exactly the order an uninterrupted run draws at epoch k (one generator carried across
    epochs would restart from epoch 0's order).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int):
        self.generator = torch.Generator()
        self.seed = seed
        super().__init__(RandomSampler(dataset, generator=self.generator), batch_size, drop_last=False)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + epoch)


class ProcessShare:
    """One process's share of every batch: images rank, rank + world, … of it.

    With several processes (`--devices`, `--num-nodes`) the batch size stays the images of one
    optimizer step: each process takes every world-th image of each batch, DDP averages the gradients,
    so a step sees the same batch as on one device (BatchNorm statistics are per process unless
    Lightning's `sync_batchnorm` is on, which it is on GPUs). Evaluation batches are split the same
    way without padding, so every image of a split is evaluated exactly once; a process whose share of
    a last batch is empty skips it. A last training batch smaller than the number of processes is
    dropped (all processes must step together). Replaces Lightning's `DistributedSampler`, which
    would give whole batches to processes (a larger effective batch) and pad evaluation splits with
    repeated images.
    """

    def __init__(self, batches, rank: int, world: int, training: bool):
        self.batches, self.rank, self.world, self.training = batches, rank, world, training

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        images, size = len(self.batches.sampler), self.batches.batch_size
        return len(self.batches) - (self.training and 0 < images % size < self.world)

    def __iter__(self):
        for batch in self.batches:
            if self.training and len(batch) < self.world:
                continue
            yield batch[self.rank::self.world]


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
            for split, (_, labels) in splits.items():
                bad = labels[(labels < 0) | (labels >= self.num_classes)]
                if len(bad):
                    raise BadInput(f"dataset '{self.name}' split '{split}' has label {int(bad[0])}; valid labels "
                                   f"are 0..{self.num_classes - 1} ({self.num_classes} classes)")
            self.splits = {k: (resize_uint8(x, self.size), y) for k, (x, y) in splits.items()}

    def extra_params(self) -> dict[str, Any]:
        """Params this dataset wants recorded with a run (the runner asks after `setup("fit")`)."""
        return {f"data/{split}_size": n for split, n in self.split_sizes.items()}

    @property
    def has_test(self) -> bool:
        self.setup()
        return "test" in self.splits

    @property
    def split_sizes(self) -> dict[str, int]:
        self.setup()
        return {k: len(y) for k, (_, y) in self.splits.items()}

    # -- what a run records about its data (an MLflow dataset input) --------------------------------
    def data_source(self) -> str:
        """Where the data came from, for the run's MLflow dataset input: `data_dir` here; a dataset that
        finds its files elsewhere, or reads none, says so by overriding this."""
        return str(self.data_dir.resolve())

    def describe(self) -> dict[str, Any]:
        """The data a run uses, for its MLflow dataset input: name, digest, source, split sizes and shape.

        `sha1` digests the tensors actually used — each split's name, shape and uint8 images (after
        resizing) and its int64 labels — so another seed's split, another image size or a changed file
        gives another digest; `digest` is its first 16 hex digits (MLflow stores at most 36 characters).
        Computed once per datamodule (hashing CIFAR-10 takes about a second).
        """
        if getattr(self, "_description", None) is None:
            self.setup()
            sha1 = hashlib.sha1()
            for split, (images, labels) in self.splits.items():
                sha1.update(f"{split}:{tuple(images.shape)}:{tuple(labels.shape)};".encode())
                sha1.update(images.to(torch.uint8).contiguous().numpy())
                sha1.update(labels.to(torch.int64).contiguous().numpy().astype("<i8", copy=False))
            digest = sha1.hexdigest()
            self._description = {
                "name": self.name, "digest": digest[:16], "sha1": digest, "source": self.data_source(),
                "sizes": dict(self.split_sizes), "image_shape": [self.in_channels, self.size, self.size],
                "num_classes": self.num_classes, "mode": self.mode, "seed": self.seed,
            }
        return dict(self._description)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = _IndexedTensors(*self.splits[split])
        if shuffle:
            batches = EpochShuffledBatches(dataset, self.batch_size, self.seed)
        else:
            batches = BatchSampler(SequentialSampler(dataset), self.batch_size, drop_last=False)
        if self.trainer is not None and self.trainer.world_size > 1:
            batches = ProcessShare(batches, self.trainer.global_rank, self.trainer.world_size, training=shuffle)
        return DataLoader(dataset, sampler=batches, batch_size=None)

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


def extract_zip(archive: Path, into: Path) -> None:
    """Extract a downloaded zip (zipfile drops `..` and absolute parts of member names, so nothing lands
    outside `into`); a damaged archive is one line naming it."""
    log.info("extracting %s into %s", archive, into)
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise BadInput(f"{archive} is corrupt, not a readable zip file ({one_line(err)}); download it again") from None


class ImageFolderDataModule(TensorDataModule):
    """Base for datasets of class folders of image files: decoded once, cached, split by stratified fractions.

    A subclass sets the TensorDataModule class attributes plus `title` and `split_fractions`, and
    implements `how_to_get()`, `image_root()` (find or extract the files, or raise a BadInput that says
    how to get them) and `class_folders(root)` (one folder per label, in label order). Mode "fair" (and
    any other mode a subclass gives fractions for) splits the class-folder images train/val(/test);
    fair augmentation is the shared random crop (zero padding size/8, CIFAR's 4 px at 32) and flip.
    """

    title: ClassVar[str]  # the dataset's name in messages
    split_fractions: ClassVar[dict[str, tuple[float, ...]]]  # mode -> train, val(, test) fractions
    cache_folder: ClassVar[str] = ".bnnbench-cache"
    cache_version: ClassVar[int] = 1  # bump when decoding changes, so old caches are not reused

    def __init__(self, data_dir: str | Path = "data", batch_size: int | None = None, image_size: int | None = None,
                 seed: int = 0, mode: str = "fair"):
        if mode not in self.split_fractions:
            raise BadInput(f"unknown mode '{mode}' for dataset {self.name}; valid: {', '.join(self.split_fractions)}")
        super().__init__(data_dir=data_dir, batch_size=batch_size, image_size=image_size, seed=seed, mode=mode)
        self.files: list[str] = []  # root-relative names of the loaded class-folder images, in tensor order
        self.skipped_files: list[str] = []  # full paths of unreadable images

    # -- what a subclass provides -------------------------------------------------------------------
    def how_to_get(self) -> str:
        """The instructions that end every 'files not found' message."""
        raise NotImplementedError

    def image_root(self) -> Path:
        """The folder that image names are relative to; extracts an archive first if that is all there is."""
        raise NotImplementedError

    def class_folders(self, root: Path) -> list[Path]:
        """The existing folder of each class, in label order."""
        raise NotImplementedError

    # -- decoding and caching -----------------------------------------------------------------------
    @staticmethod
    def image_files(folder: Path) -> list[Path]:
        """Image-like files of a folder, sorted so the order (and the cache key) is stable; hidden files and
        files without an image suffix are ignored silently."""
        return [path for path in sorted(folder.iterdir()) if path.is_file() and not path.name.startswith(".")
                and path.suffix.lower() in IMAGE_SUFFIXES]

    def cache_path(self, root: Path, names: list[str], labels: list[int]) -> Path:
        """Keyed by size and by each file's name, label, byte size and mtime (ns): any change is a new cache."""
        listing = []
        for name, label in zip(names, labels, strict=True):
            stat = (root / name).stat()
            listing.append(f"{name}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
        digest = hashlib.sha1("".join(listing).encode()).hexdigest()[:12]
        return self.data_dir / self.cache_folder / f"{self.name}-v{self.cache_version}-{self.size}px-{digest}.pt"

    def decode(self, root: Path, names: list[str], labels: list[int]) -> dict:
        """Decode, convert to RGB and resize each image once (threads: PIL releases the GIL to decode)."""
        from PIL import Image

        size = self.size

        def read(name: str) -> np.ndarray | str:
            try:
                with Image.open(root / name) as image:
                    if image.mode == "P":  # palette with transparency: PIL warns unless it goes via RGBA
                        image = image.convert("RGBA")
                    return np.array(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                return f"{type(err).__name__}: {err}"

        log.info("decoding %d images in %s to %d×%d once (cached afterwards)", len(names), root, size, size)
        images = torch.empty((len(names), 3, size, size), dtype=torch.uint8)
        kept, kept_labels, skipped = [], [], []
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for name, label, result in zip(names, labels, pool.map(read, names), strict=True):
                if isinstance(result, str):
                    warnings.warn(f"skipping unreadable image {root / name} ({result})", stacklevel=4)
                    skipped.append(name)
                    continue
                images[len(kept)] = torch.from_numpy(result).permute(2, 0, 1)
                kept.append(name)
                kept_labels.append(label)
        if len(kept) < len(names):
            images = images[:len(kept)].clone()  # torch.save of a slice would store the whole buffer
        return {"images": images, "labels": torch.tensor(kept_labels, dtype=torch.int64),
                "files": kept, "skipped": skipped}

    def load_files(self, root: Path, names: list[str], labels: list[int]) -> dict:
        """The decoded `names` (relative to `root`): read from the cache, or decoded now and cached."""
        cache = self.cache_path(root, names, labels)
        if cache.is_file():
            return torch.load(cache, weights_only=True, mmap=True)
        data = self.decode(root, names, labels)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")  # parallel runs never read half a file
        try:
            cache.parent.mkdir(exist_ok=True)
            torch.save(data, tmp)
            os.replace(tmp, cache)
        except OSError as err:
            warnings.warn(f"could not write the image cache {cache} ({err}); images will be decoded again "
                          f"next time", stacklevel=3)
        return data

    # -- loading and splitting ----------------------------------------------------------------------
    def load_images(self) -> Split:
        """Every readable class-folder image at `self.size` and its label, in `self.files` order."""
        root = self.image_root()
        folders = self.class_folders(root)
        groups = [self.image_files(folder) for folder in folders]
        if not any(groups):
            raise BadInput(f"no images in the {self.title} class folders under {root} (looked for "
                           f"{', '.join(sorted(IMAGE_SUFFIXES))}); {self.how_to_get()}")
        names = [path.relative_to(root).as_posix() for group in groups for path in group]
        labels = [label for label, group in enumerate(groups) for _ in group]
        data = self.load_files(root, names, labels)
        self.files = data["files"]
        self.skipped_files = [str(root / name) for name in data["skipped"]]
        counts = torch.bincount(data["labels"], minlength=len(folders)).tolist()
        empty = [f"{folder} ({f'all {len(group)} images unreadable' if group else 'no image files'})"
                 for folder, group, count in zip(folders, groups, counts, strict=True) if count == 0]
        if empty:
            raise BadInput(f"{self.title} class folders without a readable image: {'; '.join(empty)}; every class "
                           f"needs images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return data["images"], data["labels"]

    def split_pool(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Split]:
        """train, val (and test, for three fractions) by this mode's stratified, seeded fractions."""
        try:
            parts = stratified_split(labels, self.split_fractions[self.mode], self.seed)
        except BadInput as err:
            raise BadInput(f"{self.data_dir}: {err}") from None
        names = ("train", "val", "test")[:len(parts)]
        return {split: (images[idx], labels[idx]) for split, idx in zip(names, parts, strict=True)}

    def prepare_data(self) -> None:
        self.load_images()  # decodes and writes the cache once; setup reads it back

    def load_splits(self) -> dict[str, Split]:
        return self.split_pool(*self.load_images())

    def extra_params(self) -> dict[str, Any]:
        return {**super().extra_params(), "data/skipped_images": len(self.skipped_files)}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return random_crop_flip(x, padding=self.size // 8, flip=True)
