"""Tiny datasets written in the real on-disk formats, for torchvision's own loaders."""

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, classes: int, monkeypatch, per_file: int = 20) -> None:
    """CIFAR-10/100 python pickles; torchvision's md5 table is pointed at these files."""
    import torchvision

    rng = np.random.default_rng(0)
    if classes == 10:
        cls, folder, label_key, meta_key = torchvision.datasets.CIFAR10, "cifar-10-batches-py", \
            "labels", "label_names"
        train_names, test_names, meta_name = [f"data_batch_{i}" for i in range(1, 6)], \
            ["test_batch"], "batches.meta"
    else:
        cls, folder, label_key, meta_key = torchvision.datasets.CIFAR100, "cifar-100-python", \
            "fine_labels", "fine_label_names"
        train_names, test_names, meta_name = ["train"], ["test"], "meta"
    base = root / folder
    base.mkdir(parents=True)
    for name in train_names + test_names:
        data = {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                label_key: rng.integers(0, classes, per_file).tolist()}
        (base / name).write_bytes(pickle.dumps(data))
    (base / meta_name).write_bytes(pickle.dumps({meta_key: [f"c{i}" for i in range(classes)]}))
    monkeypatch.setattr(cls, "train_list", [[n, _md5(base / n)] for n in train_names])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(base / n)] for n in test_names])
    monkeypatch.setattr(cls, "meta", {"filename": meta_name, "key": meta_key,
                                      "md5": _md5(base / meta_name)})


def write_mnist(root: Path, folder: str = "MNIST", train: int = 40, test: int = 10) -> None:
    """MNIST idx files (big-endian headers, uint8 payload) in root/<folder>/raw."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x0801, n) + labels.tobytes())


def write_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
