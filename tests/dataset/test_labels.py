"""Label maps cover every CARLA 0.9.16 tag exactly once and map as documented."""

import numpy as np
import pytest

from clipcore.tags import TAG_ID
from dataset.labels import IGNORE_INDEX, available_label_maps, load_label_map


def test_shipped_maps():
    assert available_label_maps() == ["carla22", "cityscapes19", "common12"]


@pytest.mark.parametrize("name,classes", [("carla22", 22), ("cityscapes19", 19), ("common12", 12)])
def test_every_tag_maps_exactly_once(name, classes):
    label_map = load_label_map(name)
    assert label_map.num_classes == classes and label_map.palette.shape == (classes, 3)
    mapped = label_map.lut[:29]
    # each tag goes to one class or to ignore; every class receives at least one tag
    assert set(np.unique(mapped[mapped != IGNORE_INDEX]).tolist()) == set(range(classes))
    assert np.all(label_map.lut[29:] == IGNORE_INDEX)


def test_carla22_follows_the_old_tag_list():
    m = load_label_map("carla22")
    old = [
        "Building",
        "Fence",
        "Other",
        "Pedestrian",
        "Pole",
        "RoadLine",
        "Road",
        "SideWalk",
        "Vegetation",
        "Vehicles",
        "Wall",
        "TrafficSign",
        "Sky",
        "Ground",
        "Bridge",
        "RailTrack",
        "GuardRail",
        "TrafficLight",
        "Static",
        "Dynamic",
        "Water",
        "Terrain",
    ]
    assert list(m.class_names) == old
    tags = np.array(
        [TAG_ID[t] for t in ("Unlabeled", "Roads", "Car", "Bus", "Sky", "Rider")], np.uint8
    )
    assert m(tags).tolist() == [
        IGNORE_INDEX,
        old.index("Road"),
        old.index("Vehicles"),
        old.index("Vehicles"),
        old.index("Sky"),
        old.index("Pedestrian"),
    ]


def test_unknown_map_is_a_clear_error():
    from clipcore.errors import ConfigError

    with pytest.raises(ConfigError, match="carla22"):
        load_label_map("nope")
