"""Cityscapes import: a tiny folder in the official layout, made here, imports exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipcore.shards import ShardReader
from dataset.labels import load_label_map

labels_mod = pytest.importorskip("cityscapesscripts.helpers.labels")

H, W = 16, 32
K = {"fx": 40.0, "fy": 41.0, "u0": 15.5, "v0": 7.5}


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _ids(seed: int) -> np.ndarray:
    """Every Cityscapes label id that labelIds images hold (0..33), shuffled over the image."""
    ids = np.resize(np.arange(34, dtype=np.uint8), H * W)
    return np.random.default_rng(seed).permutation(ids).reshape(H, W)


@pytest.fixture
def cityscapes(tmp_path: Path) -> dict:
    """aachen (train): a 7-frame snippet with frame 4 annotated and a camera file;
    frankfurt (val): one annotated frame, no snippet."""
    root = tmp_path / "cs"
    seq = root / "leftImg8bit_sequence" / "train" / "aachen"
    rgb = {f: _rgb(f) for f in range(7)}
    for f, image in rgb.items():
        _png(seq / f"aachen_000000_{f:06d}_leftImg8bit.png", image)
    _png(root / "leftImg8bit/train/aachen/aachen_000000_000004_leftImg8bit.png", rgb[4])
    ids = {"aachen": _ids(1), "frankfurt": _ids(2)}
    _png(root / "gtFine/train/aachen/aachen_000000_000004_gtFine_labelIds.png", ids["aachen"])
    camera = root / "camera/train/aachen/aachen_000000_000004_camera.json"
    camera.parent.mkdir(parents=True)
    camera.write_text(json.dumps({"intrinsic": K, "extrinsic": {}}))
    still = _rgb(99)
    _png(root / "leftImg8bit/val/frankfurt/frankfurt_000001_000019_leftImg8bit.png", still)
    _png(
        root / "gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png", ids["frankfurt"]
    )
    return {"root": root, "rgb": rgb, "ids": ids, "still": still}


def _clips(town_dir: Path) -> dict[str, dict]:
    out = {}
    for shard in sorted(town_dir.glob("*.h5")):
        with ShardReader(shard) as reader:
            out.update({cid: reader.read_arrays(cid) for cid in reader.clip_ids()})
    return out


def _train_ids(ids: np.ndarray) -> np.ndarray:
    """The official train id of every pixel, from cityscapesScripts' table (255: ignored)."""
    lut = np.full(256, 255, np.uint8)
    for label in labels_mod.labels:
        if label.id >= 0:
            lut[label.id] = label.trainId if 0 <= label.trainId < 255 else 255
    return lut[ids]


def test_import_is_exact(cityscapes: dict, tmp_path: Path, cli) -> None:
    out = tmp_path / "data"
    result = cli.capture("import", "cityscapes", cityscapes["root"], "--out", out, "--frames", "3")
    assert result.exit_code == 0, result.output
    assert "3 clips, 7 frames imported; 2 labelled frames, 0 clips already imported, 2 cities" in (
        result.output
    )
    assert "1 snippet frames left over" in result.output
    aachen = _clips(out / "aachen")
    assert sorted(aachen) == ["aachen_000000_000000", "aachen_000000_000003"]
    rgb = np.concatenate([aachen[c]["rgb"] for c in sorted(aachen)])
    np.testing.assert_array_equal(rgb, np.stack([cityscapes["rgb"][f] for f in range(6)]))
    second = aachen["aachen_000000_000003"]
    np.testing.assert_array_equal(second["frame"], [3, 4, 5])
    np.testing.assert_array_equal(second["semantic_valid"], [False, True, False])
    assert "semantic" not in aachen["aachen_000000_000000"]  # no frame of it is annotated
    cs19 = load_label_map("cityscapes19")
    np.testing.assert_array_equal(
        cs19(second["semantic"][1]), _train_ids(cityscapes["ids"]["aachen"])
    )
    np.testing.assert_allclose(second["intrinsics"], [[40, 0, 15.5], [0, 41, 7.5], [0, 0, 1]])
    assert "depth" not in second and "cam_to_world" not in second
    assert second["attrs"]["fps"] == pytest.approx(17.0)

    frankfurt = _clips(out / "frankfurt")["frankfurt_000001_000019"]
    np.testing.assert_array_equal(frankfurt["rgb"][0], cityscapes["still"])
    np.testing.assert_array_equal(
        cs19(frankfurt["semantic"][0]), _train_ids(cityscapes["ids"]["frankfurt"])
    )
    assert frankfurt["intrinsics"] is None

    splits = out / "cityscapes_splits.toml"
    result = cli.capture("split", out, "--splits", splits)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "split.json").read_text())["splits"]
    assert (manifest["train"]["clips"], manifest["val"]["clips"]) == (2, 1)

    again = cli.capture("import", "cityscapes", cityscapes["root"], "--out", out, "--frames", "3")
    assert again.exit_code == 0, again.output
    assert "0 clips" in again.output and "3 clips already imported" in again.output
    assert len(list((out / "aachen").glob("*.h5"))) == 1


def test_label_table_gives_the_official_train_ids() -> None:
    from carla_capture.importers.cityscapes import label_lut

    lut, cs19 = label_lut(), load_label_map("cityscapes19")
    ids = np.arange(34, dtype=np.uint8)
    np.testing.assert_array_equal(cs19(lut[ids]), _train_ids(ids))
    assert cs19.class_names[cs19(lut[7])] == "road" and cs19(lut[1]) == 255  # ego vehicle


