"""Streaming datasets: image folders and ImageNet's layout read from their files, the
downstream datasets through torchvision, the trainer's DataLoader path, and bad images."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from learngene.data import (
    DOWNSTREAM_DATASETS,
    BadImageError,
    BadImageWarning,
    ImageDataset,
    StreamingImageDataset,
    dataset_info,
    load_dataset,
)
from learngene.data import imagefolder as imagefolder_module
from learngene.data.streaming import IMAGENET_MEAN, PathTable, eval_transform
from learngene.errors import ConfigError, DatasetNotFoundError
from learngene.train.data import LoaderSource, epoch_batches

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _noise(rng: np.random.Generator, size=(40, 30), mode="RGB") -> Image.Image:
    width, height = size
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def make_folder(root: Path, *, classes=3, per_class=8, seed=0, ext="jpg", split=None) -> Path:
    """root/<class>/<i>.jpg (or root/<split>/<class>/...): random RGB images of varied sizes."""
    rng = np.random.default_rng(seed)
    base = root / split if split else root
    for c in range(classes):
        for i in range(per_class):
            path = base / f"class{c}" / f"{i:03d}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            _noise(rng, size=(int(rng.integers(24, 48)), int(rng.integers(24, 48)))).save(path)
    return root


def _loader_batches(ds, num_workers=0, *, seed=1, epoch=0, worker_seed=123, batch=4):
    src = LoaderSource(ds, num_workers=num_workers, pin_memory=False, augment=None)
    idx = epoch_batches(len(src), global_batch=batch, seed=seed, epoch=epoch, rank=0, world_size=1)
    return src, list(src.batches(idx, None, worker_seed))


# --------------------------------------------------------------------------- image folders


def test_streaming_folder_holds_paths_not_pixels_and_decodes_on_read(tmp_path):
    make_folder(tmp_path)
    ds = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=16)
    assert isinstance(ds, StreamingImageDataset) and not hasattr(ds, "images")
    assert isinstance(ds.files, PathTable) and len(ds) == 3 * 8 - 3 * 2  # 20% of each class to test
    image, label = ds[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == int(ds.labels[0])
    assert ds.info.mean == IMAGENET_MEAN and ds.info.image_size == 16
    # the same fixed split as the in-memory path
    memory = load_dataset(f"imagefolder:{tmp_path}", "train", image_size=16)
    assert isinstance(memory, ImageDataset) and torch.equal(torch.from_numpy(ds.labels), memory.labels)
    assert [ds.files[i] for i in range(len(ds))] == [str(p) for p in
                                                     imagefolder_module.scan_image_folder(tmp_path).files["train"]]
    # the eval transform is the default: reading twice gives the same tensor
    assert torch.equal(ds[3][0], ds[3][0])


def test_size_threshold_picks_memory_or_streaming(tmp_path, monkeypatch):
    make_folder(tmp_path, classes=2, per_class=5)
    assert isinstance(load_dataset(f"imagefolder:{tmp_path}", image_size=8), ImageDataset)
    # 10 files x 3 x 8 x 8 x 4 bytes = 7,680: one byte less streams
    monkeypatch.setattr(imagefolder_module, "IN_MEMORY_MAX_BYTES", 10 * 3 * 8 * 8 * 4 - 1)
    assert isinstance(load_dataset(f"imagefolder:{tmp_path}", image_size=8), StreamingImageDataset)
    assert isinstance(load_dataset(f"imagefolder:{tmp_path}", image_size=8, memory=True), ImageDataset)
    assert isinstance(load_dataset(f"imagefolder:{tmp_path}?memory=1", image_size=8), ImageDataset)
    assert dataset_info(f"imagefolder:{tmp_path}", image_size=8).mean == IMAGENET_MEAN  # streamed: ImageNet's


@pytest.mark.parametrize("kwargs, match", [
    (dict(spec="imagefolder:{p}?memory=1", memory=False), "disagrees"),
    (dict(spec="imagefolder:{p}?colour=1"), "unknown option 'colour'.*memory, on_bad"),
    (dict(spec="imagefolder:{p}?memory=maybe"), "1 or 0"),
    (dict(spec="imagefolder:{p}?on_bad=ignore"), "on_bad must be one of error, skip"),
    (dict(spec="imagefolder:{p}?memory"), "key=value"),
    (dict(spec="digits?memory=0"), "takes none"),
    (dict(spec="digits", on_bad="skip"), "does not apply"),
    (dict(spec="imagefolder:{p}", download=True), "download= does not apply"),
    (dict(spec="imagefolder:{p}?memory=1", transform=lambda im: im), "transform applies to streamed"),
])
def test_bad_options_are_config_errors(tmp_path, kwargs, match):
    make_folder(tmp_path, classes=2, per_class=3)
    spec = kwargs.pop("spec").format(p=tmp_path)
    with pytest.raises(ConfigError, match=match):
        load_dataset(spec, image_size=8, **kwargs)


def test_eval_transform_resizes_the_short_side_then_centre_crops():
    # 64x96 (w x h): white centre 48 x 80, a black frame 8 px wide
    image = Image.new("RGB", (64, 96), (0, 0, 0))
    image.paste((255, 255, 255), (8, 8, 56, 88))
    out = eval_transform(32, mean=(0, 0, 0), std=(1, 1, 1))(image)  # short side 64 -> 36, crop 32 x 32
    assert out.shape == (3, 32, 32)
    # 8 px of 64 become 4.5 of 36; the crop removes 2 on each side: the frame is cut away at the
    # top/bottom (the image is tall) and still 2-3 px wide at the left/right
    assert out[:, 16, 16].min() > 0.99 and out[:, 0, 16].min() > 0.99
    assert out[:, 16, 0].max() < 0.05


def test_transform_hook_replaces_the_default_and_forces_streaming(tmp_path):
    make_folder(tmp_path, classes=2, per_class=5)

    def flat(image):  # PIL -> [3, 4, 4], the image's mean colour
        mean = torch.tensor(np.asarray(image, dtype=np.float32).mean(axis=(0, 1)))
        return mean[:, None, None].expand(3, 4, 4).clone()

    ds = load_dataset(f"imagefolder:{tmp_path}", "train", image_size=4, transform=flat)
    assert isinstance(ds, StreamingImageDataset) and ds.transform is flat
    assert ds[0][0].shape == (3, 4, 4) and ds[0][0].max() > 1  # unnormalized pixel means: our transform ran
    ds.transform = eval_transform(4)  # the attribute is the hook too
    assert ds[0][0].abs().max() < 3


def test_train_augmentation_is_seeded_per_sample_not_per_worker(tmp_path):
    make_folder(tmp_path, classes=2, per_class=10)
    ds = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=12, augment=True)
    state = torch.get_rng_state()
    _, one = _loader_batches(ds, 0)
    assert torch.equal(torch.get_rng_state(), state)  # the loop's RNG (dropout) is left alone
    src, two = _loader_batches(ds, 2)
    for (xa, ya), (xb, yb) in zip(one, two, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    _, other_epoch = _loader_batches(ds, 0, worker_seed=124)
    assert not torch.equal(one[0][0], other_epoch[0][0])  # another epoch, other crops
    # persistent workers: the same processes serve the next pass
    pids = [w.pid for w in src._loader._iterator._workers]
    idx = epoch_batches(len(src), global_batch=4, seed=1, epoch=1, rank=0, world_size=1)
    list(src.batches(idx, None, 5))
    assert [w.pid for w in src._loader._iterator._workers] == pids and src._loader.persistent_workers


def test_deit_recipe_runs_in_the_workers_seeded_per_sample(tmp_path, monkeypatch):
    from learngene import recipes
    from learngene.train import TrainConfig, loop
    from learngene.train.augment import move_recipe_into_workers

    make_folder(tmp_path, classes=2, per_class=10)
    recipe = TrainConfig(rand_augment="rand-m9-mstd0.5-inc1", random_erasing=1.0)
    ds = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=12, augment=True)
    assert move_recipe_into_workers(ds, recipe) and ds.applies_train_transform
    names = [type(t).__name__ for t in ds.transform.transforms]
    assert {"RandomResizedCropAndInterpolation", "RandAugment", "RandomErasing"} <= set(names)
    assert "ColorJitter" not in names
    rand_aug = next(t for t in ds.transform.transforms if type(t).__name__ == "RandAugment")
    posterize = next(op for op in rand_aug.ops if op.name.startswith("Posterize"))
    black = posterize.aug_fn(Image.new("RGB", (4, 4), (200, 90, 7)), 0)  # magnitude 10: 0 bits kept
    assert np.asarray(black).max() == 0
    _, one = _loader_batches(ds, 0)
    _, two = _loader_batches(ds, 2)  # the same draws in two worker processes
    for (xa, _), (xb, _) in zip(one, two, strict=True):
        assert torch.equal(xa, xb)
    # left alone: no recipe, the eval transform (augment=False), grey images, tensors in memory
    plain = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=12)
    grey = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=12, in_chans=1, augment=True)
    memory = load_dataset(f"imagefolder:{tmp_path}?memory=1", "train", image_size=12, augment=True)
    assert not move_recipe_into_workers(ds, TrainConfig())
    raw = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=12, augment=True)
    raw.normalize = False  # pixel / 255 datasets keep their own transform
    assert not any(move_recipe_into_workers(d, recipe) for d in (plain, grey, memory, raw))
    with pytest.raises(ConfigError, match="not a timm RandAugment string"):
        move_recipe_into_workers(ds, TrainConfig(rand_augment="rand-q9"))

    # through the recipe: fit never builds the in-process batch hook for the streamed split
    built = []
    monkeypatch.setattr(loop, "BatchAugment", lambda *a, **k: built.append(1) or pytest.fail("batch hook built"))
    cfg = TrainConfig(epochs=1, batch_size=8, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25,
                      compile=False)
    recipes.train_ancestry("vit-mini", f"imagefolder:{tmp_path}?memory=0", cfg, tmp_path / "run",
                           model_overrides={"img_size": 12, "patch_size": 4, "in_chans": 3}, augment=True,
                           progress=False)
    assert not built and (tmp_path / "run" / "model.safetensors").exists()


def test_repeated_augmentation_copies_are_augmented_independently(tmp_path):
    from learngene.train.data import epoch_copies

    make_folder(tmp_path, classes=2, per_class=4)
    ds = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=12, augment=True)
    src = LoaderSource(ds, num_workers=0, pin_memory=False, augment=None)
    idx = epoch_batches(len(src), global_batch=6, seed=1, epoch=0, rank=0, world_size=1, repeats=3)
    copies = epoch_copies(len(src), global_batch=6, rank=0, world_size=1, repeats=3)
    assert idx[0][:3].unique().numel() == 1 and copies[0].tolist() == [0, 1, 2, 0, 1, 2]
    (x, _), = list(src.batches(idx[:1], None, 7, copies=copies[:1]))
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])  # three crops of one image
    (same, _), = list(src.batches(idx[:1], None, 7))  # without copies: one draw per index
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], x[0])  # copy 0 keeps the index's seed
    # the copy numbers come from the global stream: 2 ranks see world 1's, interleaved
    halves = [epoch_copies(len(src), global_batch=6, rank=r, world_size=2, repeats=3) for r in (0, 1)]
    assert torch.stack([halves[0][0], halves[1][0]], 1).flatten().tolist() == copies[0].tolist()


def test_imagenet_layout_train_and_val(tmp_path):
    make_folder(tmp_path, classes=2, per_class=4, split="train", ext="JPEG")
    make_folder(tmp_path, classes=2, per_class=2, split="val", ext="JPEG", seed=1)
    spec = f"imagenet:{tmp_path}"
    train, test = load_dataset(spec, "train", image_size=16), load_dataset(spec, "test", image_size=16)
    assert isinstance(train, StreamingImageDataset) and (len(train), len(test)) == (8, 4)
    assert train.info.class_names == ("class0", "class1") and test.labels.tolist() == [0, 0, 1, 1]
    assert load_dataset(spec, "test").info.image_size == 224  # the papers' resolution by default
    assert isinstance(load_dataset(spec, "test", image_size=8, memory=True), ImageDataset)
    (tmp_path / "val").rename(tmp_path / "validation")
    with pytest.raises(ConfigError, match="valprep"):
        load_dataset(spec)


# --------------------------------------------------------------------------- bad input


def _bad_folder(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A 2-class train/test folder whose train/class1 holds one bad file of ``kind``."""
    for split in ("train", "test"):
        make_folder(tmp_path, classes=2, per_class=4, split=split)
    bad = tmp_path / "train" / "class1" / "bad.jpg"
    good = (tmp_path / "train" / "class0" / "000.jpg").read_bytes()
    if kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "corrupt":
        bad.write_bytes(good[:20] + bytes(200) + b"\xff\xd9")  # a JPEG header, then garbage
    elif kind == "not-an-image":
        bad.write_text("name,label\ncat,1\n")
    elif kind == "unreadable":
        bad.write_bytes(good)
        bad.chmod(0)
    return tmp_path, bad


