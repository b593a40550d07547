"""Fashion-MNIST and its backbone: the real IDX files load into the official split, every bad file is one
line naming it, and `fmnist_cnn` keeps its first conv and classifier full precision.

The real files are the ones Debian's `dataset-fashion-mnist` installs (CI installs the package); the
tests that need them skip, saying so, where that folder is missing. Corrupt files are small IDX files
written here, for which the official counts are patched down.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bnnbench import archs, cost
from bnnbench.data.fashion_mnist import SOURCE, FashionMnistDataModule
from bnnbench.errors import BadInput
from bnnbench.layers import BinaryConv2d, BinaryLayer
from bnnbench.registry import DATASETS, METHODS
from tests.datafiles import assert_one_line_naming

REAL = FashionMnistDataModule.system_dir
_real_files_missing = pytest.mark.skipif(
    not all((REAL / f"{name}.gz").is_file() for pair in FashionMnistDataModule.files.values() for name in pair),
    reason=f"the real Fashion-MNIST files are not in {REAL}: apt-get install dataset-fashion-mnist")


def needs_real_files(test):
    """Marked `data` (needs a real dataset on this machine) and skipped, saying why, where it is missing."""
    return pytest.mark.data(_real_files_missing(test))
TRAIN_PER_CLASS, TEST_PER_CLASS = 12, 2  # small files: 120 training, 20 test images


# -- small IDX files in the real format -------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, magic: int | None = None, cut: int = 0) -> Path:
    """An IDX file: big-endian magic (2051 for N×28×28 uint8 images, 2049 for N labels), one big-endian
    uint32 per dimension, the raw bytes; gzipped when the name ends in .gz; `cut` drops trailing bytes."""
    magic = magic if magic is not None else (2051 if array.ndim == 3 else 2049)
    data = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes() + array.astype(np.uint8).tobytes()
    data = data[:len(data) - cut]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def images_for(labels: np.ndarray, side: int = 28) -> np.ndarray:
    """N×side×side images whose pixels encode the image's index and label, so a test can track each one."""
    index = np.arange(len(labels))[:, None, None]
    rows = np.arange(side)[None, :, None]
    return ((index * 7 + labels[:, None, None] * 20 + rows * 3 + np.arange(side)[None, None, :]) % 256).astype(np.uint8)


def write_fashion(folder: Path, gz: bool = True, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four files, small, into `folder`; returns {split: (images, labels)} as written."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = images_for(labels)
        images_name, labels_name = FashionMnistDataModule.files[split]
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{images_name}{suffix}", images)
        write_idx(folder / f"{labels_name}{suffix}", labels)
        written[split] = (images, labels)
    return written


@pytest.fixture
def small(monkeypatch, tmp_path):
    """Official counts patched to the small files' and no system folder: only what a test writes counts."""
    monkeypatch.setattr(FashionMnistDataModule, "counts", {"train": 10 * TRAIN_PER_CLASS, "test": 10 * TEST_PER_CLASS})
    monkeypatch.setattr(FashionMnistDataModule, "system_dir", tmp_path / "no-system-files")


def loaded(data_dir: Path, **kwargs) -> FashionMnistDataModule:
    dm = DATASETS.get("fashion_mnist")(data_dir=data_dir, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


# -- the real files -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory) -> FashionMnistDataModule:
    """The real files through the real loader, found in the system folder (data_dir is empty)."""
    return loaded(tmp_path_factory.mktemp("empty"))


@needs_real_files
def test_real_files_split_55000_5000_stratified_plus_the_official_10000_test(real):
    assert real.split_sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    for split, per_class in (("train", 5_500), ("val", 500), ("test", 1_000)):
        images, labels = real.splits[split]
        assert images.dtype == torch.uint8 and images.shape == (len(labels), 1, 28, 28)
        assert labels.dtype == torch.int64
        assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), per_class)), split


@needs_real_files
def test_real_normalisation_is_the_mean_and_std_of_the_training_images(real):
    pixels = torch.cat([real.splits["train"][0], real.splits["val"][0]]).double() / 255
    assert pixels.mean().item() == pytest.approx(real.mean[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(real.std[0], abs=1e-4)


@needs_real_files
def test_real_train_and_val_are_disjoint_and_test_is_the_t10k_file(real):
    train = {bytes(row.numpy()) for row in real.splits["train"][0].flatten(1)}
    assert len(train) == 55_000  # the 60,000 training images are all distinct, so a repeat would be a bug
    assert not any(bytes(row.numpy()) in train for row in real.splits["val"][0].flatten(1))
    with gzip.open(REAL / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    assert torch.equal(real.splits["test"][1], torch.from_numpy(labels))


# -- small files: where they are found, and how the split is drawn ------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw"])
def test_files_are_read_pixel_exact_from_data_dir_or_torchvision_layout(layout, gz, small, tmp_path):
    written = write_fashion(tmp_path / layout, gz=gz)
    dm = loaded(tmp_path)
    images, labels = dm.splits["test"]
    assert torch.equal(images[:, 0], torch.from_numpy(written["test"][0]))  # rows, columns, order as written
    assert torch.equal(labels, torch.from_numpy(written["test"][1]).long())
    assert dm.split_sizes == {"train": 110, "val": 10, "test": 20}


def test_split_is_stratified_and_seeded(small, tmp_path):
    write_fashion(tmp_path)
    first, again, other = (loaded(tmp_path, seed=seed).splits["val"] for seed in (0, 0, 1))
    assert torch.equal(torch.bincount(first[1], minlength=10), torch.ones(10, dtype=torch.int64))
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], other[0])


def test_training_augmentation_is_a_2_pixel_crop_per_image_without_flip(small, tmp_path):
    write_fashion(tmp_path)
    dm = loaded(tmp_path)
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28) + 1  # no zeros, so the zero padding shows
    out = dm.augment(x)
    assert out.shape == x.shape
    offsets = []
    for image, result in zip(x, out, strict=True):
        padded = torch.nn.functional.pad(image, (2,) * 4)
        offsets += [(dy, dx) for dy in range(5) for dx in range(5)
                    if torch.equal(padded[:, dy:dy + 28, dx:dx + 28], result)]
    assert len(offsets) == len(x)  # each a window of its own padded image, never its mirror
    assert len(set(offsets)) > 1  # drawn per image


