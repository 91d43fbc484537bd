"""The dataset registry: ``name -> builder(**options) -> Data`` (train and val DataLoaders plus
the shapes a net needs).

``digits`` (scikit-learn's, shipped inside it) is the offline default; ``sine`` is the original
toy regression; ``synthetic`` is random tensors for benchmarks; ``cifar10``, ``cifar100``,
``mnist``, ``fashion_mnist`` and ``imagefolder`` load real files through torchvision.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lrexp.app.schema import ConfigError

__all__ = ["BadDataError", "Data", "DatasetNotFoundError", "UnknownDatasetError", "available",
           "build"]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# The original blog post's CIFAR-100 normalization.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UnknownDatasetError(ValueError):
    """A dataset name that is not registered; the message lists what is."""


class BadDataError(ValueError):
    """Data files that exist but cannot be used; the message names the file and the fix."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk (and were not to be downloaded)."""


@dataclass
class Data:
    train: DataLoader
    val: DataLoader | None
    num_classes: int  # outputs of the net: classes, or targets for regression
    in_channels: int
    input_size: int  # spatial side of the inputs; 1 for vectors
    task: str  # "classification" | "regression"


@dataclass
class _Splits:
    train: Dataset
    val: Dataset | None
    num_classes: int
    in_channels: int
    input_size: int
    task: str = "classification"


_REGISTRY: dict[str, Callable[..., _Splits]] = {}


def _register(name: str):
    def add(builder):
        _REGISTRY[name] = builder
        return builder

    return add


def available() -> list[str]:
    return sorted(_REGISTRY)


def build(
    name: str,
    *,
    batch_size: int = 64,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool | str = "auto",
    persistent_workers: bool = True,
    multiprocessing_context: str | None = "auto",
    device_type: str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    **options: Any,
) -> Data:
    """Build dataset ``name`` and its loaders. ``pin_memory="auto"`` pins on CUDA only;
    ``persistent_workers`` and ``multiprocessing_context`` apply only with ``num_workers > 0``.

    The train loader shuffles with a generator seeded by ``seed`` and drops the last partial
    batch (a batch of one breaks BatchNorm). With ``world_size > 1`` (torchrun) each rank reads
    its own shard through a DistributedSampler; ``batch_size`` is then per rank.
    """
    if name not in _REGISTRY:
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}. Registered datasets: {', '.join(available())}."
        )
    if not (isinstance(num_workers, int) and num_workers >= 0):
        raise ConfigError(f"Invalid setting dataset.num_workers={num_workers}: use 0 (load in "
                          "the main process) or a positive number of loader processes.")
    splits = _REGISTRY[name](**options)
    pin = device_type == "cuda" if pin_memory == "auto" else bool(pin_memory)
    if multiprocessing_context == "auto":
        # Name the start method: inside a joblib (loky) worker the inherited default context
        # cannot start DataLoader workers ("'Process' object has no attribute 'env'").
        multiprocessing_context = "fork" if sys.platform == "linux" else "spawn"
    common: dict[str, Any] = {  # what every loader of this dataset shares
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": pin,
        "persistent_workers": persistent_workers and num_workers > 0,
        "multiprocessing_context": multiprocessing_context if num_workers > 0 else None,
    }
    drop_last = len(splits.train) > batch_size * world_size  # type: ignore[arg-type]
    if world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler: DistributedSampler[Any] = DistributedSampler(
            splits.train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
            drop_last=True)
        train = DataLoader(splits.train, sampler=sampler, drop_last=drop_last, **common)
    else:
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(splits.train, shuffle=True, generator=generator, drop_last=drop_last,
                           **common)
    val = None if splits.val is None else DataLoader(splits.val, shuffle=False, **common)
    return Data(train, val, splits.num_classes, splits.in_channels, splits.input_size,
                splits.task)


