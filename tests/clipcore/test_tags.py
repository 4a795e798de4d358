"""The tag table must match the installed CARLA 0.9.16 client exactly."""

import numpy as np
import pytest

from clipcore.tags import NUM_TAGS, TAG_ID, TAGS, colorize, palette

# carla's enum names differ from the docs' table for two ids
_ALIASES = {"NONE": "Unlabeled"}


def test_tag_ids_match_installed_client():
    carla = pytest.importorskip("carla")
    from_client = {
        _ALIASES.get(name, name): int(value)
        for name, value in carla.CityObjectLabel.names.items()
        if name != "Any"
    }
    assert from_client == TAG_ID
    assert NUM_TAGS == 29 and [t for t, _, _ in TAGS] == list(range(29))


def test_palette_and_colorize():
    lut = palette()
    assert lut.shape == (256, 3) and tuple(lut[TAG_ID["Roads"]]) == (128, 64, 128)
    img = np.array([[TAG_ID["Sky"], TAG_ID["Car"]]], dtype=np.uint8)
    assert colorize(img).tolist() == [[[70, 130, 180], [0, 0, 142]]]
