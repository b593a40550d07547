"""Tiny datasets written in the exact on-disk formats of the real ones, so the real loading code runs.

Plain functions (not pytest fixtures) so any test, benchmark or notebook can call them with a
directory. Every class gets its own stripes and colour (`pattern`), so a model can learn the labels and
a test can check that pixels arrive in the right channel, row and column.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GARBAGE_CLASSES = ("battery", "biological", "brown-glass", "cardboard", "clothes", "green-glass", "metal",
                   "paper", "plastic", "shoes", "trash", "white-glass")


def class_colour(label: int) -> tuple[int, int, int]:
    """The colour of a label: labels with the same stripes (`pattern`; those 8 apart) get colours at least
    60 apart in some channel, so the first 256 labels (8 stripe patterns × 32 colours) all look different."""
    j = label // 8
    return 40 + 60 * (j % 4), 40 + 60 * (j // 4 % 4), 70 + 100 * (j // 16 % 2)


def pattern(label: int, height: int, width: int) -> np.ndarray:
    """The noise-free H×W×3 uint8 image of a class: its colour, with stripes along rows (even labels)
    or columns (odd labels) whose period depends on the label."""
    period = 2 + (label // 2) % 4
    axis = np.arange(height)[:, None] if label % 2 == 0 else np.arange(width)[None, :]
    stripes = np.where((axis // period) % 2 == 0, 30, -30) * np.ones((height, width))
    image = np.array(class_colour(label))[None, None, :] + stripes[:, :, None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _images(labels: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """N×H×W×3 uint8: each label's pattern plus a little uniform noise (±8)."""
    clean = np.stack([pattern(int(label), height, width) for label in labels]).astype(np.int16)
    noise = rng.integers(-8, 9, size=clean.shape)
    return np.clip(clean + noise, 0, 255).astype(np.uint8)