BAD_KINDS = ["truncated", "corrupt", "not-an-image", "unreadable"]


def _skip_if_root_reads(kind: str, bad: Path) -> None:
    if kind == "unreadable" and os.access(bad, os.R_OK):
        pytest.skip("running as root: chmod 000 does not make a file unreadable")


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_image_mid_epoch_is_one_clear_error_naming_the_file(tmp_path, kind, num_workers):
    root, bad = _bad_folder(tmp_path, kind)
    _skip_if_root_reads(kind, bad)
    ds = load_dataset(f"imagefolder:{root}?memory=0", "train", image_size=8)
    with pytest.raises(BadImageError) as caught:
        _loader_batches(ds, num_workers)
    message = str(caught.value)
    assert str(bad) in message and "on_bad='skip'" in message and "replace or delete" in message
    assert "\n" not in message and "Traceback" not in message  # not a worker's traceback
    if kind == "unreadable":
        assert "chmod" in message


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_skip_mode_drops_bad_images_and_counts_them(tmp_path, kind):
    root, bad = _bad_folder(tmp_path, kind)
    _skip_if_root_reads(kind, bad)
    ds = load_dataset(f"imagefolder:{root}", "train", image_size=8, memory=False, on_bad="skip")
    with pytest.warns(BadImageWarning, match=r"skipped 1 unreadable.*bad\.jpg"):
        src, batches = _loader_batches(ds, 2, batch=3)  # 9 images: 3 batches, one of 2
    assert sorted(len(y) for _, y in batches) == [2, 3, 3] and src.skipped == 1
    # in memory: the bad file is left out of the split, with a warning
    with pytest.warns(BadImageWarning, match="bad.jpg"):
        memory = load_dataset(f"imagefolder:{root}", "train", image_size=8, memory=True, on_bad="skip")
    assert len(memory) == 8 and memory.labels.tolist() == [0] * 4 + [1] * 4
    with pytest.raises(BadImageError, match="bad.jpg"):
        load_dataset(f"imagefolder:{root}", "train", image_size=8, memory=True)


