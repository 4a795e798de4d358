"""Augmentation on the training device: the same windows as the loader's CPU path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from clipcore.schema import decode_depth
from dataset import ClipWindows, device_augment
from dataset import augment as aug
from dataset.config import AugmentConfig

EXACT = ("labels", "depth", "valid_depth", "static", "intrinsics", "cam_to_world", "rel_pose")
EXACT += ("valid_pose", "frames", "index")


DEFAULT = AugmentConfig()


def _pair(data, size=None, augment=DEFAULT, seed=4, window=3):  # noqa: ANN001, ANN202
    kw = {"window": window, "augment": augment, "seed": seed, "size": size}
    return (
        ClipWindows(data, "train", augment_on="loader", **kw),
        ClipWindows(data, "train", augment_on="device", **kw),
    )


def _batches(loader_ds, device_ds, indices):  # noqa: ANN001, ANN202
    cpu = default_collate([loader_ds[i] for i in indices])
    dev = device_augment.finish(default_collate([device_ds[i] for i in indices]))
    return cpu, dev


def _assert_same(cpu: dict, dev: dict) -> None:
    assert set(cpu) == set(dev)
    for key in EXACT:
        assert cpu[key].dtype == dev[key].dtype, key
        assert torch.equal(cpu[key], dev[key]), key
    assert dev["rgb"].dtype == torch.float32 and dev["rgb"].shape == cpu["rgb"].shape
    diff = (cpu["rgb"] - dev["rgb"]).abs()  # normalised units (~4.4 per [0, 1])
    assert diff.mean() < 1e-5 and diff.max() < 1e-3


@pytest.mark.parametrize("size", [None, (32, 64)])
def test_device_path_makes_the_loader_paths_windows(split_dataset, size):
    loader_ds, device_ds = _pair(split_dataset, size)
    for epoch in (0, 1):
        loader_ds.set_epoch(epoch)
        device_ds.set_epoch(epoch)
        cpu, dev = _batches(loader_ds, device_ds, range(len(loader_ds)))
        _assert_same(cpu, dev)


def test_every_augmentation_on_the_device_matches(split_dataset):
    """Crop, flip, clutter and noise forced on: each window equal to the CPU path's."""
    forced = AugmentConfig(crop_p=1.0, flip_p=1.0, clutter_p=1.0)
    loader_ds, device_ds = _pair(split_dataset, augment=forced)
    cpu, dev = _batches(loader_ds, device_ds, range(len(loader_ds)))
    _assert_same(cpu, dev)
    none_ds = _pair(split_dataset, augment=None)
    _assert_same(*_batches(*none_ds, range(len(none_ds[0]))))


def test_device_path_has_the_cpu_paths_distribution(split_dataset):
    """Statistics over many draws (epochs) of a window agree between the paths."""
    loader_ds, device_ds = _pair(split_dataset, window=2)
    cpu_means, dev_means = [], []
    for epoch in range(24):
        loader_ds.set_epoch(epoch)
        device_ds.set_epoch(epoch)
        cpu, dev = _batches(loader_ds, device_ds, [0, 1])
        cpu_means.append(cpu["rgb"].mean(dim=(1, 3, 4)))
        dev_means.append(dev["rgb"].mean(dim=(1, 3, 4)))
    cpu_stats, dev_stats = torch.cat(cpu_means), torch.cat(dev_means)
    torch.testing.assert_close(dev_stats.mean(0), cpu_stats.mean(0), atol=1e-3, rtol=0)
    torch.testing.assert_close(dev_stats.std(0), cpu_stats.std(0), atol=1e-3, rtol=0)
    assert cpu_stats.std(0).min() > 0.01  # the draws do vary


def test_device_path_is_the_same_when_drawn_again(split_dataset):
    """A resumed run draws (seed, epoch, index) again: the same batch, bit for bit."""
    _, device_ds = _pair(split_dataset)
    device_ds.set_epoch(3)
    first = device_augment.finish(default_collate([device_ds[i] for i in (0, 2)]))
    again = ClipWindows(
        split_dataset, "train", 3, augment=AugmentConfig(), seed=4, augment_on="device"
    )
    again.set_epoch(3)
    second = device_augment.finish(default_collate([again[i] for i in (0, 2)]))
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[key]), key


def test_noise_beyond_the_bank_is_drawn_as_on_the_cpu(monkeypatch):
    """Windows larger than half the noise bank draw their noise directly on both paths."""
    monkeypatch.setattr(aug, "_BANK_SIZE", 64)
    d = dataclasses.replace(aug.IDENTITY, noise_sigma=0.05, noise_seed=11)
    rng = np.random.default_rng(0)
    raw = {
        "rgb": rng.integers(0, 256, (2, 8, 16, 3), dtype=np.uint8),
        "semantic": rng.integers(0, 22, (2, 8, 16), dtype=np.uint8),
        "depth": rng.uniform(1, 50, (2, 8, 16)).astype(np.float32),
        "cam_to_world": np.repeat(np.eye(4)[None], 2, axis=0),
        "intrinsics": np.eye(3),
        "frames": np.arange(2),
    }
    from dataset.labels import load_label_map
    from dataset.windows import complete_modalities, make_item

    label_map = load_label_map("carla22")
    cpu = make_item(raw, label_map, d)
    compact = device_augment.compact_item(complete_modalities(raw), label_map.lut, d, None)
    assert int(compact["aug_noise_start"]) == -1
    dev = device_augment.finish(default_collate([compact]))
    assert (cpu["rgb"] - dev["rgb"][0]).abs().max() < 1e-4


def test_forecasting_refuses_device_augmentation_in_one_line(split_dataset):
    from clipcore.errors import ConfigError
    from dataset.config import DataConfig
    from train.forecast.config import HorizonConfig
    from train.forecast.data import ForecastWindows

    data = DataConfig(root=split_dataset, augment_on="device")
    horizon = HorizonConfig(inputs=[1, 2], target=3)
    with pytest.raises(ConfigError, match="augment_on='loader'"):
        ForecastWindows(data, "train", horizon, training=True)
    assert len(ForecastWindows(data, "train", horizon, training=False)) > 0


def test_workers_hand_depth_over_as_the_shards_codes(split_dataset):
    """4 bytes a pixel as stored (24-bit codes), decoded on the device to the CPU path's metres;
    float metres (a format-1 shard's depth) in the same batch pass through unchanged."""
    loader_ds, device_ds = _pair(split_dataset)
    item = device_ds[0]
    assert item["depth_is_code"] and item["depth_bits"].dtype == torch.int32
    assert int(item["depth_bits"].max()) < 2**24  # codes, not float bits
    other = device_ds[1]
    metres = decode_depth(other["depth_bits"].numpy().view(np.uint32))  # as format 1 stores it
    as_format_1 = {
        **other,
        "depth_bits": torch.from_numpy(metres.view(np.int32)),
        "depth_is_code": False,
    }
    cpu = default_collate([loader_ds[0], loader_ds[1]])
    dev = device_augment.finish(default_collate([item, as_format_1]))
    _assert_same(cpu, dev)
