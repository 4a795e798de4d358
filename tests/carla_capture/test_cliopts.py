"""capture record's options come from CaptureConfig's fields: same choices, same defaults."""

from __future__ import annotations

import typing

import click
import pytest

from carla_capture.cli import RECORD_FIELDS, capture_config, record
from carla_capture.config import CaptureConfig
from clipcore.codecs import CODECS


def _option(name: str) -> click.Option:
    return next(p for p in record.params if p.name == name.replace(".", "__"))


def test_every_codec_the_writer_has_is_offered_and_accepted(tmp_path):
    choices = _option("compression").type.choices
    assert (
        tuple(choices)
        == CODECS
        == typing.get_args(CaptureConfig.model_fields["compression"].annotation)
    )
    for codec in choices:  # the old hand-typed option offered lz4, which the config refused
        assert (
            capture_config(None, {"compression": codec, "out": tmp_path}, ()).compression == codec
        )


@pytest.mark.parametrize("path", RECORD_FIELDS)
def test_help_shows_the_config_default(path):
    *parent, leaf = path.split(".")
    model = CaptureConfig().carla if parent else CaptureConfig()
    default = getattr(model, leaf)
    help_text = _option(path).help
    if default not in (None, (), False):
        assert help_text.endswith(f"[default: {default}]"), help_text


def test_options_merge_into_the_file_deeply(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("frames = 7\n[carla]\nport = 2010\nvehicles = 3\n")
    cfg = capture_config(
        config, {"carla__vehicles": 9, "clips": 2, "carla__servers": None}, ("carla.walkers=4",)
    )
    assert (cfg.frames, cfg.clips, cfg.carla.port, cfg.carla.vehicles, cfg.carla.walkers) == (
        7,
        2,
        2010,
        9,
        4,
    )
