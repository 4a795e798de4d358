"""``capture inspect --save x.rrd``: recorded clips on the Rerun dashboard, exactly as stored."""

from __future__ import annotations

import sys

import numpy as np

from clipcore.dashboard import read_rrd, rrd_images, rrd_values
from clipcore.folder import find_shards
from clipcore.shards import ShardReader
from clipcore.tags import TAG_NAMES


def _stored(path):  # noqa: ANN001, ANN202
    clips = []
    for shard in find_shards(path):
        with ShardReader(shard) as reader:
            clips += [reader.read_clip(cid) for cid in reader.clip_ids()]
    return clips


def test_every_clip_is_logged_as_stored(cli, tiny_dataset, tmp_path):
    out = tmp_path / "clips.rrd"
    result = cli.capture("inspect", tiny_dataset, "--save", out)
    assert result.exit_code == 0, result.output
    clips = _stored(tiny_dataset)
    frames = [f for clip in clips for f in clip.frames]
    assert f"{len(clips)} clip(s), {len(frames)} frames" in result.output
    contents = read_rrd(out)
    for entity in ("/camera/rgb", "/camera/semantic/truth", "/camera/depth/truth"):
        assert contents[entity]["frames"] == list(range(len(frames)))
        assert contents[entity]["shapes"] == [(48, 96)] * len(frames)
    assert "/camera/semantic/predicted" not in contents
    starts = list(np.cumsum([0] + [len(c) for c in clips[:-1]]))
    assert contents["/clip"]["frames"] == starts
    rgb, tags = rrd_images(out, "/camera/rgb"), rrd_images(out, "/camera/semantic/truth")
    depth = rrd_images(out, "/camera/depth/truth")
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(rgb[k], frame.rgb)
        np.testing.assert_array_equal(tags[k], frame.semantic)
        np.testing.assert_array_equal(depth[k], frame.depth)
    context = rrd_values(out, "/camera", "AnnotationContext:context")[None][0]
    assert tuple(c["class_description"]["info"]["label"] for c in context) == TAG_NAMES
    strip = rrd_values(out, "/world/trajectory/true", "LineStrips3D:strips")[len(clips[0]) - 1][0]
    expected = [f.cam_to_world[:3, 3] for f in clips[0].frames]
    np.testing.assert_allclose(np.array(strip), np.array(expected), atol=1e-3)  # world, float32


def test_one_clip(cli, tiny_dataset, tmp_path):
    clip = _stored(tiny_dataset)[-1]
    out = tmp_path / "one.rrd"
    result = cli.capture("inspect", tiny_dataset, "--save", out, "--clip", clip.clip_id)
    assert result.exit_code == 0, result.output
    assert read_rrd(out)["/camera/rgb"]["frames"] == list(range(len(clip)))
    assert clip.clip_id in rrd_values(out, "/clip", "TextLog:text")[0][0]


def test_bad_requests_are_one_line(cli, tiny_dataset, tmp_path, monkeypatch):
    cli.error(
        cli.capture("inspect", tiny_dataset, "--save", tmp_path / "x.rrd", "--clip", "nope"),
        "--clip nope: no such clip",
    )
    assert not (tmp_path / "x.rrd").exists()
    cli.error(cli.capture("inspect", tiny_dataset, "--save", tmp_path / "x.png"), ".rrd")
    cli.error(
        cli.capture("inspect", tiny_dataset, "--save", tmp_path / "x.rrd", "--rerun"), "choose one"
    )
    monkeypatch.setitem(sys.modules, "rerun", None)
    cli.error(cli.capture("inspect", tiny_dataset, "--rerun"), "carla-temporal[live]")
