"""capture split: manifests, idempotence, leakage refusal, and the manifest's own checks."""

from __future__ import annotations

import json
import shutil

import pytest

from carla_capture.split import build_manifest, load_splits, write_manifest
from clipcore.errors import CaptureError, ConfigError
from clipcore.manifest import MANIFEST_NAME, load_manifest


@pytest.fixture
def dataset(tmp_path, tiny_dataset):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    return data


def test_default_splits_file():
    splits = load_splits().splits
    assert splits["train"] == ("Town01", "Town03", "Town04", "Town05", "Town06", "Town07")
    assert splits["val"] == ("Town10HD",) and splits["test"] == ("Town02",)


def test_split_writes_manifest_and_is_idempotent(cli, dataset):
    result = cli.capture("split", str(dataset))
    assert result.exit_code == 0, result.output
    manifest = json.loads((dataset / MANIFEST_NAME).read_text())
    counts = {name: (s["clips"], s["frames"]) for name, s in manifest["splits"].items()}
    assert counts == {"train": (3, 18), "val": (1, 6), "test": (1, 6)}
    assert all(len(sh["sha256"]) == 64 for s in manifest["splits"].values() for sh in s["shards"])
    assert "train   Town01" in result.stdout
    before = (dataset / MANIFEST_NAME).stat().st_mtime_ns
    again = cli.capture("split", str(dataset))
    assert "unchanged" in again.stdout and (dataset / MANIFEST_NAME).stat().st_mtime_ns == before


def test_refuses_a_town_in_two_splits(cli, tmp_path, dataset):
    bad = tmp_path / "splits.toml"
    bad.write_text('[splits]\ntrain = ["Town01", "Town02"]\ntest = ["Town02"]\n')
    with pytest.raises(ConfigError, match="Town02 is in both"):
        load_splits(bad)
    cli.error(cli.capture("split", str(dataset), "--splits", str(bad)), "Town02 is in both")
    assert not (dataset / MANIFEST_NAME).exists()


def test_refuses_a_clip_in_two_shards(dataset):
    src = dataset / "Town01" / "Town01-s0-00001.h5"
    shutil.copy(src, dataset / "Town01" / "Town01-00009.h5")
    with pytest.raises(CaptureError, match="is in both"):
        build_manifest(dataset, load_splits())


def test_refuses_a_town_in_no_split(cli, tmp_path, dataset):
    only = tmp_path / "splits.toml"
    only.write_text('[splits]\ntrain = ["Town01"]\n')
    cli.error(cli.capture("split", str(dataset), "--splits", str(only)), "in no split")


def test_manifest_problems_are_clear(cli, dataset):
    with pytest.raises(CaptureError, match="capture split"):
        load_manifest(dataset)
    write_manifest(dataset, build_manifest(dataset, load_splits()))
    (dataset / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CaptureError, match="unreadable"):
        load_manifest(dataset)
    write_manifest(dataset, build_manifest(dataset, load_splits()))
    shard = dataset / "Town02" / "Town02-s0-00001.h5"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="changed"):
        load_manifest(dataset, verify_checksums=True)
    # the loader's check (no checksums asked): the modification time moved, so the SHA-256 is
    # compared
    with pytest.raises(CaptureError, match="changed"):
        load_manifest(dataset)
    # verify reports the changed shard and carries on with every clip
    changed = cli.capture("verify", str(dataset))
    assert changed.exit_code == 1 and "changed since split.json" in changed.stdout
    assert "Town01-0-000000" in changed.stdout
    shard.unlink()
    gone = cli.capture("verify", str(dataset))
    assert gone.exit_code == 1 and "gone" in gone.stdout
    assert (dataset / MANIFEST_NAME).exists()


def test_empty_dataset_folder_is_a_clear_error(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cli.error(cli.capture("split", str(empty)), "no .h5 shards")
    cli.error(cli.capture("verify", str(empty)), "no .h5 shards")
    assert list(empty.iterdir()) == []
