"""Progress a person sees while waiting: the training bar's total, per-clip lines off a terminal."""

from __future__ import annotations

import io
import re

import pytest

from clipcore.progress import Progress


def test_training_bar_counts_the_steps_it_really_runs(tiny_config, tmp_path, split_dataset):
    """The bar showed x/15 and stopped at 10 when max_steps capped the epoch."""
    from train import engine
    from train.pipeline.run import train

    bars = []

    class Recording(engine.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = io.StringIO()
            super().__init__(*args, **kwargs)
            bars.append(self)

    cfg = tiny_config(
        split_dataset, tmp_path, "stages.stage1.batch_size=1", "stages.stage1.max_steps=3"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "tqdm", Recording)
        train(cfg, "stage1")
    training = [b for b in bars if b.desc.startswith("stage1")]
    assert training and all(b.total == b.n == 3 for b in training), [
        (b.desc, b.n, b.total) for b in bars
    ]


def test_off_a_terminal_each_clip_is_one_line_with_rate_and_eta():
    stream, now = io.StringIO(), [0.0]
    with Progress(
        5, "recording Town01", unit="clip", done=1, per_item=20, rate_unit="frames",
        stream=stream, terminal=False, clock=lambda: now[0],
    ) as bar:  # fmt: skip
        now[0] = 2.0
        bar.update("Town01-0-000001")
        now[0] = 4.0
        bar.update("Town01-0-000002")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("recording Town01: clip 2/5 (Town01-0-000001)")
    assert "10.0 frames/s" in lines[0] and "ETA 0:06" in lines[0]
    assert lines[1].startswith("recording Town01: clip 3/5") and "ETA 0:04" in lines[1]


def test_record_off_a_terminal_prints_a_line_per_clip(cli, tmp_path, tiny_towns):
    result = cli.capture(
        "record", "--backend", "synthetic", "--town", "Town01", "--clips", "3", "--frames", "3",
        "--town-dir", tiny_towns, "--out", tmp_path / "data",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("recording")]
    assert [re.search(r": clip (\d/\d) ", ln).group(1) for ln in lines] == ["1/3", "2/3", "3/3"]
    assert all("frames/s" in ln and "ETA" in ln for ln in lines)