def test_grey_cmyk_rgba_and_palette_images_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    for name, mode in (("a", "RGB"), ("b", "L"), ("c", "CMYK"), ("d", "RGBA"), ("e", "P")):
        for i in range(2):
            path = tmp_path / "train" / name / f"{i}.{'png' if mode in ('RGBA', 'P') else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            _noise(rng, mode=mode).save(path)
            (tmp_path / "test" / name).mkdir(parents=True, exist_ok=True)
            _noise(rng, mode=mode).save(tmp_path / "test" / name / path.name)
    ds = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=8)
    _, batches = _loader_batches(ds, 0, batch=10)
    assert batches[0][0].shape == (10, 3, 8, 8) and torch.isfinite(batches[0][0]).all()
    grey = load_dataset(f"imagefolder:{tmp_path}?memory=0", "train", image_size=8, in_chans=1)
    assert grey[0][0].shape == (1, 8, 8)


def test_empty_class_folder_is_an_error_or_a_warning(tmp_path):
    make_folder(tmp_path, classes=2, per_class=5)
    (tmp_path / "class9-empty").mkdir()
    with pytest.raises(ConfigError, match="class9-empty holds no images.*on_bad='skip'"):
        load_dataset(f"imagefolder:{tmp_path}?memory=0", image_size=8)
    with pytest.warns(BadImageWarning, match="class9-empty"):
        ds = load_dataset(f"imagefolder:{tmp_path}?memory=0&on_bad=skip", image_size=8)
    assert ds.info.class_names[-1] == "class9-empty" and ds.info.num_classes == 3 and ds.labels.max() == 1