def _split_tensors(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = len(x) - int(round(val_fraction * len(x)))
    train, val = order[:cut], order[cut:]
    return TensorDataset(x[train], y[train]), (TensorDataset(x[val], y[val]) if len(val) else None)


def _load_digits():
    """(pixels [n, 64], targets [n]) of scikit-learn's digits.

    Read straight from the CSV that ships inside scikit-learn: importing sklearn.datasets
    costs about 1.7 s here (it pulls in scipy), longer than the default test itself.
    """
    import gzip
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    origin = spec.origin if spec else None
    csv = Path(origin).parent / "datasets" / "data" / "digits.csv.gz" if origin else None
    if csv is None or not csv.exists():  # a future layout: take the public API
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data, bunch.target
    with gzip.open(csv, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


@_register("digits")
def digits(image_size: int = 32, val_fraction: float = 0.2, split_seed: int = 0) -> _Splits:
    """scikit-learn's 1797 8x8 digit images, upsampled to image_size and normalized."""
    pixels, targets = _load_digits()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    if image_size != 8:
        images = torch.nn.functional.interpolate(images, size=image_size, mode="bilinear",
                                                 align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(targets, dtype=torch.long)
    train, val = _split_tensors(images, labels, val_fraction, split_seed)
    return _Splits(train, val, num_classes=10, in_channels=1, input_size=image_size)


@_register("sine")
def sine(size: int = 2048, noise: float = 0.0, val_fraction: float = 0.2,
         split_seed: int = 0) -> _Splits:
    """The original toy: regress y = sin(x) for x in [-pi, pi] (MSE)."""
    gen = torch.Generator().manual_seed(split_seed)
    x = (torch.rand(size, 1, generator=gen) * 2 - 1) * math.pi
    y = torch.sin(x) + noise * torch.randn(size, 1, generator=gen)
    train, val = _split_tensors(x, y, val_fraction, split_seed)
    return _Splits(train, val, num_classes=1, in_channels=1, input_size=1, task="regression")


@_register("synthetic")
def synthetic(size: int = 1024, num_classes: int = 10, in_channels: int = 3,
              image_size: int = 32, val_fraction: float = 0.0, split_seed: int = 0) -> _Splits:
    """Random images and labels of a given shape: for benchmarks, where only speed matters."""
    gen = torch.Generator().manual_seed(split_seed)
    x = torch.randn(size, in_channels, image_size, image_size, generator=gen)
    y = torch.randint(num_classes, (size,), generator=gen)
    train, val = _split_tensors(x, y, val_fraction, split_seed)
    return _Splits(train, val, num_classes, in_channels, image_size)


def _transforms(mean, std, train: bool, augment: bool, pad_to_32: bool = False,
                resize: int | None = None):
    from torchvision import transforms as T

    steps: list = []
    if resize is not None:
        steps += [T.Resize(resize), T.CenterCrop(resize)]
    if pad_to_32:
        steps.append(T.Pad(2))  # 28x28 -> 32x32 for the CIFAR-style nets
    if train and augment:
        steps += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def _torchvision_dataset(cls, root: str, download: bool, name: str, **kwargs):
    """Instantiate a torchvision dataset, turning 'not found' into a message that says how."""
    root_path = Path(root).expanduser()
    try:
        return cls(root=str(root_path), download=download, **kwargs)
    except RuntimeError as error:
        if "not found" not in str(error).lower() and "download" not in str(error).lower():
            raise
        raise DatasetNotFoundError(
            f"The {name} files are not in {root_path.resolve()} (torchvision says: {error}). "
            f"Point to the folder that holds them with dataset.root=<folder>, or fetch them "
            f"with dataset.download=true (needs network access)."
        ) from None


def _cifar(cls_name: str, num_classes: int, mean, std):
    def builder(root: str = "data", download: bool = False, augment: bool = True,
                val: bool = True) -> _Splits:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        train = _torchvision_dataset(cls, root, download, cls_name, train=True,
                                     transform=_transforms(mean, std, True, augment))
        test = _torchvision_dataset(cls, root, download, cls_name, train=False,
                                    transform=_transforms(mean, std, False, augment)) if val \
            else None
        return _Splits(train, test, num_classes, in_channels=3, input_size=32)

    return builder


_register("cifar10")(_cifar("CIFAR10", 10, CIFAR10_MEAN, CIFAR10_STD))
_register("cifar100")(_cifar("CIFAR100", 100, CIFAR100_MEAN, CIFAR100_STD))


def _mnist_like(cls_name: str, mean, std):
    def builder(root: str = "data", download: bool = False, val: bool = True) -> _Splits:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        make = _transforms(mean, std, train=False, augment=False, pad_to_32=True)
        train = _torchvision_dataset(cls, root, download, cls_name, train=True, transform=make)
        test = _torchvision_dataset(cls, root, download, cls_name, train=False, transform=make) \
            if val else None
        return _Splits(train, test, num_classes=10, in_channels=1, input_size=32)

    return builder


_register("mnist")(_mnist_like("MNIST", MNIST_MEAN, MNIST_STD))
_register("fashion_mnist")(_mnist_like("FashionMNIST", FASHION_MEAN, FASHION_STD))


def _image_folder(root: Path, transform):
    """torchvision's ImageFolder, with its complaints about the folder said for users."""
    import torchvision

    try:
        return torchvision.datasets.ImageFolder(str(root), transform=transform,
                                                loader=_load_image)
    except FileNotFoundError as error:
        raise BadDataError(
            f"The image folder {root.resolve()} holds no usable images ({error}). It needs one "
            "sub-folder per class with .jpg/.png/... files inside; point dataset.root at such a "
            "folder."
        ) from None


def _load_image(path: str):
    """PIL's loader; a file it cannot read is fatal and named (it is not skipped: a silently
    smaller dataset would change the curve)."""
    from PIL import Image

    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert("RGB")
    except OSError as error:  # PIL's UnidentifiedImageError is an OSError
        raise BadDataError(
            f"The image {path} cannot be read ({error}); remove or replace it, then rerun. "
            "Unreadable images stop the run rather than being skipped."
        ) from None


@_register("imagefolder")
def imagefolder(root: str = "data/images", image_size: int = 32, val_root: str | None = None,
                mean=IMAGENET_MEAN, std=IMAGENET_STD) -> _Splits:
    """One sub-folder per class (torchvision's ImageFolder), resized to image_size."""

    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DatasetNotFoundError(
            f"The image folder {root_path.resolve()} does not exist. Point to a folder with one "
            "sub-folder of images per class with dataset.root=<folder>."
        )
    make = _transforms(tuple(mean), tuple(std), train=False, augment=False, resize=image_size)
    train = _image_folder(root_path, make)
    val = _image_folder(Path(val_root).expanduser(), make) if val_root else None
    return _Splits(train, val, num_classes=len(train.classes), in_channels=3,
                   input_size=image_size)
