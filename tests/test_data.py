import pytest
import torch
from fake_datasets import write_cifar, write_image_folder, write_mnist

from lrexp.app import data


def _loaders(made, batch_size=64, seed=0, **settings):
    """(train, val) loaders as the app makes them of what a dataset function returned."""
    return data.loaders(made, data.LoaderSettings(batch_size=batch_size, seed=seed, **settings))


def _first_batch(loaders):
    x, y = next(iter(loaders[0]))
    return x, y


def test_digits_is_32x32_normalized_and_offline():
    loaders = _loaders(data.digits(), batch_size=16, seed=0)
    x, y = _first_batch(loaders)
    assert x.shape == (16, 1, 32, 32) and y.dtype == torch.long and int(y.max()) == 9
    everything = torch.cat([b[0] for b in loaders[0]])
    assert abs(everything.mean().item()) < 0.1 and abs(everything.std().item() - 1) < 0.1


def test_seeded_loaders_shuffle_the_same_way():
    a = _first_batch(_loaders(data.digits(), batch_size=8, seed=3))[1]
    b = _first_batch(_loaders(data.digits(), batch_size=8, seed=3))[1]
    c = _first_batch(_loaders(data.digits(), batch_size=8, seed=4))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sine_targets_are_sin_of_inputs():
    loaders = _loaders(data.sine(), batch_size=32)
    x, y = _first_batch(loaders)
    assert x.shape == y.shape == (32, 1)
    torch.testing.assert_close(y, torch.sin(x))


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_loads_real_pickles_through_torchvision(tmp_path, monkeypatch, classes):
    write_cifar(tmp_path, classes, monkeypatch)
    loaders = _loaders(getattr(data, f"cifar{classes}")(root=str(tmp_path)), batch_size=8)
    x, y = _first_batch(loaders)
    assert x.shape == (8, 3, 32, 32) and int(y.max()) < classes
    assert len(loaders[0].dataset) == (100 if classes == 10 else 20)
    assert len(loaders[1].dataset) == 20


def test_cifar100_uses_the_original_normalization(tmp_path, monkeypatch):
    write_cifar(tmp_path, 100, monkeypatch)
    train, _ = data.cifar100(root=str(tmp_path), augment=False)
    normalize = train.transform.transforms[-1]
    assert normalize.mean == (0.5071, 0.4865, 0.4409)
    assert normalize.std == (0.2673, 0.2564, 0.2762)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_files_load_padded_to_32(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    loaders = _loaders(getattr(data, name)(root=str(tmp_path)), batch_size=8)
    x, _ = _first_batch(loaders)
    assert x.shape == (8, 1, 32, 32) and len(loaders[0].dataset) == 40


def test_image_folder_tree(tmp_path):
    write_image_folder(tmp_path / "train")
    loaders = _loaders(data.imagefolder(root=str(tmp_path / "train")), batch_size=4)
    x, y = _first_batch(loaders)
    assert x.shape == (4, 3, 32, 32) and len(loaders[0].dataset.classes) == 3


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder"])
def test_missing_files_say_where_and_how(tmp_path, name):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        getattr(data, name)(root=str(tmp_path / "nowhere"))
    message = str(caught.value)
    assert str((tmp_path / "nowhere").resolve()) in message and "dataset.root=" in message
    if name != "imagefolder":
        assert "dataset.download=true" in message


def test_an_empty_image_folder_says_what_it_needs(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(data.BadDataError, match="one sub-folder per class"):
        data.imagefolder(root=str(tmp_path / "images"))


def test_class_folders_without_images_say_what_they_need(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        (tmp_path / "images" / name / "notes.txt").write_text("no images here")
    with pytest.raises(data.BadDataError, match="holds no usable images"):
        data.imagefolder(root=str(tmp_path / "images"))


def test_a_corrupt_image_is_named_and_fatal(tmp_path):
    write_image_folder(tmp_path / "train")
    broken = next((tmp_path / "train").glob("*/*.png"))
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing an image needs")
    loaders = _loaders(data.imagefolder(root=str(tmp_path / "train")), batch_size=64)
    with pytest.raises(data.BadDataError, match=str(broken)):
        _first_batch(loaders)


@pytest.mark.parametrize("workers", [0, 1])
def test_loaders_keep_worker_processes_only_where_there_are_workers(workers):
    train, val = _loaders(data.sine(), batch_size=8, num_workers=workers,
                          persistent_workers=True)
    assert train.persistent_workers is (workers > 0)
    assert val.persistent_workers is (workers > 0)


def test_scikit_learns_digits_load_through_its_public_loader():
    from lrexp.app.data import load_digits

    pixels, targets = load_digits()
    assert pixels.shape == (1797, 64) and targets.shape == (1797,)
    assert pixels.min() == 0 and pixels.max() == 16
    assert sorted(set(targets.tolist())) == list(range(10))
