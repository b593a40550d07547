"""Garbage classification: about 15,000 photos of household waste in 12 classes (Kaggle, Mostafa Abla).

The dataset of the DRA-BNN paper (METHODS.md, `dra`). It is not downloadable without a Kaggle account,
so it is never fetched: run `kaggle datasets download -d mostafaabla/garbage-classification` and unzip
it into `data_dir` (or leave `archive.zip` there; it is extracted on first use). Accepted layouts:
`data_dir/garbage_classification/<class>/*.jpg`, or `data_dir` being the class root itself.

The photos come in many sizes, so every readable image is decoded once with PIL, converted to RGB and
resized to size×size (bilinear, as the released DRA code's `Resize((224, 224))` does), and the uint8
stack is cached in `data_dir/.bnnbench-cache/`, keyed by image size and by the list of files with their
sizes: later epochs and runs never decode a JPEG again, and adding, removing or replacing a file makes
a new cache. At 224 pixels the whole set is about 2.3 GB of uint8 in memory. Unreadable files are
skipped with a warning naming each one (`skipped_files` keeps them); files without an image extension
and hidden files are ignored silently.

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

import hashlib
import logging
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bnnbench.data.base import Split, TensorDataModule, random_crop_flip, stratified_split
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS

log = logging.getLogger(__name__)

CLASSES = ("battery", "biological", "brown-glass", "cardboard", "clothes", "green-glass", "metal", "paper",
           "plastic", "shoes", "trash", "white-glass")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@DATASETS.register("garbage")
class GarbageDataModule(TensorDataModule):
    num_classes = 12
    in_channels = 3
    image_size = 224
    mean = (0.485, 0.456, 0.406)  # ImageNet statistics, as the released DRA code normalises
    std = (0.229, 0.224, 0.225)
    default_arch = "resnet18"
    default_epochs = 100
    default_batch_size = 64
    class_names = CLASSES

    folder: ClassVar[str] = "garbage_classification"
    archive_name: ClassVar[str] = "archive.zip"
    cache_folder: ClassVar[str] = ".bnnbench-cache"
    cache_version: ClassVar[int] = 1  # bump when decoding changes, so old caches are not reused
    split_fractions: ClassVar[dict[str, tuple[float, ...]]] = {"fair": (0.7, 0.1, 0.2), "paper": (0.8, 0.2)}

    def __init__(self, data_dir: str | Path = "data", batch_size: int | None = None,
                 image_size: int | None = None, seed: int = 0, mode: str = "fair"):
        if mode not in self.split_fractions:
            valid = ", ".join(self.split_fractions)
            raise BadInput(f"unknown mode '{mode}' for dataset garbage; valid: {valid}")
        super().__init__(data_dir=data_dir, batch_size=batch_size, image_size=image_size, seed=seed,
                         mode=mode)
        self.files: list[str] = []  # class/file paths of the loaded images, in tensor order
        self.skipped_files: list[str] = []  # full paths of unreadable images
        self._paper_transform = None

    # -- finding the files --------------------------------------------------------------------------
    def _how_to_get(self) -> str:
        return (f"run `kaggle datasets download -d mostafaabla/garbage-classification` and unzip it into "
                f"{self.data_dir}, or put the downloaded {self.archive_name} there")

    def _find_class_root(self) -> Path | None:
        for candidate in (self.data_dir / self.folder, self.data_dir):
            if any((candidate / name).is_dir() for name in CLASSES):
                return candidate
        return None

    def class_root(self) -> Path:
        """The folder holding the 12 class folders; extracts `archive.zip` first if that is all there is."""
        if not self.data_dir.is_dir():
            state = "is not a folder" if self.data_dir.exists() else "does not exist"
            raise BadInput(f"Garbage dataset folder {self.data_dir} {state}; {self._how_to_get()}")
        root = self._find_class_root()
        archive = self.data_dir / self.archive_name
        if root is None and archive.is_file():
            log.info("extracting %s into %s", archive, self.data_dir)
            try:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(self.data_dir)
            except zipfile.BadZipFile as err:
                raise BadInput(f"{archive} is not a valid zip file ({err}); download it again") from None
            root = self._find_class_root()
        if root is None:
            if not any(not p.name.startswith(".") for p in self.data_dir.iterdir()):
                raise BadInput(f"Garbage dataset folder {self.data_dir} is empty; {self._how_to_get()}")
            raise BadInput(f"no Garbage class folders in {self.data_dir}: expected "
                           f"{self.data_dir / self.folder}/<class>/*.jpg for the classes "
                           f"{', '.join(CLASSES)}; {self._how_to_get()}")
        missing = [name for name in CLASSES if not (root / name).is_dir()]
        if missing:
            raise BadInput(f"{root} lacks the class folders {', '.join(missing)}; expected "
                           f"{root}/<class>/*.jpg for each of {', '.join(CLASSES)}")
        return root

    def image_files(self, root: Path) -> list[str]:
        """`class/file` names of every image-like file, sorted, so the order (and the cache key) is stable."""
        return [f"{name}/{path.name}" for name in CLASSES for path in sorted((root / name).iterdir())
                if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES]

    def cache_path(self, root: Path, names: list[str]) -> Path:
        """Keyed by size and by names with byte sizes: a changed file set never reuses a stale cache."""
        listing = "".join(f"{name}\t{(root / name).stat().st_size}\n" for name in names)
        digest = hashlib.sha1(listing.encode()).hexdigest()[:12]
        return self.data_dir / self.cache_folder / f"garbage-v{self.cache_version}-{self.size}px-{digest}.pt"

    # -- decoding and caching -----------------------------------------------------------------------
    def _decode(self, root: Path, names: list[str]) -> dict:
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
        kept, labels, skipped = [], [], []
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for name, result in zip(names, pool.map(read, names), strict=True):
                if isinstance(result, str):
                    warnings.warn(f"skipping unreadable image {root / name} ({result})", stacklevel=3)
                    skipped.append(name)
                    continue
                images[len(kept)] = torch.from_numpy(result).permute(2, 0, 1)
                kept.append(name)
                labels.append(CLASSES.index(name.split("/")[0]))
        if len(kept) < len(names):
            images = images[:len(kept)].clone()  # torch.save of a slice would store the whole buffer
        return {"images": images, "labels": torch.tensor(labels, dtype=torch.int64),
                "files": kept, "skipped": skipped}

    def _decode_and_cache(self, root: Path, names: list[str], cache: Path) -> dict:
        data = self._decode(root, names)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")  # parallel runs never read half a file
        try:
            cache.parent.mkdir(exist_ok=True)
            torch.save(data, tmp)
            os.replace(tmp, cache)
        except OSError as err:
            warnings.warn(f"could not write the image cache {cache} ({err}); images will be decoded again "
                          f"next run", stacklevel=3)
        return data

    def prepare_data(self) -> None:
        root = self.class_root()
        names = self.image_files(root)
        if names and not self.cache_path(root, names).is_file():
            self._decode_and_cache(root, names, self.cache_path(root, names))

    def load_images(self) -> Split:
        """Every readable image at `self.size` and its label, in `self.files` order, from the cache if any."""
        root = self.class_root()
        names = self.image_files(root)
        if not names:
            raise BadInput(f"no images in the class folders of {root} (looked for "
                           f"{', '.join(sorted(IMAGE_SUFFIXES))}); {self._how_to_get()}")
        cache = self.cache_path(root, names)
        if cache.is_file():
            data = torch.load(cache, weights_only=True, mmap=True)
        else:
            data = self._decode_and_cache(root, names, cache)
        self.files = data["files"]
        self.skipped_files = [str(root / name) for name in data["skipped"]]
        if not self.files:
            raise BadInput(f"none of the {len(names)} images in {root} could be read; {self._how_to_get()}")
        return data["images"], data["labels"]

    def load_splits(self) -> dict[str, Split]:
        images, labels = self.load_images()
        try:
            parts = stratified_split(labels, self.split_fractions[self.mode], self.seed)
        except BadInput as err:
            raise BadInput(f"{self.data_dir}: {err}") from None
        names = ("train", "val", "test")[:len(parts)]
        return {split: (images[idx], labels[idx]) for split, idx in zip(names, parts, strict=True)}

    # -- augmentation -------------------------------------------------------------------------------
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fair":
            return random_crop_flip(x, padding=self.size // 8, flip=True)
        if self._paper_transform is None:
            from torchvision.transforms import v2

            self._paper_transform = v2.Compose([
                v2.RandomRotation(15),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
                v2.RandomAffine(degrees=0, translate=(0.1, 0.1)),
            ])
        return torch.stack([self._paper_transform(sample) for sample in x])
