"""CIFAR-10: 60,000 32×32 colour images of 10 classes (Krizhevsky 2009), the standard BNN benchmark.

`prepare_data()` downloads the official python archive with torchvision's `download_url` unless it is
already in `data_dir`, then checks its MD5 and extracts it itself. torchvision's
`download_and_extract_archive` is not used: for an archive on disk whose checksum is wrong it goes to
the network and overwrites the file, so a damaged archive someone put there offline would end as a
confusing download error. Here it is one line naming the file and saying it is corrupt; a download that
fails leaves no partial archive behind. Only an archive with the official MD5 is ever extracted.

`load_splits()` reads the extracted batches straight into uint8 tensors instead of using torchvision's
`CIFAR10` class, because that class MD5-checks every batch file and so rejects the tiny files the tests
write in the same format. The batches are pickles, and a pickle can call any importable function while
loading; they are read with an unpickler that admits only what the official files contain (they were
written by Python 2's cPickle: dicts, lists, byte strings, numbers and numpy arrays, rebuilt through
`numpy.core.multiarray._reconstruct`, `numpy.ndarray` and `numpy.dtype`), so loading a batch never runs
code. A batch naming anything else, a damaged batch, or one with a label outside the classes, is one
line naming the file.

Splits: the 50,000 training images are split 90/10 (45,000/5,000) into train/val, stratified and
seeded; the official 10,000 test images are the test split. Training augmentation is the usual random
crop after 4-pixel zero padding plus horizontal flip, done on whole batches.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from bnnbench.data.base import Split, TensorDataModule, one_line, random_crop_flip, stratified_split
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS

log = logging.getLogger(__name__)

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array-rebuilding function, wherever this numpy keeps it
BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the official files (Python 2, numpy 1)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the same batches pickled again by numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch and refuses every global but numpy's array rebuilding, so nothing else runs."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # Python 2 `str` (keys, pixel bytes) stays bytes
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in BATCH_GLOBALS:
            return BATCH_GLOBALS[module, name]
        raise BadInput(f"{self.path} is not a CIFAR batch: it references {module}.{name}, which the official "
                       f"batches never do (they hold only dicts, lists and numpy arrays); refused, nothing in it "
                       f"was run")


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
        why = f"; {one_line(reason)}" if reason else ""
        folder = self.data_dir / self.folder
        raise BadInput(f"{self.title} not found: {folder} lacks {', '.join(missing)}{why}; "
                       f"download {self.archive_url} and put it at {self.archive_path} (it is checked and "
                       f"extracted on the next run), or extract it there so that "
                       f"{folder / self.train_files[0]} exists")

    # -- getting the files --------------------------------------------------------------------------
    def download(self) -> None:
        """Fetch the archive into `data_dir`; a failed download removes what it wrote and says what to do."""
        from torchvision.datasets.utils import download_url

        try:
            download_url(self.archive_url, str(self.data_dir))  # no MD5 here: `extract` checks it
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            self.archive_path.unlink(missing_ok=True)
            self.require_files(reason=f"downloading it failed ({type(err).__name__}: {err})")

    def extract(self) -> None:
        """Check the archive's MD5, then extract it; a damaged archive is one line naming it, never a download."""
        archive = self.archive_path
        advice = f"delete it and run again to download it afresh, or download {self.archive_url} and put it there"
        digest = hashlib.md5()
        with open(archive, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != self.archive_md5:
            raise BadInput(f"{archive} is corrupt: its MD5 is {digest.hexdigest()}, the official {self.title} "
                           f"archive's is {self.archive_md5} (an interrupted download?); {advice}")
        log.info("extracting %s into %s", archive, self.data_dir)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(self.data_dir)  # the official archive only: its MD5 was checked above
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise BadInput(f"{archive} is corrupt, not a readable tar.gz ({type(err).__name__}: "
                           f"{one_line(err)}); {advice}") from None

    def prepare_data(self) -> None:
        if not self.missing_files():
            return
        if not self.archive_path.is_file():
            self.download()
        self.extract()
        self.require_files(reason=f"{self.archive_path} did not contain them")

    # -- reading the batches ------------------------------------------------------------------------
    def batch_arrays(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """The N×3×32×32 uint8 images and N int64 labels of an unpickled batch; ValueError if it is not one."""
        keys = (b"data", self.label_key)
        if not isinstance(batch, dict) or any(key not in batch for key in keys):
            found = f"keys {list(batch)[:8]}" if isinstance(batch, dict) else f"a {type(batch).__name__}"
            raise ValueError(f"expected a dict with keys {keys[0]!r} and {keys[1]!r}, found {found}")
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[self.label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"data is {data.dtype} of shape {data.shape}, not rows of 3072 uint8")
        if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
            raise ValueError(f"{len(data)} images but {labels.dtype} labels of shape {labels.shape}")
        return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)

    def read_batch(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """One batch file's images and labels (rows of 3072 bytes: 1024 red, 1024 green, 1024 blue, row-major)."""
        try:
            with open(path, "rb") as f:
                images, labels = self.batch_arrays(BatchUnpickler(f, path).load())
        except BadInput:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError, MemoryError) as err:  # a damaged pickle fails in any of these ways
            raise BadInput(f"{path} is corrupt, not a {self.title} batch ({type(err).__name__}: {one_line(err)}); "
                           f"delete {path.parent} to extract it again from {self.archive_path}, or download "
                           f"{self.archive_url} afresh") from None
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            raise BadInput(f"{path} has label {int(bad[0])}, but {self.title} labels are 0..{self.num_classes - 1} "
                           f"({self.num_classes} classes): it is not a {self.title} batch")
        return images, labels

    def read_batches(self, names: tuple[str, ...]) -> Split:
        """The named batch files of the extracted folder, concatenated."""
        batches = [self.read_batch(self.data_dir / self.folder / name) for name in names]
        return (torch.from_numpy(np.concatenate([images for images, _ in batches])),
                torch.from_numpy(np.concatenate([labels for _, labels in batches])))

    def load_splits(self) -> dict[str, Split]:
        self.require_files()
        images, labels = self.read_batches(self.train_files)
        train, val = stratified_split(labels, (0.9, 0.1), self.seed)
        return {"train": (images[train], labels[train]), "val": (images[val], labels[val]),
                "test": self.read_batches(self.test_files)}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return random_crop_flip(x, padding=4, flip=True)
