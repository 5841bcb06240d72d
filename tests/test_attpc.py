"""AT-TPC: renderer, junk/noise, cache, registry row, simulator (needs the extra), metrics, CNN."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch

from learngene.bench.attpc_cnn import create_cnn, load_cnn, save_cnn
from learngene.data import FIXED_DATASETS, dataset_info, list_datasets, load_dataset
from learngene.data import attpc
from learngene.data.attpc import AttpcConfig, add_noise, junk_event, load_attpc, load_split, render_event
from learngene.errors import ConfigError, DatasetNotFoundError
from learngene.train.metrics import classification_report, confusion_matrix, predict


def _pixel(charge: float, log_max: float = 6.0) -> int:
    return int(np.rint(255 * min(1.0, math.log10(1 + charge) / log_max)))


# --------------------------------------------------------------------------- renderer

# (projection, hits (x, y, z, charge), expected {(row, column): pixel}); image 8x8, frame
# x, y in +-275 mm, z in 0-1000 mm. Rows: y in [275 - 68.75 (r+1), 275 - 68.75 r).
RENDER_CASES = [
    # xy+zy: xy panel = columns 0-3 (137.5 mm each), zy panel = columns 4-7 (250 mm each)
    ("xy+zy", [(0.0, 0.0, 500.0, 999.0)], {(4, 2): _pixel(999), (4, 6): _pixel(999)}),
    ("xy+zy", [(-270.0, 270.0, 10.0, 9.0)], {(0, 0): _pixel(9), (0, 4): _pixel(9)}),
    # two hits in the same pixels: charges add before the log
    ("xy+zy", [(100.0, -200.0, 990.0, 400.0), (120.0, -205.0, 980.0, 600.0)],
     {(6, 2): _pixel(1000), (6, 7): _pixel(1000)}),
    # outside the z frame (junk up to 1250 mm): only the xy panel shows it
    ("xy+zy", [(0.0, 0.0, 1100.0, 50.0)], {(4, 2): _pixel(50)}),
    # x outside the frame: only the zy panel shows it; y outside: nothing
    ("xy+zy", [(300.0, 0.0, 500.0, 50.0)], {(4, 6): _pixel(50)}),
    ("xy+zy", [(0.0, 280.0, 500.0, 50.0)], {}),
    # one projection fills the image (68.75 mm per column in xy, 125 mm in z)
    ("xy", [(-275.0, -1.0, 0.0, 1e7)], {(4, 0): 255}),  # saturates at log_charge_max
    ("zy", [(0.0, 200.0, 130.0, 3.0)], {(1, 1): _pixel(3)}),
]


@pytest.mark.parametrize("projection,hits,expected", RENDER_CASES)
def test_render_puts_log_charge_at_the_right_pixels(projection, hits, expected):
    image = render_event(np.array(hits), AttpcConfig(image_size=8, projection=projection))
    assert image.dtype == np.uint8 and image.shape == (8, 8)
    found = {(int(r), int(c)): int(image[r, c]) for r, c in zip(*np.nonzero(image))}
    assert found == expected


def test_render_of_no_hits_is_black():
    assert not render_event(np.zeros((0, 4)), AttpcConfig(image_size=16)).any()


# --------------------------------------------------------------------------- junk and noise

PADS = np.stack(np.meshgrid(np.linspace(-250, 250, 20), np.linspace(-250, 250, 20)), -1).reshape(-1, 2)


def test_junk_events_follow_the_reference_ranges():
    config, rng = AttpcConfig(), np.random.default_rng(0)
    events = [junk_event(rng, PADS, config) for _ in range(200)]
    counts = [len(e) for e in events]
    assert 20 <= min(counts) and max(counts) <= 300 and max(counts) - min(counts) > 150
    hits = np.concatenate(events)
    assert set(map(tuple, hits[:, :2])) <= set(map(tuple, PADS))  # on pad centres
    assert 0 <= hits[:, 2].min() and hits[:, 2].max() < 1250 and hits[:, 2].max() > 1100
    assert 1 <= hits[:, 3].min() and hits[:, 3].max() <= 4000


@pytest.mark.parametrize("noise_hits", [0, 5, 50])
def test_noise_appends_at_most_noise_hits_and_keeps_the_event(noise_hits):
    event = np.arange(40, dtype=float).reshape(10, 4)
    rng = np.random.default_rng(1)
    sizes = set()
    for _ in range(30):
        noisy = add_noise(event, rng, PADS, AttpcConfig(noise_hits=noise_hits))
        assert np.array_equal(noisy[:10], event) and len(noisy) - 10 <= noise_hits
        sizes.add(len(noisy))
    assert (len(sizes) > 1) == (noise_hits > 0)


# --------------------------------------------------------------------------- config, cache, registry

BAD_CONFIGS = [
    dict(image_size=15),  # odd side for two halves
    dict(projection="xz"),
    dict(train_per_class=0),
    dict(noise_hits=-1),
    dict(z_range_mm=(1000.0, 0.0)),
    dict(junk_hits=(0, 10)),
]


@pytest.mark.parametrize("overrides", BAD_CONFIGS)
def test_bad_config_is_a_config_error(overrides):
    with pytest.raises(ConfigError):
        AttpcConfig(**overrides)


def test_config_round_trips_and_keys_differ():
    config = AttpcConfig(noise_hits=7)
    assert AttpcConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    keys = {attpc.cache_key(c, s) for c in (AttpcConfig(), config) for s in ("train", "test")}
    assert len(keys) == 4


def _fake_split(config, split, progress=True):
    count = 3 * (config.train_per_class if split == "train" else config.test_per_class)
    images = np.full((count, config.image_size, config.image_size), 60, np.uint8)
    images[:, :, : config.image_size // 2] = 200  # left half bright
    return {"images": images, "labels": np.arange(count, dtype=np.int64) % 3, "hits": np.ones(count, np.int64)}


def test_split_is_generated_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(attpc, "generate_split", _fake_split)
    config = AttpcConfig(train_per_class=2, test_per_class=1, image_size=16)
    images, labels = load_split(config, "train", cache_dir=tmp_path)
    folder = attpc.cache_folder(config, "train", tmp_path)
    record = json.loads((folder / "config.json").read_text())
    assert record["config"] == config.to_dict() and record["split"] == "train"
    monkeypatch.setattr(attpc, "generate_split", lambda *a, **k: pytest.fail("cache not used"))
    again_images, again_labels = load_split(config, "train", cache_dir=tmp_path)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temp folders left


def test_load_attpc_resizes_and_normalizes_with_given_stats(tmp_path, monkeypatch):
    monkeypatch.setattr(attpc, "generate_split", _fake_split)
    config = AttpcConfig(train_per_class=2, test_per_class=1, image_size=16)
    grey = load_attpc(config, "test", image_size=8, stats=((0.5,), (0.25,)), cache_dir=tmp_path)
    assert grey.images.shape == (3, 1, 8, 8) and grey.info.class_names == ("proton", "carbon", "junk")
    assert grey.images[0, 0, 0, 0].item() == pytest.approx((200 / 255 - 0.5) / 0.25, abs=1e-5)
    assert grey.images[0, 0, 0, -1].item() == pytest.approx((60 / 255 - 0.5) / 0.25, abs=1e-5)
    rgb = load_attpc(config, "train", image_size=28, in_chans=3, cache_dir=tmp_path)  # stats of its train split
    assert rgb.images.shape == (6, 3, 28, 28) and abs(rgb.images.mean().item()) < 1e-4


def test_registry_row_goes_through_the_projects_resize_path(monkeypatch):
    assert "attpc" in list_datasets()
    info = dataset_info("attpc", image_size=28)
    assert (info.num_classes, info.image_size, info.in_chans, info.num_train) == (3, 28, 1, 3600)
    fake = _fake_split(AttpcConfig(train_per_class=2, test_per_class=1), "train")
    row = dataclasses.replace(FIXED_DATASETS["attpc"], read_split=lambda split, root: (fake["images"], fake["labels"]))
    monkeypatch.setitem(FIXED_DATASETS, "attpc", row)
    for chans in (1, 3):
        ds = load_dataset("attpc", "train", image_size=28, in_chans=chans)
        assert ds.images.shape == (6, chans, 28, 28) and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_missing_engine_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "attpc_engine", None)  # import fails as if not installed
    with pytest.raises(DatasetNotFoundError, match=r"learngene-kit\[attpc\]"):
        attpc.EventSimulator(AttpcConfig())


# --------------------------------------------------------------------------- the simulator


@pytest.mark.slow  # ~13 s of CPU, nearly all numba compiling the engine on first use
def test_simulator_makes_labelled_events_and_noise_only_adds_charge(tmp_path):
    pytest.importorskip("attpc_engine", reason='attpc-engine is an optional extra: pip install -e ".[attpc]"')
    clean = AttpcConfig(train_per_class=1, test_per_class=2, image_size=32)
    images, labels = load_split(clean, "test", cache_dir=tmp_path, progress=False)  # 4 simulated + 2 junk
    assert images.shape == (6, 32, 32) and np.bincount(labels).tolist() == [2, 2, 2]
    assert all(image.any() for image in images)  # every event has hits in the frame
    noisy_images, noisy_labels = load_split(dataclasses.replace(clean, noise_hits=30), "test", cache_dir=tmp_path,
                                            progress=False)
    assert np.array_equal(labels, noisy_labels)
    # same simulated events (noise has its own stream): noise only adds charge to real events
    real = labels < 2
    assert (noisy_images[real] >= images[real]).all() and (noisy_images[real] > images[real]).any()
    assert np.array_equal(noisy_images[~real], images[~real])


# --------------------------------------------------------------------------- metrics

NAMES = ("proton", "carbon", "junk")


def test_metrics_on_a_hand_case():
    targets = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    predictions = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]
    assert confusion_matrix(targets, predictions, 3).tolist() == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    report = classification_report(targets, predictions, NAMES)
    assert report["accuracy"] == pytest.approx(0.7)
    proton, carbon, junk = (report["per_class"][n] for n in NAMES)
    assert (proton["precision"], proton["recall"], proton["support"]) == (pytest.approx(2 / 3), 0.5, 4)
    assert proton["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert (carbon["precision"], carbon["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (junk["precision"], junk["recall"], junk["f1"]) == (0.75, 1.0, pytest.approx(6 / 7))
    assert report["macro"]["recall"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    json.dumps(report)  # JSON-ready


def test_metrics_never_divide_by_zero_and_reject_bad_labels():
    report = classification_report([0, 0], [0, 0], NAMES)  # carbon/junk never true nor predicted
    assert report["per_class"]["carbon"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    with pytest.raises(ConfigError):
        confusion_matrix([0, 3], [0, 0], 3)


def test_predict_is_the_argmax_in_eval_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.9), torch.nn.Identity())
    images = torch.tensor([[0.0, 2.0, 1.0], [5.0, 0.0, 1.0]]).view(2, 1, 1, 3)
    assert predict(model, images, batch_size=1).tolist() == [1, 0] and model.training


# --------------------------------------------------------------------------- CNN baseline


def test_cnn_new_head_keeps_features_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = create_cnn(widths=(4, 8), num_classes=10, img_size=16)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    features = {k: v.clone() for k, v in model.features.state_dict().items()}
    old_head = model.head[1].weight.clone()
    model.new_head(3)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 3) and model.head[1].weight.shape == (256, 8 * 4 * 4)
    assert all(torch.equal(v, model.features.state_dict()[k]) for k, v in features.items())
    assert not torch.equal(old_head, model.head[1].weight)  # a fresh Dense 256
    save_cnn(model, tmp_path / "cnn", note="x")
    loaded = load_cnn(tmp_path / "cnn").eval()
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(ConfigError):
        create_cnn(widths=(4, 8, 16, 32, 64), img_size=16)  # pools the image away
