"""ClipWindows: item contract, sequence-consistent augmentation, exact geometry, workers, errors."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, load_town
from carla_capture.consistency import reprojection_agreement
from clipcore.errors import CaptureError
from clipcore.normalize import denormalize
from dataset import ClipWindows
from dataset import augment as aug
from dataset.config import AugmentConfig


def test_item_contract(split_dataset):
    ds = ClipWindows(split_dataset, "train", window=4, label_map="carla22")
    assert len(ds) == 3 * (6 - 4 + 1)
    item = ds[0]
    w, h, wd = 4, 48, 96
    assert item["rgb"].shape == (w, 3, h, wd) and item["rgb"].dtype == torch.float32
    rgb = denormalize(item["rgb"])
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    assert item["labels"].shape == (w, h, wd) and item["labels"].dtype == torch.int64
    assert set(item["labels"].unique().tolist()) <= set(range(22)) | {255}
    assert item["depth"].shape == (w, 1, h, wd) and item["depth"].dtype == torch.float32
    assert item["depth"].min() > 0 and item["depth"].max() <= 1000
    assert (
        item["valid_depth"].dtype == torch.bool
        and not item["valid_depth"][item["labels"].unsqueeze(1) == 12].any()
    )  # sky
    assert item["intrinsics"].shape == (w, 3, 3) and item["cam_to_world"].shape == (w, 4, 4)
    torch.testing.assert_close(item["rel_pose"][0], torch.eye(4, dtype=torch.float64))
    expected = torch.linalg.inv(item["cam_to_world"][0]) @ item["cam_to_world"][1]
    torch.testing.assert_close(item["rel_pose"][1], expected)
    assert torch.all(item["frames"][1:] - item["frames"][:-1] == 1)
    assert item["clip_id"].startswith("Town01-") and item["town"] == "Town01"
    assert (
        len(ClipWindows(split_dataset, "val", window=6)) == 1
        and len(ClipWindows(split_dataset, "test", window=6, stride=2)) == 1
    )


def test_random_windows_follow_seed_and_epoch(split_dataset):
    ds = ClipWindows(split_dataset, "train", window=2, sampling="random", seed=3)
    assert len(ds) == 3
    starts = lambda: [int(ds[i]["frames"][0]) for i in range(3)]  # noqa: E731
    first = starts()
    assert starts() == first
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        seen.add(tuple(starts()))
    assert len(seen) > 1


def _window(small_towns, frames=3):
    cfg = CaptureConfig(backend="synthetic", town="Town03", frames=frames, town_dir=small_towns)
    return SyntheticBackend(cfg, load_town("Town03", small_towns)).record_clip(2)


def test_augmentation_is_the_same_for_every_frame():
    rng = np.random.default_rng(0)
    frame = rng.uniform(0, 1, (1, 32, 48, 3)).astype(np.float32)
    rgb = np.repeat(frame, 4, axis=0)
    labels = np.repeat(rng.integers(0, 22, (1, 32, 48)).astype(np.uint8), 4, axis=0)
    depth = np.repeat(rng.uniform(1, 50, (1, 32, 48)).astype(np.float32), 4, axis=0)
    poses = np.repeat(np.eye(4)[None], 4, axis=0)
    cfg = AugmentConfig(noise_sigma=0.0, lighting_drift=0.0, flip_p=1.0, crop_p=1.0, clutter_p=1.0)
    d = aug.draw(cfg, np.random.default_rng(1), 32, 48)
    out_rgb, out_labels, out_depth, K, _ = aug.apply(d, rgb, labels, depth, np.eye(3), poses)
    for t in range(1, 4):  # same crop, same flip, same jitter, same clutter
        assert np.array_equal(out_rgb[t], out_rgb[0]) and np.array_equal(
            out_labels[t], out_labels[0]
        )
        assert np.array_equal(out_depth[t], out_depth[0])
    assert not np.allclose(out_rgb[0], frame[0])
    # the lighting drift is a ramp across the window
    grey = np.full_like(rgb, 0.5)
    plain = dataclasses.replace(
        d,
        drift=(-0.1, 0.1),
        clutter=(),
        crop=None,
        flip=False,
        brightness=1.0,
        contrast=1.0,
        saturation=1.0,
        hue=0.0,
    )
    drift = aug.apply(plain, grey, labels, depth, np.eye(3), poses)[0]
    np.testing.assert_allclose(
        drift.mean(axis=(1, 2, 3)), 0.5 + np.linspace(-0.1, 0.1, 4), atol=1e-5
    )


@pytest.mark.parametrize(
    "flip,crop",
    [(True, None), (False, (0.0, 40.0, 160.0, 80.0)), (True, (10.0, 30.0, 200.0, 90.0))],
)
def test_geometry_stays_exact_after_flip_and_crop(small_towns, flip, crop):
    clip = _window(small_towns)
    rgb = clip.stack("rgb").astype(np.float32) / 255
    tags, depth, poses = clip.stack("semantic"), clip.stack("depth"), clip.stack("cam_to_world")
    d = aug.draw(
        AugmentConfig(noise_sigma=0, clutter_p=0), np.random.default_rng(0), *tags.shape[1:]
    )
    d = dataclasses.replace(d, flip=flip, crop=crop)
    _, t2, d2, K2, p2 = aug.apply(d, rgb, tags, depth, clip.intrinsics, poses)
    assert np.allclose(np.linalg.det(p2[:, :3, :3]), 1.0)
    for a in range(2):
        plain = reprojection_agreement(
            depth[a], tags[a], poses[a], depth[a + 1], tags[a + 1], poses[a + 1], clip.intrinsics
        )
        good = reprojection_agreement(d2[a], t2[a], p2[a], d2[a + 1], t2[a + 1], p2[a + 1], K2)
        # as consistent as the un-augmented frames (a zoom magnifies the depth edges a little)
        assert good.depth_agree > plain.depth_agree - 0.05 and good.label_agree > 0.97, (
            good,
            plain,
        )
        if crop is not None:  # the same pixels with the intrinsics left as they were do not line up
            stale = reprojection_agreement(
                d2[a], t2[a], p2[a], d2[a + 1], t2[a + 1], p2[a + 1], clip.intrinsics
            )
            assert stale.depth_agree < good.depth_agree - 0.1
    if flip:  # a flipped window's rel_pose is the mirrored one
        from dataset.windows import relative_poses

        np.testing.assert_allclose(
            relative_poses(p2)[1], aug.MIRROR @ relative_poses(poses)[1] @ aug.MIRROR, atol=1e-9
        )


def test_crop_intrinsics_map_each_output_ray_exactly():
    K = np.array([[100.0, 0, 64], [0, 100.0, 32], [0, 0, 1]])
    for seed in range(5):
        d = aug.draw(AugmentConfig(crop_p=1.0, flip_p=0.0), np.random.default_rng(seed), 64, 128)
        x0, y0, w, h = d.crop
        K2 = aug.apply(
            d,
            np.zeros((1, 64, 128, 3), np.float32),
            np.zeros((1, 64, 128), np.uint8),
            np.ones((1, 64, 128), np.float32),
            K,
            np.eye(4)[None],
        )[3]
        v2, u2 = np.mgrid[0:64, 0:128] + 0.5
        u, v = (
            x0 + u2 * w / 128,
            y0 + v2 * h / 64,
        )  # where each output pixel centre samples the source
        np.testing.assert_allclose((u2 - K2[0, 2]) / K2[0, 0], (u - K[0, 2]) / K[0, 0], atol=1e-12)
        np.testing.assert_allclose((v2 - K2[1, 2]) / K2[1, 1], (v - K[1, 2]) / K[1, 1], atol=1e-12)


def _first_batches(loader, n=2):
    out = []
    for i, batch in enumerate(loader):
        out.append(batch)
        if i + 1 == n:
            break
    return out


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_workers_match_the_main_process(split_dataset, start_method):
    ds = ClipWindows(split_dataset, "train", window=3, augment=AugmentConfig(), seed=5)
    ds[0]  # the parent has open file handles: forked workers must not reuse them
    main = _first_batches(DataLoader(ds, batch_size=2, num_workers=0))
    spawned = _first_batches(
        DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=start_method)
    )
    for a, b in zip(main, spawned, strict=True):
        for key in ("rgb", "labels", "depth", "rel_pose"):
            torch.testing.assert_close(a[key], b[key])
    shards = [
        set(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=1)) for r in range(2)
    ]
    assert shards[0] | shards[1] == set(range(len(ds)))


def test_corrupt_shard_names_shard_and_clip(tmp_path, split_dataset):
    data = tmp_path / "data"
    shutil.copytree(split_dataset, data)
    shard = data / "Town02" / "Town02-s0-00001.h5"
    stat = shard.stat()
    raw = bytearray(shard.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4000] = bytes(4000)
    shard.write_bytes(bytes(raw))
    with pytest.raises(CaptureError, match="Town02-s0-00001.h5 changed since split.json"):
        ClipWindows(data, "test", window=6)
    # same size and time as the manifest recorded: the reader's own checks still name shard and clip
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    ds = ClipWindows(data, "test", window=6)
    with pytest.raises(CaptureError, match=r"Town02-s0-00001\.h5.*Town02-0-000000"):
        ds[0]


def test_missing_manifest_and_split(tmp_path, split_dataset):
    with pytest.raises(CaptureError, match="capture split"):
        ClipWindows(tmp_path, "train", 6)
    with pytest.raises(CaptureError, match="not in"):
        ClipWindows(split_dataset, "holdout", 6)


def test_nan_depth_never_reaches_training(tmp_path, split_dataset):
    """A format-1 shard with NaN depth (its structure is fine, so capture split accepts it): the
    loader
    refuses the window with the shard, the clip and the frame."""
    import h5py

    from carla_capture.split import build_manifest, load_splits, write_manifest

    data = tmp_path / "data"
    shutil.copytree(split_dataset, data)
    shard = data / "Town02" / "Town02-s0-00001.h5"
    with h5py.File(shard, "a") as h5:
        group = next(iter(h5["clips"].values()))
        depth = group["depth"][()].astype(np.float32) * np.float32(group["depth"].attrs["scale_m"])
        depth[4, 3, 3] = np.nan
        del group["depth"]
        group.create_dataset("depth", data=depth, chunks=(1, *depth.shape[1:]))
        for name in [n for n in group if n.endswith("_valid")]:
            del group[name]
        h5.attrs["format_version"] = 1
    write_manifest(data, build_manifest(data, load_splits()))
    ds = ClipWindows(data, "test", window=6)
    with pytest.raises(
        CaptureError,
        match=r"Town02-s0-00001\.h5: clip Town02-0-000000: depth is NaN or inf on frame 4",
    ):
        ds[0]


def test_from_config_reads_the_data_section_and_augments_only_training(split_dataset):
    from dataset.config import DataConfig

    cfg = DataConfig(root=split_dataset, label_map="common12", size=(32, 64))
    train = ClipWindows.from_config(cfg, "train", 3, training=True, seed=1)
    val = ClipWindows.from_config(cfg, "train", 3)
    assert train.augment == cfg.augment and val.augment is None
    assert len(val) < len(ClipWindows.from_config(cfg, "train", 3, stride=1))  # stride = window
    item = val[0]
    assert (
        item["rgb"].shape[-2:] == (32, 64) and int(item["labels"][item["labels"] != 255].max()) < 12
    )
    assert (
        ClipWindows.from_config(
            DataConfig(root=split_dataset, augment=False), "train", 3, training=True
        ).augment
        is None
    )


def test_the_window_has_one_default_the_stages(split_dataset):
    """The window length is the training stage's (StageConfig.window); the data section and the
    dataset have none of their own, so a stage's window is the one that reaches the loader."""
    import inspect

    from dataset.config import DataConfig
    from train.pipeline.config import StageConfig

    assert "window" not in DataConfig.model_fields
    assert inspect.signature(ClipWindows).parameters["window"].default is inspect.Parameter.empty
    assert inspect.signature(ClipWindows.from_config).parameters["window"].default is (
        inspect.Parameter.empty
    )
    assert StageConfig.model_fields["window"].default == 1
    with pytest.raises(TypeError):
        ClipWindows(split_dataset, "train")  # type: ignore[call-arg]
