"""Tiny datasets written in the exact on-disk formats of the real ones, so the real loading code runs.

Plain functions (not pytest fixtures) so any test, benchmark or notebook can call them with a
directory. Every class gets its own colour and stripe direction (`pattern`), so a model can learn the
labels and a test can check that pixels arrive in the right channel, row and column.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GARBAGE_CLASSES = ("battery", "biological", "brown-glass", "cardboard", "clothes", "green-glass", "metal",
                   "paper", "plastic", "shoes", "trash", "white-glass")


def class_colour(label: int) -> tuple[int, int, int]:
    """A colour per label, different for the first few hundred labels."""
    return 40 + (label * 67) % 176, 40 + (label * 151) % 176, 40 + (label * 211) % 176


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


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


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
