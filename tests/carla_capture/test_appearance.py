"""The embedded simulator's second appearance: same scene and labels, another look."""

from __future__ import annotations

import json

import numpy as np

from carla_capture.backends.synthetic.appearance import apply_appearance
from carla_capture.record import record
from clipcore.shards import ShardReader


def _first_clip(folder):
    shard = min((folder / "Town01").glob("*.h5"))
    with ShardReader(shard) as reader:
        return reader.read_arrays(reader.clip_ids()[0])


def test_default_appearance_leaves_pixels_untouched():
    rgb = np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)
    assert (
        apply_appearance("default", rgb, np.zeros((8, 8), np.uint8), np.ones((8, 8), np.float32), 3)
        is rgb
    )


def test_textured_recording_has_the_same_labels_and_another_look(
    tmp_path, tiny_towns, synthetic_config
):
    plain, textured = tmp_path / "a", tmp_path / "b"
    record(synthetic_config(plain, tiny_towns, clips=1, frames=2))
    record(synthetic_config(textured, tiny_towns, clips=1, frames=2, appearance="textured"))
    a, b = _first_clip(plain), _first_clip(textured)
    for key in ("semantic", "depth", "cam_to_world", "frame"):
        np.testing.assert_array_equal(a[key], b[key])
    assert np.abs(a["rgb"].astype(int) - b["rgb"].astype(int)).mean() > 10
    assert b["attrs"]["appearance"] == "textured" and "appearance" not in a["attrs"]


def test_resume_refuses_another_appearance_and_accepts_old_records(
    tmp_path, tiny_towns, synthetic_config, cli
):
    out = tmp_path / "data"
    record(synthetic_config(out, tiny_towns, clips=1, frames=2))
    saved = out / "Town01" / "record-0.json"
    before = json.loads(saved.read_text())
    del before["capture"]["appearance"]  # written before the field existed
    saved.write_text(json.dumps(before))
    record(synthetic_config(out, tiny_towns, clips=2, frames=2))  # default look: resumes
    result = cli.capture(
        "record",
        "--backend",
        "synthetic",
        "--town",
        "Town01",
        "--clips",
        "3",
        "--frames",
        "2",
        "--out",
        out,
        "--town-dir",
        tiny_towns,
        "--clips-per-shard",
        "2",
        "--appearance",
        "textured",
    )
    cli.error(result, "appearance=default")
