"""Every option of every ``train`` command, given a value other than its default, reaches the
config the command resolves (or is refused in one line): none is silently dropped. The library
functions the commands call are replaced by ones that record what they were called with."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from carla_temporal.cli import main
from train.tasks import TASKS

#: Values that mean something to the option (others: derived from the type and default).
VALUES = {
    "device": "cpu",
    "size": "32,64",
    "town": "Town05",
    "bind": "0.0.0.0",
    "host": "10.0.0.9",
    "split": "val",
    "train_split": "val",
    "val_split": "test",
    "clip": "Town02-0-000001",
    "variant": "forecast-mid",
    "horizon": "mid",
}
#: What a call recorded, for the checks.
SEEN: dict[str, Any] = {}


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = _commands(main)
PARAMS = [
    (path, param.name)
    for path, command in COMMANDS
    for param in command.params
    if param.name != "help"
]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The registry's functions, ``train live``'s and ``train models``' record their call."""
    SEEN.clear()

    def fake(kind: str, result: Any):
        def call(cfg: Any, *args: Any) -> Any:
            SEEN.update(kind=kind, cfg=cfg, args=args)
            return result

        return call

    for name, task in list(TASKS.items()):
        monkeypatch.setitem(
            TASKS,
            name,
            dataclasses.replace(
                task,
                train=fake("run", []),
                evaluate=fake("eval", {"figure": 1.0}),
                to_markdown=lambda report: "table\n",
                predict=fake("predict", []),
            ),
        )
    import carla_temporal.cli as live_cli
    import carla_temporal.live as live_module
    import models.summary as summary

    real_live_config = live_cli.live_config

    def live_config(options: dict) -> Any:
        cfg = real_live_config(options)
        SEEN.update(kind="live", cfg=cfg)
        return cfg

    class Stats:
        def as_dict(self) -> dict:
            return {"frames": 1, "clips": 1, "fps": 1.0, "cpu_ms_per_frame": 1, "pixel_accuracy": 1}

    monkeypatch.setattr(live_cli, "live_config", live_config)
    monkeypatch.setattr(live_module, "live", lambda *a, **k: Stats())
    monkeypatch.setattr(
        summary, "summarize", lambda cfg, preset: SEEN.update(kind="models", cfg=preset) or []
    )
    monkeypatch.setattr(summary, "format_rows", lambda *a: "rows")
    monkeypatch.setattr("time.sleep", _interrupt)  # train live --serve serves until Ctrl-C
    return tmp_path


def _interrupt(seconds: float) -> None:
    raise KeyboardInterrupt


def _required(path: tuple[str, ...], tmp: Path) -> list[str]:
    """The arguments each command needs besides the option under test."""
    (tmp / "d").mkdir(exist_ok=True)
    if path[0] == "run":
        return ["--data", str(tmp / "d"), "--out", str(tmp / "out")]
    if path[0] in ("eval", "live"):
        return ["--run", str(tmp / "d")]
    if path[0] == "predict":
        return ["--run", str(tmp / "d"), str(tmp / "d")]
    return []


def _value(param: click.Parameter, tmp: Path) -> tuple[list[str], Any]:
    """Command-line arguments giving ``param`` a value other than its default, and that value."""
    name = param.name.split("__")[-1]
    if param.param_type_name == "argument":
        (tmp / "arg").mkdir(exist_ok=True)
        return [str(tmp / "arg")], tmp / "arg"
    flag = param.opts[0]
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return [flag], True
    default = _default(param)
    if isinstance(param.type, click.Choice):
        value = next(c for c in param.type.choices if c != default)
    elif name in VALUES:
        value = VALUES[name]
    elif isinstance(param.type, click.Path):
        value = tmp / (f"{name}.rrd" if name == "save" else name)
        if name == "config":
            value.write_text("seed = 5\n")
    elif name == "overrides":
        return [flag, "seed=6"], 6
    elif isinstance(param.type, click.types.IntParamType):
        value = (default if isinstance(default, int) else 2) + 1
    elif isinstance(param.type, click.types.FloatParamType):
        value = (default if isinstance(default, float) else 1.0) * 2 if name != "hfov" else 45.0
    else:
        value = f"{name}-x"
    return [flag, str(value)], value


def _default(param: click.Parameter) -> Any:
    """The default an option shows in its help (the config's), else click's."""
    text = getattr(param, "help", "") or ""
    if "[default: " in text:
        shown = text.rsplit("[default: ", 1)[1].rstrip("].")
        for kind in (int, float):
            try:
                return kind(shown)
            except ValueError:
                pass
        return shown
    return param.default


def _reached(path: tuple[str, ...], param: click.Parameter, value: Any, result: Any) -> None:
    """``value`` is in what the command passed on (or a non-config option did its job)."""
    name = param.name
    if name == "verbose":
        return  # checked by test_verbose_sets_the_log_level
    if name == "as_json":
        json.loads(result.stdout)
        return
    if path == ("models",):
        assert SEEN["cfg"] == value
        return
    cfg = SEEN["cfg"]
    if name == "resume":
        assert SEEN["args"][1] is True
        return
    if name == "stage":
        assert SEEN["args"][0] == value
        return
    if name in ("config", "overrides"):
        assert cfg.seed == (5 if name == "config" else 6)
        return
    if name == "path":
        assert cfg.path == value
        return
    if name == "preset":
        assert cfg.preset == value
        return
    got: Any = cfg
    for part in name.split("__"):
        got = getattr(got, part)
    assert _same(got, value), (name, got, value)


def _same(got: Any, value: Any) -> bool:
    if isinstance(got, tuple):
        return ",".join(map(str, got)) == str(value)
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(got) == float(value)
    return str(got) == str(value) or got == value


@pytest.mark.parametrize("path, name", PARAMS, ids=[f"{' '.join(p)} {n}" for p, n in PARAMS])
def test_every_option_reaches_the_config_or_is_refused_in_one_line(recorded, cli, path, name):
    command = dict(COMMANDS)[path]
    param = next(p for p in command.params if p.name == name)
    args, value = _value(param, recorded)
    given = [*path, *_required(path, recorded), *args]
    if param.param_type_name == "argument":
        given = [*path, *[a for a in _required(path, recorded)[:-1]], *args]
    result = CliRunner().invoke(main, given)
    if result.exit_code == 2:  # refused: one line that says what to do, no traceback
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return
    assert result.exit_code in (0, 130), (result.output, result.exception)  # 130: --serve
    _reached(path, param, value, result)


def test_every_option_is_walked():
    """Each command has options, and the walk covers the run, eval and predict command of
    every task, train live and train models."""
    paths = {path for path, _ in PARAMS}
    expected = {(verb, task) for verb in ("run", "eval", "predict") for task in TASKS}
    assert expected | {("live",), ("models",)} <= paths
    assert len(PARAMS) > 100


def test_verbose_sets_the_log_level(recorded, monkeypatch):
    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    result = CliRunner().invoke(main, ["-vv", "models"])
    assert result.exit_code == 0 and seen["level"] == logging.DEBUG


def test_an_option_of_another_task_is_not_offered(cli):
    """Options belong to their task: sim2real has no --horizon, the pipeline no --target,
    forecasting no --stage."""
    cli.error(cli.train("run", "sim2real", "--horizon", "mid"), "No such option")
    cli.error(cli.train("run", "pipeline", "--target", "x"), "No such option")
    cli.error(cli.train("run", "forecast", "--stage", "stage1"), "No such option")
    assert "lowres" not in cli.train("run", "sim2real", "--help").output
    assert "[default: common12]" in " ".join(cli.train("run", "sim2real", "--help").output.split())