def test_resize_scales_labels_and_intrinsics(cityscapes: dict, tmp_path: Path, cli) -> None:
    from carla_capture.importers.cityscapes import label_lut

    out = tmp_path / "data"
    result = cli.capture(
        "import",
        "cityscapes",
        cityscapes["root"],
        "--out",
        out,
        "--frames",
        "7",
        "--size",
        "8,16",
    )
    assert result.exit_code == 0, result.output
    clip = _clips(out / "aachen")["aachen_000000_000000"]
    assert clip["rgb"].shape == (7, 8, 16, 3)
    full = label_lut()[cityscapes["ids"]["aachen"]]
    np.testing.assert_array_equal(clip["semantic"][4], full[::2, ::2])  # nearest: every 2nd
    np.testing.assert_array_equal(clip["semantic_valid"], np.arange(7) == 4)
    np.testing.assert_allclose(clip["intrinsics"], [[20, 0, 7.75], [0, 20.5, 3.75], [0, 0, 1]])
    assert "frankfurt_000001_000019" in _clips(out / "frankfurt")


@pytest.mark.parametrize(
    "layout, needle",
    [
        (None, "is not a folder"),
        ("empty", "holds no Cityscapes images"),
        ("bad_label", "holds label id 200"),
    ],
)
def test_bad_root_is_one_line_error(
    cityscapes: dict, tmp_path: Path, cli, layout: str | None, needle: str
) -> None:
    root = tmp_path / "nowhere"
    if layout == "empty":
        (root / "leftImg8bit").mkdir(parents=True)
        (root / "gtFine").mkdir()
    elif layout == "bad_label":
        root = cityscapes["root"]
        bad = np.full((H, W), 200, np.uint8)
        _png(root / "gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png", bad)
    result = cli.capture("import", "cityscapes", root, "--out", tmp_path / "data")
    cli.error(result, needle)
    if layout == "bad_label":  # the clips before the bad file are kept; a re-run resumes
        assert len(_clips(tmp_path / "data" / "aachen")) == 1


def test_no_sequence_imports_annotated_frames_only(cityscapes: dict, tmp_path: Path, cli) -> None:
    out = tmp_path / "data"
    result = cli.capture("import", "cityscapes", cityscapes["root"], "--out", out, "--no-sequence")
    assert result.exit_code == 0, result.output
    aachen = _clips(out / "aachen")
    assert list(aachen) == ["aachen_000000_000004"]
    clip = aachen["aachen_000000_000004"]
    np.testing.assert_array_equal(clip["rgb"][0], cityscapes["rgb"][4])
    assert clip["semantic_valid"].tolist() == [True]


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("size", ["0,0", "-5,10", "100000,100000", "16,5000"])
def test_bad_size_is_one_line_before_anything_is_read(cityscapes, tmp_path, cli, size) -> None:
    before = _files(tmp_path)
    result = cli.capture(
        "import", "cityscapes", cityscapes["root"], "--out", tmp_path / "data", "--size", size
    )
    cli.error(result, "size: must be (H, W) of 8 to 4096 pixels each")
    assert _files(tmp_path) == before


@pytest.mark.parametrize("part", ["gtFine", "leftImg8bit"])
def test_a_folder_without_a_required_part_is_refused(cityscapes, tmp_path, cli, part) -> None:
    import shutil

    shutil.rmtree(cityscapes["root"] / part)
    result = cli.capture("import", "cityscapes", cityscapes["root"], "--out", tmp_path / "data")
    cli.error(result, f"has no {part}/")
    assert not (tmp_path / "data").exists()


def test_without_camera_folder_the_missing_intrinsics_are_said(cityscapes, tmp_path, cli) -> None:
    import shutil

    shutil.rmtree(cityscapes["root"] / "camera")
    result = cli.capture("import", "cityscapes", cityscapes["root"], "--out", tmp_path / "data")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "2 clips imported without intrinsics" in warning[0]
    assert "has no camera/ folder" in warning[0]


def test_nothing_to_import_is_an_error_that_says_why(cityscapes, tmp_path, cli) -> None:
    import shutil

    for still in (cityscapes["root"] / "leftImg8bit").rglob("*.png"):
        still.unlink()
    result = cli.capture(
        "import", "cityscapes", cityscapes["root"], "--out", tmp_path / "data", "--frames", "8"
    )
    cli.error(result, "no clip to import", "--frames 8", "smaller --frames")
    assert not (tmp_path / "data").exists()
    shutil.rmtree(cityscapes["root"] / "leftImg8bit_sequence")
    cli.error(
        cli.capture("import", "cityscapes", cityscapes["root"], "--out", tmp_path / "data"),
        "holds no Cityscapes images",
    )


def test_a_city_folder_that_is_no_town_name_is_refused(cityscapes, tmp_path, cli) -> None:
    hidden = cityscapes["root"] / "leftImg8bit/train/.up/.up_000000_000001_leftImg8bit.png"
    _png(hidden, _rgb(5))
    result = cli.capture("import", "cityscapes", cityscapes["root"], "--out", tmp_path / "data")
    cli.error(result, "city folder '.up'", "is a path, not a town name")
    assert not (tmp_path / "data").exists()
