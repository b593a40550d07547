"""Tiny ImageNet as a user meets it: the official `tiny-imagenet-200` layout (written small by
`tests.datafiles.write_tinyimagenet`: 200 classes, 16×16 JPEGs) goes in; the official validation images
come out as the labelled test split, a seeded stratified 90/10 of train as train/val; every missing or
broken file is one line naming it."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch

from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS
from tests.datafiles import assert_one_line_naming, loaded, pattern, write_tinyimagenet

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """One written copy per module; every test copies it (writing 2,200 JPEGs takes longer)."""
    return write_tinyimagenet(tmp_path_factory.mktemp("tiny-source"))


@pytest.fixture
def files(source, tmp_path):
    shutil.copytree(source.root, tmp_path / "tiny-imagenet-200")
    return type(source)(root=tmp_path / "tiny-imagenet-200", wnids=source.wnids, val_labels=source.val_labels)


def tiny(data_dir, **kwargs):
    return DATASETS.get("tinyimagenet")(data_dir=data_dir, **kwargs)


def nearest_class(images: torch.Tensor) -> torch.Tensor:
    """For each 3×16×16 image, the label whose noise-free pattern it is closest to."""
    patterns = torch.stack([torch.from_numpy(pattern(label, 16, 16)).permute(2, 0, 1) for label in range(200)])
    return torch.cdist(images.flatten(1).float(), patterns.flatten(1).float(), p=1).argmin(dim=1)


def test_registered_with_the_real_datasets_shape_and_defaults():
    cls = DATASETS.get("tinyimagenet")
    assert (cls.num_classes, cls.in_channels, cls.image_size) == (200, 3, 64)
    assert cls.default_arch == "resnet18" and cls.mean == (0.485, 0.456, 0.406)


def test_official_val_is_the_test_split_labelled_by_its_annotations(files, tmp_path):
    dm = loaded(tiny(tmp_path, image_size=16))
    assert dm.split_sizes == {"train": 1800, "val": 200, "test": 200}
    images, labels = dm.splits["test"]
    assert labels.tolist() == files.val_labels  # annotation order; the files are shuffled across classes
    assert torch.equal(nearest_class(images), labels)  # each image arrives with its own label


def test_train_is_split_90_10_stratified_in_wnids_order(files, tmp_path):
    dm = loaded(tiny(tmp_path, image_size=16))
    for split, per_class in (("train", 9), ("val", 1)):
        images, labels = dm.splits[split]
        assert torch.equal(torch.bincount(labels, minlength=200), torch.full((200,), per_class))
        gray = labels == 199  # the fixture's one grayscale image is of the last class
        assert torch.equal(nearest_class(images[~gray]), labels[~gray])
    assert dm.class_names[:2] == ("thing 0", "thing 1") and len(dm.class_names) == 200
    assert dm.extra_params() == {"data/train_size": 1800, "data/val_size": 200, "data/test_size": 200,
                                 "data/skipped_images": 0}


def test_zip_in_data_dir_is_extracted_and_data_dir_may_be_the_folder_itself(source, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with zipfile.ZipFile(data_dir / "tiny-imagenet-200.zip", "w") as z:
        for path in sorted(source.root.rglob("*")):
            z.write(path, path.relative_to(source.root.parent).as_posix())
    assert sum(loaded(tiny(data_dir, image_size=16)).split_sizes.values()) == 2200
    assert (data_dir / "tiny-imagenet-200" / "wnids.txt").is_file()
    assert sum(loaded(tiny(data_dir / "tiny-imagenet-200", image_size=16)).split_sizes.values()) == 2200


def test_unreadable_images_are_skipped_named_and_counted(files, tmp_path):
    bad_train = files.root / "train" / files.wnids[3] / "images" / f"{files.wnids[3]}_0.JPEG"
    bad_val = files.root / "val" / "images" / "val_5.JPEG"
    bad_train.write_bytes(b"not a JPEG")
    bad_val.write_bytes(b"not a JPEG either")
    dm = tiny(tmp_path, image_size=16)
    with pytest.warns(UserWarning, match="skipping unreadable image") as record:
        dm.prepare_data()
    for bad in (bad_train, bad_val):
        assert any(str(bad) in str(warning.message) for warning in record), bad
    dm.setup("fit")
    assert sorted(dm.skipped_files) == sorted([str(bad_train), str(bad_val)])
    assert dm.extra_params()["data/skipped_images"] == 2
    assert dm.split_sizes["test"] == 199


# -- errors ---------------------------------------------------------------------------------------------
def test_missing_dataset_says_exactly_what_to_download_and_where(tmp_path):
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path))
    assert_one_line_naming(err, URL, tmp_path / "tiny-imagenet-200.zip", tmp_path / "tiny-imagenet-200" / "wnids.txt")


def test_corrupt_zip_is_named_as_corrupt(tmp_path):
    archive = tmp_path / "tiny-imagenet-200.zip"
    archive.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path))
    assert_one_line_naming(err, archive, "is corrupt")


def test_wnids_listing_other_than_200_classes_is_refused(files, tmp_path):
    (files.root / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in files.wnids[:5]))
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path, image_size=16))
    assert_one_line_naming(err, files.root / "wnids.txt", "lists 5 class ids", "200")


def test_incomplete_folder_names_what_it_lacks(files, tmp_path):
    (files.root / "val" / "val_annotations.txt").unlink()
    shutil.rmtree(files.root / "train" / files.wnids[7])
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path, image_size=16))
    assert_one_line_naming(err, files.root, "val/val_annotations.txt", URL)
    (files.root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path, image_size=16))
    assert_one_line_naming(err, files.root / "train" / files.wnids[7] / "images", "1 of the 200 class folders")


def test_annotation_naming_an_unknown_class_or_a_missing_image_is_named(files, tmp_path):
    annotations = files.root / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join([*lines[:2], "val_2.JPEG\tn99999999\t0\t0\t1\t1", *lines[3:]]) + "\n")
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path, image_size=16))
    assert_one_line_naming(err, f"{annotations}:3", "n99999999")
    annotations.write_text("\n".join(lines) + "\n")
    (files.root / "val" / "images" / "val_9.JPEG").unlink()
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path, image_size=16))
    assert_one_line_naming(err, annotations, "1 of them missing", files.root / "val" / "images" / "val_9.JPEG")


def test_class_without_a_readable_training_image_is_named(files, tmp_path):
    images = files.root / "train" / files.wnids[42] / "images"
    for image in images.iterdir():
        image.write_bytes(b"not a JPEG")
    with pytest.raises(BadInput) as err:
        loaded(tiny(tmp_path, image_size=16))
    assert_one_line_naming(err, images, "all 10 images unreadable")


def test_cli_without_the_files_exits_2_with_one_line_saying_what_to_download(tmp_path, capsys):
    from bnnbench.cli import main

    code = main(["run", "--method", "fp", "--dataset", "tinyimagenet", "--data-dir", str(tmp_path / "data"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and URL in err and str(tmp_path / "data" / "tiny-imagenet-200.zip") in err


def test_same_seed_same_split_is_reproducible_across_cache_and_fresh_decode(files, tmp_path):
    first = loaded(tiny(tmp_path, image_size=16))
    shutil.rmtree(tmp_path / ".bnnbench-cache")
    again = loaded(tiny(tmp_path, image_size=16))
    for split in ("train", "val", "test"):
        assert torch.equal(first.splits[split][0], again.splits[split][0])
        assert np.array_equal(first.splits[split][1].numpy(), again.splits[split][1].numpy())
