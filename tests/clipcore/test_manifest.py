"""A split.json edited by hand is refused in one line by every reader, and reported by verify."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clipcore.errors import CaptureError
from clipcore.manifest import MANIFEST_NAME, load_manifest


def _first_train_shard(m: dict) -> dict:
    return m["splits"]["train"]["shards"][0]


def _leak(m: dict) -> None:  # a test-town shard appended to train
    m["splits"]["train"]["shards"].append(m["splits"]["test"]["shards"][0])
    m["splits"]["train"]["clips"] += len(m["splits"]["test"]["shards"][0]["clips"])


def _move(m: dict) -> None:  # a test-town shard moved into train
    shard = m["splits"]["test"]["shards"].pop(0)
    m["splits"]["test"]["clips"] -= len(shard["clips"])
    m["splits"]["train"]["shards"].append(shard)
    m["splits"]["train"]["clips"] += len(shard["clips"])


EDITS: dict[str, tuple[Callable[[dict], Any], str]] = {
    "no splits": (lambda m: m.pop("splits"), "splits"),
    "no path": (lambda m: _first_train_shard(m).pop("path"), "path"),
    "no sha256": (lambda m: _first_train_shard(m).pop("sha256"), "sha256"),
    "null split": (lambda m: m["splits"].update(train=None), "splits.train"),
    "shards a string": (lambda m: m["splits"]["train"].update(shards="Town01"), "shards"),
    "frames a string": (
        lambda m: _first_train_shard(m)["clips"][0].update(frames="four"),
        "frames",
    ),
    "no clips": (lambda m: _first_train_shard(m).update(clips=[]), "clips"),
    "frames changed": (lambda m: _first_train_shard(m)["clips"][0].update(frames=40), "edited"),
    "test shard in train": (_leak, "edited"),
    "test shard moved to train": (_move, "edited"),
    "path outside": (
        lambda m: _first_train_shard(m).update(path="../../other/Town01-00001.h5"),
        "edited",
    ),
}


@pytest.fixture
def edited(tmp_path: Path, split_dataset: Path) -> Callable[[str, bool], Path]:
    def edit(name: str, keep_digest: bool = True) -> Path:
        data = tmp_path / "data"
        shutil.copytree(split_dataset, data)
        manifest = json.loads((data / MANIFEST_NAME).read_text())
        if not keep_digest:
            manifest.pop("digest")
        EDITS[name][0](manifest)
        (data / MANIFEST_NAME).write_text(json.dumps(manifest))
        return data

    return edit


@pytest.mark.parametrize("name", list(EDITS))
def test_hand_edited_manifest_is_refused_in_one_line(edited, name):
    with pytest.raises(CaptureError) as info:
        load_manifest(edited(name))
    message = str(info.value)
    assert "\n" not in message and "capture split" in message, message
    assert EDITS[name][1] in message, message


@pytest.mark.parametrize(
    "name, needle",
    [
        ("test shard in train", "split 'train'"),
        ("test shard moved to train", "not its town's"),
        ("path outside", "outside the data folder"),
        ("frames a string", "frames"),
    ],
)
def test_without_a_digest_the_content_is_still_checked(edited, name, needle):
    """Manifests written before the digest: the checks of leakage and paths still hold."""
    with pytest.raises(CaptureError, match=needle):
        load_manifest(edited(name, keep_digest=False))


@pytest.mark.parametrize("name", ["no splits", "frames changed", "test shard in train"])
def test_verify_reports_a_hand_edited_manifest_and_train_refuses_it(cli, edited, tmp_path, name):
    data = edited(name)
    result = cli.capture("verify", data)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert MANIFEST_NAME in result.output
    cli.error(
        cli.train("run", "pipeline", "--data", data, "--out", tmp_path / "run"), "capture split"
    )