# --------------------------------------------------------------------------- downstream datasets


def _fake_cifar10(root: Path, monkeypatch) -> None:
    """cifar-10-batches-py in torchvision's pickle format: 5 train batches of 4, a test batch of 6."""
    import torchvision.datasets.cifar as cifar

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        n = 6 if name == "test_batch" else 4
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes}, f)
    # torchvision checks the md5 of the real files; our fake ones cannot match
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def _fake_dtd(root: Path) -> None:
    data = root / "dtd" / "dtd"
    rng = np.random.default_rng(1)
    lines = {"train1": [], "val1": [], "test1": []}
    for cls in ("banded", "woven"):
        for i in range(6):
            path = data / "images" / cls / f"{cls}_{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            _noise(rng).save(path)
            lines[("train1", "val1", "test1")[i % 3]].append(f"{cls}/{path.name}")
    (data / "labels").mkdir()
    for name, entries in lines.items():
        (data / "labels" / f"{name}.txt").write_text("\n".join(entries) + "\n")


def _fake_pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    rng = np.random.default_rng(2)
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    rows = {"trainval": [], "test": []}
    for label, (breed, species) in enumerate([("Abyssinian", 1), ("beagle", 2), ("Bengal", 1)], start=1):
        for i in range(1, 4):
            image_id = f"{breed}_{i}"
            _noise(rng).save(base / "images" / f"{image_id}.jpg")
            rows["test" if i == 3 else "trainval"].append(f"{image_id} {label} {species} 1")
    for split, entries in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(entries) + "\n")


