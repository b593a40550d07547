"""Datasets as a user meets them: files in the real formats go in, normalised batches and seeded,
stratified splits come out, and every bad folder gets one line that says what to do. Offline: the
CIFAR download is replaced by a function that fails like a machine without network."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bnnbench.data.base import random_crop_flip, stratified_split
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS
from tests.datafiles import (
    assert_one_line_naming,
    loaded,
    pattern,
    python2_pickle,
    write_cifar10,
    write_cifar100,
    write_garbage,
    write_tinyimagenet,
)

WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "garbage": write_garbage,
           "tinyimagenet": write_tinyimagenet}
KAGGLE = "kaggle datasets download -d mostafaabla/garbage-classification"


def garbage(data_dir, **kwargs):
    return DATASETS.get("garbage")(data_dir=data_dir, **kwargs)


def no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


# -- every registered dataset ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", DATASETS.names())
def test_train_batches_have_declared_shape_and_are_normalised(name, tmp_path):
    if name in WRITERS:
        WRITERS[name](tmp_path)
    dm = loaded(DATASETS.get(name)(data_dir=tmp_path, batch_size=8))
    assert len(dm.mean) == len(dm.std) == dm.in_channels
    assert dm.class_names is None or len(dm.class_names) == dm.num_classes
    raw_x, raw_y = next(iter(dm.train_dataloader()))
    assert raw_x.dtype == torch.uint8 and raw_x.shape == (8, dm.in_channels, dm.size, dm.size)

    mean, std = torch.tensor(dm.mean).view(1, -1, 1, 1), torch.tensor(dm.std).view(1, -1, 1, 1)
    x, y = dm.on_after_batch_transfer((raw_x, raw_y), 0)  # no trainer: evaluation, normalise only
    torch.testing.assert_close(x, (raw_x.float() / 255 - mean) / std)

    dm.trainer = SimpleNamespace(training=True)  # training: augmentation runs too
    x, y = dm.on_after_batch_transfer((raw_x, raw_y), 0)
    assert x.shape == (8, dm.in_channels, dm.size, dm.size) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < dm.num_classes
    assert (x >= -mean / std - 1e-5).all() and (x <= (1 - mean) / std + 1e-5).all()


# -- CIFAR ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_splits_are_90_10_of_train_plus_official_test(name, classes, tmp_path):
    WRITERS[name](tmp_path, per_class_train=10, per_class_test=3)
    dm = loaded(DATASETS.get(name)(data_dir=tmp_path))
    assert dm.split_sizes == {"train": 9 * classes, "val": classes, "test": 3 * classes}
    for split, per_class in (("train", 9), ("val", 1), ("test", 3)):
        assert torch.equal(torch.bincount(dm.splits[split][1], minlength=classes),
                           torch.full((classes,), per_class))


def test_cifar_pixels_arrive_in_channel_row_column_order(tmp_path):
    """The 3072-byte rows are red, green, blue planes, each row-major; a transposed read would fail."""
    write_cifar10(tmp_path)
    dm = loaded(DATASETS.get("cifar10")(data_dir=tmp_path))
    images, labels = dm.splits["train"]
    for label in (0, 1):  # stripes along rows, then along columns
        average = images[labels == label].float().mean(0)
        expected = torch.from_numpy(pattern(label, 32, 32)).permute(2, 0, 1).float()
        assert (average - expected).abs().max() < 8


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_offline_without_files_says_which_file_to_put_where(name, tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    cls = DATASETS.get(name)
    archive = tmp_path / cls.archive_url.rsplit("/", 1)[-1]
    with pytest.raises(BadInput) as err:
        cls(data_dir=tmp_path).prepare_data()
    assert_one_line_naming(err, cls.archive_url, archive, tmp_path / cls.folder, "URLError")
    with pytest.raises(BadInput) as err:  # setup without prepare_data: the same advice, no download
        cls(data_dir=tmp_path).setup()
    assert_one_line_naming(err, cls.archive_url, archive, tmp_path / cls.folder)


def test_cifar_archive_put_in_data_dir_is_verified_and_extracted_offline(tmp_path, monkeypatch):
    cls = DATASETS.get("cifar10")
    source = tmp_path / "elsewhere"
    write_cifar10(source)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = data_dir / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(cls, "archive_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    dm = loaded(cls(data_dir=data_dir))
    assert (data_dir / "cifar-10-batches-py" / "test_batch").is_file()
    assert sum(dm.split_sizes.values()) == 120


def test_cifar_batch_written_by_python3_numpy2_loads_too(tmp_path):
    """The fixture writes Python 2 pickles like the official files; a batch pickled again by Python 3 and
    numpy >= 2 (which names numpy._core.multiarray) is admitted as well."""
    import pickle

    folder = write_cifar10(tmp_path)
    cls = DATASETS.get("cifar10")
    batch = cls(data_dir=tmp_path).read_batch(folder / "data_batch_1")
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": batch[0].reshape(-1, 3072), b"labels": batch[1].tolist()}, f, protocol=4)
    again = cls(data_dir=tmp_path).read_batch(folder / "data_batch_1")
    assert (again[0] == batch[0]).all() and (again[1] == batch[1]).all()


def set_first_label(path, key: bytes, label: int) -> None:
    """Rewrite a CIFAR batch file (Python 2 format) with its first label changed."""
    import pickle

    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # our own fixture file, not user data
    batch[key] = [label] + batch[key][1:]
    path.write_bytes(b"\x80\x02" + python2_pickle(batch) + b".")


@pytest.mark.parametrize("name,batch,key,label,valid", [("cifar10", "data_batch_3", b"labels", 42, "0..9"),
                                                        ("cifar100", "test", b"fine_labels", 100, "0..99")])
def test_cifar_batch_with_a_label_outside_the_classes_names_file_label_and_range(name, batch, key, label, valid,
                                                                                 tmp_path):
    folder = WRITERS[name](tmp_path)
    set_first_label(folder / batch, key, label)
    with pytest.raises(BadInput) as err:
        loaded(DATASETS.get(name)(data_dir=tmp_path))
    title = DATASETS.get(name).title
    assert_one_line_naming(err, folder / batch, f"label {label}", valid, f"not a {title} batch")


def test_any_split_with_a_label_outside_the_classes_is_refused_naming_dataset_split_and_label():
    class Mislabelled(DATASETS.get("fake")):
        def load_splits(self):
            splits = super().load_splits()
            images, labels = splits["val"]
            splits["val"] = (images, torch.cat([labels[:-1], torch.tensor([7])]))
            return splits

    with pytest.raises(BadInput) as err:
        Mislabelled().setup("fit")
    assert_one_line_naming(err, "dataset 'fake'", "split 'val'", "label 7", "0..3")


def corrupt_archive(kind: str, data_dir, source) -> bytes:
    """The bytes of a broken cifar-10-python.tar.gz: cut in half, or not gzip at all."""
    archive = data_dir / "whole.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    whole = archive.read_bytes()
    archive.unlink()
    return whole[:len(whole) // 2] if kind == "truncated" else b"<html>404 Not Found</html>\n" * 50


@pytest.mark.parametrize("kind", ["truncated", "not gzip"])
@pytest.mark.parametrize("checksum", ["official", "matching"])
def test_cifar_corrupt_archive_on_disk_is_named_as_corrupt_without_touching_the_network(
        kind, checksum, tmp_path, monkeypatch):
    """With the official MD5 the bad archive fails its checksum; with an MD5 that matches (as if the
    checksum were right) extraction fails. Either way: one line naming it as corrupt, no download."""
    cls = DATASETS.get("cifar10")
    write_cifar10(tmp_path / "elsewhere")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = data_dir / "cifar-10-python.tar.gz"
    archive.write_bytes(corrupt_archive(kind, data_dir, tmp_path / "elsewhere"))
    if checksum == "matching":
        monkeypatch.setattr(cls, "archive_md5", hashlib.md5(archive.read_bytes()).hexdigest())

    def network_used(*args, **kwargs):
        raise AssertionError("the network was used although the archive is on disk")

    monkeypatch.setattr(urllib.request, "urlopen", network_used)
    before = archive.read_bytes()
    with pytest.raises(BadInput) as err:
        loaded(cls(data_dir=data_dir))
    assert_one_line_naming(err, archive, "is corrupt", cls.archive_url)
    assert ("MD5" in str(err.value)) == (checksum == "official")
    assert "failed" not in str(err.value)  # the reason is the file, not a failed download
    assert archive.read_bytes() == before  # never overwritten


def test_cifar_failed_download_leaves_no_partial_archive(tmp_path, monkeypatch):
    class DroppedConnection:
        url, length, sent = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 10 ** 6, False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            if self.sent:
                raise ConnectionResetError(104, "Connection reset by peer")
            self.sent = True
            return b"\x1f\x8b" + b"x" * 1000

    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: DroppedConnection())
    cls = DATASETS.get("cifar10")
    with pytest.raises(BadInput) as err:
        cls(data_dir=tmp_path).prepare_data()
    assert_one_line_naming(err, "downloading it failed", "Connection reset", cls.archive_url)
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()  # the next run downloads again


CORRUPT_BATCHES = {
    "not a pickle": lambda whole: b"this is a text file, not a pickle\n" * 20,
    "truncated": lambda whole: whole[:len(whole) // 2],
    "wrong keys": lambda whole: b"\x80\x02" + python2_pickle({b"pixels": [1, 2], b"labels": [0, 1]}) + b".",
    "wrong shape": lambda whole: b"\x80\x02" + python2_pickle(
        {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0, 1, 2, 3]}) + b".",
}


@pytest.mark.parametrize("kind", list(CORRUPT_BATCHES))
def test_cifar_corrupt_batch_file_is_named_as_corrupt(kind, tmp_path):
    folder = write_cifar10(tmp_path)
    batch = folder / "test_batch"
    batch.write_bytes(CORRUPT_BATCHES[kind](batch.read_bytes()))
    with pytest.raises(BadInput) as err:
        loaded(DATASETS.get("cifar10")(data_dir=tmp_path))
    assert_one_line_naming(err, batch, "is corrupt", "not a CIFAR-10 batch")


class _Payload:
    """Unpickling this calls `call(*args)`: what a malicious "batch" could do."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker):
    import os

    return {"open": _Payload(open, str(marker), "w"), "os.system": _Payload(os.system, f"touch {marker}")}


