"""Train configuration: preset < file < options < --set, merged deeply; classes follow the label
map; a stage's needs are checked before it starts."""

from __future__ import annotations

import pytest
import torch

from clipcore.errors import ConfigError
from dataset.labels import load_label_map
from train.pipeline.run import resolve_config, train


def test_file_tables_merge_into_the_preset(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("[stages.stage1]\nepochs = 2\n\n[model]\nmotion_hidden = 32\n")
    cfg = resolve_config("paper", {"data": tmp_path, "out": tmp_path / "run"}, path)
    assert cfg.stages["stage1"].epochs == 2 and cfg.stages["stage1"].model == "segmentation"
    assert cfg.stages["stage2"].epochs == 20  # the rest of the schedule is the preset's
    assert (
        cfg.model.motion_hidden == 32
        and cfg.model.backbone == "resnet50"
        and cfg.model.seg_head == "deeplab"
    )


def test_set_beats_file_beats_preset(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("[stages.stage1]\nepochs = 2\nlr = 0.5\n")
    cfg = resolve_config(
        "tiny", {"data": tmp_path, "out": tmp_path / "run"}, path, ["stages.stage1.epochs=3"]
    )
    assert cfg.stages["stage1"].epochs == 3 and cfg.stages["stage1"].lr == 0.5


@pytest.mark.parametrize("label_map", ["carla22", "cityscapes19", "common12"])
def test_num_classes_follows_the_label_map(tmp_path, label_map):
    cfg = resolve_config(
        "tiny", {"data": tmp_path, "out": tmp_path / "run"}, None, [f'data.label_map="{label_map}"']
    )
    assert cfg.model.num_classes == load_label_map(label_map).num_classes


def test_num_classes_that_contradicts_the_label_map_is_refused(tmp_path):
    options = {"data": tmp_path, "out": tmp_path / "run"}
    with pytest.raises(ConfigError, match="label map 'common12' has 12 classes"):
        resolve_config("tiny", options, None, ['data.label_map="common12"', "model.num_classes=3"])
    path = tmp_path / "train.toml"
    path.write_text("[model]\nnum_classes = 19\n")
    with pytest.raises(ConfigError, match="model.num_classes=19"):
        resolve_config("tiny", options, path)
    agreed = resolve_config("tiny", options, None, ["model.num_classes=22"])  # carla22 has 22
    assert agreed.model.num_classes == 22


def test_stage_needs_are_checked(tmp_path, split_dataset):
    cfg = resolve_config(
        "tiny", {"data": split_dataset, "out": tmp_path / "run"}, None, ["data.size=[32, 64]"]
    )
    with pytest.raises(
        ConfigError, match="stage4 starts from stage1.*train run pipeline --stage stage1"
    ):
        train(cfg, "stage4")


def test_training_with_common12_scores_12_classes(tmp_path, split_dataset):
    from train.pipeline.evaluate import evaluate_run

    fast = [
        f"stages.stage{i}.{k}={v}"
        for i in range(1, 5)
        for k, v in (("epochs", 1), ("max_steps", 1), ("batch_size", 2))
    ]
    cfg = resolve_config(
        "tiny",
        {"data": split_dataset, "out": tmp_path / "run"},
        None,
        [
            *fast,
            "data.size=[32, 64]",
            'data.label_map="common12"',
            "tensorboard=false",
            'device="cpu"',
        ],
    )
    train(cfg, "all")
    head = torch.load(tmp_path / "run" / "stage1" / "best.pt", weights_only=True)["components"][
        "segmentation"
    ]
    assert [v.shape[0] for k, v in head.items() if k.endswith("weight")][-1] == 12
    report = evaluate_run(tmp_path / "run", "test")
    assert report["label_map"] == "common12"
    assert len(report["models"]["temporal"]["segmentation"]["per_class_iou"]) <= 12


def test_the_preset_is_named_once_and_old_runs_still_load(tmp_path):
    from train.pipeline.config import TrainConfig

    cfg = resolve_config("paper", {"data": tmp_path, "out": tmp_path / "run"}, None)
    saved = cfg.model_dump(mode="json")
    assert saved["preset"] == "paper" and "preset" not in saved["model"]
    saved["model"]["preset"] = "paper"  # a config.json written before the name moved
    assert TrainConfig.model_validate(saved).model == cfg.model


def test_the_data_section_nests_and_flat_configs_of_earlier_releases_still_load(tmp_path):
    from train.pipeline.config import TrainConfig

    path = tmp_path / "train.toml"
    path.write_text('[data]\nlabel_map = "common12"\naugment = false\n')
    cfg = resolve_config(None, {"data": tmp_path, "out": tmp_path / "run"}, path)
    assert cfg.data.root == tmp_path and cfg.data.augment is None and cfg.model.num_classes == 12
    saved = cfg.model_dump(mode="json")
    flat = {k: v for k, v in saved.items() if k != "data"}  # a config.json of an earlier release
    flat.update(data=str(tmp_path), label_map="common12", size=[32, 64], augment=True)
    old = TrainConfig.model_validate(flat)
    assert old.data.size == (32, 64) and old.data.augment is not None
    assert old.data.label_map == "common12" and old.frame_size() == (32, 64)
    legacy = resolve_config(
        "tiny", {"data": tmp_path, "out": tmp_path / "r"}, None, ["size=[8,16]"]
    )
    assert legacy.data.size == (8, 16)  # --set size=... still works (with a warning)
    on = resolve_config("tiny", {"data": tmp_path, "out": tmp_path / "r"}, None, [])
    assert on.data.augment is not None and on.data.augment.flip_p == 0.5
    off = resolve_config("tiny", {"data": tmp_path}, None, ["data.augment.flip_p=0"])
    assert off.data.augment.flip_p == 0.0


def test_the_preset_can_come_from_the_config_file(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('preset = "small"\n')
    cfg = resolve_config(None, {"data": tmp_path}, path)
    assert cfg.preset == "small" and cfg.model == resolve_config("small", {}, None).model


def test_run_options_are_the_config_fields(cli, tmp_path, monkeypatch):
    """``--label-map``, ``--size``, ``--num-workers``... reach the resolved config."""
    import dataclasses

    from train.tasks import TASKS

    seen = {}
    fake = dataclasses.replace(
        TASKS["pipeline"], train=lambda cfg, stage, resume: seen.update(cfg=cfg) or []
    )
    monkeypatch.setitem(TASKS, "pipeline", fake)
    args = [
        "run",
        "pipeline",
        "--stage",
        "stage1",
        "--data",
        tmp_path,
        "--out",
        tmp_path / "run",
        "--size",
        "32,64",
    ]
    result = cli.train(*args, "--label-map", "common12", "--num-workers", "2", "--preset", "small")
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.data.size == (32, 64) and cfg.data.num_workers == 2 and cfg.preset == "small"
    assert cfg.data.label_map == "common12" and cfg.model.num_classes == 12
    help_text = cli.train("run", "pipeline", "--help").output
    assert "--val-split" in help_text and "Manifest split for validation" in help_text


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--seed", "-1"], ["--seed", "-1 is not in the range 0<=x<"]),
        (["--set", "seed=-1"], ["seed", "greater than or equal to 0"]),
        (["--set", "data.augment.crop_scale=[0.9, 0.1]"], ["crop_scale", "low <= high"]),
        (["--set", "stages.stage1.losses.ce=nan"], ["stages.stage1.losses.ce", "finite number"]),
        (["--set", "stages={}"], ["stages lacks stage1", "--set stages.stage1.epochs"]),
        (["--size", "0,0"], ["size", "8 to 4096 pixels"]),
        (["--set", "model.input_size=[0, 0]"], ["input_size", "8 to 4096 pixels"]),
        (["--device", "tpu"], ["unknown device 'tpu'", "auto, cpu"]),
        (["--set", 'stages.stage1.frozen=["nope.layer"]'], ["no submodule 'nope.layer'"]),
        (["--set", "stages.stage1.lr=inf"], ["stages.stage1.lr", "finite number"]),
        (["--set", "stages.stage1.warmup_epochs=nan"], ["warmup_epochs", "finite number"]),
        (["--set", "data.augment.noise_sigma=inf"], ["noise_sigma", "finite number"]),
        (["--set", "stages.stage4.select_depth_weight=nan"], ["select_depth_weight", "finite"]),
        (["--out", "r\udcff\udcfe"], ["--out", "r\\xff\\xfe is not UTF-8 text"]),
        (["--data", "d\udcff"], ["--data", "d\\xff is not UTF-8 text"]),
    ],
)
def test_bad_training_values_are_one_line(cli, tmp_path, split_dataset, args, needles):
    result = cli.train(
        "run",
        "pipeline",
        "--stage",
        "stage1",
        "--data",
        split_dataset,
        "--out",
        tmp_path / "r",
        *args,
    )
    cli.error(result, *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(cli, tmp_path, split_dataset):
    result = cli.train(
        "run", "pipeline", "--data", split_dataset, "--out", tmp_path / "r", "--device", "cuda"
    )
    cli.error(result, "device 'cuda' is not there", "--device auto or cpu")


def test_truncated_checkpoint_and_config_are_one_line(cli, tmp_path, trained_run, split_dataset):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    best = run / "stage4" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    cli.error(
        cli.train("eval", "pipeline", "--run", run, "--data", split_dataset),
        "not a readable checkpoint",
    )
    (run / "config.json").write_text('{"preset": 3')
    cli.error(
        cli.train("eval", "pipeline", "--run", run, "--data", split_dataset),
        "not a config train run",
    )


def test_set_takes_toml_inline_tables(tmp_path):
    cfg = resolve_config(
        "tiny",
        {"data": tmp_path, "out": tmp_path / "r"},
        None,
        ["stages.stage1.losses={ce=2.0}", "data.augment={flip_p=0.0}", "out=runs/x"],
    )
    assert cfg.stages["stage1"].losses == {"ce": 2.0}
    assert cfg.data.augment.flip_p == 0.0 and cfg.data.augment.crop_p == 0.5
    assert str(cfg.out) == "runs/x"
