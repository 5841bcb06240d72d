"""``attpc``: simulated AT-TPC events (proton / carbon / junk) rendered as small images.

The downstream task of Kuchera et al., *Machine learning methods for track classification in
the AT-TPC* (NIM A 2019, arXiv 1810.10350): sort events of the 46Ar(p,p) experiment (NSCL,
September 2015) into the wanted elastic proton events, carbon events and junk.

Events come from the AT-TPC group's own simulator, ``attpc-engine`` (GPL-3), an optional
extra: ``pip install "learngene-kit[attpc]"``. It is imported only when events are generated;
without it ``DatasetNotFoundError`` says how to install it.

Generation (``AttpcConfig``; every field is part of the cache key):

* proton: elastic 1H(46Ar,p)46Ar, carbon: elastic 12C(46Ar,12C)46Ar, isobutane C4H10 at
  19.2 Torr, B = 1.68 T along the beam, beam 46Ar at 4.17 MeV/u after the window, slowed by
  the gas (the engine's energy loss) to a vertex on the axis, z uniform over the 1 m volume;
  CM polar angle uniform in cos over [0, pi] (the engine's ``PolarUniform``; the paper does not
  give its angular distribution). Both products are tracked (the engine's default); the
  engine drops charge on the beam pads. Point clouds [pad, time bucket, electrons] are
  turned into hits (x, y, z in mm, charge in ADC units) the way the engine's ``SpyralWriter``
  does (pad centres, drift time -> z, the GET response, 12-bit clip), and hits under
  ``adc_threshold`` are dropped. An event with fewer than ``min_hits`` hits (e.g. a proton
  stopped within a pad) is drawn again: an empty image carries no label.
* junk, as in the reference scripts: 20-300 hits (uniform integer) on random pads, z uniform
  in 0-1250 mm, charge uniform in 1-4000.
* ``noise_hits > 0`` adds to every proton and carbon event a uniform 0..noise_hits number of
  junk-like hits (same distributions as junk). Noise uses its own random stream, so a noisy
  split holds the same simulated events as the clean split with the same seed.

Rendering (``render_event``): one grey image of ``image_size`` x ``image_size`` pixels. Default
``projection="xy+zy"``: xy (pad plane, x and y in +-275 mm) in the left half and zy (z over
``z_range_mm``) in the right half, both with y on the rows (+y at the top), so the two halves
share their vertical axis; ``"xy"`` or ``"zy"`` fill the whole image with one projection.
Departure from the paper: it used 128 x 128 images of one projection; here both projections
share one small grey image, so that the project's 1-channel path (``load_dataset(...,
image_size=28, in_chans=1)``, the vit-mini ancestry's input) carries both. Charge in a pixel
is the sum of its hits' charges, shown as log10 intensity:
``pixel = round(255 * clip(log10(1 + charge) / log_charge_max, 0, 1))``; hits outside the
frame (e.g. junk with z > 1000 mm) are not drawn.

Split (fixed): train and test are independent simulations, ``train_per_class`` and
``test_per_class`` events of each class, from the random streams
``SeedSequence([seed, class index, 0 (train) | 1 (test)])``; the events of a split are
shuffled by ``np.random.RandomState(seed)``. The registry row ``attpc`` is the default config
(1,200 / 400 events per class).

Cache: ``<cache>/attpc/<split>-<key>/`` (``<cache>`` = ``$LEARNGENE_CACHE`` or
``~/.cache/learngene``), holding ``events.npz`` (images uint8 [N, S, S], labels int64 [N],
hits per event int64 [N]) and ``config.json`` (the generation config, the engine's version,
seconds taken), written together atomically; the key is a hash of the config, the split and
the engine's version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learngene._io import atomic_replace_dir
from learngene.data.dataset import DatasetInfo, ImageDataset
from learngene.data.processing import compute_mean_std, convert_stats, to_float_images
from learngene.data.sources import default_cache_dir
from learngene.errors import ConfigError, DatasetNotFoundError

CLASS_NAMES = ("proton", "carbon", "junk")
PROJECTIONS = ("xy+zy", "xy", "zy")
SPLIT_STREAMS = {"train": 0, "test": 1}
INSTALL_HINT = 'install the optional extra: pip install "learngene-kit[attpc]" (attpc-engine, GPL-3)'
# Bump when the generation code changes what a config produces (it is part of the cache key).
GENERATOR_VERSION = 1
NUM_PADS = 10240  # pads of the AT-TPC pad plane (the engine's padxy.csv)
# Isobutane C4H10 as (Z, A, atoms per molecule).
ISOBUTANE = ((6, 12, 4), (1, 1, 10))
BEAM = (18, 46)  # 46Ar
TARGETS = {"proton": (1, 1), "carbon": (6, 12)}  # elastic: ejectile = target nucleus


@dataclass(frozen=True)
class AttpcConfig:
    """Everything that decides the generated events and images (hashed into the cache key)."""

    # Events per class in each split.
    train_per_class: int = 1200
    test_per_class: int = 400
    # Seeds the simulation streams (see the module docstring) and the event order.
    seed: int = 0
    # Max junk-like hits added to each proton/carbon event (uniform 0..noise_hits); 0 = clean.
    noise_hits: int = 0
    # Native image side in pixels (even for "xy+zy": each projection gets half the width).
    image_size: int = 64
    # "xy+zy" (side by side, shared y rows), "xy" or "zy".
    projection: str = "xy+zy"
    # Frame of the projections, mm: x and y in +-xy_half_width_mm, z in z_range_mm.
    xy_half_width_mm: float = 275.0
    z_range_mm: tuple[float, float] = (0.0, 1000.0)
    # log10 of the pixel charge that saturates white (ADC units summed over a pixel).
    log_charge_max: float = 6.0
    # Experiment (Kuchera et al. 2019): field, gas pressure, beam energy after the window.
    bfield_t: float = 1.68
    pressure_torr: float = 19.2
    beam_mev_per_u: float = 4.17
    vertex_z_m: tuple[float, float] = (0.0, 1.0)
    # Detector and electronics not given by the paper: typical AT-TPC values (the engine's
    # documentation), with the window at time bucket 500 so the whole 1 m fits the 512 buckets.
    efield_v_per_m: float = 9000.0
    mpgd_gain: int = 175_000
    diffusion_v: float = 0.277
    fano_factor: float = 0.2
    w_value_ev: float = 23.0  # isobutane
    clock_mhz: float = 12.5
    amp_gain: int = 900
    shaping_time_ns: int = 1000
    micromegas_edge_tb: int = 10
    window_edge_tb: int = 500
    adc_threshold: int = 40
    # Real events with fewer hits than this are drawn again.
    min_hits: int = 10
    # Junk, as in the reference scripts: hit count (inclusive), z range (mm), charge range.
    junk_hits: tuple[int, int] = (20, 300)
    junk_z_mm: tuple[float, float] = (0.0, 1250.0)
    junk_charge: tuple[float, float] = (1.0, 4000.0)

    def __post_init__(self) -> None:
        for name in ("train_per_class", "test_per_class", "image_size", "min_hits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"AttpcConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("seed", "noise_hits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"AttpcConfig.{name} must be an integer >= 0, got {value!r}")
        if self.projection not in PROJECTIONS:
            raise ConfigError(f"AttpcConfig.projection must be one of {', '.join(PROJECTIONS)}, got {self.projection!r}")
        if self.projection == "xy+zy" and self.image_size % 2:
            raise ConfigError(f"image_size {self.image_size} must be even for projection 'xy+zy' (two halves)")
        for name in ("z_range_mm", "vertex_z_m", "junk_z_mm", "junk_charge", "junk_hits"):
            low, high = getattr(self, name)
            if not low < high:
                raise ConfigError(f"AttpcConfig.{name} must be (low, high) with low < high, got {(low, high)}")
        if self.junk_hits[0] < 1:
            raise ConfigError(f"AttpcConfig.junk_hits must start at 1 or more, got {self.junk_hits}")
        for name in ("xy_half_width_mm", "log_charge_max", "pressure_torr", "beam_mev_per_u", "efield_v_per_m"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"AttpcConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.micromegas_edge_tb < self.window_edge_tb:
            raise ConfigError("AttpcConfig needs 0 <= micromegas_edge_tb < window_edge_tb")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AttpcConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown AttpcConfig field(s) {unknown}; valid fields: {', '.join(sorted(names))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# --------------------------------------------------------------------------- rendering


def _panels(config: AttpcConfig) -> list[tuple[str, int, int]]:
    """(projection, first column, width) of each panel of the image."""
    size = config.image_size
    if config.projection == "xy+zy":
        return [("xy", 0, size // 2), ("zy", size // 2, size // 2)]
    return [(config.projection, 0, size)]


def _bin(values: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """Values -> bin index in 0..bins-1 of [low, high), or -1 outside."""
    index = np.floor((values - low) / (high - low) * bins).astype(np.int64)
    return np.where((values >= low) & (values < high), index, -1)


def render_event(hits: np.ndarray, config: AttpcConfig) -> np.ndarray:
    """Hits float [n, 4] = (x mm, y mm, z mm, charge) -> uint8 [S, S] (see the module docstring).

    Row r covers y in [w - (r+1) h, w - r h) with w = xy_half_width_mm and h = 2w / S (+y at
    the top); an xy panel of width W maps x in [-w, w) to W columns, a zy panel z in
    z_range_mm to W columns.
    """
    size = config.image_size
    half = config.xy_half_width_mm
    hits = np.asarray(hits, dtype=np.float64).reshape(-1, 4)
    charge = np.zeros((size, size), dtype=np.float64)  # summed charge per pixel
    rows = _bin(-hits[:, 1], -half, half, size)  # [n]: flipped so that +y is row 0
    for projection, first_column, width in _panels(config):
        if projection == "xy":
            columns = _bin(hits[:, 0], -half, half, width)
        else:
            columns = _bin(hits[:, 2], config.z_range_mm[0], config.z_range_mm[1], width)
        inside = (rows >= 0) & (columns >= 0)
        np.add.at(charge, (rows[inside], first_column + columns[inside]), hits[inside, 3])
    intensity = np.log10(1.0 + np.clip(charge, 0.0, None)) / config.log_charge_max
    return np.rint(255.0 * np.clip(intensity, 0.0, 1.0)).astype(np.uint8)


# --------------------------------------------------------------------------- junk and noise


def junk_like_hits(count: int, rng: np.random.Generator, pad_centers: np.ndarray, config: AttpcConfig) -> np.ndarray:
    """``count`` hits on random pads, z and charge uniform in the junk ranges -> float [count, 4]."""
    pads = rng.integers(0, len(pad_centers), size=count)
    z = rng.uniform(config.junk_z_mm[0], config.junk_z_mm[1], size=count)
    charge = rng.uniform(config.junk_charge[0], config.junk_charge[1], size=count)
    return np.column_stack([pad_centers[pads, 0], pad_centers[pads, 1], z, charge])


def junk_event(rng: np.random.Generator, pad_centers: np.ndarray, config: AttpcConfig) -> np.ndarray:
    """One junk event: junk_hits[0]..junk_hits[1] (inclusive) junk-like hits."""
    count = int(rng.integers(config.junk_hits[0], config.junk_hits[1] + 1))
    return junk_like_hits(count, rng, pad_centers, config)


def add_noise(hits: np.ndarray, rng: np.random.Generator, pad_centers: np.ndarray, config: AttpcConfig) -> np.ndarray:
    """Append 0..noise_hits (uniform) junk-like hits to a real event."""
    if config.noise_hits == 0:
        return hits
    count = int(rng.integers(0, config.noise_hits + 1))
    return np.concatenate([hits, junk_like_hits(count, rng, pad_centers, config)])


# --------------------------------------------------------------------------- the simulator


def _import_engine() -> dict[str, Any]:
    """The attpc-engine pieces used here, or DatasetNotFoundError saying how to install them."""
    try:
        from attpc_engine import nuclear_map
        from attpc_engine.detector import Config, DetectorParams, ElectronicsParams, PadParams
        from attpc_engine.detector.response import get_response
        from attpc_engine.detector.simulator import simulate
        from attpc_engine.detector.writer import convert_to_spyral
        from attpc_engine.kinematics import (
            ExcitationGaussian,
            KinematicsPipeline,
            KinematicsTargetMaterial,
            PolarUniform,
            Reaction,
        )
        from spyral_utils.nuclear.target import GasTarget
    except ImportError as error:
        raise DatasetNotFoundError(f"the attpc dataset needs attpc-engine ({error}): {INSTALL_HINT}") from None
    return {
        "nuclear_map": nuclear_map, "Config": Config, "DetectorParams": DetectorParams,
        "ElectronicsParams": ElectronicsParams, "PadParams": PadParams, "get_response": get_response,
        "simulate": simulate, "convert_to_spyral": convert_to_spyral, "ExcitationGaussian": ExcitationGaussian,
        "KinematicsPipeline": KinematicsPipeline, "KinematicsTargetMaterial": KinematicsTargetMaterial,
        "PolarUniform": PolarUniform, "Reaction": Reaction, "GasTarget": GasTarget,
    }


def engine_version() -> str:
    """attpc-engine's installed version, or "absent"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("attpc-engine")
    except PackageNotFoundError:
        return "absent"


