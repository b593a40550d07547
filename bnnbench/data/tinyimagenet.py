"""Tiny ImageNet: 64×64 colour images of 200 ImageNet classes, 550 labelled per class (Le & Yang, CS231n 2015).

The harder real benchmark next to CIFAR: AdaSTE (Le et al. 2022, Table 1) and the mirror-descent
paper it quotes (Ajanthan et al. 2021) rank BNN training methods on it with ResNet-18 at 64 px
(leaderboard/README.md). bnnbench does not download it, since it is served over plain http with no
official checksum to verify it against: fetch http://cs231n.stanford.edu/tiny-imagenet-200.zip into
`data_dir` (it is extracted on first use), or unzip it there. Accepted layouts:
`data_dir/tiny-imagenet-200/`, or `data_dir` being that folder itself.

The official layout: `wnids.txt` (the 200 class ids, one a line; its order is the label order),
`words.txt` (id, tab, comma-separated names; the first name becomes the class name),
`train/<wnid>/images/*.JPEG` (500 per class), `val/images/*.JPEG` with `val/val_annotations.txt`
(tab-separated: file, wnid, x0, y0, x1, y1; 50 per class) and `test/images/` (no public labels, unused).
The class list comes from `wnids.txt`, which must list exactly `num_classes` = 200 distinct ids (a
different count is not Tiny ImageNet, and the networks are built for 200 outputs before any file is
read). Decoding, the cache and skipping unreadable files are the image-folder base's; a class whose
train folder has no readable image is refused.

Splits: the official validation set is the test split, because its labels are public and the test
set's are not; the 100,000 training images are split 90/10 (90,000/10,000) into train/val, stratified
and seeded. Paper mode changes a method's recipe, not the data: splits and augmentation are fair
mode's, as with CIFAR. Augmentation: the shared random crop (zero padding size/8, 8 px at 64)
and horizontal flip; normalisation with the ImageNet statistics, as Tiny ImageNet is an ImageNet subset.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from bnnbench.data.base import ImageFolderDataModule, Split, extract_zip
from bnnbench.errors import BadInput
from bnnbench.registry import DATASETS


@DATASETS.register("tinyimagenet")
class TinyImageNetDataModule(ImageFolderDataModule):
    num_classes = 200
    in_channels = 3
    image_size = 64
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    default_arch = "resnet18"
    default_epochs = 100
    default_batch_size = 128

    title = "Tiny ImageNet"
    split_fractions = {"fair": (0.9, 0.1), "paper": (0.9, 0.1)}  # of train/; the official val/ is the test split
    url: ClassVar[str] = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    folder: ClassVar[str] = "tiny-imagenet-200"
    annotations: ClassVar[str] = "val/val_annotations.txt"

    # -- finding the files --------------------------------------------------------------------------
    @property
    def archive_path(self) -> Path:
        return self.data_dir / f"{self.folder}.zip"

    def how_to_get(self) -> str:
        return (f"download {self.url} and put it at {self.archive_path} (it is extracted on first use), "
                f"or unzip it there so that {self.data_dir / self.folder / 'wnids.txt'} exists")

    def _find_root(self) -> Path | None:
        for candidate in (self.data_dir / self.folder, self.data_dir):
            if (candidate / "wnids.txt").is_file():
                return candidate
        return None

    def image_root(self) -> Path:
        """The `tiny-imagenet-200` folder; extracts `tiny-imagenet-200.zip` first if that is all there is."""
        root = self._find_root()
        if root is None and self.archive_path.is_file():
            extract_zip(self.archive_path, self.data_dir)
            root = self._find_root()
        if root is None:
            raise BadInput(f"Tiny ImageNet not found: no {self.data_dir / self.folder / 'wnids.txt'}; "
                           f"{self.how_to_get()}")
        missing = [name for name in ("train", "val/images", self.annotations) if not (root / name).exists()]
        if missing:
            raise BadInput(f"{root} lacks {', '.join(missing)}: not a complete Tiny ImageNet; {self.how_to_get()}")
        return root

    def wnids(self, root: Path) -> list[str]:
        """The class ids in label order, as `wnids.txt` lists them."""
        path = root / "wnids.txt"
        wnids = path.read_text().split()
        if len(wnids) != self.num_classes or len(set(wnids)) != len(wnids):
            raise BadInput(f"{path} lists {len(wnids)} class ids ({len(set(wnids))} distinct); Tiny ImageNet has "
                           f"{self.num_classes}, one a line; {self.how_to_get()}")
        return wnids

    def class_folders(self, root: Path) -> list[Path]:
        folders = [root / "train" / wnid / "images" for wnid in self.wnids(root)]
        missing = [folder for folder in folders if not folder.is_dir()]
        if missing:
            raise BadInput(f"{root / 'train'} lacks {len(missing)} of the {len(folders)} class folders "
                           f"<wnid>/images that {root / 'wnids.txt'} lists, e.g. {missing[0]}; {self.how_to_get()}")
        return folders

    def read_class_names(self, root: Path, wnids: list[str]) -> tuple[str, ...]:
        """The first name `words.txt` gives each class (the wnid itself where it gives none)."""
        path = root / "words.txt"
        lines = path.read_text().splitlines() if path.is_file() else []
        words = dict(line.split("\t", 1) for line in lines if "\t" in line)
        return tuple(words.get(wnid, wnid).split(",")[0].strip() for wnid in wnids)

    def test_labels(self, root: Path) -> tuple[list[str], list[int]]:
        """Root-relative names of the official validation images and their labels, from the annotations."""
        path = root / self.annotations
        label_of = {wnid: label for label, wnid in enumerate(self.wnids(root))}
        names, labels = [], []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in label_of:
                raise BadInput(f"{path}:{number} is not 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1' with a wnid "
                               f"of {root / 'wnids.txt'}: {line[:80]!r}")
            names.append(f"val/images/{fields[0]}")
            labels.append(label_of[fields[1]])
        absent = [name for name in names if not (root / name).is_file()]
        if absent or not names:
            example = f", e.g. {root / absent[0]}" if absent else ""
            raise BadInput(f"{path} lists {len(names)} images, {len(absent)} of them missing{example}; "
                           f"{self.how_to_get()}")
        return names, labels

    # -- loading ------------------------------------------------------------------------------------
    def load_test_images(self) -> Split:
        """The official validation images at `self.size`; unreadable ones join `skipped_files`."""
        root = self.image_root()
        data = self.load_files(root, *self.test_labels(root))
        self.skipped_files += [str(root / name) for name in data["skipped"]]
        return data["images"], data["labels"]

    def prepare_data(self) -> None:
        super().prepare_data()
        self.load_test_images()

    def load_splits(self) -> dict[str, Split]:
        splits = self.split_pool(*self.load_images())
        splits["test"] = self.load_test_images()
        root = self.image_root()
        self.class_names = self.read_class_names(root, self.wnids(root))
        return splits
