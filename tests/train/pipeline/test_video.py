"""``train predict --video``: a video written here -> input | segmentation | depth per frame."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from clipcore.folder import load_clip
from clipcore.normalize import normalize
from dataset.labels import load_label_map
from models.segmentation import build_segmentation
from tests.videos import assert_h264
from train.pipeline.trained import component, load_run

FRAMES = 6  # a tiny clip


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def _read_video(path: Path) -> list[np.ndarray]:
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame[..., ::-1])
    cap.release()
    return out


@pytest.fixture(scope="module")
def video(split_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """Simulator frames of a test-split clip upscaled to 96x160 (not the model's size or
    aspect), as an MP4."""
    clip = load_clip(split_dataset / "Town02", None)
    frames = [
        cv2.resize(f.rgb, (160, 96), interpolation=cv2.INTER_LINEAR) for f in clip.frames[:FRAMES]
    ]
    return _write_video(tmp_path_factory.mktemp("video") / "drive.mp4", frames), frames


def test_temporal_run_to_mp4(trained_run: Path, video, tmp_path: Path, cli) -> None:
    path = video[0]
    out = tmp_path / "pred.mp4"
    result = cli.train("predict", "pipeline", "--video", path, "--run", trained_run, "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"{FRAMES} frames, temporal model, 64x128" in result.output
    written = _read_video(out)
    assert len(written) == FRAMES and written[0].shape == (64, 3 * 128, 3)
    assert_h264(out)
    for got, src in zip(written, _read_video(path), strict=True):
        expected = cv2.resize(src, (128, 64), interpolation=cv2.INTER_AREA)
        assert np.abs(got[:, :128].astype(int) - expected).mean() < 12  # two MP4 encodings
    assert not list(tmp_path.glob(".*partial*"))


def test_segmentation_only_run_to_gif(trained_run: Path, video, tmp_path: Path, cli) -> None:
    """A run with stage 1 only: its segmentation frame by frame, a grey depth panel."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "config.json", run)
    shutil.copytree(trained_run / "stage1", run / "stage1")
    path, _ = video
    out = tmp_path / "pred.gif"
    result = cli.train(
        "predict", "pipeline", "--video", path, "--run", run, "--out", out, "--max-frames", "4"
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "4 frames, frame model" in result.output
    from PIL import Image, ImageSequence

    with Image.open(out) as gif:
        written = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    assert len(written) == 4 and written[0].shape == (64, 384, 3)
    cfg = load_run(run)
    seg = build_segmentation(cfg.model).eval()
    seg.load_state_dict(component(run, "stage1", "segmentation"))
    label_map = load_label_map(cfg.data.label_map)
    for got, src in zip(written, _read_video(path)[:4], strict=True):
        small = cv2.resize(src, (128, 64), interpolation=cv2.INTER_AREA)
        x = normalize(torch.from_numpy(small).permute(2, 0, 1).float() / 255)[None]
        with torch.no_grad():
            labels = seg(x)["seg_logits"][0].argmax(0).numpy()
        expected = label_map.colorize(labels)
        assert np.abs(got[:, 128:256].astype(int) - expected).mean() < 6  # GIF palette only
        assert np.abs(got[:, 256:].astype(int) - 128).max() <= 4  # no depth model: grey


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "is not a file"),
        ("not_video", "cannot read"),
        ("suffix", "use a .mp4 or .gif"),
        ("exists", "exists; pass another --out"),
    ],
)
def test_bad_input_is_one_line_error(
    trained_run: Path, video, tmp_path: Path, cli, case: str, needle: str
) -> None:
    path, out = video[0], tmp_path / "pred.mp4"
    if case == "missing":
        path = tmp_path / "nope.mp4"
    elif case == "not_video":
        path = tmp_path / "notes.mp4"
        path.write_text("not a video")
    elif case == "suffix":
        out = tmp_path / "pred.avi"
    else:
        out.write_bytes(b"keep me")
    result = cli.train("predict", "pipeline", "--video", path, "--run", trained_run, "--out", out)
    cli.error(result, needle)
    if case == "exists":
        assert out.read_bytes() == b"keep me"