# -- errors -----------------------------------------------------------------------------------------
def test_missing_files_say_how_to_get_them(small, tmp_path):
    with pytest.raises(BadInput) as err:
        loaded(tmp_path)
    assert_one_line_naming(err, "not found", tmp_path, tmp_path / "FashionMNIST" / "raw", tmp_path / "no-system-files",
                           "apt-get install dataset-fashion-mnist", SOURCE, "data/fashion",
                           "train-images-idx3-ubyte.gz")


def test_incomplete_folder_names_the_missing_files(small, tmp_path):
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(BadInput) as err:
        loaded(tmp_path)
    assert_one_line_naming(err, tmp_path, "lacks t10k-labels-idx1-ubyte", "apt-get install dataset-fashion-mnist")


def corrupt(folder: Path, split: str, kind: str, **idx) -> Path:
    """Overwrite one file of a small set with `write_idx(**idx)`; return its path."""
    images, labels = write_fashion(folder)[split]
    name = FashionMnistDataModule.files[split][0 if kind == "images" else 1]
    array = idx.pop("array", images if kind == "images" else labels)
    return write_idx(folder / f"{name}.gz", array, **idx)


@pytest.mark.parametrize("split,kind,idx,what", [
    ("train", "images", {"magic": 2049}, "magic number 2049, expected 2051"),
    ("test", "labels", {"magic": 2051}, "magic number 2051, expected 2049"),
    ("train", "images", {"cut": 100}, "truncated or padded"),
    ("test", "labels", {"cut": 3}, "truncated or padded"),
    ("train", "images", {"array": np.zeros((120, 32, 32))}, "32 × 32 pixels, expected 28 × 28"),
    ("train", "labels", {"array": np.zeros(119)}, "119 labels for the 120 images"),
    ("test", "labels", {"array": np.full(20, 10)}, "label 10, expected 0 to 9"),
], ids=["images-magic", "labels-magic", "images-truncated", "labels-truncated", "images-32px", "count-mismatch",
        "label-range"])
def test_a_bad_file_is_one_line_naming_it(split, kind, idx, what, small, tmp_path):
    path = corrupt(tmp_path, split, kind, **idx)
    with pytest.raises(BadInput) as err:
        loaded(tmp_path)
    assert_one_line_naming(err, path, what, "apt-get install dataset-fashion-mnist")


def test_a_truncated_download_is_one_line_naming_it(small, tmp_path):
    write_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])  # the gzip stream ends early
    with pytest.raises(BadInput) as err:
        loaded(tmp_path)
    assert_one_line_naming(err, path, "cannot be read", "EOFError")


def test_a_header_shorter_than_idx_is_one_line_naming_it(small, tmp_path):
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(BadInput) as err:
        loaded(tmp_path)
    assert_one_line_naming(err, path, "10 bytes, shorter than its 16-byte IDX header")


def test_a_subset_of_the_official_files_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(FashionMnistDataModule, "system_dir", tmp_path / "no-system-files")
    write_fashion(tmp_path)
    with pytest.raises(BadInput) as err:
        loaded(tmp_path)
    assert_one_line_naming(err, tmp_path / "train-images-idx3-ubyte.gz", "120 images, the official file has 60,000")


# -- the backbone ---------------------------------------------------------------------------------------
def test_fmnist_cnn_is_the_default_and_maps_28_px_images_to_logits():
    assert FashionMnistDataModule.default_arch == "fmnist_cnn" and archs.ARCHS["fmnist_cnn"].__doc__
    model = archs.build("fmnist_cnn", 10, 1, 28).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_fmnist_cnn_costs_8_2_million_macs_nearly_all_in_the_binary_body():
    model = METHODS.get("ste")(METHODS.get("ste").default_config(), arch="fmnist_cnn", num_classes=10, in_channels=1,
                               image_size=28).model
    c = cost.count(model, (1, 28, 28))
    assert c.fp_macs == 1 * 16 * 9 * 28 * 28 + 256 * 10  # the first conv and the classifier
    assert c.bwn_macs == 16 * 64 * 9 * 14 * 14 + 64 * 128 * 9 * 7 * 7 + 128 * 256 * 9 * 3 * 3
    assert c.fp_macs + c.bwn_macs == 8_188_672


@pytest.mark.parametrize("method", ["bnn", "ste"])
def test_binary_method_keeps_first_conv_and_classifier_full_precision(method):
    cls = METHODS.get(method)
    model = cls(cls.default_config(), arch="fmnist_cnn", num_classes=10, in_channels=1, image_size=28).model
    assert type(model.features[0]) is nn.Conv2d and type(model.fc) is nn.Linear
    binary = [name for name, m in model.named_modules() if isinstance(m, BinaryLayer)]
    assert binary == ["features.4", "features.8", "features.12"]
    for index in (4, 8, 12):  # what the binary conv sees: BN, then the method's activation, nothing else
        assert isinstance(model.features[index], BinaryConv2d)
        assert model.features[index].binary_input == (method == "bnn")
        assert isinstance(model.features[index - 2], nn.BatchNorm2d)
        expected = nn.Hardtanh if method == "bnn" else nn.ReLU  # never a ReLU in front of a sign
        assert isinstance(model.features[index - 1], expected)
