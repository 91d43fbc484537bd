"""The zoo's datasets, each an ordinary ``_target_`` returning torch Datasets, and ``loaders``:
what any ``dataset._target_`` returns (a Dataset, a ``(train, val)`` pair, DataLoaders) as the
train and validation loaders the range test reads.

``digits`` (scikit-learn's, shipped inside it) is the offline default; ``sine`` is the original
toy regression; ``synthetic`` is random tensors for benchmarks; ``cifar10``, ``cifar100``,
``mnist``, ``fashion_mnist`` and ``imagefolder`` load real files through torchvision. The
shapes a net needs are not returned: each dataset option states them under ``data.*``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

__all__ = ["BadDataError", "DatasetNotFoundError", "LoaderSettings", "cifar10", "cifar100",
           "digits", "fashion_mnist", "imagefolder", "load_digits", "loaders", "mnist", "sine",
           "synthetic"]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# The original blog post's CIFAR-100 normalization.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

Splits = tuple[Dataset, Dataset | None]  # (train, val)
VAL_SPLITS = ("val", "validation", "test")  # a dict of splits: the first of these validates


class BadDataError(ValueError):
    """Data that exist but cannot be used; the message names what and the fix."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk (and were not to be downloaded)."""


@dataclass(frozen=True)
class LoaderSettings:
    """How a Dataset is batched (the ``loader`` node, plus the run's batch size and seed)."""

    batch_size: int = 64
    seed: int = 0
    num_workers: int = 0
    pin_memory: bool | str = "auto"  # auto: on CUDA
    persistent_workers: bool = True
    device_type: str = "cpu"
    rank: int = 0
    world_size: int = 1


def loaders(made: Any, settings: LoaderSettings, batch_keys: Sequence[str] = ("input", "target"),
            source: str = "dataset") -> tuple[Any, Any]:
    """(train, val or None) loaders from what ``dataset._target_`` returned: a Dataset (the
    training set), a ``(train, val)`` pair of Datasets or DataLoaders, or a DataLoader.

    A Dataset is batched here: shuffled with a generator seeded by ``seed``, the last partial
    batch dropped (a batch of one breaks BatchNorm); with ``world_size > 1`` (torchrun) each rank
    reads its own shard through a DistributedSampler, and ``batch_size`` is per rank.
    """
    if isinstance(made, (tuple, list)) and len(made) == 2 and all(
            part is None or _is_data(part) for part in made):
        train, val = made
    elif isinstance(made, Mapping) and "train" in made:  # a dict of splits (a DatasetDict)
        train = made["train"]
        val = next((made[key] for key in VAL_SPLITS if key in made), None)
    else:
        train, val = made, None
    for role, part in (("training set", train), ("validation set", val)):
        if part is not None and not _is_data(part):
            raise BadDataError(
                f"{source} returned {_describe(made)}, whose {role} is a "
                f"{type(part).__name__}. Return a torch Dataset (the training set), a "
                "(train, val) pair of Datasets or DataLoaders, a dict of splits with 'train', "
                "or a DataLoader; arrays go into torch.utils.data.TensorDataset(x, y).")
    if train is None:
        raise BadDataError(f"{source} returned no training set ({_describe(made)}).")
    for role, part in (("training set", train), ("validation set", val)):
        if part is not None and not isinstance(part, DataLoader):
            _check_samples(part, role, source, batch_keys)
    return (_loader(train, settings, training=True),
            None if val is None else _loader(val, settings, training=False))


def _is_data(part: Any) -> bool:
    return isinstance(part, (DataLoader, Dataset)) or (
        hasattr(part, "__getitem__") and hasattr(part, "__len__"))


def _describe(made: Any) -> str:
    if isinstance(made, (tuple, list)):
        kinds = ", ".join(type(part).__name__ for part in made)
        return f"a {type(made).__name__} of {len(made)} ({kinds})"
    return f"a {type(made).__name__}"


def _check_samples(dataset: Any, role: str, source: str, batch_keys: Sequence[str]) -> None:
    """A sample the range test could not split into inputs and targets is said now, not as a
    collate error deep in the loop."""
    if isinstance(dataset, IterableDataset):
        return  # no random access: its first batch will tell
    if len(dataset) == 0:
        raise BadDataError(f"The {role} that {source} returned is empty; it needs samples.")
    sample = dataset[0]
    if isinstance(sample, Mapping):
        missing = [key for key in batch_keys if key not in sample]
        if missing:
            raise BadDataError(
                f"The samples of the {role} that {source} returned are dicts with the keys "
                f"{sorted(map(str, sample))}, without {missing}. Name its input and target "
                f"keys with batch_keys=[<input>,<target>] (now {list(batch_keys)}).")
    elif not (isinstance(sample, (tuple, list)) and len(sample) >= 2):
        raise BadDataError(
            f"The samples of the {role} that {source} returned are "
            f"{type(sample).__name__}s, not (input, target) pairs or dicts. Make __getitem__ "
            "return (input, target), or a dict and name its keys with batch_keys=[...]; for "
            "arrays or tensors x and y, return torch.utils.data.TensorDataset(x, y).")