class EventSimulator:
    """attpc-engine set up for the experiment: ``events(kind, count, rng...)`` -> hit arrays."""

    def __init__(self, config: AttpcConfig) -> None:
        engine = _import_engine()
        self.engine = engine
        self.config = config
        nuclear_map = engine["nuclear_map"]
        self.gas = engine["GasTarget"](list(ISOBUTANE), config.pressure_torr, nuclear_map)
        detector = engine["DetectorParams"](
            length=1.0,  # m, the active volume
            efield=config.efield_v_per_m,
            bfield=config.bfield_t,
            mpgd_gain=config.mpgd_gain,
            gas_target=self.gas,
            diffusion=config.diffusion_v,
            fano_factor=config.fano_factor,
            w_value=config.w_value_ev,
        )
        electronics = engine["ElectronicsParams"](
            clock_freq=config.clock_mhz,
            amp_gain=config.amp_gain,
            shaping_time=config.shaping_time_ns,
            micromegas_edge=config.micromegas_edge_tb,
            windows_edge=config.window_edge_tb,
            adc_threshold=config.adc_threshold,
        )
        self.detector_config = engine["Config"](detector, electronics, engine["PadParams"]())
        self.response = engine["get_response"](self.detector_config)  # [512] GET response per electron
        self.pad_centers = np.asarray(self.detector_config.pad_centers, dtype=np.float64)  # [10240, 2] mm

    def _pipeline(self, kind: str):
        engine, config = self.engine, self.config
        nuclear_map = engine["nuclear_map"]
        target = nuclear_map.get_data(*TARGETS[kind])
        reaction = engine["Reaction"](target, nuclear_map.get_data(*BEAM), target)  # elastic
        material = engine["KinematicsTargetMaterial"](self.gas, tuple(config.vertex_z_m), 0.0)
        return engine["KinematicsPipeline"](
            [reaction], [engine["ExcitationGaussian"](0.0, 0.0)], [engine["PolarUniform"](0.0, math.pi)],
            beam_energy=config.beam_mev_per_u * BEAM[1], target_material=material,
        )

    def _hits(self, cloud: np.ndarray) -> np.ndarray:
        """[pad, time bucket, electrons] [n, 3] -> hits (x, y, z mm, ADC charge) [m, 4] above threshold."""
        config = self.config
        converted = self.engine["convert_to_spyral"](
            cloud, config.window_edge_tb, config.micromegas_edge_tb, 1.0,
            self.response, self.detector_config.pad_centers, self.detector_config.pad_sizes,
        )  # [n, 8]: x, y, z, amplitude, integral, pad, tb, pad size
        hits = converted[:, :4]
        return hits[hits[:, 3] >= config.adc_threshold]

    def real_events(self, kind: str, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``count`` simulated events of ``kind`` ("proton" or "carbon"), each hits [n >= min_hits, 4]."""
        pipeline = self._pipeline(kind)
        pipeline.rng = np.random.default_rng(rng.integers(2**63))  # the engine draws from its own attribute
        proton_numbers, mass_numbers = pipeline.get_proton_numbers(), pipeline.get_mass_numbers()
        products = [2, 3]  # ejectile and residual: every final product
        events: list[np.ndarray] = []
        while len(events) < count:
            vertex, momenta = pipeline.run()
            cloud, _ = self.engine["simulate"](
                momenta.copy(), vertex, proton_numbers, mass_numbers, self.detector_config, rng, products
            )
            hits = self._hits(cloud) if len(cloud) else np.zeros((0, 4))
            if len(hits) >= self.config.min_hits:
                events.append(hits)
        return events


# --------------------------------------------------------------------------- a split


def _class_streams(config: AttpcConfig, class_index: int, split: str) -> tuple[np.random.Generator, np.random.Generator]:
    """(simulation rng, noise rng) of one class in one split."""
    sequence = np.random.SeedSequence([config.seed, class_index, SPLIT_STREAMS[split]])
    simulation, noise = sequence.spawn(2)
    return np.random.default_rng(simulation), np.random.default_rng(noise)


def _check_split(split: str) -> str:
    if split not in SPLIT_STREAMS:
        raise ConfigError(f"unknown split {split!r}: choose train or test")
    return split


def generate_split(config: AttpcConfig, split: str, *, progress: bool = True) -> dict[str, np.ndarray]:
    """Simulate and render one split -> {"images": uint8 [N, S, S], "labels": int64 [N], "hits": int64 [N]}."""
    split = _check_split(split)
    simulator = EventSimulator(config)
    count = config.train_per_class if split == "train" else config.test_per_class
    images, labels, hit_counts = [], [], []
    for class_index, kind in enumerate(CLASS_NAMES):
        simulation_rng, noise_rng = _class_streams(config, class_index, split)
        started = time.perf_counter()
        if kind == "junk":
            events = [junk_event(simulation_rng, simulator.pad_centers, config) for _ in range(count)]
        else:
            events = simulator.real_events(kind, count, simulation_rng)
            events = [add_noise(hits, noise_rng, simulator.pad_centers, config) for hits in events]
        images += [render_event(hits, config) for hits in events]
        labels += [class_index] * count
        hit_counts += [len(hits) for hits in events]
        if progress:
            print(f"attpc: {split} {kind}: {count} events in {time.perf_counter() - started:.1f} s", flush=True)
    order = np.random.RandomState(config.seed).permutation(len(labels))
    return {
        "images": np.stack(images)[order],
        "labels": np.asarray(labels, dtype=np.int64)[order],
        "hits": np.asarray(hit_counts, dtype=np.int64)[order],
    }


def cache_key(config: AttpcConfig, split: str) -> str:
    """12 hex digits of sha256 over the config, the split, the engine's and generator's versions."""
    payload = {"config": config.to_dict(), "split": split, "engine": engine_version(), "generator": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def cache_folder(config: AttpcConfig, split: str, cache_dir: str | os.PathLike | None = None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "attpc"
    return base / f"{split}-{cache_key(config, split)}"


def load_split(
    config: AttpcConfig, split: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, S, S], labels int64 [N]) of a split: read from the cache, else generated and cached."""
    split = _check_split(split)
    folder = cache_folder(config, split, cache_dir)
    if (folder / "config.json").is_file() and (folder / "events.npz").is_file():
        with np.load(folder / "events.npz", allow_pickle=False) as data:
            return data["images"], data["labels"]
    started = time.perf_counter()
    arrays = generate_split(config, split, progress=progress)
    record = {
        "dataset": "attpc",
        "split": split,
        "config": config.to_dict(),
        "class_names": list(CLASS_NAMES),
        "attpc_engine": engine_version(),
        "generator_version": GENERATOR_VERSION,
        "generation_seconds": round(time.perf_counter() - started, 1),
    }

    def fill(tmp: Path) -> None:
        with open(tmp / "events.npz", "wb") as handle:
            np.savez_compressed(handle, **arrays)
        (tmp / "config.json").write_text(json.dumps(record, indent=2) + "\n")

    atomic_replace_dir(folder, fill)
    return arrays["images"], arrays["labels"]


def read_attpc(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The registry row's reader: the default ``AttpcConfig()`` split (``root`` is not used)."""
    return load_split(AttpcConfig(), split)


def load_attpc(
    config: AttpcConfig,
    split: str,
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
    normalize: bool = True,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    augment: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """Any config's split as an ``ImageDataset``, through the project's resize/channel path.

    ``stats``: (mean, std) of one grey channel in pixel / 255 units used to normalize; None
    measures this config's train split (generating it if needed). Pass the clean train
    split's stats to test a model on a noisy test split as it was trained.
    """
    import torch

    images, labels = load_split(config, split, cache_dir=cache_dir)
    pixels = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # uint8 [N, 1, S, S]
    if stats is None:
        train_images = images if split == "train" else load_split(config, "train", cache_dir=cache_dir)[0]
        stats = compute_mean_std(torch.from_numpy(np.ascontiguousarray(train_images)).unsqueeze(1))
    final_size, final_chans = image_size or config.image_size, in_chans or 1
    if final_chans not in (1, 3):
        raise ConfigError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans!r}")
    mean, std = convert_stats(tuple(stats[0]), tuple(stats[1]), final_chans)
    info = DatasetInfo(
        name="attpc", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, image_size=final_size,
        in_chans=final_chans, mean=mean, std=std,
        num_train=3 * config.train_per_class, num_test=3 * config.test_per_class,
    )
    floats = to_float_images(
        pixels, image_size=final_size, in_chans=final_chans,
        mean=mean if normalize else None, std=std if normalize else None,
    )  # float32 [N, C, S', S']
    return ImageDataset(floats, torch.from_numpy(labels.astype(np.int64)), info, split=split, augment=augment)