@pytest.mark.parametrize("payload", ["open", "os.system"])
def test_cifar_batch_that_would_run_code_is_refused_and_runs_nothing(payload, tmp_path):
    import pickle

    proof = tmp_path / "plain-pickle-ran-it"
    pickle.loads(pickle.dumps(payloads(proof)[payload]))  # the payload is real: a plain load runs it
    assert proof.exists()

    folder = write_cifar10(tmp_path)
    marker = tmp_path / "created-by-loading"
    batch = folder / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": payloads(marker)[payload], b"labels": [0]}))
    with pytest.raises(BadInput) as err:
        loaded(DATASETS.get("cifar10")(data_dir=tmp_path))
    assert_one_line_naming(err, batch, "is not a CIFAR batch", "it references", payload.split(".")[-1])
    assert not marker.exists()


# -- splits ---------------------------------------------------------------------------------------------
def test_stratified_split_is_reproducible_from_the_seed_and_stratified():
    labels = torch.arange(200) % 4
    first = stratified_split(labels, (0.7, 0.1, 0.2), seed=3)
    again = stratified_split(labels, (0.7, 0.1, 0.2), seed=3)
    other = stratified_split(labels, (0.7, 0.1, 0.2), seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert [len(p) for p in first] == [140, 20, 40]
    assert torch.equal(torch.sort(torch.cat(first)).values, torch.arange(200))  # disjoint, complete
    for part, per_class in zip(first, (35, 5, 10), strict=True):
        assert torch.equal(torch.bincount(labels[part]), torch.full((4,), per_class))


@pytest.mark.parametrize("name", ["cifar10", "garbage", "tinyimagenet"])
def test_dataset_split_is_the_same_for_a_seed_and_differs_across_seeds(name, tmp_path):
    WRITERS[name](tmp_path)
    kwargs = {"image_size": 16} if name in ("garbage", "tinyimagenet") else {}

    def val(seed):
        return loaded(DATASETS.get(name)(data_dir=tmp_path, seed=seed, **kwargs)).splits["val"]

    first, again, other = val(0), val(0), val(1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_garbage_fair_split_is_70_10_20_and_paper_split_80_20_without_test(tmp_path):
    files = write_garbage(tmp_path, per_class=10, size=(24, 20))
    n = files.readable
    fair = loaded(garbage(tmp_path, image_size=16, mode="fair"))
    assert fair.split_sizes == {"train": round(0.7 * n), "val": round(0.1 * n),
                                "test": n - round(0.7 * n) - round(0.1 * n)}
    counts = torch.bincount(torch.cat([y for _, y in fair.splits.values()]), minlength=12)
    for split, fraction in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        per_class = torch.bincount(fair.splits[split][1], minlength=12)
        assert ((per_class - fraction * counts).abs() <= 1).all(), split  # stratified
    paper = loaded(garbage(tmp_path, image_size=16, mode="paper"))
    assert paper.split_sizes == {"train": round(0.8 * n), "val": n - round(0.8 * n)}
    assert not paper.has_test
    with pytest.raises(BadInput, match="no test split"):
        paper.test_dataloader()


# -- Garbage files --------------------------------------------------------------------------------------
def test_garbage_skips_corrupt_file_converts_gray_and_rgba_and_ignores_stray_files(tmp_path):
    files = write_garbage(tmp_path, size=(24, 20))
    dm = garbage(tmp_path, image_size=16)
    with pytest.warns(UserWarning, match=re.escape(str(files.corrupt))) as record:
        dm.setup()
    assert dm.skipped_files == [str(files.corrupt)]
    assert not any(stray.name in str(w.message) for w in record for stray in files.stray)
    assert sum(dm.split_sizes.values()) == files.readable == len(dm.files)
    assert not any(name.endswith(("notes.txt", "README", ".DS_Store")) for name in dm.files)

    images, labels = dm.load_images()
    gray = images[dm.files.index("biological/gray.jpg")]
    assert gray.shape == (3, 16, 16) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    rgba = images[dm.files.index("cardboard/rgba.png")]
    colour = torch.tensor(files.rgba_colour, dtype=torch.uint8).view(3, 1, 1)
    assert torch.equal(rgba, colour.expand(3, 16, 16))  # alpha dropped, colour kept
    assert labels[dm.files.index("cardboard/rgba.png")] == dm.class_names.index("cardboard")


def test_garbage_cache_is_written_once_and_reused_without_decoding(tmp_path, monkeypatch):
    write_garbage(tmp_path, size=(24, 20))
    first = loaded(garbage(tmp_path, image_size=16))
    caches = sorted((tmp_path / ".bnnbench-cache").glob("*.pt"))
    assert len(caches) == 1 and "16px" in caches[0].name

    import PIL.Image

    def no_decoding(*args, **kwargs):
        raise AssertionError("a JPEG was decoded although the cache exists")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no decoding, so no new warning about the corrupt file either
        second = garbage(tmp_path, image_size=16)
        second.prepare_data()
        second.setup()
    assert second.skipped_files == first.skipped_files and second.files == first.files
    for split in ("train", "val", "test"):
        assert torch.equal(second.splits[split][0], first.splits[split][0])
    monkeypatch.undo()

    loaded(garbage(tmp_path, image_size=24))  # another size is another cache
    assert len(list((tmp_path / ".bnnbench-cache").glob("*.pt"))) == 2


def test_garbage_cache_is_rebuilt_when_an_image_changes_at_the_same_size_or_one_is_added(tmp_path):
    """BMPs of the same width and height have the same byte size whatever their colours: only the
    modification time tells the cache that the file changed."""
    from PIL import Image

    files = write_garbage(tmp_path, size=(24, 20), corrupt=False)
    swapped = files.root / "battery" / "swapped.bmp"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(swapped)
    first = loaded(garbage(tmp_path, image_size=16))
    assert first.load_images()[0][first.files.index("battery/swapped.bmp"), :, 0, 0].tolist() == [10, 200, 30]

    size, mtime = swapped.stat().st_size, swapped.stat().st_mtime_ns
    Image.new("RGB", (16, 16), (250, 5, 99)).save(swapped)
    os.utime(swapped, ns=(mtime + 2_000_000_000, mtime + 2_000_000_000))  # coarse clocks: surely later
    assert swapped.stat().st_size == size
    second = loaded(garbage(tmp_path, image_size=16))
    assert second.load_images()[0][second.files.index("battery/swapped.bmp"), :, 0, 0].tolist() == [250, 5, 99]
    assert len(list((tmp_path / ".bnnbench-cache").glob("*.pt"))) == 2

    Image.new("RGB", (16, 16), (1, 2, 3)).save(files.root / "metal" / "added.png")
    third = loaded(garbage(tmp_path, image_size=16))
    assert len(third.files) == len(second.files) + 1 and "metal/added.png" in third.files
    assert len(list((tmp_path / ".bnnbench-cache").glob("*.pt"))) == 3


def test_extra_params_are_the_split_sizes_plus_skipped_images_for_image_folders(tmp_path):
    write_garbage(tmp_path, size=(24, 20))
    dm = loaded(garbage(tmp_path, image_size=16))
    sizes = {f"data/{split}_size": n for split, n in dm.split_sizes.items()}
    assert dm.extra_params() == {**sizes, "data/skipped_images": 1}
    fake = loaded(DATASETS.get("fake")())
    assert fake.extra_params() == {"data/train_size": 64, "data/val_size": 32, "data/test_size": 32}


def test_garbage_archive_zip_in_dir_is_extracted_and_used(tmp_path):
    files = write_garbage(tmp_path / "download", size=(24, 20), corrupt=False, stray=False)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with zipfile.ZipFile(data_dir / "archive.zip", "w") as z:
        for path in sorted(files.root.rglob("*")):
            z.write(path, path.relative_to(files.root.parent).as_posix())
    dm = loaded(garbage(data_dir, image_size=16))
    assert (data_dir / "garbage_classification" / "white-glass").is_dir()
    assert sum(dm.split_sizes.values()) == files.readable


def test_garbage_dir_may_be_the_class_root(tmp_path):
    files = write_garbage(tmp_path, size=(24, 20), corrupt=False)
    dm = loaded(garbage(files.root, image_size=16))
    assert sum(dm.split_sizes.values()) == files.readable


# -- Garbage errors -------------------------------------------------------------------------------------
def test_garbage_missing_dir_says_how_to_get_the_data(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(BadInput) as err:
        loaded(garbage(missing))
    assert_one_line_naming(err, missing, "does not exist", KAGGLE, "archive.zip")


def test_garbage_empty_dir_says_how_to_get_the_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInput) as err:
        loaded(garbage(empty))
    assert_one_line_naming(err, empty, "is empty", KAGGLE, "archive.zip")


def test_garbage_missing_class_folders_are_named(tmp_path):
    files = write_garbage(tmp_path, size=(24, 20))
    shutil.rmtree(files.root / "shoes")
    shutil.rmtree(files.root / "trash")
    with pytest.raises(BadInput) as err:
        loaded(garbage(tmp_path, image_size=16))
    assert_one_line_naming(err, files.root, "shoes, trash", "<class>/*.jpg")


def test_garbage_class_folder_without_images_is_named(tmp_path):
    files = write_garbage(tmp_path, size=(24, 20), stray=False)
    for image in (files.root / "shoes").iterdir():
        image.unlink()
    (files.root / "shoes" / "notes.txt").write_text("not an image\n")
    with pytest.raises(BadInput) as err:
        loaded(garbage(tmp_path, image_size=16))
    assert_one_line_naming(err, files.root / "shoes", "no image files", "without a readable image")
    assert str(files.root / "trash") not in str(err.value)


def test_garbage_class_folder_whose_images_are_all_unreadable_is_named(tmp_path):
    files = write_garbage(tmp_path, size=(24, 20))
    for image in (files.root / "trash").iterdir():
        image.write_bytes(b"not a JPEG at all")
    with pytest.raises(BadInput) as err:
        loaded(garbage(tmp_path, image_size=16))
    assert_one_line_naming(err, files.root / "trash", "all 10 images unreadable")


def test_garbage_with_too_few_images_says_how_many_are_needed(tmp_path):
    write_garbage(tmp_path, per_class=3, size=(24, 20), corrupt=False, grayscale=False, rgba=False)
    with pytest.raises(BadInput) as err:
        loaded(garbage(tmp_path, image_size=16))
    assert_one_line_naming(err, tmp_path, "too few images", "70%/10%/20%", "at least about 10 images")


def test_garbage_unknown_mode_lists_the_valid_ones(tmp_path):
    with pytest.raises(BadInput) as err:
        garbage(tmp_path, mode="papr")
    assert_one_line_naming(err, "'papr'", "fair, paper")


# -- augmentation ---------------------------------------------------------------------------------------
def test_random_crop_flip_without_padding_only_flips():
    x = torch.rand(32, 3, 5, 7)
    out = random_crop_flip(x, padding=0, flip=True)
    assert out.shape == x.shape
    flipped = [torch.equal(b, a.flip(-1)) for a, b in zip(x, out, strict=True)]
    for a, b, was_flipped in zip(x, out, flipped, strict=True):
        assert was_flipped or torch.equal(a, b)
        assert torch.equal(torch.sort(a.flatten()).values, torch.sort(b.flatten()).values)
    assert 0 < sum(flipped) < len(x)  # per sample, not per batch


def test_random_crop_flip_with_padding_takes_a_window_of_the_padded_image():
    x = torch.rand(8, 3, 6, 6) + 1  # no zeros, so the zero padding is visible
    out = random_crop_flip(x, padding=2, flip=False)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for p, o in zip(padded, out, strict=True):
        assert any(torch.equal(p[:, dy:dy + 6, dx:dx + 6], o) for dy in range(5) for dx in range(5))


def test_garbage_paper_augmentation_is_per_sample_and_keeps_shape(tmp_path):
    dm = garbage(tmp_path, mode="paper", image_size=32)
    x = torch.rand(1, 3, 32, 32).expand(8, 3, 32, 32).contiguous()
    out = dm.augment(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    assert not all(torch.equal(out[0], o) for o in out[1:])  # each image draws its own rotation, jitter
    assert out.min() >= 0 and out.max() <= 1


# -- what the command line shows ------------------------------------------------------------------------
def cifar_with_label_42(data_dir):
    folder = write_cifar10(data_dir)
    set_first_label(folder / "data_batch_1", b"labels", 42)
    return folder / "data_batch_1"


def cifar_with_corrupt_archive(data_dir):
    data_dir.mkdir(parents=True)
    archive = data_dir / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 cut short")
    return archive


def cifar_with_code_in_a_batch(data_dir):
    import pickle

    folder = write_cifar10(data_dir)
    (folder / "test_batch").write_bytes(pickle.dumps(payloads(data_dir / "created-by-loading")["os.system"]))
    return folder / "test_batch"


def garbage_with_an_empty_class(data_dir):
    files = write_garbage(data_dir, size=(24, 20), corrupt=False, stray=False)
    for image in (files.root / "clothes").iterdir():
        image.unlink()
    return files.root / "clothes"


@pytest.mark.parametrize("dataset,breaks", [("cifar10", cifar_with_label_42), ("cifar10", cifar_with_corrupt_archive),
                                            ("cifar10", cifar_with_code_in_a_batch),
                                            ("garbage", garbage_with_an_empty_class)])
def test_cli_reports_bad_data_as_one_line_naming_the_file_and_exits_2(dataset, breaks, tmp_path, monkeypatch,
                                                                       capsys):
    from bnnbench.cli import main

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data_dir = tmp_path / "data"
    bad_file = breaks(data_dir)
    code = main(["run", "--method", "fp", "--dataset", dataset, "--data-dir", str(data_dir), "--tracking-uri",
                 f"sqlite:///{tmp_path}/m.db", "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and str(bad_file) in err, err
    assert not (data_dir / "created-by-loading").exists()
