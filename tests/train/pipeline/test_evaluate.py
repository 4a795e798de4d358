"""train eval and train predict on a tiny trained run; the temporal-consistency measure itself."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch
from click.testing import CliRunner

from dataset import ClipWindows
from tests.videos import assert_h264
from train.cli import main as train_main
from train.pipeline.consistency import HEADLINE, LOWER_IS_BETTER, TemporalConsistency, window_pairs


def test_eval_writes_the_comparison_table(trained_run):
    result = CliRunner().invoke(
        train_main, ["eval", "pipeline", "--run", str(trained_run), "--perturbed"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((trained_run / "eval.json").read_text())
    for model in ("frame_by_frame", "temporal"):
        m = report["models"][model]
        assert 0 <= m["segmentation"]["miou"] <= 1 and m["depth"]["cap_80m"]["pixels"] > 0
        assert m["ego_motion"]["clips"] == 1 and m["temporal"]["pixels"] > 0
    assert report["ground_truth"]["temporal"]["label_flip_rate"] < 0.05
    assert report["baselines"]["no_motion"]["rpe_translation_m"] > 0.1  # the camera really moves
    md = (trained_run / "eval.md").read_text()
    assert "| mIoU |" in md and "frame-by-frame (stages 1+2+3)" in md and "temporal (stage 4)" in md
    assert "| label flip rate (a constant scores 0) |" in md and "| majority class (" in md
    assert "**mean consistent accuracy (mCA)**" in md and "constant class, zero depth" in md
    assert "## Under per-frame corruptions" in md
    for condition in (report, report["perturbed"]):
        assert condition["ground_truth"]["temporal"]["mean_consistent_accuracy"] == 1.0
        constant = condition["baselines"]["temporal"]["constant_class_zero_depth"]
        assert constant["tc_miou"] == 1.0 and constant["depth_log_change"] > 0.01
    # the corruptions reach the models: their outputs, hence their scores, change
    assert report["perturbed"]["models"]["temporal"] != report["models"]["temporal"]
    # the untrained baseline beside them (the averaging itself: test_average.py), scored on the
    # same pixels, its motion the frame model's; at the default memory's level it averages the
    # frames (then the logits), so its depth is the frame model's on the averaged frames
    assert report["average_rate"] == 0.7 and "frame-by-frame averaged over the clip" in md
    assert report["average_level"] == "image+scores"
    for condition in (report, report["perturbed"]):
        frame, average = (condition["models"][k] for k in ("frame_by_frame", "average_estimated"))
        assert average["temporal"]["pixels"] == frame["temporal"]["pixels"] > 0
        assert average["ego_motion"] == frame["ego_motion"]
        assert average["depth"] != frame["depth"]
    # no sky pixel in any depth figure: the "all valid" figure counts far fewer pixels than the
    # frames hold
    m = report["models"]["temporal"]["depth"]
    height, width = report["frame_size"]
    frames = report["windows"] * report["frames_per_window"] * height * width
    assert m["cap_1000m"]["pixels"] < 0.9 * frames


def test_eval_leaves_the_untrained_baseline_out_at_rate_zero(trained_run):
    result = CliRunner().invoke(
        train_main, ["eval", "pipeline", "--run", str(trained_run), "--average-rate", "0"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((trained_run / "eval.json").read_text())
    assert set(report["models"]) == {"frame_by_frame", "temporal"}
    assert "averaged over the clip" not in (trained_run / "eval.md").read_text()


def test_temporal_consistency_scores_truth_high_and_noise_low(split_dataset):
    item = ClipWindows(split_dataset, "test", window=6)[0]
    truth, noise = TemporalConsistency(22), TemporalConsistency(22)
    truth.update(item["labels"], item["depth"][:, 0], item)
    rng = torch.Generator().manual_seed(0)
    noise.update(
        torch.randint(0, 22, item["labels"].shape, generator=rng),
        item["depth"][:, 0] * (1 + 0.5 * torch.rand(item["depth"][:, 0].shape, generator=rng)),
        item,
    )
    t, n = truth.result(), noise.result()
    assert t["pixels"] > 1000 and t["label_flip_rate"] < 0.05 and t["depth_flip_rate"] < 0.05
    assert n["label_flip_rate"] > 0.9 and n["depth_flip_rate"] > 0.5 and n["tc_miou"] < t["tc_miou"]


def test_constant_predictions_lose_every_headline_temporal_figure(split_dataset):
    """A good model (the truth with 10 % of labels and 5 % of depth disturbed per frame) beats a
    constant class, all-zero depth and a constant depth on mCA, consistent depth accuracy and depth
    log change, although a constant wins the old figures (TC-mIoU, flip rates)."""
    ds = ClipWindows(split_dataset, "test", window=6)
    rng = torch.Generator().manual_seed(0)
    scorers = {name: TemporalConsistency(22) for name in ("good", "constant", "zero")}
    for index in range(len(ds)):
        item = ds[index]
        pairs = window_pairs(item)
        labels, depth = item["labels"].clone(), item["depth"][:, 0]
        wrong = torch.rand(labels.shape, generator=rng) < 0.1
        labels[wrong] = torch.randint(0, 22, (int(wrong.sum()),), generator=rng)
        noisy = depth * (1 + 0.05 * torch.randn(depth.shape, generator=rng))
        majority = int(torch.bincount(item["labels"][item["labels"] != 255]).argmax())
        median = float(depth[item["valid_depth"][:, 0]].median())
        scorers["good"].update(labels, noisy, item, pairs)
        constant = torch.full_like(labels, majority)
        scorers["constant"].update(constant, torch.full_like(depth, median), item, pairs)
        scorers["zero"].update(constant, torch.zeros_like(depth), item, pairs)
    good, constant, zero = (scorers[k].result() for k in ("good", "constant", "zero"))
    assert good["pixels"] > 1000 and good["stable_pixels"] > 1000
    for key in HEADLINE:
        for trivial in (constant, zero):
            if key in LOWER_IS_BETTER:
                assert good[key] < trivial[key], (key, good[key], trivial[key])
            else:
                assert good[key] > trivial[key], (key, good[key], trivial[key])
    # the old figures are won by the constant: why they are not headline figures
    assert constant["tc_miou"] == 1.0 and constant["label_flip_rate"] == 0
    assert constant["stable_flip_rate"] == 0
    assert zero["depth_rel_change"] == 0.0


def _ply_vertices(path) -> np.ndarray:
    data = path.read_bytes()
    header, _, body = data.partition(b"end_header\n")
    count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
    return np.frombuffer(
        body,
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")],
        count=count,
    )


def test_predict_into_a_file_is_one_line(trained_run, split_dataset, tmp_path, cli):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = ["predict", "pipeline", "--run", trained_run, split_dataset / "Town02", "--out", afile]
    cli.error(cli.train(*args), "afile", "a file is in the way")
    assert afile.read_text() == "x"


def test_predict_writes_video_and_point_clouds(trained_run, split_dataset, tmp_path):
    result = CliRunner().invoke(
        train_main,
        [
            "predict",
            "pipeline",
            "--run",
            str(trained_run),
            str(split_dataset / "Town02"),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    video = tmp_path / "Town02-0-000000.mp4"
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and cap.read()[1].shape == (64, 4 * 128, 3)
    assert_h264(video)
    pred, gt = (
        _ply_vertices(tmp_path / "Town02-0-000000-pred.ply"),
        _ply_vertices(tmp_path / "Town02-0-000000-gt.ply"),
    )
    assert len(pred) > 100 and len(gt) > 100
    assert np.all(gt["z"] > -5)  # in the first camera's frame: the car drives forward, along +z
    assert np.isfinite(pred["x"]).all()


def test_predict_compare_shows_frame_by_frame_beside_temporal(trained_run, split_dataset, tmp_path):
    """--compare: input | ground truth | frame-by-frame | temporal, segmentation over depth."""
    args = ["predict", "pipeline", "--run", str(trained_run), str(split_dataset / "Town02")]
    result = CliRunner().invoke(train_main, [*args, "--out", str(tmp_path), "--compare"])
    assert result.exit_code == 0, result.output
    video, sheet = (tmp_path / f"Town02-0-000000-compare{x}" for x in (".mp4", ".png"))
    assert f"-> {video}" in result.output and f"-> {sheet}" in result.output
    assert_h264(video)
    title, scale = 14 * 2, 2  # the title strip over 4 columns of 128, every pixel drawn 2x2
    cap = cv2.VideoCapture(str(video))
    first = cap.read()[1][..., ::-1]
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert first.shape == (title + 2 * 64 * scale, 4 * 128 * scale, 3)
    png = cv2.imread(str(sheet))[..., ::-1]
    assert png.shape == (title + 3 * 2 * 64 * scale, 4 * 128 * scale, 3)
    # the input column repeats the frame in both rows; the other columns differ from it
    body = png[title : title + 2 * 64 * scale]
    seg_row, depth_row = body[: 64 * scale], body[64 * scale :]
    width = 128 * scale
    assert np.array_equal(seg_row[:, :width], depth_row[:, :width])
    assert not np.array_equal(seg_row[:, width : 2 * width], depth_row[:, width : 2 * width])