def _cifar_rows(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """N×3072 uint8 like the real batches: 1024 red, then green, then blue values, each row-major."""
    return _images(labels, 32, 32, rng).transpose(0, 3, 1, 2).reshape(len(labels), 3072)


def _shuffled_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def python2_pickle(obj) -> bytes:
    """`obj` pickled as Python 2's cPickle wrote the official CIFAR batches (protocol 2): bytes as Python 2
    `str` opcodes, uint8 arrays rebuilt by `numpy.core.multiarray._reconstruct`. Python 3 cannot write this
    itself: below protocol 3 it pickles bytes as calls to `_codecs.encode`, which the real files never make.
    Handles what CIFAR batches hold: dict, list, tuple, bytes, int, None, False and uint8 arrays."""
    if obj is None:
        return b"N"
    if obj is False:
        return b"\x89"
    if isinstance(obj, int):
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, bytes):
        return b"T" + struct.pack("<i", len(obj)) + obj
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(python2_pickle, obj)) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(map(python2_pickle, obj)) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(python2_pickle(k) + python2_pickle(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        dtype = (b"cnumpy\ndtype\n" + python2_pickle((b"u1", 0, 1)) + b"R"
                 + python2_pickle((3, b"|", None, None, None, -1, -1, 0)) + b"b")
        state = b"(" + python2_pickle(1) + python2_pickle(obj.shape) + dtype + b"\x89" + python2_pickle(
            np.ascontiguousarray(obj).tobytes()) + b"t"
        return (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n" + python2_pickle((0,))
                + python2_pickle(b"b") + b"tR" + state + b"b")
    raise TypeError(f"python2_pickle does not handle {type(obj).__name__}")


def _dump(path: Path, obj: dict) -> None:
    path.write_bytes(b"\x80\x02" + python2_pickle(obj) + b".")


def write_cifar10(root: str | Path, per_class_train: int = 10, per_class_test: int = 2,
                  seed: int = 0) -> Path:
    """Write `root/cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta); return that folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = _shuffled_labels(10, per_class_train, rng)
    for i, labels in enumerate(np.array_split(train, 5), start=1):
        _dump(folder / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels.tolist(),
            b"data": _cifar_rows(labels, rng),
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(len(labels))],
        })
    test = _shuffled_labels(10, per_class_test, rng)
    _dump(folder / "test_batch", {
        b"batch_label": b"testing batch 1 of 1", b"labels": test.tolist(), b"data": _cifar_rows(test, rng),
        b"filenames": [f"test_{j}.png".encode() for j in range(len(test))],
    })
    _dump(folder / "batches.meta", {b"num_cases_per_batch": len(train) // 5, b"num_vis": 3072,
                                    b"label_names": [name.encode() for name in CIFAR10_NAMES]})
    return folder


def write_cifar100(root: str | Path, per_class_train: int = 10, per_class_test: int = 2,
                   seed: int = 0) -> Path:
    """Write `root/cifar-100-python/` (train, test, meta) with fine and coarse labels; return that folder.

    The coarse label here is fine // 5, not the real superclass mapping: nothing in bnnbench reads it.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        fine = _shuffled_labels(100, per_class, rng)
        _dump(folder / split, {
            b"filenames": [f"{split}_{j}.png".encode() for j in range(len(fine))],
            b"batch_label": split.encode(), b"fine_labels": fine.tolist(),
            b"coarse_labels": (fine // 5).tolist(), b"data": _cifar_rows(fine, rng),
        })
    _dump(folder / "meta", {b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]})
    return folder


@dataclass
class GarbageFiles:
    """What `write_garbage` wrote: the class root, the special files (None when not asked for), and the
    number of images that can be read."""

    root: Path
    readable: int
    corrupt: Path | None = None
    grayscale: Path | None = None
    rgba: Path | None = None
    rgba_colour: tuple[int, int, int] = (200, 60, 120)
    stray: list[Path] = field(default_factory=list)


def write_garbage(root: str | Path, per_class: int = 10, size: tuple[int, int] = (48, 40),
                  corrupt: bool = True, grayscale: bool = True, rgba: bool = True, stray: bool = True,
                  seed: int = 0) -> GarbageFiles:
    """Write `root/garbage_classification/<class>/<class><i>.jpg` (real JPEGs, size = (width, height),
    deliberately not square), plus on request one corrupt .jpg (random bytes), one grayscale JPEG,
    one RGBA PNG of a uniform colour and stray non-image files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    class_root = Path(root) / "garbage_classification"
    width, height = size
    for label, name in enumerate(GARBAGE_CLASSES):
        (class_root / name).mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(_images(np.full(per_class, label), height, width, rng), start=1):
            Image.fromarray(pixels).save(class_root / name / f"{name}{i}.jpg", quality=95)
    out = GarbageFiles(root=class_root, readable=len(GARBAGE_CLASSES) * per_class)
    if corrupt:
        out.corrupt = class_root / "battery" / "corrupt.jpg"
        out.corrupt.write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    if grayscale:
        out.grayscale = class_root / "biological" / "gray.jpg"
        Image.fromarray(pattern(1, height, width)).convert("L").save(out.grayscale, quality=95)
        out.readable += 1
    if rgba:
        out.rgba = class_root / "cardboard" / "rgba.png"
        pixels = np.empty((height, width, 4), dtype=np.uint8)
        pixels[..., :3], pixels[..., 3] = out.rgba_colour, 128
        Image.fromarray(pixels).save(out.rgba)
        out.readable += 1
    if stray:
        out.stray = [class_root / ".DS_Store", class_root / "paper" / "notes.txt",
                     class_root / "metal" / "README"]
        for path in out.stray:
            path.write_text("not an image\n")
    return out


@dataclass
class TinyImageNetFiles:
    """What `write_tinyimagenet` wrote: the `tiny-imagenet-200` folder, the class ids in label order, and
    the label of each validation image (shuffled, so only the annotations say which class it shows)."""

    root: Path
    wnids: list[str]
    val_labels: list[int]


def write_tinyimagenet(root: str | Path, per_class_train: int = 10, per_class_val: int = 1, classes: int = 200,
                       size: int = 16, seed: int = 0) -> TinyImageNetFiles:
    """Write `root/tiny-imagenet-200/` in the official layout: wnids.txt, words.txt (with extra ids, as the
    real one lists all of ImageNet's), train/<wnid>/images/<wnid>_<i>.JPEG and <wnid>_boxes.txt,
    val/images/val_<i>.JPEG with val/val_annotations.txt, and test/images/. Images are size×size JPEGs
    (the real ones are 64×64); one training image is grayscale, as some real ones are."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{1440000 + 7919 * label:08d}" for label in range(classes)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
    words = [f"{wnid}\tthing {label}, synonym\n" for label, wnid in enumerate(wnids)]
    (folder / "words.txt").write_text("n00001740\tentity\n" + "".join(words))
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(_images(np.full(per_class_train, label), size, size, rng)):
            Image.fromarray(pixels).save(images / f"{wnid}_{i}.JPEG", quality=95)
        boxes = "".join(f"{wnid}_{i}.JPEG\t0\t0\t{size - 1}\t{size - 1}\n" for i in range(per_class_train))
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(boxes)
    Image.open(images / f"{wnids[-1]}_0.JPEG").convert("L").save(images / f"{wnids[-1]}_0.JPEG", quality=95)
    val_labels = _shuffled_labels(classes, per_class_val, rng).tolist()
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(_images(np.array(val_labels), size, size, rng)):
        Image.fromarray(pixels).save(folder / "val" / "images" / f"val_{i}.JPEG", quality=95)
    (folder / "val" / "val_annotations.txt").write_text("".join(
        f"val_{i}.JPEG\t{wnids[label]}\t0\t0\t{size - 1}\t{size - 1}\n" for i, label in enumerate(val_labels)))
    (folder / "test" / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(pattern(0, size, size)).save(folder / "test" / "images" / "test_0.JPEG", quality=95)
    return TinyImageNetFiles(root=folder, wnids=wnids, val_labels=val_labels)


# -- assertions and loading shared by the dataset tests ----------------------------------------------------
def loaded(datamodule):
    """prepare_data + setup, as the runner does; a corrupt file's warning is expected here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="skipping unreadable image")
        datamodule.prepare_data()
        datamodule.setup("fit")
    return datamodule


def assert_one_line_naming(err, *parts) -> None:
    """The error (a `pytest.ExceptionInfo`) is one line and names every one of `parts`."""
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, f"{part!r} not in {message!r}"