@pytest.mark.parametrize("name, make, sizes, first_class", [
    ("cifar10", _fake_cifar10, (20, 6), "airplane"),
    ("dtd", _fake_dtd, (8, 4), "banded"),  # train = train1 + val1
    ("oxford-pets", _fake_pets, (6, 3), "Abyssinian"),
])
def test_downstream_dataset_resolves_and_gives_a_batch(tmp_path, monkeypatch, name, make, sizes, first_class):
    if make is _fake_cifar10:
        make(tmp_path, monkeypatch)
    else:
        make(tmp_path)
    monkeypatch.setenv("LEARNGENE_DATA", str(tmp_path))
    train = load_dataset(name, "train", image_size=16, augment=True)
    test = load_dataset(name, "test", image_size=16)
    assert (len(train), len(test)) == sizes and train.info.class_names[0] == first_class
    assert test.info.class_names == train.info.class_names and train.info.mean == IMAGENET_MEAN
    src, batches = _loader_batches(train, 2, batch=2)
    x, y = batches[0]
    assert x.shape == (2, 3, 16, 16) and y.dtype == torch.int64
    assert src.max_label() == int(train.labels.max()) < train.info.num_classes
    assert load_dataset(name, "test", root=tmp_path)[0][0].shape == (3, 224, 224)  # 224 px by default
    assert dataset_info(name).num_classes == train.info.num_classes


@pytest.mark.parametrize("name", list(DOWNSTREAM_DATASETS))
def test_missing_downstream_dataset_names_its_files_and_where_they_go(tmp_path, name):
    row = DOWNSTREAM_DATASETS[name]
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name, "train", root=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and f"{tmp_path}/{row.expected}" in message
    assert row.source in message and "LEARNGENE_DATA" in message
    assert ("download=True" in message) == row.can_download


def test_downstream_test_split_missing_a_class_is_reported(tmp_path):
    _fake_dtd(tmp_path)
    labels = tmp_path / "dtd" / "dtd" / "labels" / "test1.txt"
    labels.write_text("".join(line + "\n" for line in labels.read_text().split() if line.startswith("banded")))
    with pytest.raises(DatasetNotFoundError, match="other classes than train"):
        load_dataset("dtd", "test", root=tmp_path, image_size=8)


def test_streaming_dataset_from_a_list_of_paths_and_the_permission_hint(tmp_path):
    from learngene.data.dataset import DatasetInfo
    from learngene.data.streaming import bad_reason

    make_folder(tmp_path, classes=1, per_class=2)
    files = sorted(tmp_path.rglob("*.jpg"))
    info = DatasetInfo(name="two", num_classes=1, class_names=("a",), image_size=8, in_chans=3,
                       mean=IMAGENET_MEAN, std=(0.229, 0.224, 0.225))
    ds = StreamingImageDataset(files, np.zeros(2, dtype=np.int64), info, split="train")
    assert [ds.files[i] for i in range(2)] == [str(f) for f in files] and ds[1][0].shape == (3, 8, 8)
    single = StreamingImageDataset(files[:1], np.zeros(1, dtype=np.int64), info, split="train")
    assert single.files[0] == str(files[0])
    assert "chmod a+r" in bad_reason(PermissionError(13, "Permission denied", str(files[0])))
