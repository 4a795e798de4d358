"""Training stages: every stage learns, runs end to end, resumes exactly, refuses bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from dataset import ClipWindows
from dataset.perturb import corrupt
from train import engine
from train.cli import main as train_main
from train.pipeline.losses import total_loss
from train.pipeline.nets import build_stage_net, stage_forward
from train.pipeline.run import train


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3", "stage4"])
def test_each_stage_lowers_its_loss(tiny_config, stage, trained_run, split_dataset):
    cfg = tiny_config(split_dataset, trained_run)
    spec = cfg.stages[stage]
    torch.manual_seed(0)
    net = build_stage_net(spec, cfg.model, trained_run)
    for name in spec.frozen:
        net.get_submodule(name).requires_grad_(False)
    ds = ClipWindows(split_dataset, "train", window=spec.window, size=(64, 128))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    if spec.perturb is not None:  # stage 4 learns from corrupted windows, where a memory helps
        batch["rgb"], _ = corrupt(
            batch["rgb"], spec.perturb.model_copy(update={"window_p": 1.0}), [(0,), (1,)]
        )
    # stage 4 fine-tunes a decoder whose BatchNorm statistics stay fixed: more, slower steps
    steps, lr = (20, 5e-3) if stage == "stage4" else (8, 5e-3)
    optimizer = torch.optim.Adam(engine.param_groups(net, spec, stage, lr))
    losses = []
    for _ in range(steps):
        engine.set_mode(net, spec, True)
        loss, parts = total_loss(spec.losses, stage_forward(net, batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(parts if stage == "stage4" else float(loss.detach()))
    if stage == "stage4":
        # the fixture's 2-step stage 1 predicts almost uniform classes, which a memory of the
        # score maps cannot sharpen: the depth decoder learns, and both memories train (their
        # strengths leave the zero they start at; which way, 20 steps on the fixture's nearly
        # untrained models do not say: the learning benchmark's memories open)
        assert losses[-1]["depth"] < 0.95 * losses[0]["depth"], losses
        assert losses[-1]["ce"] <= losses[0]["ce"] + 1e-3, losses
        memory = net.pipeline.geometry.memory  # the default: the image+scores chain
        assert (memory.scores.strength != 0).all()
        assert memory.image.strength.item() != 0
        return
    assert losses[-1] < 0.9 * losses[0], losses


def test_all_stages_write_checkpoints_and_config(trained_run):
    for stage in ("stage1", "stage2", "stage3"):
        state = torch.load(trained_run / stage / "best.pt", weights_only=True)
        assert state["epoch"] == 0 and state["history"][0]["val"]["loss"] > 0
    # stage 4 validates its start (epoch -1), which stays best unless an epoch beats it
    state = torch.load(trained_run / "stage4" / "best.pt", weights_only=True)
    assert state["epoch"] in (-1, 0) and state["history"][0]["epoch"] == -1
    assert state["history"][0]["val"]["depth"] > 0 and state["history"][0]["val"]["ce"] > 0
    for stage in ("stage1", "stage2", "stage3", "stage4"):
        assert (trained_run / stage / "last.pt").exists() and (
            trained_run / stage / "epoch-000.pt"
        ).exists()
    assert (
        "miou"
        in torch.load(trained_run / "stage1" / "best.pt", weights_only=True)["history"][0]["val"]
    )
    config = json.loads((trained_run / "config.json").read_text())
    assert config["preset"] == "tiny" and config["stages"]["stage4"]["frozen"] == [
        "pipeline.ego_motion",
        "pipeline.geometry.backbone",
        "pipeline.geometry.seg_head",
    ]


def _component(run: Path, stage: str, name: str, file: str = "best.pt") -> dict[str, torch.Tensor]:
    return torch.load(run / stage / file, weights_only=True)["components"][name]


def test_stage4_follows_the_reference_recipe(trained_run):
    """Stage 2 decodes stage 1's backbone; stage 4 keeps backbone, segmentation head and ego-motion
    (stage 3's) frozen, and trains the memory and the depth decoder."""
    seg1 = _component(trained_run, "stage1", "segmentation")
    depth2 = _component(trained_run, "stage2", "depth")
    ego3 = _component(trained_run, "stage3", "ego_motion")
    ego4 = _component(trained_run, "stage4", "ego_motion", "last.pt")
    geo4 = _component(trained_run, "stage4", "geometry_filter", "last.pt")
    for key, value in seg1.items():
        key4 = "seg_head." + key.removeprefix("head.") if key.startswith("head.") else key
        assert torch.equal(value, geo4[key4]), key
        if key.startswith("backbone."):
            assert torch.equal(value, depth2[key]), key
    for key in ego3:
        assert torch.equal(ego3[key], ego4[key]), key
    decoder2 = {k: v for k, v in depth2.items() if k.startswith("decoder.")}
    changed = [
        k
        for k, v in decoder2.items()
        if v.is_floating_point() and not torch.equal(v, geo4["depth_" + k])
    ]
    assert changed, "stage 4 trains the depth decoder"
    strengths = [v for k, v in geo4.items() if k.endswith("strength")]
    assert strengths and all(v.abs().sum() > 0 for v in strengths), "stage 4 trains the memory"


def test_tensorboard_scalars_and_panels(tiny_config, tmp_path, split_dataset):
    cfg = tiny_config(split_dataset, tmp_path, "tensorboard=true")
    train(cfg, "stage1")
    events = list((tmp_path / "tensorboard" / "stage1").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000


def test_killed_and_resumed_run_ends_with_the_same_weights(
    tiny_config, tmp_path, split_dataset, monkeypatch
):
    settings = ["deterministic=true", "stages.stage1.epochs=3"]
    train(tiny_config(split_dataset, tmp_path / "straight", *settings), "stage1")
    real = engine.train_one_epoch
    calls = {"n": 0}

    def dies_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(split_dataset, tmp_path / "killed", *settings), "stage1")
    monkeypatch.setattr(engine, "train_one_epoch", real)
    train(tiny_config(split_dataset, tmp_path / "killed", *settings), "stage1", resume=True)
    a = torch.load(tmp_path / "straight" / "stage1" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "stage1" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["net"].items():
        assert torch.equal(value, b["net"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def _train(*args: str):
    return CliRunner().invoke(train_main, list(args))


def _clean_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_bad_input(tmp_path, split_dataset):
    _clean_error(
        _train(
            "run",
            "pipeline",
            "--stage",
            "stage1",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r"),
        ),
        "split.json",
        "capture split",
    )
    _clean_error(
        _train(
            "run",
            "pipeline",
            "--stage",
            "stage4",
            "--data",
            str(split_dataset),
            "--out",
            str(tmp_path / "r"),
        ),
        "stage1",
        "best.pt",
        "train run pipeline --stage stage1",
    )
    _clean_error(  # the command of an earlier release: its new form
        _train("run", "stage1", "--data", str(split_dataset), "--out", str(tmp_path / "r")),
        "train run stage1 is now: train run pipeline --stage stage1",
    )
    _clean_error(
        _train("eval", "--run", str(tmp_path / "r"), "--task", "forecast"),
        "--task is gone: name the task first",
        "eval forecast",
    )
    _clean_error(
        _train("run", "pipeline", "--stage", "stage9", "--data", str(split_dataset)),
        "stage9",
    )
    _clean_error(
        _train(
            "run",
            "pipeline",
            "--stage",
            "stage1",
            "--data",
            str(split_dataset),
            "--out",
            str(tmp_path / "r"),
            "--preset",
            "huge",
        ),
        "huge",
    )
    _clean_error(
        _train(
            "run",
            "pipeline",
            "--stage",
            "stage1",
            "--data",
            str(split_dataset),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "stages.stage1.epochz=1",
        ),
        "unknown key 'epochz'",
    )
    _clean_error(_train("eval", "pipeline", "--run", str(tmp_path / "missing")), "config.json")


def test_a_trained_stage_is_never_trained_over_without_resume(cli, trained_run, split_dataset):
    """Running a stage again into its run folder would replace best.pt and last.pt."""
    before = {p: p.stat().st_mtime_ns for p in (trained_run / "stage1").glob("*.pt")}
    result = cli.train(
        "run", "pipeline", "--stage", "stage1", "--data", split_dataset, "--out", trained_run
    )
    cli.error(result, "already holds trained stage1", "--resume")
    assert {p: p.stat().st_mtime_ns for p in (trained_run / "stage1").glob("*.pt")} == before


def test_full_disk_while_saving_a_checkpoint_is_one_line(cli, small_disk, split_dataset):
    """torch.save on a full disk raises a RuntimeError without errno; it is reported as a full
    disk, and no temporary checkpoint is left behind."""
    sets = [
        "--set",
        "stages.stage1.epochs=1",
        "--set",
        "stages.stage1.max_steps=1",
        "--set",
        "tensorboard=false",
    ]
    out = small_disk / "run"
    result = cli.train(
        "run",
        "pipeline",
        "--stage",
        "stage1",
        "--data",
        split_dataset,
        "--out",
        out,
        "--size",
        "32,64",
        *sets,
    )
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and "no space left" in errors[0], result.stderr
    assert not list(out.rglob("*.tmp"))