def _loader(part: Any, settings: LoaderSettings, training: bool) -> Any:
    if isinstance(part, DataLoader):
        return part
    pin = (settings.device_type == "cuda" if settings.pin_memory == "auto"
           else bool(settings.pin_memory))
    workers = settings.num_workers
    common: dict[str, Any] = {  # what every loader of this dataset shares
        "batch_size": settings.batch_size,
        "num_workers": workers,
        "pin_memory": pin,
        "persistent_workers": settings.persistent_workers and workers > 0,
        # Name the start method: inside a joblib (loky) worker the inherited default context
        # cannot start DataLoader workers ("'Process' object has no attribute 'env'").
        "multiprocessing_context": (("fork" if sys.platform == "linux" else "spawn")
                                    if workers > 0 else None),
    }
    if not training:
        return DataLoader(part, shuffle=False, **common)
    if isinstance(part, IterableDataset):
        return DataLoader(part, **common)
    drop_last = len(part) > settings.batch_size * settings.world_size
    if settings.world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler: DistributedSampler[Any] = DistributedSampler(
            part, num_replicas=settings.world_size, rank=settings.rank, shuffle=True,
            seed=settings.seed, drop_last=True)
        return DataLoader(part, sampler=sampler, drop_last=drop_last, **common)
    generator = torch.Generator().manual_seed(settings.seed)
    return DataLoader(part, shuffle=True, generator=generator, drop_last=drop_last, **common)


def _split_tensors(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = len(x) - int(round(val_fraction * len(x)))
    train, val = order[:cut], order[cut:]
    return TensorDataset(x[train], y[train]), (TensorDataset(x[val], y[val]) if len(val) else None)


def load_digits() -> tuple[Any, Any]:
    """(pixels [1797, 64] as float64 in 0..16, targets [1797] as int64) of scikit-learn's
    digits, through its public loader (the one place lrexp touches scikit-learn)."""
    import numpy as np
    from sklearn.datasets import load_digits as load

    bunch = load()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def digits(image_size: int = 32, val_fraction: float = 0.2, split_seed: int = 0) -> Splits:
    """scikit-learn's 1797 8x8 digit images, upsampled to image_size and normalized."""
    pixels, targets = load_digits()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    if image_size != 8:
        images = torch.nn.functional.interpolate(images, size=image_size, mode="bilinear",
                                                 align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(targets, dtype=torch.long)
    return _split_tensors(images, labels, val_fraction, split_seed)


def sine(size: int = 2048, noise: float = 0.0, val_fraction: float = 0.2,
         split_seed: int = 0) -> Splits:
    """The original toy: regress y = sin(x) for x in [-pi, pi] (MSE)."""
    gen = torch.Generator().manual_seed(split_seed)
    x = (torch.rand(size, 1, generator=gen) * 2 - 1) * math.pi
    y = torch.sin(x) + noise * torch.randn(size, 1, generator=gen)
    return _split_tensors(x, y, val_fraction, split_seed)


def synthetic(size: int = 1024, num_classes: int = 10, in_channels: int = 3,
              image_size: int = 32, val_fraction: float = 0.0, split_seed: int = 0) -> Splits:
    """Random images and labels of a given shape: for benchmarks, where only speed matters."""
    gen = torch.Generator().manual_seed(split_seed)
    x = torch.randn(size, in_channels, image_size, image_size, generator=gen)
    y = torch.randint(num_classes, (size,), generator=gen)
    return _split_tensors(x, y, val_fraction, split_seed)


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


def _cifar(cls_name: str, mean, std, root: str, download: bool, augment: bool,
           val: bool) -> Splits:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    train = _torchvision_dataset(cls, root, download, cls_name, train=True,
                                 transform=_transforms(mean, std, True, augment))
    test = _torchvision_dataset(cls, root, download, cls_name, train=False,
                                transform=_transforms(mean, std, False, augment)) if val \
        else None
    return train, test


def cifar10(root: str = "data", download: bool = False, augment: bool = True,
            val: bool = True) -> Splits:
    """CIFAR-10's train split (augmented) and its test split as validation."""
    return _cifar("CIFAR10", CIFAR10_MEAN, CIFAR10_STD, root, download, augment, val)


def cifar100(root: str = "data", download: bool = False, augment: bool = True,
             val: bool = True) -> Splits:
    """CIFAR-100 with the original blog post's normalization."""
    return _cifar("CIFAR100", CIFAR100_MEAN, CIFAR100_STD, root, download, augment, val)


def _mnist_like(cls_name: str, mean, std, root: str, download: bool, val: bool) -> Splits:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    make = _transforms(mean, std, train=False, augment=False, pad_to_32=True)
    train = _torchvision_dataset(cls, root, download, cls_name, train=True, transform=make)
    test = _torchvision_dataset(cls, root, download, cls_name, train=False, transform=make) \
        if val else None
    return train, test


def mnist(root: str = "data", download: bool = False, val: bool = True) -> Splits:
    """MNIST padded to 32x32."""
    return _mnist_like("MNIST", MNIST_MEAN, MNIST_STD, root, download, val)


def fashion_mnist(root: str = "data", download: bool = False, val: bool = True) -> Splits:
    """Fashion-MNIST padded to 32x32."""
    return _mnist_like("FashionMNIST", FASHION_MEAN, FASHION_STD, root, download, val)


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


def imagefolder(root: str = "data/images", image_size: int = 32, val_root: str | None = None,
                mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Splits:
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
    return train, val
